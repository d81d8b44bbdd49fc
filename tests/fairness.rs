//! Fairness without the attribute at prediction time: an editor trained with
//! `--fair-target drop-attribute` starts from the attribute's least-squares fold, never lets an
//! edited model read the attribute's columns whatever it is asked, and is judged by `compare`
//! against rules that do not read it either.

mod common;
use common::*;
use regop::engine::kernels::fairness::Gap;
use regop::io::data::Split;
use regop::io::model::Model;
use regop::networks::editor::Editor;
use regop::networks::mlp::MlpShape;
use regop::requirement::metrics::weight_sparsity;
use regop::requirement::verify::Target;
use regop::requirement::Requirement;
use regop::requirement::{Ask, Columns, EditSpec, FairTarget, MinimiseBase, PruneScore};
use regop::workflows::baselines::{fold_removed_means, least_squares_fold, obs_prune};
use regop::workflows::baselines::{zero_batch_columns, zero_columns};
use regop::workflows::edit::edit_models;
use regop::Device;

fn spec(target: FairTarget, base: MinimiseBase) -> EditSpec {
    EditSpec {
        requirement: Requirement::Fairness,
        gap: Gap::Eo,
        gamma: 0.5,
        tau: 0.0,
        prune_score: PruneScore::Lamp,
        fair_sharpness: 4.0,
        fair_target: target,
        signals: false,
        signal_label_weight: 0.0,
        minimise_base: base,
        also_drops: false,
        also_prunes: false,
        resolve_mask: false,
        natural_step: false,
    }
}

