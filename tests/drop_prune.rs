//! Two requirements in one edit: a prune editor trained with `--also-drop` removes features and
//! prunes in one inference. Untrained it is the rule on the folded model (the removed columns'
//! least-squares fold, zero in the calibration batch too); trained, the removed columns stay
//! exactly zero and the sparsity exact; verification needs both; and the command line edits,
//! compares and refuses editors that were not trained for it.

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
use regop::requirement::{Ask, EditSpec, FairTarget, MinimiseBase, PruneScore};
use regop::workflows::baselines::{
    lamp_reconstruction, least_squares_fold, neuron_reconstruct, obs_prune, zero_batch_columns,
    zero_columns,
};
use regop::workflows::edit::edit_models;
use regop::Device;

/// A prune editor that keeps the rule's mask (`score`: OBS or neurons), reads the data's
/// signals and also drops features.
fn prune_spec(score: PruneScore) -> EditSpec {
    EditSpec {
        requirement: Requirement::Prune,
        gap: Gap::Eo,
        gamma: 0.1,
        tau: 0.0,
        prune_score: score,
        fair_sharpness: 1.0,
        fair_target: FairTarget::Penalty,
        signals: true,
        signal_label_weight: 0.0,
        minimise_base: MinimiseBase::LeastSquares,
        also_drops: true,
        also_prunes: false,
        resolve_mask: false,
        natural_step: false,
    }
}

#[test]
fn a_prune_editor_that_also_drops_starts_from_the_rule_on_the_folded_model() {
    let mut rng = fresh_rng("drop and prune");
    let dev = Device::cpu();
    let (shapes, params) = small_relu_models(&mut rng);
    let models: Vec<(&MlpShape, &[f32])> = (0..4)
        .map(|i| (&shapes[i % 2], params[i % 2].as_slice()))
        .collect();
    // Column 2 is mostly column 0: the fold moves it there.
    let rows = 200;
    let mut x = random(&mut rng, rows * 6);
    for r in 0..rows {
        x[r * 6 + 2] = 0.7 * x[r * 6] + 0.2 * x[r * 6 + 2];
    }
    let train = Split {
        x,
        y: vec![0.0; rows],
        group: vec![0; rows],
    };
    let cols = columns_from(&train, vec![false; 6]);
    let moments = cols.moments.clone();
    let cfg = small_editor_cfg();
    // Asks: nothing removed, column 2, columns 2 and 5, column 5.
    let removed: [&[usize]; 4] = [&[], &[2], &[2, 5], &[5]];
    let asks: Vec<Ask> = removed
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut a = Ask::new(6);
            r.iter().for_each(|&c| a.removed[c] = true);
            a.sparsity = [0.5, 0.7, 0.6, 0.8][i];
            a
        })
        .collect();
    let c = &cols.calibration;
    for score in [
        PruneScore::Obs,
        PruneScore::LampReconstruction,
        PruneScore::Neurons,
    ] {
        let spec = prune_spec(score);
        let rule: Vec<Vec<f32>> = models
            .iter()
            .zip(&asks)
            .map(|((s, p), a)| {
                let folded = zero_columns(
                    s,
                    &least_squares_fold(s, p, &a.removed, &moments),
                    &a.removed,
                );
                let x = zero_batch_columns(&c.x, &a.removed);
                match score {
                    PruneScore::Neurons => {
                        neuron_reconstruct(s, &folded, &x, c.rows(), a.sparsity as f64)
                    }
                    PruneScore::LampReconstruction => {
                        lamp_reconstruction(s, &folded, &x, c.rows(), a.sparsity as f64)
                    }
                    _ => obs_prune(s, &folded, &x, c.rows(), a.sparsity as f64),
                }
            })
            .collect();
        let untrained = Editor::new(&dev, &cfg, 3).unwrap();
        let got = edit_models(&dev, &untrained, &spec, &models, &asks, &cols).unwrap();
        assert_eq!(
            got, rule,
            "{score:?}: the untrained editor is not the rule on the fold"
        );
        // Nothing removed: exactly the rule on the model itself.
        let (s0, p0) = models[0];
        let plain = match score {
            PruneScore::Neurons => neuron_reconstruct(s0, p0, &c.x, c.rows(), 0.5),
            PruneScore::LampReconstruction => lamp_reconstruction(s0, p0, &c.x, c.rows(), 0.5),
            _ => obs_prune(s0, p0, &c.x, c.rows(), 0.5),
        };
        assert_eq!(got[0], plain);
        let trained = random_editor(&dev, &cfg, &mut rng);
        let got = edit_models(&dev, &trained, &spec, &models, &asks, &cols).unwrap();
        for (m, (s, _)) in models.iter().enumerate() {
            let without = asks[m].removed.clone();
            let target = match score {
                PruneScore::Neurons => Target::PruneNeurons {
                    fraction: asks[m].sparsity as f64,
                    without: without.clone(),
                },
                _ => Target::Prune {
                    sparsity: asks[m].sparsity as f64,
                    without: without.clone(),
                },
            };
            assert!(target.verify(s, &got[m], None).met, "{score:?} model {m}");
            for o in 0..s.fan_out(0) {
                for c in (0..6).filter(|&c| without[c]) {
                    assert_eq!(got[m][o * 6 + c].to_bits(), 0, "model {m}: column {c} read");
                }
            }
            assert_ne!(
                got[m], rule[m],
                "{score:?} model {m}: the random editor edits nothing"
            );
        }
    }
    // Verification needs both: the sparsity of the unedited rule's result is met, but a
    // removed column that is still read fails the edit.
    let s = &shapes[0];
    let pruned = obs_prune(s, &params[0], &c.x, c.rows(), 0.5);
    let mut without = vec![false; 6];
    // A column some first-layer neuron still reads (weights are [out, in]).
    let read = (0..6)
        .find(|&c| (0..s.dims[1]).any(|o| pruned[o * 6 + c] != 0.0))
        .expect("a column still read");
    without[read] = true;
    assert!(weight_sparsity(s, &pruned) >= 0.5 - 1e-3);
    let target = |without: Vec<bool>| Target::Prune {
        sparsity: 0.5,
        without,
    };
    assert!(target(vec![false; 6]).verify(s, &pruned, None).met);
    assert!(!target(without).verify(s, &pruned, None).met);
}

