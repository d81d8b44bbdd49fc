//! A prune editor that starts from LAMP + reconstruction, through the binary, with the
//! calibration batch it reads set by `train --calibration-rows`: the editor file records the
//! rows and its edits read as many; `compare` gives every rule the editor's batch, so that the
//! untrained editor is exactly the rule model by model, and refuses another size in one line.

mod common;
use common::*;
use regop::requirement::PruneScore;
use regop::workflows::edit::checkpoint::EditorFile;
use regop::Device;

#[test]
fn a_lamp_reconstruction_editor_reads_its_own_calibration_rows() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = synthetic_zoo(dir.path(), "5");
    let ed = dir.path().join("ed");
    ok(&regop_cpu(&[
        "train",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "prune",
        "--prune-score",
        "lamp-reconstruction",
        "--calibration-rows",
        "64",
        "--sparsity-range",
        "0.7,0.9",
        "--steps",
        "3",
        "--eval-every",
        "3",
        "--val-models",
        "2",
        "--out",
        arg(&ed),
    ]));
    let editor = ed.join("editor.safetensors");
    let dev = Device::cpu();
    let mut ef = EditorFile::load(&dev, &editor).unwrap();
    assert_eq!(ef.calibration_rows, 64);
    assert_eq!(ef.spec.prune_score, PruneScore::LampReconstruction);
    let manifest = regop::workflows::zoo::read_manifest(&zoo).unwrap();
    let data = regop::workflows::zoo::load::zoo_data(&zoo, &manifest, None).unwrap();
    ef.attach_data(&data);
    assert_eq!(ef.columns.calibration.rows(), 64);

    // compare: the rules read the editor's 64 rows, so the untrained editor is the rule.
    let compare = |extra: &[&str], out: &std::path::Path| {
        let mut args = vec!["compare", "--zoo", arg(&zoo), "--requirement", "prune"];
        args.extend_from_slice(extra);
        args.extend(["--no-fine-tune", "--out", arg(out)]);
        regop_cpu(&args)
    };
    let report = dir.path().join("cmp");
    let fit = [
        "--sparsity",
        "0.8",
        "--max-models",
        "3",
        "--val-models",
        "2",
    ];
    let mut with_editor = vec!["--editor", arg(&editor)];
    with_editor.extend(fit);
    ok(&compare(&with_editor, &report));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["calibration_rows"], 64);
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("Calibration batch of the data-aware rules: 64 training rows"));
    let rows = results["rows"].as_array().unwrap();
    let of = |method: &str| -> Vec<(u64, f64)> {
        rows.iter()
            // The rule by its whole name: another starts with it (the rule + natural step).
            .filter(|r| {
                let name = r["method"].as_str().unwrap();
                name == method || (name.starts_with(method) && !name.contains("natural step"))
            })
            .map(|r| {
                (
                    r["model"].as_u64().unwrap(),
                    r["agreement"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    // Untrained, the editor is the rule, with the natural step where training turned it on.
    let rule = of(match ef.spec.natural_step {
        true => "LAMP + reconstruction + natural step",
        false => "LAMP + reconstruction",
    });
    let untrained = of("editor, untrained");
    assert_eq!(rule.len(), 3, "{rows:?}");
    assert_eq!(untrained, rule, "the untrained editor is not the rule");

    // Another batch size for the rules than the editor's is refused, naming the editor.
    let no = dir.path().join("no");
    let other = ["--editor", arg(&editor), "--calibration-rows", "128"];
    let msg = refused(&compare(&other, &no));
    assert!(
        msg.contains("editor.safetensors") && msg.contains("calibration"),
        "{msg}"
    );
    assert!(!no.exists());
    let msg = refused(&compare(&["--calibration-rows", "0"], &no));
    assert!(msg.contains("--calibration-rows"), "{msg}");
    let msg = refused(&regop_cpu(&[
        "train",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "prune",
        "--calibration-rows",
        "0",
        "--out",
        arg(&no),
    ]));
    assert!(msg.contains("--calibration-rows"), "{msg}");
}

/// Trained with a temperature, a LAMP + reconstruction editor may move the rule's mask: its
/// file says it reads three features per edge, and whether its edits re-solve the kept weights
/// on its mask; in `compare` (re-solving) the untrained editor is still the rule model by
/// model, and the trained one meets the asked sparsity. A file whose edit settings
/// do not match its editor is refused in one line naming it.
#[test]
fn a_lamp_reconstruction_editor_with_a_temperature_moves_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = synthetic_zoo(dir.path(), "6");
    let ed = dir.path().join("ed");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--zoo",
            arg(&zoo),
            "--requirement",
            "prune",
            "--prune-score",
            "lamp-reconstruction",
            "--tau",
            "0.5",
            "--calibration-rows",
            "64",
            "--sparsity-range",
            "0.7,0.9",
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--val-models",
            "2",
            "--out",
            arg(&ed),
        ];
        args.extend_from_slice(extra);
        let out = regop_cpu(&args);
        ok(&out);
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    let printed = train(&[]);
    let editor = ed.join("editor.safetensors");
    let ef = EditorFile::load(&Device::cpu(), &editor).unwrap();
    assert!(ef.spec.moves_rule_mask());
    assert_eq!(ef.editor.cfg.edge_features, 3);
    // Training measured re-solving the kept weights on the editor's mask on its validation
    // models, and the edits do as it decided; a resume may force it either way.
    let found = ef.resolve_mask.expect("the re-solve measured");
    assert_eq!(ef.spec.resolve_mask, found.on);
    let line = format!(
        "the editor's mask with its kept weights re-solved: {:+.4} accuracy ({:.4} with it) on the validation split over {} validation models: {}",
        found.gain,
        found.with_it,
        found.models,
        if found.on { "on" } else { "off" }
    );
    assert!(printed.contains(&line), "{printed}");
    assert!(found.gain.is_finite() && found.models >= 2, "{found:?}");
    // The accuracy with it is a mean accuracy, and no lower than the gain says it raised.
    assert!(
        (0.0..=1.0).contains(&found.with_it) && found.with_it >= found.gain,
        "{found:?}"
    );
    for (mode, on) in [("off", false), ("on", true)] {
        train(&["--resume", "--resolve-mask", mode]);
        let ef = EditorFile::load(&Device::cpu(), &editor).unwrap();
        assert_eq!(ef.spec.resolve_mask, on, "--resolve-mask {mode}");
        assert_eq!(ef.resolve_mask.map(|d| d.on), Some(on));
    }
    // The natural step after the edit is measured and decided the same way.
    let found = ef.natural_step.expect("the natural step measured");
    assert_eq!(ef.spec.natural_step, found.on);
    assert!(found.gain.is_finite() && found.models >= 2, "{found:?}");
    assert!(
        printed.contains("a natural step on the labels after the edit"),
        "{printed}"
    );
    for (mode, on) in [("on", true), ("off", false)] {
        train(&["--resume", "--resolve-mask", "on", "--natural-step", mode]);
        let ef = EditorFile::load(&Device::cpu(), &editor).unwrap();
        assert_eq!(ef.spec.natural_step, on, "--natural-step {mode}");
        assert_eq!(ef.natural_step.map(|d| d.on), Some(on));
    }

    let report = dir.path().join("cmp");
    ok(&regop_cpu(&[
        "compare",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "prune",
        "--editor",
        arg(&editor),
        "--sparsity",
        "0.8",
        "--max-models",
        "3",
        "--val-models",
        "2",
        "--no-fine-tune",
        "--out",
        arg(&report),
    ]));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    let of = |method: &str| -> Vec<&serde_json::Value> {
        rows.iter()
            // The rule by its whole name: another starts with it (the rule + natural step).
            .filter(|r| {
                let name = r["method"].as_str().unwrap();
                name == method || (name.starts_with(method) && !name.contains("natural step"))
            })
            .collect()
    };
    let agreement = |rs: Vec<&serde_json::Value>| -> Vec<(u64, f64)> {
        rs.iter()
            .map(|r| {
                (
                    r["model"].as_u64().unwrap(),
                    r["agreement"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let rule = agreement(of("LAMP + reconstruction"));
    assert_eq!(rule.len(), 3, "{rows:?}");
    assert_eq!(agreement(of("editor, untrained")), rule);
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("re-solved on its mask"), "{md}");
    let edits = of("editor (one inference)");
    assert_eq!(edits.len(), 3, "{rows:?}");
    for r in edits {
        assert_eq!(r["satisfied"], true, "{r}");
        let s = r["requirement_value"].as_f64().unwrap();
        assert!((s - 0.8).abs() < 0.01, "sparsity {s}");
    }

    // The same file with edit settings that keep the mask (no temperature): refused.
    let bytes = std::fs::read(&editor).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&meta["edit"]).unwrap();
    spec["tau"] = serde_json::json!(0.0);
    meta.insert("edit".into(), spec.to_string());
    let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    let msg = match EditorFile::load(&Device::cpu(), &bad) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a file whose editor reads other edge features loaded"),
    };
    assert!(
        msg.contains("bad.safetensors") && msg.contains("features per edge"),
        "{msg}"
    );
}