/// Untrained, the editor is its fold of the attribute's columns (means, or least squares) at
/// every lambda, though no ask names them; a random editor moves the other weights and still
/// leaves the attribute's columns exactly zero. A penalty editor that may read the attribute
/// keeps them; without the data's moments a least-squares editor refuses to edit.
#[test]
fn a_drop_attribute_editor_starts_from_the_fold_and_never_reads_the_attribute() {
    let mut rng = fresh_rng("drop attribute editor");
    let dev = Device::cpu();
    let (shapes, params) = small_relu_models(&mut rng);
    // Columns 4 and 5 are the attribute (one-hot); column 4 is mostly column 0.
    let rows = 300;
    let mut x = random(&mut rng, rows * 6);
    for r in 0..rows {
        let g = (x[r * 6] + 0.3 * x[r * 6 + 1] > 0.0) as u32;
        x[r * 6 + 4] = g as f32;
        x[r * 6 + 5] = 1.0 - g as f32;
    }
    let train = Split {
        y: (0..rows)
            .map(|r| (x[r * 6 + 2] > 0.0) as u32 as f32)
            .collect(),
        group: (0..rows).map(|r| x[r * 6 + 4] as u32).collect(),
        x,
    };
    let sensitive = vec![false, false, false, false, true, true];
    let cols = columns_from(&train, sensitive.clone());
    let moments = cols.moments.clone();
    let cfg = small_editor_cfg();
    let models: Vec<(&MlpShape, &[f32])> = (0..4)
        .map(|i| (&shapes[i % 2], params[i % 2].as_slice()))
        .collect();
    // Nothing in the asks removes a column: the editor does.
    let asks: Vec<Ask> = [0.2f32, 1.0, 8.0, 30.0]
        .iter()
        .map(|&lambda| Ask {
            lambda,
            ..Ask::new(6)
        })
        .collect();
    let untrained = Editor::new(&dev, &cfg, 1).unwrap();
    let means = spec(FairTarget::DropAttribute, MinimiseBase::Mean);
    let got = edit_models(&dev, &untrained, &means, &models, &asks, &cols).unwrap();
    for (m, (s, p)) in models.iter().enumerate() {
        let mut want = fold_removed_means(s, p, &sensitive, &cols.means);
        for o in 0..s.fan_out(0) {
            want[s.weight_offset(0) + o * 6 + 4] = 0.0;
            want[s.weight_offset(0) + o * 6 + 5] = 0.0;
        }
        assert_eq!(
            got[m], want,
            "model {m}: the untrained editor is not the mean fold"
        );
    }
    let blind = spec(FairTarget::DropAttribute, MinimiseBase::LeastSquares);
    let got = edit_models(&dev, &untrained, &blind, &models, &asks, &cols).unwrap();
    for (m, (s, p)) in models.iter().enumerate() {
        let want = least_squares_fold(s, p, &sensitive, &moments);
        assert_eq!(
            got[m], want,
            "model {m}: the untrained editor is not the fold"
        );
    }
    let bare = Columns {
        moments: Default::default(),
        ..cols.clone()
    };
    assert!(edit_models(&dev, &untrained, &blind, &models, &asks, &bare).is_err());
    let random = random_editor(&dev, &cfg, &mut rng);
    let edited = edit_models(&dev, &random, &blind, &models, &asks, &cols).unwrap();
    let penalty = spec(FairTarget::Penalty, MinimiseBase::LeastSquares);
    let reading = edit_models(&dev, &random, &penalty, &models, &asks, &cols).unwrap();
    for (m, (s, p)) in models.iter().enumerate() {
        let fold = least_squares_fold(s, p, &sensitive, &moments);
        for o in 0..s.fan_out(0) {
            for c in 0..6 {
                let w = edited[m][s.weight_offset(0) + o * 6 + c];
                if sensitive[c] {
                    assert_eq!(w.to_bits(), 0, "model {m}: column {c} is read");
                    assert_ne!(reading[m][s.weight_offset(0) + o * 6 + c], 0.0);
                }
            }
        }
        assert!(
            edited[m].iter().zip(&fold).any(|(a, b)| a != b),
            "model {m}: the random editor edits nothing"
        );
    }
    // The lambdas make different edits.
    assert_ne!(edited[0], edited[2]);
    // Verification: a gap within the bound is not enough while a column of the attribute is
    // read.
    let s = &shapes[0];
    let split = Split {
        x: train.x[..6 * 40].to_vec(),
        y: vec![1.0; 40],
        group: (0..40).map(|r| r % 2).collect(),
    };
    let decisions = vec![1.0f32; 40];
    let target = |without: Vec<bool>| Target::Fairness {
        gap: Gap::Eo,
        max_gap: 0.05,
        without,
        sparsity: 0.0,
    };
    let fold = least_squares_fold(s, &params[0], &sensitive, &moments);
    let decided = Some((&split, decisions.as_slice()));
    assert!(target(sensitive.clone()).verify(s, &fold, decided).met);
    assert!(target(Vec::new()).verify(s, &params[0], decided).met);
    assert!(!target(sensitive.clone()).verify(s, &params[0], decided).met);
}

