//! What a data-reading editor is told of each model: the gradient of the edit's loss at the
//! base against finite differences of a host reference, frozen parameters left out, activation
//! statistics against a host forward, on both backends; and the OBS-based prune edit, whose
//! untrained editor is the rule itself, and the minimisation edit that starts from the least-squares
//! fold.

mod common;
use common::*;
use rand::Rng;
use regop::engine::kernels::activation::Activation;
use regop::engine::kernels::fairness::Gap;
use regop::io::data::Split;
use regop::networks::editor::Editor;
use regop::networks::mlp::{forward_host, init_params, MlpShape};
use regop::requirement::verify::Target;
use regop::requirement::{
    Ask, Columns, EditSpec, FairTarget, MinimiseBase, PruneScore, Requirement,
};
use regop::workflows::baselines::calibration::layer_out;
use regop::workflows::baselines::{
    fold_reconstruction, fold_reconstruction_step, fold_removed_means, lamp_reconstruction,
    least_squares_fold, neuron_reconstruct, obs_prune, reconstruction_error,
};
use regop::workflows::edit::edit_models;
use regop::workflows::edit::signals::signals;
use regop::Device;

/// Jensen-Shannon divergence (natural log) between the distributions of logits `p` and `q`
/// (one logit: Bernoulli of its sigmoid; several: softmax).
fn jsd_host(p: &[f32], q: &[f32]) -> f64 {
    let dist = |v: &[f32]| -> Vec<f64> {
        let v: Vec<f64> = match v.len() {
            1 => vec![0.0, v[0] as f64],
            _ => v.iter().map(|x| *x as f64).collect(),
        };
        let m = v.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = v.iter().map(|x| (x - m).exp()).sum();
        v.iter().map(|x| (x - m).exp() / z).collect()
    };
    let (p, q) = (dist(p), dist(q));
    p.iter()
        .zip(&q)
        .map(|(a, b)| {
            let m = 0.5 * (a + b);
            0.5 * (a * (a / m).ln() + b * (b / m).ln())
        })
        .sum()
}

/// Cross-entropy (natural log) of logits `s` to class `label` (one logit: Bernoulli of its
/// sigmoid, `label` 0 or 1).
fn cross_entropy_host(s: &[f32], label: f32) -> f64 {
    let s: Vec<f64> = match s.len() {
        1 => vec![0.0, s[0] as f64],
        _ => s.iter().map(|v| *v as f64).collect(),
    };
    let m = s.iter().cloned().fold(f64::MIN, f64::max);
    m + s.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - s[label as usize]
}

/// Mean over the rows of the JSD between the original model and `base`, plus `label_weight`
/// times `base`'s cross-entropy to the rows' labels.
fn loss(shape: &MlpShape, original: &[f32], base: &[f32], calib: &Split, label_weight: f32) -> f64 {
    let rows = calib.rows();
    let (a, b) = (
        forward_host(shape, original, &calib.x, rows),
        forward_host(shape, base, &calib.x, rows),
    );
    let k = shape.outputs();
    (0..rows)
        .map(|r| {
            let (a, b) = (&a[r * k..][..k], &b[r * k..][..k]);
            jsd_host(a, b) + label_weight as f64 * cross_entropy_host(b, calib.y[r])
        })
        .sum::<f64>()
        / rows as f64
}

/// Whether each hidden pre-activation of each calibration row is positive, under `params`.
fn hidden_signs(shape: &MlpShape, params: &[f32], calib: &Split) -> Vec<bool> {
    (0..shape.layers() - 1)
        .flat_map(|l| {
            let upto = MlpShape::new(&shape.dims[..l + 2], shape.activation);
            forward_host(&upto, &params[..upto.n_params()], &calib.x, calib.rows())
        })
        .map(|v| v > 0.0)
        .collect()
}

/// Mean and standard deviation of each column of `v` [rows, width].
fn column_stats(v: &[f32], rows: usize, width: usize) -> Vec<f32> {
    (0..width)
        .flat_map(|j| {
            let col: Vec<f64> = (0..rows).map(|r| v[r * width + j] as f64).collect();
            let mean = col.iter().sum::<f64>() / rows as f64;
            let var = col.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / rows as f64;
            [mean as f32, var.sqrt() as f32]
        })
        .collect()
}

#[test]
fn signals_are_the_scaled_loss_gradient_and_the_activation_statistics() {
    check_signals("signals", 0.0);
}

