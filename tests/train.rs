//! Learning to edit, through the binary at CI scale on the built-in synthetic data: a trained
//! editor beats the trivial edit on held-out models; `regop edit` verifies and exits 0/1/2;
//! a killed `regop train` resumes to the same bytes as an uninterrupted run.

mod common;
use common::synthetic_zoo as zoo;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn regop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(["--device", "cpu"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A zoo's manifest and the data it was trained on.
fn manifest_and_data(zoo: &Path) -> (regop::workflows::zoo::Manifest, regop::io::data::Dataset) {
    let manifest = regop::workflows::zoo::read_manifest(zoo).unwrap();
    let data = regop::io::data::loaders::load(
        manifest.loader,
        None,
        &manifest.data_options,
        manifest.data_seed,
    )
    .unwrap();
    (manifest, data)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `regop edit --editor E --model M --out O` plus `extra` flags.
fn edit(editor: &Path, model: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "edit",
        "--editor",
        p(editor),
        "--model",
        p(model),
        "--out",
        p(out),
    ];
    args.extend_from_slice(extra);
    regop(&args)
}

fn median_of(summary: &serde_json::Value, prefix: &str, key: &str) -> f64 {
    summary["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no method {prefix} in {summary}"))[key]
        .as_f64()
        .unwrap()
}

#[test]
fn trained_editors_beat_the_trivial_edit_on_held_out_models() {
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "3");
    // Pruning: the trained editor against magnitude pruning, at the same sparsity.
    ok(&regop(&[
        "--json",
        "train",
        "--zoo",
        p(&z),
        "--requirement",
        "prune",
        "--steps",
        "150",
        "--eval-every",
        "50",
    ]));
    let editor = z.join("editor-prune/editor.safetensors");
    let compare_args = [
        "--json",
        "compare",
        "--zoo",
        p(&z),
        "--requirement",
        "prune",
        "--sparsity",
        "0.8",
        "--editor",
        p(&editor),
        "--ft-epochs",
        "1",
    ];
    let r = ok(&regop(&compare_args));
    let (ed, mag) = (
        median_of(&r, "editor", "median_accuracy"),
        median_of(&r, "global magnitude", "median_accuracy"),
    );
    eprintln!("prune 0.8: editor {ed:.4}, global magnitude {mag:.4}");
    assert!(
        ed > mag,
        "editor {ed} does not beat magnitude pruning {mag}"
    );
    assert_eq!(median_of(&r, "editor", "satisfied"), 1.0);

    // The editor against the rule chosen on validation models and the best fine-tuned
    // reference, recomputed from the per-model rows.
    let found = r["findings"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    let chosen = r["choices"][0]["rule"].as_str().unwrap();
    assert_eq!(f["rule"], chosen);
    let rows = r["rows"].as_array().unwrap();
    let of = |name: &str| -> Vec<&serde_json::Value> {
        rows.iter().filter(|x| x["method"] == name).collect()
    };
    let editor_rows: Vec<&serde_json::Value> =
        rows.iter().filter(|x| x["kind"] == "editor").collect();
    let acc = |x: &serde_json::Value| x["accuracy"].as_f64().unwrap();
    let diffs: Vec<f64> = editor_rows
        .iter()
        .map(|e| {
            let rule = of(chosen)
                .into_iter()
                .find(|x| x["model"] == e["model"])
                .unwrap();
            acc(e) - acc(rule)
        })
        .collect();
    let med = regop::requirement::metrics::median;
    let v = &f["versus_rule"];
    assert!(
        (v["median_difference"].as_f64().unwrap() - med(&diffs)).abs() < 1e-12,
        "{v}"
    );
    assert_eq!(v["wins"], diffs.iter().filter(|&&d| d > 0.0).count());
    assert_eq!(v["losses"], diffs.iter().filter(|&&d| d < 0.0).count());
    let reference = f["reference"].as_str().unwrap();
    let medacc = |rs: &[&serde_json::Value]| med(&rs.iter().map(|x| acc(x)).collect::<Vec<_>>());
    let (ea, ra, fa) = (
        medacc(&editor_rows),
        medacc(&of(chosen)),
        medacc(&of(reference)),
    );
    // A share of the gap only where the reference is enough above the rule.
    let min_gap = regop::workflows::compare::summarise::MIN_GAP;
    match f["gap_recovered"].as_f64() {
        Some(gap) => {
            assert!(fa - ra >= min_gap, "{f}");
            assert!((gap - (ea - ra) / (fa - ra)).abs() < 1e-9, "{f}");
        }
        None => assert!(fa - ra < min_gap, "{f}"),
    }
    let ratios: Vec<f64> = editor_rows
        .iter()
        .map(|e| {
            let r = of(reference)
                .into_iter()
                .find(|x| x["model"] == e["model"])
                .unwrap();
            r["seconds"].as_f64().unwrap() / e["seconds"].as_f64().unwrap()
        })
        .collect();
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let close = |key: &str, want: f64| {
        let got = f[key].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{key}: {got} vs {want}");
    };
    close("speedup_lowest", lowest);
    close("speedup_median", med(&ratios));

    // The same comparison judged against the references this one measured, fine-tuning
    // nothing: the same rows and findings but for the times, and the file it read named.
    let earlier = z.join("compare-prune/results.json");
    let again_dir = dir.path().join("again");
    let again_args = |extra: &[&str]| -> Vec<String> {
        let out = ["--out", p(&again_dir), "--force"];
        let all = compare_args.iter().chain(&out).chain(extra);
        all.map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| regop(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let again = ok(&run(again_args(&["--references", p(&earlier)])));
    assert_eq!(again["references"], p(&earlier));
    // Its directory stands for the file.
    let by_dir = ok(&run(again_args(&[
        "--references",
        p(earlier.parent().unwrap()),
    ])));
    assert_eq!(by_dir["findings"][0]["gap_recovered"], f["gap_recovered"]);
    let g = &again["findings"][0];
    for key in [
        "rule",
        "reference",
        "editor_accuracy",
        "rule_accuracy",
        "reference_accuracy",
        "reference_compliant",
        "versus_rule",
        "gap_recovered",
    ] {
        assert_eq!(g[key], f[key], "{key}");
    }
    let without_times = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        let mut rows = v["rows"].as_array().unwrap().clone();
        rows.iter_mut().for_each(|r| r["seconds"] = 0.0.into());
        rows.sort_by_key(|r| (r["model"].as_u64(), r["method"].to_string()));
        rows
    };
    assert_eq!(without_times(&again), without_times(&r));
    let md = std::fs::read_to_string(again_dir.join("report.md")).unwrap();
    assert!(md.contains("references were read from"), "{md}");
    // References of other settings, of other test models, or not a comparison's results:
    // exit 2 with a line naming the file and what differs, and nothing written.
    std::fs::remove_dir_all(&again_dir).unwrap();
    let mut tampered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&earlier).unwrap()).unwrap();
    let first_tuned = tampered["rows"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["kind"] == "fine-tuned")
        .unwrap();
    first_tuned["original_accuracy"] = 0.123.into();
    let other_models = dir.path().join("other-models.json");
    std::fs::write(&other_models, tampered.to_string()).unwrap();
    let truncated = dir.path().join("truncated.json");
    let bytes = std::fs::read(&earlier).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for (file, extra, says) in [
        (&earlier, vec!["--sparsity", "0.5"], "settings sparsity 0.8"),
        (
            &earlier,
            vec!["--max-drop", "0.05"],
            "--max-drop 0.02, not 0.05",
        ),
        (&other_models, vec![], "other test models"),
        (
            &truncated,
            vec![],
            "is not the results.json of a comparison",
        ),
    ] {
        let mut extra = extra.clone();
        extra.extend(["--references", p(file)]);
        let out = run(again_args(&extra));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{says}: {err}");
        assert!(err.contains(p(file)) && err.contains(says), "{says}: {err}");
        assert!(!again_dir.join("results.json").exists(), "{says}");
    }

    // The edit benchmarks on the same files, and the check files they write for a second
    // implementation: the checked edit is the one `regop edit` makes.
    let check = dir.path().join("check");
    let b = ok(&regop(&[
        "--json",
        "bench",
        "--editor",
        p(&editor),
        "--zoo",
        p(&z),
        "--batches",
        "1,3",
        "--iters",
        "1",
        "--train-rows",
        "64",
        "--profile",
        "--check-out",
        p(&check),
    ]));
    // Per-kernel profiles of one edit and one training step.
    let profiles = b["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2, "{profiles:?}");
    for pr in profiles {
        let kernels = pr[1].as_array().unwrap();
        let names: Vec<&str> = kernels
            .iter()
            .map(|k| k["kernel"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"gemm") && names.contains(&"segment_reduce"),
            "{names:?}"
        );
        let share: f64 = kernels.iter().map(|k| k["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-6, "{share}");
    }
    let step = profiles[1][1].as_array().unwrap();
    assert!(step
        .iter()
        .any(|k| k["kernel"] == "adam_step" && k["calls"] == 1));
    let names: Vec<(&str, f64)> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["rate"].as_f64().unwrap()))
        .collect();
    // An editor that picks its step is also timed as `edit` runs it.
    let searches =
        regop::workflows::edit::checkpoint::EditorFile::load(&regop::Device::cpu(), &editor)
            .unwrap()
            .searches_step();
    let mut expected = vec!["edit, file to file", "edit, graph on device"];
    if searches {
        expected.push(regop::app::bench_edit::STEP_PICKED);
    }
    expected.extend(["edits, batched", "edits, batched", "train step"]);
    assert_eq!(names.iter().map(|n| n.0).collect::<Vec<_>>(), expected);
    assert!(
        names.iter().all(|n| n.1.is_finite() && n.1 > 0.0),
        "{names:?}"
    );
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(check.join("check.json")).unwrap()).unwrap();
    let first = &c["edits"][0];
    let (model, checked) = (
        PathBuf::from(first["model"].as_str().unwrap()),
        PathBuf::from(first["edited"].as_str().unwrap()),
    );
    // The check edits are the editor's one inference as trained (step 1), which the peer
    // reproduces; `edit --step 1` makes that edit whatever step search the editor does.
    let by_cli = dir.path().join("by-cli.safetensors");
    ok(&edit(
        &editor,
        &model,
        &by_cli,
        &["--sparsity", "0.9", "--max-drop", "1", "--step", "1"],
    ));
    let load = |f: &Path| regop::io::model::Model::load(f).unwrap().flat_params();
    assert_eq!(load(&checked), load(&by_cli));
    assert_ne!(load(&checked), load(&model));
    let st = std::fs::read(check.join("check-train.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    let grads: Vec<f32> = st
        .tensor("grads")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(grads.iter().all(|g| g.is_finite()) && grads.iter().any(|g| *g != 0.0));
    assert_eq!(st.tensor("x").unwrap().shape()[0], 64);

    // Minimisation: on the held-out validation models, training lowers the editor's divergence
    // from the original models below the trivial edit's (the untrained editor: zeroed columns
    // with their means folded into the biases), and the checkpoint kept is the most accurate
    // validation; every test model's removed columns are zero.
    ok(&regop(&[
        "--json",
        "train",
        "--zoo",
        p(&z),
        "--requirement",
        "minimise",
        "--steps",
        "150",
        "--eval-every",
        "50",
    ]));
    let editor = z.join("editor-minimise/editor.safetensors");
    // The last checkpoint holds the whole history.
    let (_, meta) = regop::workflows::edit::checkpoint::load_editor(
        &regop::Device::cpu(),
        &z.join("editor-minimise/last.safetensors"),
    )
    .unwrap();
    let history: Vec<regop::workflows::train::Validation> =
        serde_json::from_str(&meta["history"]).unwrap();
    let best: regop::workflows::train::Validation = serde_json::from_str(&meta["best"]).unwrap();
    let trained = history[1..]
        .iter()
        .map(|v| v.jsd)
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "minimise: validation JSD {:.5} (trivial edit) -> {trained:.5} (trained); kept step {} (accuracy {:.4})",
        history[0].jsd, best.step, best.accuracy
    );
    assert_eq!(history[0].step, 0);
    assert_eq!(history.len(), 4);
    assert!(
        trained < history[0].jsd,
        "training did not improve on the trivial edit"
    );
    let most_accurate = history
        .iter()
        .map(|v| v.accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(best.accuracy, most_accurate, "{history:?}");
    let r = ok(&regop(&[
        "--json",
        "compare",
        "--zoo",
        p(&z),
        "--requirement",
        "minimise",
        "--drop",
        "group,proxy_num",
        "--editor",
        p(&editor),
        "--ft-epochs",
        "1",
    ]));
    assert_eq!(median_of(&r, "editor", "satisfied"), 1.0);

    // `regop edit`: verified before -> after, exit 0 when met; the file loads as a model.
    let model = z.join("model-00000.safetensors");
    let out = dir.path().join("edited.safetensors");
    let e = edit(&editor, &model, &out, &["--drop", "proxy_num"]);
    assert_eq!(
        e.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );
    let text = String::from_utf8_lossy(&e.stdout);
    assert!(text.contains("->") && text.contains("[met]"), "{text}");
    // Dropping x1 costs far more than the 2 points --max-drop allows by default: exit 1, the
    // line says what missed, and nothing is written unless --write-missed, whose file records
    // the miss. A looser --max-drop lets the same edit through.
    let missed = dir.path().join("missed.safetensors");
    let e = edit(&editor, &model, &missed, &["--drop", "x1"]);
    assert_eq!(
        e.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );
    let text = String::from_utf8_lossy(&e.stdout);
    assert!(
        text.contains("MISSED")
            && text.contains("test accuracy fell")
            && text.contains("not written"),
        "{text}"
    );
    assert!(!missed.exists(), "a missed edit is not written");
    let e = edit(
        &editor,
        &model,
        &missed,
        &["--drop", "x1", "--write-missed"],
    );
    assert_eq!(e.status.code(), Some(1));
    let kept = regop::io::model::Model::load(&missed).unwrap();
    let record: serde_json::Value = serde_json::from_str(&kept.metadata["regop_edit"]).unwrap();
    assert_eq!(record["met"], false, "{record}");
    let e = edit(
        &editor,
        &model,
        &missed,
        &["--drop", "x1", "--max-drop", "0.5", "--force"],
    );
    assert_eq!(
        e.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&e.stdout)
    );
    let m = regop::io::model::Model::load(&out).unwrap();
    let norms = m.input_column_norms();
    // proxy_num is column 2 (group's one-hot columns are 0 and 1).
    assert_eq!(norms[2], 0.0);
    assert!(norms.iter().enumerate().all(|(c, n)| c == 2 || *n > 0.0));
    // A directory of models in one call.
    let batch = dir.path().join("batch");
    std::fs::create_dir(&batch).unwrap();
    for i in 0..3 {
        let f = format!("model-0000{i}.safetensors");
        std::fs::copy(z.join(&f), batch.join(&f)).unwrap();
    }
    let edited_dir = dir.path().join("edited");
    let e = regop(&[
        "--json",
        "edit",
        "--editor",
        p(&editor),
        "--batch",
        p(&batch),
        "--out",
        p(&edited_dir),
        "--drop",
        "group",
        "--max-drop",
        "0.2",
    ]);
    let outcomes = ok(&e);
    assert_eq!(outcomes.as_array().unwrap().len(), 3);
    for i in 0..3 {
        let m =
            regop::io::model::Model::load(&edited_dir.join(format!("model-0000{i}.safetensors")))
                .unwrap();
        assert_eq!(m.input_column_norms()[0], 0.0);
    }
    // A feature budget: the editor picks which features to drop, keeping at most 6 of 11.
    let kf = dir.path().join("budget.safetensors");
    let e = edit(
        &editor,
        &model,
        &kf,
        &[
            "--json",
            "--keep-features",
            "6",
            "--drop",
            "group",
            "--max-drop",
            "0.5",
        ],
    );
    let o = ok(&e);
    let dropped: Vec<String> = o[0]["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(dropped.len(), 5, "{dropped:?}");
    assert_eq!(dropped[0], "group");
    let (_, meta) =
        regop::workflows::edit::checkpoint::load_editor(&regop::Device::cpu(), &editor).unwrap();
    let schema: regop::io::data::Schema = serde_json::from_str(&meta["schema"]).unwrap();
    let norms = regop::io::model::Model::load(&kf)
        .unwrap()
        .input_column_norms();
    for f in &schema.features {
        let zero = norms[f.start..f.start + f.width].iter().all(|n| *n == 0.0);
        assert_eq!(zero, dropped.contains(&f.name), "feature {}", f.name);
    }
    // Bad requests: exit 2, one line, no output file.
    let out2 = dir.path().join("never.safetensors");
    for args in [
        vec!["--drop", "no_such_feature"],
        vec!["--sparsity", "0.5"],
        vec![],
    ] {
        let e = edit(&editor, &model, &out2, &args);
        assert_eq!(e.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&e.stderr)
                .trim()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1
        );
        assert!(!out2.exists());
    }
    // The input is never overwritten, and an existing output needs --force.
    let e = edit(&editor, &model, &model, &["--drop", "group", "--force"]);
    assert_eq!(e.status.code(), Some(2));
    let e = edit(&editor, &model, &out, &["--drop", "group"]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("--force"));
    // A model of other data is refused.
    let other = dir.path().join("other.safetensors");
    let shape = regop::networks::mlp::MlpShape::new(
        &[5, 4, 1],
        regop::engine::kernels::activation::Activation::Relu,
    );
    let params = regop::networks::mlp::init_params(&shape, 1);
    let mm = regop::io::model::Model::load(&model).unwrap();
    let mut wrong = mm.clone();
    wrong.layers = vec![
        regop::io::model::Linear {
            name: "0".into(),
            out_dim: 4,
            in_dim: 5,
            weight: params[..20].to_vec(),
            bias: Some(params[20..24].to_vec()),
        },
        regop::io::model::Linear {
            name: "2".into(),
            out_dim: 1,
            in_dim: 4,
            weight: params[24..28].to_vec(),
            bias: Some(params[28..29].to_vec()),
        },
    ];
    wrong.features = None;
    wrong.metadata.clear();
    wrong.save(&other, false).unwrap();
    let e = edit(&editor, &other, &out2, &["--drop", "group"]);
    assert_eq!(e.status.code(), Some(2));
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        err.contains("other.safetensors") && err.contains("input columns"),
        "{err}"
    );
    assert!(!out2.exists());
}