/// Three requirements in one edit: a drop-attribute editor trained with `--also-prune` starts
/// from OBS reconstruction of the attribute's fold (its columns zero in the calibration batch
/// too) at the asked sparsity; a random editor keeps that mask and the attribute unread; and
/// verification needs the sparsity as well as the gap.
#[test]
fn a_drop_attribute_editor_that_also_prunes_starts_from_obs_of_the_fold() {
    let mut rng = fresh_rng("drop attribute and prune");
    let dev = Device::cpu();
    let (shapes, params) = small_relu_models(&mut rng);
    let rows = 200;
    let mut x = random(&mut rng, rows * 6);
    for r in 0..rows {
        let g = (x[r * 6] > 0.0) as u32;
        x[r * 6 + 4] = g as f32;
        x[r * 6 + 5] = 1.0 - g as f32;
    }
    let train = Split {
        y: (0..rows)
            .map(|r| (x[r * 6 + 1] > 0.0) as u32 as f32)
            .collect(),
        group: (0..rows).map(|r| x[r * 6 + 4] as u32).collect(),
        x,
    };
    let sensitive = vec![false, false, false, false, true, true];
    let cols = columns_from(&train, sensitive.clone());
    let cfg = small_editor_cfg();
    let spec = EditSpec {
        also_prunes: true,
        resolve_mask: false,
        natural_step: false,
        ..spec(FairTarget::DropAttribute, MinimiseBase::Mean)
    };
    let models: Vec<(&MlpShape, &[f32])> = (0..4)
        .map(|i| (&shapes[i % 2], params[i % 2].as_slice()))
        .collect();
    let asks: Vec<Ask> = [(0.5f32, 0.5f32), (4.0, 0.7), (1.0, 0.8), (20.0, 0.6)]
        .iter()
        .map(|&(lambda, sparsity)| Ask {
            lambda,
            sparsity,
            ..Ask::new(6)
        })
        .collect();
    let c = &cols.calibration;
    let rule: Vec<Vec<f32>> = models
        .iter()
        .zip(&asks)
        .map(|((s, p), a)| {
            let fold = fold_removed_means(s, p, &sensitive, &cols.means);
            let x = zero_batch_columns(&c.x, &sensitive);
            let start = zero_columns(s, &fold, &sensitive);
            obs_prune(s, &start, &x, c.rows(), a.sparsity as f64)
        })
        .collect();
    let untrained = Editor::new(&dev, &cfg, 1).unwrap();
    let got = edit_models(&dev, &untrained, &spec, &models, &asks, &cols).unwrap();
    assert_eq!(got, rule, "the untrained editor is not OBS of the fold");
    let random = random_editor(&dev, &cfg, &mut rng);
    let got = edit_models(&dev, &random, &spec, &models, &asks, &cols).unwrap();
    for (m, (s, _)) in models.iter().enumerate() {
        for l in 0..s.layers() {
            for i in s.weight_offset(l)..s.bias_offset(l) {
                assert_eq!(
                    got[m][i] == 0.0,
                    rule[m][i] == 0.0,
                    "model {m}: weight {i} left the mask"
                );
            }
        }
        for o in 0..s.fan_out(0) {
            assert_eq!(got[m][o * 6 + 4], 0.0);
            assert_eq!(got[m][o * 6 + 5], 0.0);
        }
        assert_ne!(
            got[m], rule[m],
            "model {m}: the random editor edits nothing"
        );
        assert!(weight_sparsity(s, &got[m]) + 0.5 / 64.0 >= asks[m].sparsity as f64);
    }
    // The gap met on constant decisions; the sparsity decides.
    let s = &shapes[0];
    let split = Split {
        x: train.x[..6 * 40].to_vec(),
        y: vec![1.0; 40],
        group: (0..40).map(|r| r % 2).collect(),
    };
    let decisions = vec![1.0f32; 40];
    let decided = Some((&split, decisions.as_slice()));
    let target = |sparsity: f64| Target::Fairness {
        gap: Gap::Eo,
        max_gap: 0.05,
        without: sensitive.clone(),
        sparsity,
    };
    assert!(target(0.5).verify(s, &got[0], decided).met);
    assert!(!target(0.9).verify(s, &got[0], decided).met);
    let dense = zero_columns(s, &params[0], &sensitive);
    assert!(!target(0.5).verify(s, &dense, decided).met);
    assert!(target(0.0).verify(s, &dense, decided).met);
}