/// The binary on the built-in data: `train --also-drop` trains a prune editor that drops
/// features; `edit --drop x1 --sparsity 0.8` gives a model that reads nothing of x1 at the exact
/// sparsity; `compare --requirement prune --drop x1` judges every method on both; editors not
/// trained for it, and `--also-drop` where it cannot apply, are refused in one line.
#[test]
fn drop_and_prune_in_one_edit_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = synthetic_zoo(dir.path(), "4");
    let ed = dir.path().join("ed");
    let train = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--zoo",
            arg(&zoo),
            "--requirement",
            "prune",
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--val-models",
            "2",
            "--out",
            arg(out),
        ];
        args.extend_from_slice(extra);
        regop_cpu(&args)
    };
    ok(&train(&ed, &["--also-drop"]));
    let editor = ed.join("editor.safetensors");
    let model = zoo.join("model-00001.safetensors");
    let out = dir.path().join("edited.safetensors");
    ok(&regop_cpu(&[
        "edit",
        "--editor",
        arg(&editor),
        "--model",
        arg(&model),
        "--sparsity",
        "0.8",
        "--drop",
        "x1",
        "--max-drop",
        "1",
        "--out",
        arg(&out),
    ]));
    let manifest = regop::workflows::zoo::read_manifest(&zoo).unwrap();
    let removed =
        regop::requirement::removed_columns(&manifest.schema, &["x1".to_string()]).unwrap();
    let edited = Model::load(&out).unwrap();
    let (shape, w) = (edited.shape(), edited.flat_params());
    let target = Target::Prune {
        sparsity: 0.8,
        without: removed.clone(),
    };
    assert!(target.verify(&shape, &w, None).met);
    let d = shape.fan_in(0);
    for o in 0..shape.fan_out(0) {
        for c in (0..d).filter(|&c| removed[c]) {
            assert_eq!(w[shape.weight_offset(0) + o * d + c], 0.0);
        }
    }
    let report = dir.path().join("cmp");
    ok(&regop_cpu(&[
        "compare",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "prune",
        "--sparsity",
        "0.8",
        "--drop",
        "x1",
        "--editor",
        arg(&editor),
        "--max-models",
        "2",
        "--val-models",
        "2",
        "--no-fine-tune",
        "--out",
        arg(&report),
    ]));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("remove x1 in the same edit"), "{md}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["kind"] == "editor"));
    // The rules prune the folded model, and the editor keeps x1 out: all meet both.
    for r in rows {
        assert_eq!(r["satisfied"], true, "{r}");
    }
    // A prune editor trained without --also-drop does not take --drop.
    let plain = dir.path().join("plain");
    ok(&train(&plain, &[]));
    let plain_editor = plain.join("editor.safetensors");
    let no = dir.path().join("no.safetensors");
    let msg = refused(&regop_cpu(&[
        "edit",
        "--editor",
        arg(&plain_editor),
        "--model",
        arg(&model),
        "--sparsity",
        "0.8",
        "--drop",
        "x1",
        "--out",
        arg(&no),
    ]));
    assert!(msg.contains("--also-drop"), "{msg}");
    assert!(!no.exists());
    let msg = refused(&regop_cpu(&[
        "compare",
        "--zoo",
        arg(&zoo),
        "--requirement",
        "prune",
        "--drop",
        "x1",
        "--editor",
        arg(&plain_editor),
        "--no-fine-tune",
        "--out",
        arg(&dir.path().join("no")),
    ]));
    assert!(msg.contains("--also-drop"), "{msg}");
    let msg = refused(&train(
        &dir.path().join("no"),
        &["--also-drop", "--prune-score", "lamp"],
    ));
    assert!(msg.contains("--also-drop"), "{msg}");
    assert!(!dir.path().join("no").exists());
}

