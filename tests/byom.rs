//! Bring your own model: `regop data --export` gives the inputs regop's models see, a model
//! trained on them by other code (here a plain gradient-descent MLP written in this test, saved
//! with PyTorch names and no regop metadata) is edited by `regop edit`, and a model that does
//! not fit the editor is refused in one line with nothing written.

mod common;
use common::{arg as p, ok, refused, regop_cpu as regop};
use regop::io::model::{Linear, Model};
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor of an exported split as f32 (F32 or I64 in the file).
fn tensor(st: &safetensors::SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap();
    let values = match t.dtype() {
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        d => panic!("unexpected dtype {d:?}"),
    };
    (t.shape().to_vec(), values)
}

/// A [cols, hidden, 1] ReLU MLP fitted by full-batch gradient descent on the logistic loss:
/// written here, independent of regop's training code. Returns (W1 [hidden, cols], b1, W2, b2).
fn fit_mlp(x: &[f32], y: &[f32], cols: usize, hidden: usize) -> [Vec<f32>; 4] {
    let rows = y.len();
    let mut rng = common::fresh_rng("outside model");
    let scale = (2.0 / cols as f32).sqrt();
    let mut w1: Vec<f32> = common::random(&mut rng, hidden * cols)
        .iter()
        .map(|v| v * scale)
        .collect();
    let mut b1 = vec![0.0f32; hidden];
    let mut w2: Vec<f32> = common::random(&mut rng, hidden)
        .iter()
        .map(|v| v / (hidden as f32).sqrt())
        .collect();
    let mut b2 = 0.0f32;
    let lr = 0.5f32;
    let mut h = vec![0.0f32; rows * hidden];
    for _ in 0..150 {
        let (mut g1, mut gb1, mut g2, mut gb2) = (
            vec![0.0f32; hidden * cols],
            vec![0.0f32; hidden],
            vec![0.0f32; hidden],
            0.0f32,
        );
        for r in 0..rows {
            let xr = &x[r * cols..(r + 1) * cols];
            let hr = &mut h[r * hidden..(r + 1) * hidden];
            for j in 0..hidden {
                let z: f32 = b1[j] + (0..cols).map(|i| w1[j * cols + i] * xr[i]).sum::<f32>();
                hr[j] = z.max(0.0);
            }
            let logit = b2 + (0..hidden).map(|j| w2[j] * hr[j]).sum::<f32>();
            let d = (1.0 / (1.0 + (-logit).exp()) - y[r]) / rows as f32;
            gb2 += d;
            for j in 0..hidden {
                g2[j] += d * hr[j];
                if hr[j] > 0.0 {
                    let dj = d * w2[j];
                    gb1[j] += dj;
                    for i in 0..cols {
                        g1[j * cols + i] += dj * xr[i];
                    }
                }
            }
        }
        w1.iter_mut().zip(&g1).for_each(|(w, g)| *w -= lr * g);
        b1.iter_mut().zip(&gb1).for_each(|(w, g)| *w -= lr * g);
        w2.iter_mut().zip(&g2).for_each(|(w, g)| *w -= lr * g);
        b2 -= lr * gb2;
    }
    [w1, b1, w2, vec![b2]]
}

/// The fitted MLP as a PyTorch `nn.Sequential` inside a module (`net.0`, `net.2`).
fn outside_model(params: &[Vec<f32>; 4], cols: usize) -> Model {
    let hidden = params[1].len();
    let layer = |name: &str, w: &[f32], b: &[f32], out_dim, in_dim| Linear {
        name: name.into(),
        out_dim,
        in_dim,
        weight: w.to_vec(),
        bias: Some(b.to_vec()),
    };
    Model {
        layers: vec![
            layer("net.0", &params[0], &params[1], hidden, cols),
            layer("net.2", &params[2], &params[3], 1, hidden),
        ],
        activation: regop::engine::kernels::activation::Activation::Relu,
        activation_recorded: true,
        features: None,
        metadata: BTreeMap::new(),
        dtype: "F32".into(),
    }
}

/// Logits of a ReLU MLP with one output, computed here on the host.
fn forward(m: &Model, x: &[f32]) -> Vec<f32> {
    let cols = m.layers[0].in_dim;
    x.chunks_exact(cols)
        .map(|row| {
            let mut a = row.to_vec();
            for (l, layer) in m.layers.iter().enumerate() {
                let b = layer.bias.as_ref().unwrap();
                a = (0..layer.out_dim)
                    .map(|o| {
                        let w = &layer.weight[o * layer.in_dim..(o + 1) * layer.in_dim];
                        let z = b[o] + w.iter().zip(&a).map(|(w, v)| w * v).sum::<f32>();
                        if l + 1 < m.layers.len() {
                            z.max(0.0)
                        } else {
                            z
                        }
                    })
                    .collect();
            }
            a[0]
        })
        .collect()
}