/// The binary end to end on the built-in data: a drop-attribute editor is trained, edits to a
/// gap bound with the attribute's weights exactly zero, and `compare` judges it without the
/// attribute: the rules that drop it are the candidates, what reads it a reference. Editors
/// that read the attribute cannot be judged so, and the flag is fairness's alone.
#[test]
fn fairness_without_the_attribute_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = synthetic_zoo(dir.path(), "3");
    let ed = dir.path().join("ed");
    ok(&regop_cpu(&[
        "train",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "fairness",
        "--fair-target",
        "drop-attribute",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--val-models",
        "2",
        "--out",
        arg(&ed),
    ]));
    let editor = ed.join("editor.safetensors");
    let model = zoo.join("model-00000.safetensors");
    let out = dir.path().join("edited.safetensors");
    let run = regop_cpu(&[
        "edit",
        "--editor",
        arg(&editor),
        "--model",
        arg(&model),
        "--max-eo-gap",
        "0.2",
        // Dropping the built-in data's attribute costs accuracy (it causes the label).
        "--max-drop",
        "1",
        "--json",
        "--out",
        arg(&out),
    ]);
    ok(&run);
    let edited = Model::load(&out).unwrap();
    let manifest = regop::workflows::zoo::read_manifest(&zoo).unwrap();
    let sensitive = regop::requirement::sensitive_columns(&manifest.schema);
    assert!(sensitive.contains(&true));
    let (shape, w) = (edited.shape(), edited.flat_params());
    let d = shape.fan_in(0);
    for o in 0..shape.fan_out(0) {
        for (c, _) in sensitive.iter().enumerate().filter(|(_, s)| **s) {
            assert_eq!(
                w[shape.weight_offset(0) + o * d + c],
                0.0,
                "column {c} read"
            );
        }
    }
    let report = dir.path().join("cmp");
    ok(&regop_cpu(&[
        "compare",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "fairness",
        "--editor",
        arg(&editor),
        "--max-models",
        "2",
        "--val-models",
        "2",
        "--max-gap",
        "0.2",
        "--lambdas",
        "1,8",
        "--ft-epochs",
        "1",
        "--out",
        arg(&report),
    ]));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("without reading it"), "{md}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    let kind_of = |method: &str| {
        rows.iter()
            .find(|r| r["method"] == method)
            .unwrap_or_else(|| panic!("no row {method}"))["kind"]
            .clone()
    };
    assert_eq!(
        kind_of("group thresholds (needs the attribute)"),
        "reference"
    );
    assert_eq!(kind_of("drop attribute (least-squares fold)"), "one-shot");
    assert_eq!(kind_of("drop attribute (mean fold)"), "one-shot");
    assert_eq!(kind_of("fair fine-tune lambda=8"), "reference");
    assert_eq!(
        kind_of("drop attribute + fair fine-tune lambda=8"),
        "fine-tuned"
    );
    for fold in ["mean", "least-squares"] {
        let name = format!("{fold} fold + fair fine-tune, lambda picked on val");
        assert_eq!(kind_of(&name), "fine-tuned");
    }
    // What reads the attribute never meets the requirement; the editor's edits always read
    // none of it.
    for r in rows {
        if r["method"] == "original (no edit)" || r["kind"] == "reference" {
            assert_eq!(r["satisfied"], false, "{r}");
        }
    }
    let chosen = results["choices"][0]["rule"].as_str().unwrap();
    assert!(chosen.starts_with("drop attribute"), "chose {chosen}");
    // A shift editor reads the attribute: it cannot be judged without it.
    let shift = dir.path().join("shift");
    ok(&regop_cpu(&[
        "train",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "fairness",
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--val-models",
        "2",
        "--out",
        arg(&shift),
    ]));
    let msg = refused(&regop_cpu(&[
        "compare",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "fairness",
        "--without-attribute",
        "--editor",
        arg(&shift.join("editor.safetensors")),
        "--max-models",
        "1",
        "--no-fine-tune",
        "--out",
        arg(&dir.path().join("no")),
    ]));
    assert!(msg.contains("reads the sensitive attribute"), "{msg}");
    assert!(!dir.path().join("no").exists());
    let msg = refused(&regop_cpu(&[
        "compare",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "prune",
        "--without-attribute",
        "--out",
        arg(&dir.path().join("no")),
    ]));
    assert!(msg.contains("--without-attribute"), "{msg}");
}

