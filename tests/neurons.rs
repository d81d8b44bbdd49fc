//! Whole-neuron prune editors through the binary: trained with `--prune-score neurons`, they
//! edit with `--neurons F` (the share of every hidden layer's neurons removed, exactly), refuse
//! `--sparsity`, warn where the share asked is outside the shares they were trained on, and
//! `compare --neurons` judges them against the neuron rules.

mod common;
use common::{arg as p, ok, refused, regop_cpu as regop};
use regop::io::model::Model;
use regop::requirement::verify::Target;

#[test]
fn a_neuron_editor_removes_the_asked_share_of_neurons() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = common::synthetic_zoo(dir.path(), "11");
    let ed = dir.path().join("ed");
    ok(&regop(&[
        "--seed",
        "11",
        "train",
        "--zoo",
        p(&zoo),
        "--requirement",
        "prune",
        "--prune-score",
        "neurons",
        "--sparsity-range",
        "0.25,0.75",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--out",
        p(&ed),
    ]));
    let editor = ed.join("editor.safetensors");
    let model = zoo.join("model-00000.safetensors");
    let out = dir.path().join("narrow.safetensors");
    let edit_at = |share: &str, out: &std::path::Path| {
        let run = regop(&[
            "edit",
            "--editor",
            p(&editor),
            "--model",
            p(&model),
            "--neurons",
            share,
            "--max-drop",
            "1",
            "--out",
            p(out),
        ]);
        ok(&run);
        String::from_utf8_lossy(&run.stderr).to_string()
    };
    let inside = edit_at("0.5", &out);
    assert!(!inside.contains("outside the"), "{inside}");
    // Outside the shares it was trained on: still edited, and the user is told.
    let beyond = dir.path().join("narrower.safetensors");
    let said = edit_at("0.9", &beyond);
    assert!(
        said.contains(
            "warning: share of neurons 0.9 is outside the 0.25-0.75 the editor was trained on"
        ),
        "{said}"
    );
    assert!(beyond.exists());
    let m = Model::load(&out).unwrap();
    let target = Target::PruneNeurons {
        fraction: 0.5,
        without: Vec::new(),
    };
    assert!(target.verify(&m.shape(), &m.flat_params(), None).met);
    let original = Model::load(&model).unwrap().flat_params();
    assert_ne!(m.flat_params(), original);

    let line = refused(&regop(&[
        "edit",
        "--editor",
        p(&editor),
        "--model",
        p(&model),
        "--sparsity",
        "0.5",
        "--out",
        p(&dir.path().join("refused.safetensors")),
    ]));
    assert!(line.contains("give --neurons"), "{line}");
    assert!(!dir.path().join("refused.safetensors").exists());

    // The editor judged at a share of neurons: the comparison's stderr, its results in `out`.
    let compare_at = |share: &str, out: &std::path::Path| -> String {
        let run = regop(&[
            "compare",
            "--zoo",
            p(&zoo),
            "--requirement",
            "prune",
            "--neurons",
            share,
            "--no-fine-tune",
            "--editor",
            p(&editor),
            "--out",
            p(out),
        ]);
        ok(&run);
        String::from_utf8_lossy(&run.stderr).to_string()
    };
    let cmp = dir.path().join("cmp");
    let said = compare_at("0.5", &cmp);
    assert!(!said.contains("outside the"), "{said}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cmp.join("results.json")).unwrap()).unwrap();
    let findings = results["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{results}");
    assert_eq!(findings[0]["setting"]["neurons"], 0.5, "{results}");
    let rule = findings[0]["rule"].as_str().unwrap();
    assert!(rule.starts_with("neuron "), "judged against {rule}");

    let said = compare_at("0.9", &dir.path().join("cmp-beyond"));
    assert!(
        said.contains("warning: share of neurons 0.9 is outside the 0.25-0.75"),
        "{said}"
    );
}
