//! Model files: PyTorch-format fixtures written by `safetensors.numpy` (tools/make_fixtures.py)
//! are read exactly; what regop writes reads back identically; hostile files are refused with a
//! one-line error naming the file, exit code 2 and no panic.

use regop::engine::kernels::activation::Activation;
use regop::io::model::Model;
use regop::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

#[test]
fn pytorch_fixtures_read_exactly() {
    let exp = expected();
    let files = exp.as_object().unwrap();
    assert_eq!(files.len(), 4);
    for (file, want) in files {
        let m = Model::load(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let layers = want["layers"].as_array().unwrap();
        assert_eq!(m.layers.len(), layers.len(), "{file}: layer count");
        for (got, w) in m.layers.iter().zip(layers) {
            assert_eq!(got.name, w["name"].as_str().unwrap(), "{file}: layer order");
            assert_eq!(got.out_dim, w["out"].as_u64().unwrap() as usize);
            assert_eq!(got.in_dim, w["in"].as_u64().unwrap() as usize);
            let ww: Vec<f32> = w["weight"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got.weight, ww, "{file}: layer {} weights", got.name);
            let wb: Option<Vec<f32>> = w["bias"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_f64().unwrap() as f32).collect());
            assert_eq!(got.bias, wb, "{file}: layer {} bias", got.name);
        }
        match want["activation"].as_str() {
            Some(a) => {
                assert_eq!(m.activation, Activation::parse(a).unwrap(), "{file}");
                assert!(m.activation_recorded);
            }
            None => assert!(
                !m.activation_recorded,
                "{file}: activation should be unrecorded"
            ),
        }
        let wf: Option<Vec<String>> = want["features"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect());
        assert_eq!(m.features, wf, "{file}: features");
    }
    assert_eq!(
        Model::load(&fixture("named_f16.safetensors"))
            .unwrap()
            .dtype,
        "F16"
    );
}

#[test]
fn written_models_read_back_identically_with_pytorch_keys() {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "sequential_f32.safetensors",
        "named_f16.safetensors",
        "pruned_f32.safetensors",
        "shape_ordered.safetensors",
    ] {
        let m = Model::load(&fixture(file)).unwrap();
        let out = dir.path().join(file);
        m.save(&out, false).unwrap();
        let back = Model::load(&out).unwrap();
        assert_eq!(back.layers, m.layers, "{file}");
        assert_eq!(back.features, m.features, "{file}");
        assert_eq!(back.activation, m.activation, "{file}");
        assert_eq!(back.dtype, "F32");
        // Keys are exactly the PyTorch state_dict keys (pruning folded into plain weights).
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut keys: Vec<String> = st.names().into_iter().map(String::from).collect();
        keys.sort();
        let mut want: Vec<String> = m
            .layers
            .iter()
            .flat_map(|l| {
                let mut k = vec![format!("{}.weight", l.name)];
                if l.bias.is_some() {
                    k.push(format!("{}.bias", l.name));
                }
                k
            })
            .collect();
        want.sort();
        assert_eq!(keys, want, "{file}");
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        // An existing output is not replaced without force.
        assert!(matches!(m.save(&out, false), Err(Error::Input { .. })));
        m.save(&out, true).unwrap();
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bf16_weights_are_converted() {
    let w: Vec<half::bf16> = [0.5f32, -1.25, 3.0e-3, 7.0, 0.1, -0.2]
        .iter()
        .map(|&v| half::bf16::from_f32(v))
        .collect();
    let b: Vec<half::bf16> = [0.3f32, -0.7]
        .iter()
        .map(|&v| half::bf16::from_f32(v))
        .collect();
    let wb: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bb: Vec<u8> = b.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "0.weight".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![2, 3], &wb)
                .unwrap(),
        ),
        (
            "0.bias".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![2], &bb).unwrap(),
        ),
    ];
    let bytes = safetensors::serialize(views, None).unwrap();
    let m = Model::from_bytes(Path::new("bf16.safetensors"), &bytes).unwrap();
    assert_eq!(m.dtype, "BF16");
    assert_eq!(
        m.layers[0].weight,
        w.iter().map(|v| v.to_f32()).collect::<Vec<_>>()
    );
    assert_eq!(
        m.layers[0].bias.as_ref().unwrap(),
        &b.iter().map(|v| v.to_f32()).collect::<Vec<_>>()
    );
}