/// Drop the attribute, close the gap and prune in one edit from the command line: `train
/// --also-prune`, `edit --max-eo-gap G --sparsity S` (the attribute's weights zero, the
/// sparsity reached), `compare --sparsity S` with every fairness method pruned alike; an editor
/// that prunes needs --sparsity, and --also-prune needs a drop-attribute editor.
#[test]
fn drop_attribute_fairness_and_pruning_in_one_edit_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = synthetic_zoo(dir.path(), "5");
    let ed = dir.path().join("ed");
    let train = |out: &std::path::Path, target: &str| {
        regop_cpu(&[
            "train",
            "--zoo",
            arg(&zoo),
            "--requirement",
            "fairness",
            "--fair-target",
            target,
            "--also-prune",
            "--sparsity-range",
            "0.6,0.9",
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--val-models",
            "2",
            "--out",
            arg(out),
        ])
    };
    ok(&train(&ed, "drop-attribute"));
    let editor = ed.join("editor.safetensors");
    let model = zoo.join("model-00002.safetensors");
    let out = dir.path().join("edited.safetensors");
    let edit = |extra: &[&str], out: &std::path::Path| {
        let mut args = vec![
            "edit",
            "--editor",
            arg(&editor),
            "--model",
            arg(&model),
            "--max-eo-gap",
            "0.2",
            "--max-drop",
            "1",
            "--out",
            arg(out),
        ];
        args.extend_from_slice(extra);
        regop_cpu(&args)
    };
    ok(&edit(&["--sparsity", "0.8"], &out));
    let manifest = regop::workflows::zoo::read_manifest(&zoo).unwrap();
    let sensitive = regop::requirement::sensitive_columns(&manifest.schema);
    let edited = Model::load(&out).unwrap();
    let (shape, w) = (edited.shape(), edited.flat_params());
    let weights: usize = (0..shape.layers())
        .map(|l| shape.fan_in(l) * shape.fan_out(l))
        .sum();
    assert!(weight_sparsity(&shape, &w) + 0.5 / weights as f64 >= 0.8);
    let d = shape.fan_in(0);
    for o in 0..shape.fan_out(0) {
        for c in (0..d).filter(|&c| sensitive[c]) {
            assert_eq!(
                w[shape.weight_offset(0) + o * d + c],
                0.0,
                "column {c} read"
            );
        }
    }
    let no = dir.path().join("no.safetensors");
    let msg = refused(&edit(&[], &no));
    assert!(msg.contains("--sparsity"), "{msg}");
    assert!(!no.exists());
    let report = dir.path().join("cmp");
    let compare = |extra: &[&str], out: &std::path::Path| {
        let mut args = vec![
            "compare",
            "--zoo",
            arg(&zoo),
            "--requirement",
            "fairness",
            "--editor",
            arg(&editor),
            "--max-models",
            "2",
            "--val-models",
            "2",
            "--max-gap",
            "0.2",
            "--lambdas",
            "4",
            "--ft-epochs",
            "1",
            "--out",
            arg(out),
        ];
        args.extend_from_slice(extra);
        regop_cpu(&args)
    };
    ok(&compare(&["--sparsity", "0.8"], &report));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("without reading it, at weight sparsity 0.8"),
        "{md}"
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    let pruned = " + OBS reconstruction @ sparsity 0.8";
    for name in [
        format!("drop attribute (mean fold){pruned}"),
        format!("drop attribute (least-squares fold){pruned}"),
        format!("drop attribute{pruned} + fair fine-tune lambda=4"),
        format!("mean fold{pruned} + fair fine-tune, lambda picked on val"),
    ] {
        assert!(
            rows.iter().any(|r| r["method"] == name.as_str()),
            "no row {name}"
        );
    }
    // What leaves the model dense cannot meet the requirement, whatever its gap.
    for r in rows {
        let m = r["method"].as_str().unwrap();
        if m.starts_with("fair fine-tune") || m.starts_with("original") {
            assert_eq!(r["satisfied"], false, "{r}");
        }
    }
    let msg = refused(&compare(&[], &dir.path().join("no")));
    assert!(msg.contains("--sparsity"), "{msg}");
    let msg = refused(&train(&dir.path().join("no"), "shift"));
    assert!(msg.contains("--also-prune"), "{msg}");
    assert!(!dir.path().join("no").exists());
}