#[test]
fn a_killed_training_resumes_to_the_same_editor() {
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "4");
    let args = |out: &Path| -> Vec<String> {
        [
            "--device",
            "cpu",
            "--seed",
            "2",
            "train",
            "--zoo",
            p(&z),
            "--requirement",
            "fairness",
            "--steps",
            "60",
            "--eval-every",
            "10",
            "--out",
            p(out),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    ok(&Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args(&whole))
        .output()
        .unwrap());

    let mut child = Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args(&cut))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let last = cut.join("last.safetensors");
    let t0 = std::time::Instant::now();
    while !last.exists() {
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (_, meta) =
        regop::workflows::edit::checkpoint::load_editor(&regop::Device::cpu(), &last).unwrap();
    let step: usize = meta["step"].parse().unwrap();
    assert!(step < 60, "the run finished before it could be interrupted");

    // Without --resume the existing editor is not replaced; with it, training completes.
    let again = Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args(&cut))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    ok(&Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args(&cut))
        .arg("--resume")
        .output()
        .unwrap());
    for name in ["editor.safetensors", "last.safetensors"] {
        assert!(
            std::fs::read(whole.join(name)).unwrap() == std::fs::read(cut.join(name)).unwrap(),
            "{name} differs after resuming from step {step}"
        );
    }
    // The fairness checkpoint kept is the validation with the most models compliant after the
    // search, the lowest loss among those. The editor (by default a shift editor) learns: its
    // divergence from the shifted originals falls below the trivial edit's (the untrained
    // editor, which moves only the output bias by the mean shift).
    let (_, meta) = regop::workflows::edit::checkpoint::load_editor(
        &regop::Device::cpu(),
        &whole.join("last.safetensors"),
    )
    .unwrap();
    let history: Vec<regop::workflows::train::Validation> =
        serde_json::from_str(&meta["history"]).unwrap();
    let best: regop::workflows::train::Validation = serde_json::from_str(&meta["best"]).unwrap();
    assert_eq!(history.len(), 7);
    assert!(history
        .iter()
        .all(|v| (0.0..=1.0).contains(&v.compliant) && v.gap.is_finite()));
    // The gap after the search is measured: where every model is compliant, it is within the
    // bound (0.05) on average too.
    assert!(history.iter().any(|v| v.searched_gap > 0.0), "{history:?}");
    for v in &history {
        assert!(v.compliant < 1.0 || v.searched_gap <= 0.05, "{v:?}");
    }
    let top = history.iter().map(|v| v.compliant).fold(0.0, f64::max);
    let kept = history
        .iter()
        .filter(|v| v.compliant == top)
        .min_by(|a, b| a.loss.total_cmp(&b.loss))
        .unwrap();
    assert_eq!(best.step, kept.step, "{history:?}");
    let trained = history[1..]
        .iter()
        .map(|v| v.jsd)
        .fold(f64::INFINITY, f64::min);
    assert!(
        trained < history[0].jsd,
        "fairness: validation JSD {} (trivial edit) -> {trained} (trained)",
        history[0].jsd
    );
    // The shift editor edits with given group shifts or picks them for a gap bound; lambda
    // does not apply to it.
    let model = z.join("model-00001.safetensors");
    let out = dir.path().join("fair.safetensors");
    let editor = cut.join("editor.safetensors");
    let r = ok(&edit(
        &editor,
        &model,
        &out,
        &["--json", "--max-eo-gap", "1.0"],
    ));
    assert_eq!(r[0]["met"], true);
    assert_eq!(r[0]["shift"].as_array().unwrap().len(), 2);
    assert!(r[0]["requirement"]
        .as_str()
        .unwrap()
        .starts_with("EO difference"));
    let r = ok(&edit(
        &editor,
        &model,
        &out,
        &["--json", "--shift", "0.5,-0.25", "--force"],
    ));
    assert_eq!(r[0]["shift"], serde_json::json!([0.5, -0.25]));
    for bad in [
        &["--lambda", "2"][..],
        &["--shift", "0.5"],
        &["--shift", "0.5,x"],
    ] {
        let e = edit(&editor, &model, &out, bad);
        assert_eq!(e.status.code(), Some(2), "{bad:?}");
        assert!(!String::from_utf8_lossy(&e.stderr).contains("panicked"));
    }
    let e = edit(
        &editor,
        &model,
        &out,
        &["--shift", "0.1,0.1", "--max-eo-gap", "0.1"],
    );
    assert_eq!(e.status.code(), Some(2), "conflicting flags");
    // A penalty editor edits with a given lambda or searches one for a gap bound.
    let pen = dir.path().join("penalty");
    ok(&Command::new(env!("CARGO_BIN_EXE_regop"))
        .args([
            "--device",
            "cpu",
            "train",
            "--zoo",
            p(&z),
            "--requirement",
            "fairness",
            "--fair-target",
            "penalty",
            "--steps",
            "10",
            "--eval-every",
            "10",
            "--out",
            p(&pen),
        ])
        .output()
        .unwrap());
    let editor = pen.join("editor.safetensors");
    let r = ok(&edit(
        &editor,
        &model,
        &out,
        &["--json", "--max-eo-gap", "1.0", "--force"],
    ));
    assert_eq!(r[0]["met"], true);
    assert!(r[0]["lambda"].as_f64().unwrap() > 0.0);
    let r = ok(&edit(
        &editor,
        &model,
        &out,
        &["--json", "--lambda", "2", "--force"],
    ));
    assert_eq!(r[0]["lambda"].as_f64(), Some(2.0));
    let e = edit(&editor, &model, &out, &["--shift", "0.1,0.1", "--force"]);
    assert_eq!(e.status.code(), Some(2), "--shift on a penalty editor");
    let e = edit(
        &editor,
        &model,
        &out,
        &["--lambda", "2", "--max-eo-gap", "0.1"],
    );
    assert_eq!(e.status.code(), Some(2), "conflicting flags");
    let mut names: Vec<_> = std::fs::read_dir(&cut)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["editor.safetensors", "last.safetensors"],
        "no temporary files left"
    );
}