#[test]
fn input_column_norms_show_unused_inputs() {
    let m = Model::load(&fixture("sequential_f32.safetensors")).unwrap();
    let norms = m.input_column_norms();
    assert_eq!(norms.len(), 6);
    assert_eq!(norms[5], 0.0, "the fixture's 'noise' column is all zeros");
    let w = &m.layers[0].weight;
    let want1: f32 = (0..8).map(|j| w[j * 6 + 1].powi(2)).sum::<f32>().sqrt();
    assert!((norms[1] - want1).abs() < 1e-6 && norms[1] > 0.0);
}

#[test]
fn inspect_reports_layers_sparsity_features_and_norms() {
    let out = Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(["inspect", "--json"])
        .arg(fixture("sequential_f32.safetensors"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["parameters"], 8 * 6 + 8 + 4 * 8 + 4 + 4 + 1);
    assert_eq!(r["layers"].as_array().unwrap().len(), 3);
    assert_eq!(r["layers"][0]["inputs"], 6);
    assert_eq!(r["activation"], "relu");
    // Column 5 zeroed (8 weights) and three more zeros in row 0: 11 of 84 weights.
    assert_eq!(r["zero_weights"], 11);
    assert_eq!(r["input_columns"][5]["name"], "noise");
    assert_eq!(r["input_columns"][5]["weight_norm"], 0.0);
    assert_eq!(r["features"][1], "sex");
    // The table form names the unused column.
    let out = Command::new(env!("CARGO_BIN_EXE_regop"))
        .arg("inspect")
        .arg(fixture("sequential_f32.safetensors"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("6 -> 8 -> 4 -> 1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("noise") && l.contains("unused")),
        "{text}"
    );
}

// ---- hostile files ----

/// A safetensors file from a raw header and data section.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A valid single-layer file whose weight values are `w` ([2, 2]) and bias [2].
fn one_layer(w: [f32; 4]) -> Vec<u8> {
    let header = r#"{"0.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"0.bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#;
    raw(header, &f32_bytes(&[w[0], w[1], w[2], w[3], 0.1, 0.2]))
}

fn hostile_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good = std::fs::read(fixture("sequential_f32.safetensors")).unwrap();
    let f = |n: usize| f32_bytes(&vec![0.5; n]);
    vec![
        ("empty", vec![], "too short"),
        ("three_bytes", vec![1, 2, 3], "too short"),
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        (
            "header_longer_than_file",
            {
                let mut b = good.clone();
                b[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
                b
            },
            "exceeds the file size",
        ),
        (
            "invalid_json",
            raw("{\"0.weight\": [1, 2", &[]),
            "invalid header JSON",
        ),
        ("not_json_start", raw("xyz", &[]), "header"),
        (
            "offsets_out_of_range",
            raw(
                r#"{"0.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,1600]}}"#,
                &f(4),
            ),
            "offsets",
        ),
        (
            "overlapping_offsets",
            raw(
                r#"{"0.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"0.bias":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &f(4),
            ),
            "offsets",
        ),
        (
            "unsupported_dtype",
            raw(
                r#"{"0.weight":{"dtype":"I64","shape":[2,2],"data_offsets":[0,32]}}"#,
                &[0u8; 32],
            ),
            "unsupported dtype I64",
        ),
        (
            "not_chaining",
            raw(
                r#"{"0.weight":{"dtype":"F32","shape":[4,3],"data_offsets":[0,48]},"2.weight":{"dtype":"F32","shape":[1,5],"data_offsets":[48,68]}}"#,
                &f(17),
            ),
            "do not chain",
        ),
        (
            "nan_weight",
            one_layer([0.1, f32::NAN, 0.3, 0.4]),
            "non-finite",
        ),
        (
            "inf_weight",
            one_layer([0.1, 0.2, f32::INFINITY, 0.4]),
            "non-finite",
        ),
        (
            "zero_width",
            raw(
                r#"{"0.weight":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}"#,
                &[],
            ),
            "zero-width",
        ),
        (
            "huge_declared_shape",
            raw(
                r#"{"0.weight":{"dtype":"F32","shape":[4000000000,4000000000],"data_offsets":[0,16]}}"#,
                &f(4),
            ),
            "",
        ),
        (
            "weight_not_2d",
            raw(
                r#"{"0.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &f(4),
            ),
            "expected 2-D",
        ),
        (
            "bias_wrong_shape",
            raw(
                r#"{"0.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"0.bias":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}}"#,
                &f(7),
            ),
            "bias has shape",
        ),
        (
            "batchnorm_tensor",
            raw(
                r#"{"1.running_mean":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &f(2),
            ),
            "unexpected tensor",
        ),
        ("no_tensors", raw("{}", &[]), "no tensors"),
        (
            "pickle_zip",
            b"PK\x03\x04rest-of-a-torch-save-zip".to_vec(),
            "PyTorch pickle",
        ),
        (
            "pickle_protocol",
            b"\x80\x02}q\x00.".to_vec(),
            "PyTorch pickle",
        ),
        (
            "features_mismatch",
            {
                let h = r#"{"__metadata__":{"features":"[\"a\",\"b\",\"c\"]"},"0.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
                raw(h, &f(4))
            },
            "lists 3 features",
        ),
        (
            "unknown_activation",
            {
                let h = r#"{"__metadata__":{"activation":"gelu"},"0.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
                raw(h, &f(4))
            },
            "unknown activation 'gelu'",
        ),
        (
            "non_utf8_header",
            raw("{\"\u{1}\"", &[])
                .into_iter()
                .map(|b| if b == 1 { 0xff } else { b })
                .collect(),
            "",
        ),
        (
            "mask_without_orig",
            raw(
                r#"{"0.weight_mask":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
                &f(4),
            ),
            "without",
        ),
        (
            // Found by fuzzing: finite factors whose product overflows to inf.
            "pruned_product_overflows",
            raw(
                r#"{"0.weight_orig":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"0.weight_mask":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]}}"#,
                &f32_bytes(&[1e30, 1.0, 1.0, 1.0, 1e30, 1.0, 1.0, 1.0]),
            ),
            "not finite",
        ),
    ]
}

/// Every input the fuzzers found a crash with (tests/fuzz_regressions/): refused or read, never
/// a panic.
#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let r = std::panic::catch_unwind(|| {
            if name.starts_with("safetensors") {
                if let Ok(m) = Model::from_bytes(&path, &bytes) {
                    assert!(m.flat_params().iter().all(|v| v.is_finite()), "{name}");
                }
            } else {
                let opts = regop::io::data::loaders::DataOptions {
                    target: Some("y".into()),
                    ..Default::default()
                };
                let _ = regop::io::data::loaders::load_csv_bytes(&path, &bytes, &opts, 0);
            }
        });
        assert!(r.is_ok(), "{name}: panicked");
        n += 1;
    }
    assert!(n >= 1, "no regression inputs in {}", dir.display());
}

#[test]
fn hostile_files_are_refused_by_the_library() {
    for (name, bytes, needle) in hostile_cases() {
        let path = PathBuf::from(format!("{name}.safetensors"));
        let err = std::panic::catch_unwind(|| Model::from_bytes(&path, &bytes))
            .unwrap_or_else(|_| panic!("{name}: panicked"));
        let err = err.expect_err(name);
        let msg = err.to_string();
        assert!(matches!(err, Error::Input { .. }), "{name}: {msg}");
        assert!(
            msg.starts_with(&format!("{name}.safetensors: ")),
            "{name}: error does not name the file: {msg}"
        );
        assert!(
            msg.contains(needle),
            "{name}: '{msg}' does not mention '{needle}'"
        );
        assert!(!msg.contains('\n'), "{name}: multi-line error");
    }
}

#[test]
fn hostile_files_exit_2_with_one_line_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cases = hostile_cases();
    for (name, bytes, _) in &cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_regop"))
            .arg("inspect")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: does not name the file: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{name}: printed a partial report");
    }
    // Missing file, and a directory.
    for p in [
        dir.path().join("missing.safetensors"),
        dir.path().to_path_buf(),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_regop"))
            .arg("inspect")
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&p.display().to_string()));
    }
}