#[test]
fn signals_with_labels_carry_the_gradient_of_the_jsd_and_the_cross_entropy() {
    check_signals("signals with labels", 0.7);
}

/// The signals of three models (two shapes, one with three classes) at random bases against
/// the host loss with `label_weight`, on both backends.
fn check_signals(name: &str, label_weight: f32) {
    let mut rng = fresh_rng(name);
    let shapes = [
        MlpShape::new(&[4, 5, 1], Activation::Relu),
        MlpShape::new(&[4, 5, 1], Activation::Relu),
        MlpShape::new(&[4, 3, 3], Activation::Tanh),
    ];
    let params: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| init_params(s, rng.random()))
        .collect();
    let bases: Vec<Vec<f32>> = params
        .iter()
        .map(|p| p.iter().map(|v| v + rng.random_range(-0.5..0.5)).collect())
        .collect();
    let frozen: Vec<Vec<bool>> = params
        .iter()
        .map(|p| p.iter().map(|_| rng.random_bool(0.2)).collect())
        .collect();
    let mut asks: Vec<Ask> = (0..3).map(|_| Ask::new(4)).collect();
    asks[1].removed[2] = true;
    let rows = 24;
    let calib = Split {
        x: random(&mut rng, rows * 4),
        // Classes 0 and 1: labels of the binary models and of the three-class one alike.
        y: (0..rows).map(|_| rng.random_range(0..2) as f32).collect(),
        group: (0..rows).map(|r| (r % 2) as u32).collect(),
    };
    let models: Vec<(&MlpShape, &[f32])> = shapes
        .iter()
        .zip(&params)
        .map(|(s, p)| (s, p.as_slice()))
        .collect();
    let base_refs: Vec<&[f32]> = bases.iter().map(Vec::as_slice).collect();
    let on = |dev: &Device| {
        signals(
            dev,
            &models,
            &base_refs,
            &frozen,
            &asks,
            &calib,
            label_weight,
        )
        .unwrap()
    };
    let (cpu, gpu_sig) = (on(&Device::cpu()), on(&gpu()));
    for (m, shape) in shapes.iter().enumerate() {
        let s = &cpu[m];
        // The gradient, unscaled, against central differences of the host loss.
        let scale = 10f64.powf(s.log_scale as f64);
        // A small step, so that few ReLU kinks fall within it.
        let h = 2e-3f32;
        let mut b = bases[m].clone();
        let (mut num, mut den, mut kinked, mut live) = (0.0f64, 0.0f64, 0usize, 0usize);
        for i in 0..b.len() {
            if frozen[m][i] {
                assert_eq!(
                    s.grad[i], 0.0,
                    "model {m}: frozen parameter {i} has a gradient"
                );
                continue;
            }
            live += 1;
            // A ReLU kink inside the step (a hidden pre-activation of some row changing sign
            // between the two ends) leaves no derivative to check against: skipped.
            b[i] = bases[m][i] + h;
            let (up, signs_up) = (
                loss(shape, &params[m], &b, &calib, label_weight),
                hidden_signs(shape, &b, &calib),
            );
            b[i] = bases[m][i] - h;
            let (down, signs_down) = (
                loss(shape, &params[m], &b, &calib, label_weight),
                hidden_signs(shape, &b, &calib),
            );
            b[i] = bases[m][i];
            if shape.activation == Activation::Relu && signs_up != signs_down {
                kinked += 1;
                continue;
            }
            let fd = (up - down) / (2.0 * h as f64);
            num += (s.grad[i] as f64 * scale - fd).powi(2);
            den += fd * fd;
        }
        assert!(den > 1e-12, "model {m}: the loss does not move");
        assert!(
            kinked * 2 < live,
            "model {m}: {kinked} of {live} parameters at a kink"
        );
        let rel = (num / den).sqrt();
        assert!(rel < 1e-3, "model {m}: gradient relative error {rel:e}");
        // Unit RMS over the live values.
        let live: Vec<f64> = s
            .grad
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| *v as f64)
            .collect();
        let rms = (live.iter().map(|v| v * v).sum::<f64>() / live.len() as f64).sqrt();
        assert!((rms - 1.0).abs() < 1e-4, "model {m}: gradient RMS {rms}");
        // Activation statistics: input columns (removed ones read 0), then each layer's outputs.
        let mut want = column_stats(&calib.x, rows, 4);
        for c in 0..4 {
            if asks[m].removed[c] {
                want[2 * c] = 0.0;
                want[2 * c + 1] = 0.0;
            }
        }
        for l in 0..shape.layers() {
            let upto = MlpShape::new(&shape.dims[..l + 2], shape.activation);
            let mut out = forward_host(&upto, &bases[m][..upto.n_params()], &calib.x, rows);
            if l + 1 < shape.layers() {
                out.iter_mut().for_each(|v| *v = shape.activation.apply(*v));
            }
            want.extend(column_stats(&out, rows, shape.fan_out(l)));
        }
        assert_eq!(s.activations.len(), want.len());
        for (k, (a, w)) in s.activations.iter().zip(&want).enumerate() {
            assert!(
                (a - w).abs() < 1e-4 * (1.0 + w.abs()),
                "model {m}: statistic {k}: {a} vs {w}"
            );
        }
        // The device agrees with the CPU backend.
        let g = &gpu_sig[m];
        assert!((g.log_scale - s.log_scale).abs() < 1e-4);
        for (a, b) in s
            .grad
            .iter()
            .zip(&g.grad)
            .chain(s.activations.iter().zip(&g.activations))
        {
            assert!(
                (a - b).abs() < 1e-3 * (1.0 + a.abs()),
                "model {m}: cpu {a} vs gpu {b}"
            );
        }
    }
}