#[test]
fn the_demo_runs_end_to_end_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let r = regop(&[
        "demo",
        "--out",
        p(&out),
        "--models",
        "24",
        "--steps",
        "40",
        "--test-models",
        "2",
    ]);
    ok(&r);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("report:"), "{text}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for task in ["minimise", "fairness", "prune"] {
        assert!(report.contains(&format!("## {task}")), "{report}");
        assert!(out.join(format!("compare-{task}/results.json")).exists());
        assert!(out
            .join(format!("zoo/editor-{task}/editor.safetensors"))
            .exists());
    }
    assert_eq!(report.matches("| editor (").count(), 3, "{report}");
    assert_eq!(
        report.matches("| editor, untrained (").count(),
        3,
        "{report}"
    );
    // The closing summary: per requirement, the editor against the best rule and reference.
    for line in [
        "- minimise: editor",
        "- fairness: editor",
        "- prune @ sparsity 0.8: editor",
    ] {
        assert!(report.contains(line), "{line} in {report}");
    }
    // The prune editor starts from the reconstruction rule its validation models chose
    // (OBS reconstruction where they chose neither).
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("compare-prune/results.json")).unwrap(),
    )
    .unwrap();
    let chosen = results["choices"][0]["rule"].as_str().unwrap().to_string();
    let ef = regop::workflows::edit::checkpoint::EditorFile::load(
        &regop::Device::cpu(),
        &out.join("zoo/editor-prune/editor.safetensors"),
    )
    .unwrap();
    let want = match chosen.as_str() {
        "LAMP + reconstruction" => regop::requirement::PruneScore::LampReconstruction,
        _ => regop::requirement::PruneScore::Obs,
    };
    assert_eq!(ef.spec.prune_score, want, "chosen on validation: {chosen}");
    // A second run needs --force.
    let again = regop(&["demo", "--out", p(&out)]);
    assert_eq!(again.status.code(), Some(2));
}