/// Write `model` as safetensors holding only `meta` as metadata (a plain PyTorch save).
fn save_raw(model: &Model, meta: &[(&str, &str)], path: &Path) {
    let st_bytes = model.to_bytes().unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let meta: std::collections::HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::fs::write(
        path,
        safetensors::serialize(st.tensors(), Some(meta)).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_model_trained_outside_regop_on_the_export_is_edited() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = common::synthetic_zoo(dir.path(), "7");
    let ed = dir.path().join("ed");
    ok(&regop(&[
        "--seed",
        "7",
        "train",
        "--zoo",
        p(&zoo),
        "--requirement",
        "prune",
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--out",
        p(&ed),
    ]));
    let editor = ed.join("editor.safetensors");

    // The export: the zoo's split (its data seed), as safetensors, CSV and a schema.
    let exp = dir.path().join("export");
    ok(&regop(&["--seed", "7", "data", "--export", p(&exp)]));
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exp.join("schema.json")).unwrap()).unwrap();
    let columns: Vec<String> = serde_json::from_value(schema["columns"].clone()).unwrap();
    let cols = columns.len();
    let read = |split: &str| std::fs::read(exp.join(format!("{split}.safetensors"))).unwrap();
    let (train_bytes, test_bytes) = (read("train"), read("test"));
    let train = safetensors::SafeTensors::deserialize(&train_bytes).unwrap();
    let test = safetensors::SafeTensors::deserialize(&test_bytes).unwrap();
    let (xs, x) = tensor(&train, "x");
    let (_, y) = tensor(&train, "y");
    let (gs, group) = tensor(&train, "group");
    assert_eq!(xs, [y.len(), cols]);
    assert_eq!(schema["rows"]["train"].as_u64(), Some(y.len() as u64));
    assert_eq!(gs, [y.len()]);
    assert!(y.iter().all(|&v| v == 0.0 || v == 1.0));
    assert!(group.iter().all(|&g| g == 0.0 || g == 1.0));
    // The CSV holds the same numbers: the header names the columns, label and group.
    let csv = std::fs::read_to_string(exp.join("train.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header[..cols],
        columns.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(header.len(), cols + 2);
    for (r, line) in lines.enumerate().step_by(997) {
        let v: Vec<f32> = line.split(',').map(|c| c.parse().unwrap()).collect();
        assert_eq!(v[..cols], x[r * cols..(r + 1) * cols], "row {r}");
        assert_eq!((v[cols], v[cols + 1]), (y[r], group[r]), "row {r}");
    }
    // The exported inputs are the zoo's: a zoo model's accuracy on the exported test split
    // is what its manifest records.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(zoo.join("manifest.json")).unwrap()).unwrap();
    let rec = &manifest["models"][0];
    let zoo_model = Model::load(&zoo.join(rec["file"].as_str().unwrap())).unwrap();
    let (_, tx) = tensor(&test, "x");
    let (_, ty) = tensor(&test, "y");
    let logits = forward(&zoo_model, &tx);
    let acc = |logits: &[f32]| {
        logits
            .iter()
            .zip(&ty)
            .filter(|(l, t)| ((**l > 0.0) as u8 as f32) == **t)
            .count() as f64
            / ty.len() as f64
    };
    let recorded = rec["metrics"]["test"]["accuracy"].as_f64().unwrap();
    assert!(
        (acc(&logits) - recorded).abs() < 1e-3,
        "{} vs {recorded}",
        acc(&logits)
    );

    // A model regop did not train: width 40 (the zoo's are 16-24), PyTorch names, no metadata.
    let rows = 1500.min(y.len());
    let fitted = fit_mlp(&x[..rows * cols], &y[..rows], cols, 40);
    let outside = outside_model(&fitted, cols);
    let ologits = forward(&outside, &tx);
    let majority = ty.iter().sum::<f32>() as f64 / ty.len() as f64;
    let majority = majority.max(1.0 - majority);
    assert!(
        acc(&ologits) > majority + 0.02,
        "{} vs majority {majority}",
        acc(&ologits)
    );
    let model = dir.path().join("outside.safetensors");
    save_raw(&outside, &[("format", "pt")], &model);

    let edited = dir.path().join("outside-edited.safetensors");
    let out = regop(&[
        "--json",
        "edit",
        "--editor",
        p(&editor),
        "--model",
        p(&model),
        "--sparsity",
        "0.7",
        "--max-drop",
        "1",
        "--out",
        p(&edited),
    ]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("activation not recorded"), "{stderr}");
    assert!(stderr.contains("hidden width 40 outside"), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result[0]["outside_training"].as_array().unwrap().len(),
        2,
        "{result}"
    );
    let e = Model::load(&edited).unwrap();
    let names: Vec<&str> = e.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["net.0", "net.2"]);
    assert_eq!(e.features.as_deref(), Some(&columns[..]));
    let weights: Vec<f32> = e.layers.iter().flat_map(|l| l.weight.clone()).collect();
    let zeros = weights.iter().filter(|&&w| w == 0.0).count() as f64 / weights.len() as f64;
    assert!((zeros - 0.7).abs() < 0.01, "sparsity {zeros}");
    // Refused in one line, nothing written: another width of input, another activation.
    let narrow = outside_model(
        &[
            fitted[0][..40 * (cols - 1)].to_vec(),
            fitted[1].clone(),
            fitted[2].clone(),
            fitted[3].clone(),
        ],
        cols - 1,
    );
    let bad = dir.path().join("narrow.safetensors");
    save_raw(&narrow, &[], &bad);
    let tanh = dir.path().join("tanh.safetensors");
    save_raw(&outside, &[("activation", "tanh")], &tanh);
    for (model, says) in [(&bad, "input columns"), (&tanh, "uses tanh")] {
        let out_file = dir.path().join("refused.safetensors");
        let line = refused(&regop(&[
            "edit",
            "--editor",
            p(&editor),
            "--model",
            p(model),
            "--sparsity",
            "0.7",
            "--out",
            p(&out_file),
        ]));
        assert!(line.contains(p(model)) && line.contains(says), "{line}");
        assert!(!out_file.exists());
    }

    // Imported as test models of the zoo's data, judged by compare like the zoo's own.
    let imported = dir.path().join("imported");
    let zoo_file = zoo.join(rec["file"].as_str().unwrap());
    ok(&regop(&[
        "zoo",
        "import",
        "--like",
        p(&zoo),
        "--out",
        p(&imported),
        p(&model),
        p(&zoo_file),
    ]));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(imported.join("manifest.json")).unwrap()).unwrap();
    let recs = m["models"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r["split"] == "test"), "{m}");
    let imported_acc = recs[0]["metrics"]["test"]["accuracy"].as_f64().unwrap();
    assert!(
        (imported_acc - acc(&ologits)).abs() < 1e-3,
        "{imported_acc}"
    );
    assert_eq!(recs[1]["metrics"]["test"], rec["metrics"]["test"]);
    assert_eq!(
        std::fs::read(imported.join("model-00000.safetensors")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    let cmp = dir.path().join("cmp");
    ok(&regop(&[
        "compare",
        "--zoo",
        p(&zoo),
        "--test-zoo",
        p(&imported),
        "--requirement",
        "prune",
        "--sparsity",
        "0.7",
        "--no-fine-tune",
        "--editor",
        p(&editor),
        "--out",
        p(&cmp),
    ]));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cmp.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["test_models"], 2, "{results}");
    // compare refuses, as edit does, a test model the editor cannot edit.
    let tanh_zoo = dir.path().join("imported-tanh");
    ok(&regop(&[
        "zoo",
        "import",
        "--like",
        p(&zoo),
        "--out",
        p(&tanh_zoo),
        p(&tanh),
    ]));
    let line = refused(&regop(&[
        "compare",
        "--zoo",
        p(&zoo),
        "--test-zoo",
        p(&tanh_zoo),
        "--requirement",
        "prune",
        "--sparsity",
        "0.7",
        "--no-fine-tune",
        "--editor",
        p(&editor),
        "--out",
        p(&dir.path().join("cmp-tanh")),
    ]));
    assert!(line.contains("uses tanh"), "{line}");
    assert!(!dir.path().join("cmp-tanh/results.json").exists());
    let refused_dir = dir.path().join("not-imported");
    let line = refused(&regop(&[
        "zoo",
        "import",
        "--like",
        p(&zoo),
        "--out",
        p(&refused_dir),
        p(&model),
        p(&bad),
    ]));
    assert!(
        line.contains(p(&bad)) && line.contains("input columns"),
        "{line}"
    );
    assert!(!refused_dir.exists());
}