/// What a prune editor of 6-input models reads: a calibration batch of `rows` random rows, no
/// sensitive columns, no means or moments.
fn calibration_columns(rng: &mut impl Rng, rows: usize) -> Columns {
    Columns {
        sensitive: vec![false; 6],
        means: vec![],
        calibration: Split {
            x: random(rng, rows * 6),
            y: vec![0.0; rows],
            group: vec![0; rows],
        },
        moments: Default::default(),
    }
}

/// An OBS prune editor starts from the rule: untrained, it returns OBS reconstruction's edit;
/// any editor keeps OBS's mask exactly (the weights the rule pruned stay zero, the sparsity is
/// the asked one), with or without the signals.
#[test]
fn an_obs_prune_editor_starts_from_the_rule_and_keeps_its_mask() {
    let mut rng = fresh_rng("obs editor");
    let dev = Device::cpu();
    let (shapes, params) = small_relu_models(&mut rng);
    let models: Vec<(&MlpShape, &[f32])> = shapes
        .iter()
        .zip(&params)
        .map(|(s, p)| (s, p.as_slice()))
        .collect();
    let rows = 64;
    let cols = calibration_columns(&mut rng, rows);
    let calib = cols.calibration.clone();
    let cfg = small_editor_cfg();
    for (score, signals) in [
        (PruneScore::Obs, false),
        (PruneScore::Obs, true),
        (PruneScore::LampReconstruction, true),
        (PruneScore::Neurons, true),
    ] {
        let spec = EditSpec {
            requirement: Requirement::Prune,
            gap: Gap::Eo,
            gamma: 0.1,
            // A temperature lets a LAMP + reconstruction editor move the mask (the next test);
            // OBS and neuron editors keep theirs whatever it is.
            tau: if score == PruneScore::LampReconstruction {
                0.0
            } else {
                1.0
            },
            prune_score: score,
            fair_sharpness: 1.0,
            fair_target: FairTarget::Penalty,
            signals,
            signal_label_weight: 0.0,
            minimise_base: MinimiseBase::Mean,
            also_drops: false,
            also_prunes: false,
            resolve_mask: false,
            natural_step: false,
        };
        let asks: Vec<Ask> = [0.5f32, 0.8]
            .iter()
            .map(|&s| Ask {
                sparsity: s,
                ..Ask::new(6)
            })
            .collect();
        let rule: Vec<Vec<f32>> = models
            .iter()
            .zip(&asks)
            .map(|((s, p), a)| match score {
                PruneScore::Neurons => neuron_reconstruct(s, p, &calib.x, rows, a.sparsity as f64),
                PruneScore::LampReconstruction => {
                    lamp_reconstruction(s, p, &calib.x, rows, a.sparsity as f64)
                }
                _ => obs_prune(s, p, &calib.x, rows, a.sparsity as f64),
            })
            .collect();
        let untrained = Editor::new(&dev, &cfg, 3).unwrap();
        let got = edit_models(&dev, &untrained, &spec, &models, &asks, &cols).unwrap();
        assert_eq!(
            got, rule,
            "{score:?}, signals {signals}: the untrained editor is not the rule"
        );
        let trained = random_editor(&dev, &cfg, &mut rng);
        let got = edit_models(&dev, &trained, &spec, &models, &asks, &cols).unwrap();
        for (m, s) in shapes.iter().enumerate() {
            let mut moved = 0;
            for l in 0..s.layers() {
                // Whole neurons: a removed neuron's bias is part of the mask.
                let end = match score {
                    PruneScore::Neurons if l + 1 < s.layers() => s.bias_offset(l) + s.fan_out(l),
                    _ => s.bias_offset(l),
                };
                for i in s.weight_offset(l)..end {
                    assert_eq!(
                        got[m][i] == 0.0,
                        rule[m][i] == 0.0,
                        "model {m}: weight {i} left the rule's mask"
                    );
                    moved += (got[m][i] != rule[m][i]) as usize;
                }
            }
            assert!(
                moved > 0,
                "model {m}: a random editor changed no kept weight"
            );
            if score == PruneScore::Neurons {
                let target = Target::PruneNeurons {
                    fraction: asks[m].sparsity as f64,
                    without: Vec::new(),
                };
                assert!(
                    target.verify(s, &got[m], None).met,
                    "model {m}: neurons left"
                );
            }
        }
        // Without the calibration batch the edit is refused, not guessed.
        let bare = Columns {
            calibration: Split::default(),
            ..cols.clone()
        };
        assert!(edit_models(&dev, &untrained, &spec, &models, &asks, &bare).is_err());
    }
}