/// Training models stream from disk: the trainer keeps their shapes and paths, and a step reads
/// the models it draws. Overwriting every training model after the trainer started makes the
/// next step fail on the file it drew (it would succeed if the weights had been loaded up
/// front).
#[test]
fn training_models_are_read_when_a_step_draws_them() {
    use regop::workflows::train::{TrainConfig, Trainer};
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "5");
    let (manifest, data) = manifest_and_data(&z);
    let cfg = TrainConfig {
        steps: 2,
        ..TrainConfig::new(regop::requirement::Requirement::Prune)
    };
    let trainer = Trainer::new(&cfg, &z, &manifest, &data).unwrap();
    let dev = regop::Device::cpu();
    let mut editor = regop::networks::editor::Editor::new(&dev, &trainer.editor_cfg, 0).unwrap();
    trainer.step(&dev, &mut editor, 0).unwrap();
    for r in manifest
        .models
        .iter()
        .filter(|r| r.split == regop::workflows::zoo::ModelSplit::Train)
    {
        std::fs::write(z.join(&r.file), b"not a model any more").unwrap();
    }
    let err = trainer.step(&dev, &mut editor, 1).unwrap_err().to_string();
    assert!(
        err.contains("model-") && err.contains("safetensors"),
        "{err}"
    );
}