/// Starts that keep a rule's mask (OBS, neurons) are remembered between edits of a process: an
/// edit must still start from its own model, calibration batch and sparsity. Edits alternate
/// between two batches, two sparsities and a model changed in place (the same memory), twice
/// over, and each must be the rule on its own inputs.
#[test]
fn remembered_rule_starts_follow_the_model_the_batch_and_the_sparsity() {
    let mut rng = fresh_rng("remembered starts");
    let dev = Device::cpu();
    let (shapes, params) = small_relu_models(&mut rng);
    let split = |rng: &mut _| {
        let rows = 80;
        Split {
            x: random(rng, rows * 6),
            y: vec![0.0; rows],
            group: vec![0; rows],
        }
    };
    let batches = [
        columns_from(&split(&mut rng), vec![false; 6]),
        columns_from(&split(&mut rng), vec![false; 6]),
    ];
    let untrained = Editor::new(&dev, &small_editor_cfg(), 3).unwrap();
    let mut model = params[0].clone();
    for score in [
        PruneScore::Obs,
        PruneScore::LampReconstruction,
        PruneScore::Neurons,
    ] {
        let spec = EditSpec {
            signals: false,
            also_drops: false,
            ..prune_spec(score)
        };
        for round in 0..2 {
            for (b, cols) in batches.iter().enumerate() {
                for sparsity in [0.5f32, 0.7] {
                    // The same memory holds another model on the second round.
                    model[3] = 0.25 * (round + 1) as f32;
                    let c = &cols.calibration;
                    let rule = match score {
                        PruneScore::Neurons => {
                            neuron_reconstruct(&shapes[0], &model, &c.x, c.rows(), sparsity as f64)
                        }
                        PruneScore::LampReconstruction => {
                            lamp_reconstruction(&shapes[0], &model, &c.x, c.rows(), sparsity as f64)
                        }
                        _ => obs_prune(&shapes[0], &model, &c.x, c.rows(), sparsity as f64),
                    };
                    let mut ask = Ask::new(6);
                    ask.sparsity = sparsity;
                    let models = [(&shapes[0], model.as_slice())];
                    let got = edit_models(&dev, &untrained, &spec, &models, &[ask], cols).unwrap();
                    assert_eq!(
                        got[0], rule,
                        "{score:?}, round {round}, batch {b}, sparsity {sparsity}"
                    );
                }
            }
        }
    }
}