/// A LAMP + reconstruction editor trained with a temperature may move the rule's mask: it reads
/// a third edge feature (the values pruned weights return with); untrained, and at step 0 of
/// any editor, it is the rule exactly; a random editor keeps exactly the asked number of
/// weights, brings back weights the rule pruned at their own values plus its delta, and drops
/// some the rule kept.
#[test]
fn a_lamp_reconstruction_editor_with_a_temperature_moves_the_mask() {
    use regop::networks::editor::EditorConfig;
    use regop::workflows::edit::edit_models_at;
    let mut rng = fresh_rng("moving the rule's mask");
    let dev = Device::cpu();
    let (shapes, params) = small_relu_models(&mut rng);
    let models: Vec<(&MlpShape, &[f32])> = shapes
        .iter()
        .zip(&params)
        .map(|(s, p)| (s, p.as_slice()))
        .collect();
    let rows = 64;
    let cols = calibration_columns(&mut rng, rows);
    let calib = cols.calibration.clone();
    let spec = EditSpec {
        requirement: Requirement::Prune,
        gap: Gap::Eo,
        gamma: 0.1,
        tau: 0.5,
        prune_score: PruneScore::LampReconstruction,
        fair_sharpness: 1.0,
        fair_target: FairTarget::Penalty,
        signals: true,
        signal_label_weight: 0.0,
        minimise_base: MinimiseBase::Mean,
        also_drops: false,
        also_prunes: false,
        resolve_mask: false,
        natural_step: false,
    };
    assert!(spec.moves_rule_mask());
    let cfg = EditorConfig {
        edge_features: spec.edge_features(),
        ..small_editor_cfg()
    };
    assert_eq!(cfg.edge_features, 3);
    let asks: Vec<Ask> = [0.5f32, 0.8]
        .iter()
        .map(|&s| Ask {
            sparsity: s,
            ..Ask::new(6)
        })
        .collect();
    let rule: Vec<Vec<f32>> = models
        .iter()
        .zip(&asks)
        .map(|((s, p), a)| lamp_reconstruction(s, p, &calib.x, rows, a.sparsity as f64))
        .collect();
    let untrained = Editor::new(&dev, &cfg, 3).unwrap();
    let got = edit_models(&dev, &untrained, &spec, &models, &asks, &cols).unwrap();
    assert_eq!(got, rule, "the untrained editor is not the rule");

    // A random editor whose mask logits are large next to the gaps between LAMP priors, so
    // that it moves the mask. The deltas are linear in the step: where a weight is kept at
    // steps 1/2 and 1, twice the first less the second is the value it starts from, the rule's
    // for the weights it kept and the model's own for those it pruned.
    let random = random_editor(&dev, &cfg, &mut rng);
    let mut p = dev.read_all(&random.params).unwrap();
    let h = cfg.hidden;
    for e in random
        .layout
        .entries
        .iter()
        .filter(|e| e.name == "edge_head.w2")
    {
        p[e.span.offset + h..e.span.offset + 2 * h]
            .iter_mut()
            .for_each(|v| *v *= 50.0);
    }
    let trained = Editor::from_params(&dev, &cfg, &p).unwrap();
    let steps = [0.0, 0.5, 1.0];
    let at = edit_models_at(&dev, &trained, &spec, &models, &asks, &cols, &steps).unwrap();
    let (mut back, mut dropped, mut checked) = (0, 0, 0);
    for (m, s) in shapes.iter().enumerate() {
        assert_eq!(at[m][0], rule[m], "model {m}: step 0 is not the rule");
        let (half, got) = (&at[m][1], &at[m][2]);
        let weights = |v: &[f32]| -> Vec<usize> {
            (0..s.layers())
                .flat_map(|l| s.weight_offset(l)..s.bias_offset(l))
                .filter(|&i| v[i] != 0.0)
                .collect()
        };
        let (kept, ruled) = (weights(got), weights(&rule[m]));
        assert_eq!(kept.len(), ruled.len(), "model {m}: not the asked sparsity");
        assert_eq!(weights(half).len(), ruled.len(), "model {m}: step 1/2");
        for &i in &kept {
            let pruned = rule[m][i] == 0.0;
            back += pruned as usize;
            if half[i] != 0.0 {
                let start = if pruned { params[m][i] } else { rule[m][i] };
                let from = 2.0 * half[i] - got[i];
                assert!(
                    (from - start).abs() < 1e-5 * (1.0 + start.abs()),
                    "model {m}: weight {i} (pruned by the rule: {pruned}) starts at {from}, not {start}"
                );
                checked += pruned as usize;
            }
        }
        dropped += ruled.iter().filter(|&&i| got[i] == 0.0).count();
    }
    assert!(
        back > 0 && back == dropped,
        "{back} back, {dropped} dropped"
    );
    assert!(checked > 0, "no weight came back at both steps 1/2 and 1");

    // Keeping only the editor's mask (`resolve_mask`): step 0 is still the rule, and at step 1
    // the same weights are kept, re-solved with the model's own biases, so that every layer
    // reproduces the model's pre-activations on the calibration batch at least as well as the
    // editor's values do on the same input (least squares over the kept weights).
    let resolving = EditSpec {
        resolve_mask: true,
        natural_step: false,
        ..spec
    };
    let solved = edit_models_at(&dev, &trained, &resolving, &models, &asks, &cols, &steps).unwrap();
    let mut closer = 0;
    for (m, s) in shapes.iter().enumerate() {
        assert_eq!(
            solved[m][0], rule[m],
            "model {m}: step 0 re-solved is not the rule"
        );
        let (edit, re) = (&at[m][2], &solved[m][2]);
        let mut editors = edit.clone();
        for l in 0..s.layers() {
            let (w, b) = (s.weight_offset(l)..s.bias_offset(l), s.bias_offset(l));
            let kept =
                |v: &[f32]| -> Vec<bool> { v[w.clone()].iter().map(|x| *x != 0.0).collect() };
            assert_eq!(kept(re), kept(edit), "model {m}, layer {l}: another mask");
            let biases = b..b + s.fan_out(l);
            assert_eq!(
                re[biases.clone()],
                params[m][biases.clone()],
                "model {m}, layer {l}"
            );
            editors[biases.clone()].copy_from_slice(&params[m][biases]);
        }
        let mut x = calib.x.clone();
        for l in 0..s.layers() {
            let by_editor = reconstruction_error(s, &params[m], &editors, l, &x, rows);
            let by_resolve = reconstruction_error(s, &params[m], re, l, &x, rows);
            assert!(
                by_resolve <= by_editor * (1.0 + 1e-4) + 1e-6,
                "model {m}, layer {l}: re-solved error {by_resolve} above the editor's {by_editor}"
            );
            closer += (by_resolve < 0.999 * by_editor) as usize;
            x = layer_out(s, re, l, &x, rows);
        }
    }
    assert!(
        closer > 0,
        "the re-solve never came closer than the editor's values"
    );
}