/// An editor that reads data and is trained with labels in its loss reads their gradient too:
/// its spec carries the training's label weight, one without signals or labels does not, and
/// an editor saved before the field existed reads the JSD's gradient alone.
#[test]
fn the_signals_carry_the_label_weight_the_editor_is_trained_with() {
    use regop::requirement::{EditSpec, Requirement};
    use regop::workflows::train::{TrainConfig, Trainer};
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "7");
    let (manifest, data) = manifest_and_data(&z);
    let weight_of = |signals: bool, label_weight: f32| {
        let cfg = TrainConfig {
            signals,
            label_weight,
            ..TrainConfig::new(Requirement::Minimise)
        };
        let trainer = Trainer::new(&cfg, &z, &manifest, &data).unwrap();
        trainer.spec.signal_label_weight
    };
    assert_eq!(weight_of(true, 0.5), 0.5);
    assert_eq!(weight_of(true, 0.0), 0.0);
    assert_eq!(weight_of(false, 0.5), 0.0);
    let mut saved = serde_json::to_value(EditSpec {
        signal_label_weight: 0.5,
        ..Trainer::new(
            &TrainConfig::new(Requirement::Minimise),
            &z,
            &manifest,
            &data,
        )
        .unwrap()
        .spec
    })
    .unwrap();
    saved.as_object_mut().unwrap().remove("signal_label_weight");
    let old: EditSpec = serde_json::from_value(saved).unwrap();
    assert_eq!(old.signal_label_weight, 0.0);
}

/// `--sparsity-grid N`: every training ask's sparsity is one of N evenly spaced points of the
/// range, each drawn; without it, sparsities take any value of the range.
#[test]
fn a_sparsity_grid_draws_only_its_points() {
    use rand::SeedableRng;
    use regop::workflows::train::{draw_ask, grid_point, TrainConfig};
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "6");
    let (_, data) = manifest_and_data(&z);
    let points: Vec<f32> = (0..4).map(|k| grid_point((0.8, 0.95), 4, k)).collect();
    assert_eq!(points[0], 0.8);
    assert!((points[1] - 0.85).abs() < 1e-6 && (points[2] - 0.9).abs() < 1e-6);
    assert_eq!(points[3], 0.95);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    for grid in [Some(4), None] {
        let cfg = TrainConfig {
            sparsity: (0.8, 0.95),
            sparsity_grid: grid,
            ..TrainConfig::new(regop::requirement::Requirement::Prune)
        };
        let mut seen: Vec<u32> = (0..200)
            .map(|_| draw_ask(&mut rng, &cfg, &data.schema).sparsity)
            .inspect(|s| assert!((0.8..=0.95).contains(s), "{s} outside the range"))
            .map(f32::to_bits)
            .collect();
        seen.sort();
        seen.dedup();
        match grid {
            Some(_) => {
                let mut want: Vec<u32> = points.iter().map(|p| p.to_bits()).collect();
                want.sort();
                assert_eq!(seen, want, "the grid's points, each drawn");
            }
            None => assert!(seen.len() > 100, "{} distinct sparsities", seen.len()),
        }
    }
    // Refused where it means nothing.
    let z = p(&z);
    for bad in [
        vec!["--requirement", "minimise", "--sparsity-grid", "4"],
        vec!["--requirement", "prune", "--sparsity-grid", "0"],
    ] {
        let mut args = vec!["train", "--zoo", z, "--steps", "1"];
        args.extend(bad.iter().copied());
        let out = regop(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--sparsity-grid"),
            "{bad:?}"
        );
    }
}

