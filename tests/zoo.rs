//! Populations of models on the built-in synthetic data: training, the directory format,
//! shards and merge, evaluation, and the GPU path against the CPU.

mod common;
use regop::io::data::loaders::{load, DataOptions, DatasetName};
use regop::io::model::Model;
use regop::workflows::zoo::build::{plan, train_group};
use regop::workflows::zoo::{read_manifest, to_model, ZooConfig};
use regop::Device;
use std::path::Path;
use std::process::Command;

fn regop(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_small_zoo_trains_and_every_model_beats_the_majority_class() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zoo");
    let o = out.to_str().unwrap();
    let r = ok(&regop(&[
        "--device", "cpu", "--json", "zoo", "--count", "10", "--rows", "6000", "--epochs", "3-6",
        "--out", o,
    ]));
    assert_eq!(r["models"], 10);
    let m = read_manifest(&out).unwrap();
    assert_eq!(m.models.len(), 10);
    let data = load(
        DatasetName::Synthetic,
        None,
        &DataOptions {
            rows: 6000,
            ..Default::default()
        },
        0,
    )
    .unwrap();
    let majority = regop::requirement::metrics::majority_accuracy(&data.test.y);
    let mut archs = std::collections::BTreeSet::new();
    for rec in &m.models {
        let acc = rec.metrics["test"].accuracy;
        assert!(
            acc > majority + 0.1,
            "model {} test accuracy {acc} vs majority {majority}",
            rec.id
        );
        archs.insert(rec.dims.clone());
        // Each file is a PyTorch nn.Sequential state dict whose schema matches the manifest.
        let model = Model::load(&out.join(&rec.file)).unwrap();
        assert_eq!(model.shape().dims, rec.dims);
        assert_eq!(
            model
                .layers
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>(),
            (0..rec.dims.len() - 1)
                .map(|l| (2 * l).to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            model.features.as_ref().unwrap(),
            &data.schema.column_names()
        );
        // The recorded metrics are the model's: re-evaluate from the file.
        let e = ok(&regop(&[
            "--device",
            "cpu",
            "--json",
            "eval",
            "--model",
            out.join(&rec.file).to_str().unwrap(),
        ]));
        assert_eq!(
            e["metrics"]["accuracy"].as_f64().unwrap(),
            acc,
            "model {}",
            rec.id
        );
    }
    assert!(archs.len() >= 3, "architectures should vary: {archs:?}");
    let splits: std::collections::BTreeSet<_> =
        m.models.iter().map(|r| format!("{:?}", r.split)).collect();
    assert_eq!(splits.len(), 3, "train/val/test models: {splits:?}");
    // An existing zoo is not replaced without --force.
    assert_eq!(
        regop(&["--device", "cpu", "zoo", "--count", "2", "--out", o])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn model_files_read_back_bit_identically() {
    let data = load(
        DatasetName::Synthetic,
        None,
        &DataOptions {
            rows: 1000,
            ..Default::default()
        },
        4,
    )
    .unwrap();
    let mut cfg = ZooConfig::new(3, 4);
    cfg.epochs = (1, 2);
    cfg.batch_size = 64;
    let mut recs = plan(&cfg, data.schema.n_columns(), 1);
    recs.iter_mut().for_each(|r| r.dims = recs_dims(&data));
    let params = train_group(&Device::cpu(), &data, &mut recs, &mut |_, _| {}).unwrap();
    let manifest = regop::workflows::zoo::Manifest {
        format: regop::workflows::zoo::FORMAT.into(),
        dataset: "synthetic".into(),
        loader: DatasetName::Synthetic,
        data_options: DataOptions::default(),
        data_seed: 4,
        schema: data.schema.clone(),
        config: cfg,
        shard: None,
        models: recs.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let np = params.len() / 3;
    for (z, r) in recs.iter().enumerate() {
        let path = dir.path().join(&r.file);
        to_model(r, &params[z * np..(z + 1) * np], &manifest)
            .save(&path, false)
            .unwrap();
        let back = Model::load(&path).unwrap();
        let bits: Vec<u32> = back.flat_params().iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = params[z * np..(z + 1) * np]
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(bits, want, "model {}", r.id);
    }
}

fn recs_dims(data: &regop::io::data::Dataset) -> Vec<usize> {
    vec![data.schema.n_columns(), 12, 1]
}

#[test]
fn shards_merge_into_the_same_zoo() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let common = [
        "--device", "cpu", "--seed", "3", "zoo", "--count", "6", "--rows", "1500", "--epochs",
        "2-3", "--widths", "16,32",
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = common.to_vec();
        a.extend_from_slice(extra);
        let out = regop(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (whole, s0, s1, merged) = (p("whole"), p("s0"), p("s1"), p("merged"));
    run(&["--out", &whole]);
    run(&["--out", &s0, "--shard", "0/2"]);
    run(&["--out", &s1, "--shard", "1/2"]);
    // A missing shard is refused.
    assert_eq!(
        regop(&["zoo", "merge", "--out", &merged, &s0])
            .status
            .code(),
        Some(2)
    );
    let out = regop(&["zoo", "merge", "--out", &merged, &s0, &s1]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mw, mm) = (
        read_manifest(Path::new(&whole)).unwrap(),
        read_manifest(Path::new(&merged)).unwrap(),
    );
    assert_eq!(mw, mm, "merged manifest differs from the whole zoo's");
    for r in &mw.models {
        let a = std::fs::read(Path::new(&whole).join(&r.file)).unwrap();
        let b = std::fs::read(Path::new(&merged).join(&r.file)).unwrap();
        assert!(
            a == b,
            "model {} differs between the whole zoo and the merged shards",
            r.id
        );
    }
}

#[test]
fn eval_refuses_data_that_does_not_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("z");
    ok(&regop(&[
        "--device",
        "cpu",
        "--json",
        "zoo",
        "--count",
        "1",
        "--rows",
        "800",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]));
    let german = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/german");
    let r = regop(&[
        "eval",
        "--model",
        out.join("model-00000.safetensors").to_str().unwrap(),
        "--dataset",
        "german",
        "--data",
        german.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("model-00000.safetensors") && err.contains("input columns"),
        "{err}"
    );
}

#[test]
fn gpu_training_agrees_with_cpu() {
    let gpu = common::gpu();
    let data = load(
        DatasetName::Synthetic,
        None,
        &DataOptions {
            rows: 600,
            ..Default::default()
        },
        9,
    )
    .unwrap();
    let mut cfg = ZooConfig::new(3, 9);
    cfg.epochs = (1, 2);
    cfg.batch_size = 64;
    let base = plan(&cfg, data.schema.n_columns(), 1);
    let mut results = Vec::new();
    for dev in [Device::cpu(), gpu] {
        let mut recs = base.clone();
        recs.iter_mut().for_each(|r| r.dims = recs_dims(&data));
        let params = train_group(&dev, &data, &mut recs, &mut |_, _| {}).unwrap();
        results.push((params, recs));
    }
    let (pc, rc) = &results[0];
    let (pg, rg) = &results[1];
    let num: f64 = pc
        .iter()
        .zip(pg)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = pc.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    assert!(
        num / den < 1e-4,
        "GPU and CPU parameters differ by {:e}",
        num / den
    );
    for (a, b) in rc.iter().zip(rg) {
        assert!((a.metrics["test"].accuracy - b.metrics["test"].accuracy).abs() < 0.01);
    }
}

/// Kill `regop zoo` after its first batch, resume it, and get exactly the files of an
/// uninterrupted run.
#[test]
fn a_killed_zoo_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    let args = |out: &Path| -> Vec<String> {
        [
            "--device",
            "cpu",
            "--seed",
            "5",
            "zoo",
            "--count",
            "10",
            "--rows",
            "3000",
            "--epochs",
            "3-4",
            "--widths",
            "16,32,64",
            "--max-batch",
            "1",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.to_str().unwrap().to_string()])
        .collect()
    };
    ok(&Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args(&whole))
        .arg("--json")
        .output()
        .unwrap());

    let mut child = Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args(&cut))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial = cut.join(regop::workflows::zoo::PARTIAL);
    let t0 = std::time::Instant::now();
    while !partial.exists() {
        assert!(
            t0.elapsed().as_secs() < 120,
            "no batch finished in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !cut.join("manifest.json").exists(),
        "the run finished before it could be interrupted"
    );
    let done_before = std::fs::read_dir(&cut)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".safetensors")
        })
        .count();
    assert!(done_before < 10);

    // Rerunning without --resume is refused; with it, the zoo completes.
    let again = Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args(&cut))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let resumed = Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args(&cut))
        .arg("--resume")
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(!partial.exists());

    let mut names: Vec<String> = std::fs::read_dir(&whole)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let mut cut_names: Vec<String> = std::fs::read_dir(&cut)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    cut_names.sort();
    assert_eq!(names, cut_names, "same files, no temporary files left");
    for n in &names {
        assert!(
            std::fs::read(whole.join(n)).unwrap() == std::fs::read(cut.join(n)).unwrap(),
            "{n} differs after resuming"
        );
    }
}