/// A minimisation editor that starts from the least-squares fold, or from the fold with the
/// later layers refitted: untrained, it is that rule (removed columns exactly zero); it
/// refuses to edit without the data's moments, or, refitting, without its calibration batch.
#[test]
fn a_least_squares_minimise_editor_starts_from_the_fold() {
    let mut rng = fresh_rng("least-squares editor");
    let dev = Device::cpu();
    let shapes = [
        MlpShape::new(&[6, 8, 1], Activation::Relu),
        MlpShape::new(&[6, 5, 4, 1], Activation::Tanh),
    ];
    let params: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| init_params(s, rng.random()))
        .collect();
    let models: Vec<(&MlpShape, &[f32])> = shapes
        .iter()
        .zip(&params)
        .map(|(s, p)| (s, p.as_slice()))
        .collect();
    // Column 3 is mostly column 0: the fold moves it there.
    let rows = 200;
    let mut x = random(&mut rng, rows * 6);
    for r in 0..rows {
        x[r * 6 + 3] = 0.8 * x[r * 6] + 0.1 * x[r * 6 + 3];
    }
    let train = Split {
        x,
        y: vec![0.0; rows],
        group: vec![0; rows],
    };
    let cols = columns_from(&train, vec![false; 6]);
    let moments = cols.moments.clone();
    let mut spec = EditSpec {
        requirement: Requirement::Minimise,
        gap: Gap::Eo,
        gamma: 0.1,
        tau: 0.0,
        prune_score: PruneScore::Lamp,
        fair_sharpness: 1.0,
        fair_target: FairTarget::Penalty,
        signals: false,
        signal_label_weight: 0.0,
        minimise_base: MinimiseBase::LeastSquares,
        also_drops: false,
        also_prunes: false,
        resolve_mask: false,
        natural_step: false,
    };
    let mut asks: Vec<Ask> = (0..2).map(|_| Ask::new(6)).collect();
    asks[0].removed[3] = true;
    asks[1].removed[1] = true;
    asks[1].removed[3] = true;
    let cfg = small_editor_cfg();
    let untrained = Editor::new(&dev, &cfg, 1).unwrap();
    let got = edit_models(&dev, &untrained, &spec, &models, &asks, &cols).unwrap();
    spec.minimise_base = MinimiseBase::Reconstruction;
    let refitted = edit_models(&dev, &untrained, &spec, &models, &asks, &cols).unwrap();
    spec.minimise_base = MinimiseBase::ReconstructionStep;
    let stepped = edit_models(&dev, &untrained, &spec, &models, &asks, &cols).unwrap();
    // The same step taken after the edit instead (`EditSpec::natural_step`).
    spec.minimise_base = MinimiseBase::Reconstruction;
    spec.natural_step = true;
    let stepped_after = edit_models(&dev, &untrained, &spec, &models, &asks, &cols).unwrap();
    spec.natural_step = false;
    let (cx, crows) = (&cols.calibration.x, cols.calibration.rows());
    for (m, s) in shapes.iter().enumerate() {
        let want = least_squares_fold(s, &params[m], &asks[m].removed, &moments);
        assert_eq!(
            got[m], want,
            "model {m}: the untrained editor is not the fold"
        );
        let want = fold_reconstruction(s, &params[m], &asks[m].removed, &moments, cx, crows);
        assert_eq!(
            refitted[m], want,
            "model {m}: the untrained editor is not the fold + reconstruction"
        );
        assert_ne!(refitted[m], got[m], "model {m}: nothing was refitted");
        let want =
            fold_reconstruction_step(s, &params[m], &asks[m].removed, &moments, &cols.calibration);
        assert_eq!(
            stepped[m], want,
            "model {m}: the untrained editor is not the fold + reconstruction + natural step"
        );
        assert_ne!(stepped[m], refitted[m], "model {m}: no step was taken");
        assert_eq!(
            stepped_after[m], stepped[m],
            "model {m}: the step after the edit is not the rule's step"
        );
        let mean = fold_removed_means(s, &params[m], &asks[m].removed, &cols.means);
        assert_ne!(got[m], mean, "model {m}: the fold is the mean fold");
        for o in 0..s.fan_out(0) {
            assert_eq!(
                got[m][o * 6 + 3],
                0.0,
                "model {m}: a removed column is read"
            );
        }
    }
    let no_batch = Columns {
        calibration: Split {
            x: vec![],
            y: vec![],
            group: vec![],
        },
        ..cols.clone()
    };
    assert!(edit_models(&dev, &untrained, &spec, &models, &asks, &no_batch).is_err());
    spec.minimise_base = MinimiseBase::LeastSquares;
    let bare = Columns {
        moments: Default::default(),
        ..cols.clone()
    };
    assert!(edit_models(&dev, &untrained, &spec, &models, &asks, &bare).is_err());
}