/// `--resume` with more `--steps` trains a finished run longer, to the same editor as a run
/// started with those steps; fewer steps than were done, or other flags, are refused.
/// `regop --seed 3 train` of a minimisation editor on `zoo` for `steps` steps, validated every
/// 10, into `out`.
fn train_minimise(zoo: &Path, out: &Path, steps: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "--seed",
        "3",
        "train",
        "--zoo",
        p(zoo),
        "--requirement",
        "minimise",
        "--steps",
        steps,
        "--eval-every",
        "10",
        "--out",
        p(out),
    ];
    args.extend(extra);
    regop(&args)
}

#[test]
fn a_finished_training_resumed_with_more_steps_is_the_longer_run() {
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "7");
    let train = |out: &Path, steps: &str, extra: &[&str]| train_minimise(&z, out, steps, extra);
    let (long, extended) = (dir.path().join("long"), dir.path().join("extended"));
    ok(&train(&long, "40", &[]));
    ok(&train(&extended, "20", &[]));
    ok(&train(&extended, "40", &["--resume"]));
    assert!(
        std::fs::read(long.join("last.safetensors")).unwrap()
            == std::fs::read(extended.join("last.safetensors")).unwrap(),
        "20 steps then 20 more differ from 40 steps"
    );
    // The best checkpoint: the same editor and history; it records the flags it was saved
    // under, which for an early best were the shorter run's.
    let dev = regop::Device::cpu();
    let load = |dir: &Path| {
        let (ed, mut meta) =
            regop::workflows::edit::checkpoint::load_editor(&dev, &dir.join("editor.safetensors"))
                .unwrap();
        meta.remove("train");
        (dev.read_all(&ed.params).unwrap(), meta)
    };
    assert!(load(&long) == load(&extended), "the best editors differ");
    for (steps, extra) in [
        ("30", &["--resume"][..]),
        ("60", &["--resume", "--lr", "0.01"]),
    ] {
        let out = train(&extended, steps, extra);
        assert_eq!(out.status.code(), Some(2), "{steps} {extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("other settings"), "{err}");
    }
}

/// `--average`: training runs as without it (the same parameters and optimiser state), while
/// validation judges and the kept checkpoint holds the parameters' moving average, which the
/// last checkpoint carries so that a resumed run continues it.
#[test]
fn an_averaging_training_keeps_the_average_and_resumes_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "7");
    // A prune editor: its checkpoints are chosen by validation loss, which falls here.
    let train = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec![
            "--seed",
            "3",
            "train",
            "--zoo",
            p(&z),
            "--requirement",
            "prune",
        ];
        args.extend(["--steps", steps, "--eval-every", "10", "--out", p(out)]);
        args.extend(extra);
        regop(&args)
    };
    let (plain, averaged, extended) = (
        dir.path().join("plain"),
        dir.path().join("averaged"),
        dir.path().join("extended"),
    );
    ok(&train(&plain, "40", &[]));
    let out = train(&averaged, "40", &["--average", "0.9"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("moving average of the parameters (decay 0.9)"),
        "{said}"
    );
    ok(&out);
    ok(&train(&extended, "20", &["--average", "0.9"]));
    ok(&train(&extended, "40", &["--resume", "--average", "0.9"]));
    let last = |dir: &Path| std::fs::read(dir.join("last.safetensors")).unwrap();
    assert!(
        last(&averaged) == last(&extended),
        "20 averaged steps then 20 more differ from 40"
    );
    let dev = regop::Device::cpu();
    let load =
        |path: PathBuf| regop::workflows::edit::checkpoint::load_editor(&dev, &path).unwrap();
    let read = |b: &regop::Buf| dev.read_all(b).unwrap();
    let (raw, plain_meta) = load(plain.join("last.safetensors"));
    let (avg, meta) = load(averaged.join("last.safetensors"));
    assert!(raw.average.is_none());
    assert_eq!(
        read(&raw.params),
        read(&avg.params),
        "averaging changed training"
    );
    assert_eq!(read(&raw.opt_state), read(&avg.opt_state));
    let average = read(avg.average.as_ref().expect("the average is saved"));
    assert_ne!(average, read(&avg.params));
    // What is validated is the average: the same steps score otherwise.
    let history = |meta: &std::collections::BTreeMap<String, String>| {
        serde_json::from_str::<Vec<regop::workflows::train::Validation>>(&meta["history"]).unwrap()
    };
    let (h_avg, h_plain) = (history(&meta), history(&plain_meta));
    assert_eq!(
        h_avg[0].loss, h_plain[0].loss,
        "the untrained editor differs"
    );
    assert_ne!(
        h_avg[4].loss, h_plain[4].loss,
        "step 40 validated the raw parameters"
    );
    // The kept editor is the average at its step (a run of that many steps ends on the same
    // average), without optimiser state to resume.
    let best: regop::workflows::train::Validation = serde_json::from_str(&meta["best"]).unwrap();
    assert!(best.step > 0, "the editor did not learn: {h_avg:?}");
    let short = dir.path().join("short");
    ok(&train(
        &short,
        &best.step.to_string(),
        &["--average", "0.9"],
    ));
    let (at_best, _) = load(short.join("last.safetensors"));
    let (kept, _) = load(averaged.join("editor.safetensors"));
    assert_eq!(read(&kept.params), read(at_best.average.as_ref().unwrap()));
    assert!(kept.average.is_none());
    for bad in ["1", "-0.1", "nan"] {
        let out = train(
            &dir.path().join("bad"),
            "40",
            &[&format!("--average={bad}")],
        );
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--average"), "{bad}: {err}");
        assert!(!dir.path().join("bad").exists(), "{bad}: files written");
    }
}

#[test]
fn a_finished_training_resumed_at_a_lower_rate_is_the_scheduled_run() {
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "7");
    let train = |out: &Path, steps: &str, extra: &[&str]| train_minimise(&z, out, steps, extra);
    let last = |dir: &Path| std::fs::read(dir.join("last.safetensors")).unwrap();
    let (scheduled, constant, extended) = (
        dir.path().join("scheduled"),
        dir.path().join("constant"),
        dir.path().join("extended"),
    );
    let out = train(&scheduled, "40", &["--lr-schedule", "20:0.0002"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("2e-4 from step 20"), "{said}");
    ok(&out);
    ok(&train(&constant, "40", &[]));
    ok(&train(&extended, "20", &[]));
    ok(&train(
        &extended,
        "40",
        &["--resume", "--lr-schedule", "20:0.0002"],
    ));
    assert!(
        last(&scheduled) == last(&extended),
        "20 steps then 20 at a lower rate differ from the scheduled 40"
    );
    assert!(
        last(&scheduled) != last(&constant),
        "the schedule changed nothing"
    );
    // A schedule that changes steps already done is another run.
    let out = train(&extended, "60", &["--resume", "--lr-schedule", "10:0.0002"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("other settings"));
    for bad in [
        ["--lr-schedule", "20"],
        ["--lr-schedule", "20:0"],
        ["--lr-schedule", "20:x"],
        ["--lr-schedule", "20:1e-4,10:1e-5"],
        ["--lr", "0"],
    ] {
        let out = train(&dir.path().join("bad"), "40", &bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
        assert!(!dir.path().join("bad").exists(), "{bad:?}: files written");
    }
}

/// Training measures, on its validation models, whether edits should pick their step along the
/// editor's edit on training rows, and records it: forced on or off, or as the measure says.
/// `edit` then picks a step per model, reports it and writes the library's search result, or
/// edits at the step as trained.
#[test]
fn training_records_the_step_search_and_edit_follows_it() {
    use regop::workflows::edit::checkpoint::EditorFile;
    use regop::workflows::edit::search::{search_steps, STEP_GRID};
    use regop::workflows::zoo::ModelSplit;
    let dir = tempfile::tempdir().unwrap();
    let z = zoo(dir.path(), "11");
    let (manifest, data) = manifest_and_data(&z);
    let test = manifest
        .models
        .iter()
        .find(|r| r.split == ModelSplit::Test)
        .expect("a test model");
    let model = z.join(&test.file);
    let dev = regop::Device::cpu();
    for mode in ["on", "off", "auto"] {
        let out = dir.path().join(mode);
        let flags = ["--step-search", mode, "--val-models", "2"];
        ok(&train_minimise(&z, &out, "20", &flags));
        let editor = out.join("editor.safetensors");
        let mut ef = EditorFile::load(&dev, &editor).unwrap();
        let found = ef
            .step_search
            .expect("a minimise editor measures its step search");
        // Measured on every validation model of the zoo, not only the two that judge
        // checkpoints.
        let val = manifest
            .models
            .iter()
            .filter(|r| r.split == ModelSplit::Val);
        assert_eq!(found.models, val.count(), "{found:?}");
        assert!(found.models > 2 && found.gain.is_finite(), "{found:?}");
        let on = match mode {
            "on" => true,
            "off" => false,
            _ => found.gain > 0.0,
        };
        assert_eq!(found.on, on, "{mode}: {found:?}");

        // `bench` times the edit with its step picked exactly when the editor picks it.
        let b = ok(&regop(&[
            "--json",
            "bench",
            "--editor",
            p(&editor),
            "--zoo",
            p(&z),
            "--batches",
            "1",
            "--iters",
            "1",
            "--train-rows",
            "16",
        ]));
        let timed = b["results"].as_array().unwrap().iter();
        let picked = timed.filter(|r| r["name"] == regop::app::bench_edit::STEP_PICKED);
        assert_eq!(picked.count(), on as usize, "{mode}");

        let edited = dir.path().join(format!("{mode}.safetensors"));
        let said = ok(&edit(
            &editor,
            &model,
            &edited,
            &["--drop", "proxy_num", "--json"],
        ));
        let step = &said[0]["step"];
        let written = regop::io::model::Model::load(&edited)
            .unwrap()
            .flat_params();
        ef.attach_data(&data);
        let m = regop::io::model::Model::load(&model).unwrap();
        let (shape, params) = (m.shape(), m.flat_params());
        let ask = regop::requirement::Ask {
            removed: regop::requirement::removed_columns(&ef.schema, &["proxy_num".into()])
                .unwrap(),
            ..regop::requirement::Ask::new(ef.schema.n_columns())
        };
        let models = [(&shape, params.as_slice())];
        let (e, spec, cols) = (&ef.editor, &ef.spec, &ef.columns);
        let bad = edit(
            &editor,
            &model,
            &edited,
            &["--drop", "proxy_num", "--step=-1"],
        );
        assert_eq!(bad.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("--step must be"));
        if on {
            let s = step.as_f64().expect("a step picked") as f32;
            assert!(STEP_GRID.contains(&s), "{s}");
            let searched = search_steps(&dev, e, spec, cols, &models, &[ask], &data.train).unwrap();
            assert_eq!(searched[0].0, s);
            assert!(
                written == searched[0].1,
                "{mode}: the written edit is not the search's"
            );
        } else {
            assert!(step.is_null(), "{mode}: {step}");
            let plain = regop::workflows::edit::edit_models(&dev, e, spec, &models, &[ask], cols);
            assert!(
                written == plain.unwrap()[0],
                "{mode}: the written edit is not step 1's"
            );
        }
    }

    // `compare --editor-step` judges the editor at a fixed step: the editor that picks its step,
    // held at step 1, edits as the one that does not (they share their parameters); at step 0
    // it edits as the untrained editor, the rule it starts from.
    let compare = |editor: &str, report: &Path, extra: &[&str]| -> Output {
        let editor = dir.path().join(editor).join("editor.safetensors");
        let mut args = vec![
            "--json",
            "compare",
            "--zoo",
            p(&z),
            "--requirement",
            "minimise",
        ];
        args.extend(["--drop", "proxy_num", "--no-fine-tune", "--force"]);
        args.extend(["--out", p(report), "--editor", p(&editor)]);
        regop(&[args.as_slice(), extra].concat())
    };
    // Per test model, (model, accuracy, agreement) of the editor and of the untrained editor.
    let judged = |editor: &str, extra: &[&str]| -> [Vec<(u64, f64, f64)>; 2] {
        let report = dir.path().join(format!("compare-{editor}"));
        let r = ok(&compare(editor, &report, extra));
        let md = std::fs::read_to_string(report.join("report.md")).unwrap();
        assert_eq!(md.contains("as asked (--editor-step)"), !extra.is_empty());
        ["editor", "untrained-editor"].map(|kind| {
            let rows = r["rows"].as_array().unwrap().iter();
            rows.filter(|x| x["kind"] == kind)
                .map(|x| {
                    let model = x["model"].as_u64().unwrap();
                    (
                        model,
                        x["accuracy"].as_f64().unwrap(),
                        x["agreement"].as_f64().unwrap(),
                    )
                })
                .collect()
        })
    };
    let [held, _] = judged("on", &["--editor-step", "1"]);
    let [plain, _] = judged("off", &[]);
    assert!(!held.is_empty());
    assert_eq!(held, plain);
    let [at_start, untrained] = judged("on", &["--editor-step", "0"]);
    assert_eq!(at_start, untrained);
    assert_ne!(held, untrained, "training changed no edit");
    for bad in ["--editor-step=-1", "--editor-step=inf"] {
        let report = dir.path().join("bad-step");
        let out = compare("on", &report, &[bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--editor-step must be"), "{bad}: {err}");
        assert!(!report.exists(), "{bad}: files written");
    }
}

/// Minimise editors of images remove a rectangle of pixels per training ask: never empty,
/// one side up to the whole image and the other up to half of it, so that strips of whole
/// rows or columns are drawn in both orientations as well as patches.
#[test]
fn image_asks_remove_rectangles_and_whole_strips() {
    use rand::SeedableRng;
    use regop::io::data::{Feature, FeatureKind, Schema};
    use regop::workflows::train::{draw_ask, TrainConfig};
    let side = 8;
    let features = (0..side * side)
        .map(|i| Feature {
            name: format!("p{}_{}", i / side, i % side),
            kind: FeatureKind::Numeric {
                mean: 0.0,
                std: 1.0,
            },
            start: i,
            width: 1,
        })
        .collect();
    let schema = Schema {
        dataset: "pixels".into(),
        features,
        label: "digit".into(),
        positive: vec![],
        sensitive: None,
        sensitive_rule: None,
        groups: vec![],
        classes: (0..10).map(|c| c.to_string()).collect(),
    };
    assert_eq!(schema.image_side(), Some(side));
    let cfg = TrainConfig::new(regop::requirement::Requirement::Minimise);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    let (mut tall, mut wide) = (false, false);
    for _ in 0..400 {
        let removed = draw_ask(&mut rng, &cfg, &schema).removed;
        let cells: Vec<(usize, usize)> = (0..side * side)
            .filter(|&i| removed[i])
            .map(|i| (i / side, i % side))
            .collect();
        assert!(!cells.is_empty(), "nothing removed");
        let rows =
            cells.iter().map(|c| c.0).max().unwrap() - cells.iter().map(|c| c.0).min().unwrap() + 1;
        let cols =
            cells.iter().map(|c| c.1).max().unwrap() - cells.iter().map(|c| c.1).min().unwrap() + 1;
        assert_eq!(
            cells.len(),
            rows * cols,
            "not a filled rectangle: {cells:?}"
        );
        assert!(
            rows.min(cols) <= side / 2,
            "{rows} x {cols}: both sides over half"
        );
        tall |= rows == side;
        wide |= cols == side;
    }
    assert!(
        tall && wide,
        "whole columns drawn: {tall}, whole rows drawn: {wide}"
    );
}

/// Off a terminal (stderr captured, as in a log file) long work says how far it is: `zoo` a
/// line at each tenth of its model-epochs, `train` a line per validation with the step out of
/// the total; `--verbose` keeps the zoo's lines; `--quiet` silences both.
#[test]
fn long_work_reports_progress_in_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let z = dir.path().join("zoo");
    for verbose in [true, false] {
        let mut zoo_args = vec!["zoo", "--count", "12", "--widths", "16", "--epochs", "3"];
        zoo_args.extend(["--force", "--out", p(&z)]);
        if verbose {
            zoo_args.insert(0, "-v");
        }
        let out = regop(&zoo_args);
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        let tenths: Vec<u32> = err
            .lines()
            .filter_map(|l| l.split_once("% of the model-epochs"))
            .map(|(pct, _)| pct.parse().unwrap())
            .collect();
        assert_eq!(tenths.last(), Some(&100), "verbose {verbose}: {err}");
        assert!(tenths.windows(2).all(|w| w[0] < w[1]), "{err}");
    }

    let ed = dir.path().join("ed");
    let train = |quiet: bool| {
        let mut args = vec![
            "train",
            "--zoo",
            p(&z),
            "--requirement",
            "prune",
            "--steps",
            "20",
        ];
        args.extend(["--eval-every", "10", "--force", "--out", p(&ed)]);
        if quiet {
            args.insert(0, "-q");
        }
        let out = regop(&args);
        ok(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = train(false);
    // Validation lines: "step N/20 ...", not the step search's line.
    let steps: Vec<&str> = err.lines().filter(|l| l.contains("/20 (")).collect();
    assert_eq!(steps.len(), 3, "{err}");
    for (line, at) in steps
        .iter()
        .zip(["step 0/20 ", "step 10/20 ", "step 20/20 "])
    {
        assert!(line.starts_with(at) && line.contains("val loss"), "{line}");
    }
    // No step has run at the first validation: no training loss to report yet.
    assert!(!steps[0].contains("train loss") && steps[1].contains("train loss"));
    let err = train(true);
    assert!(
        !err.contains("/20 (") && !err.contains("model-epochs"),
        "{err}"
    );
}
