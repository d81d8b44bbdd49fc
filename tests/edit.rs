//! Edits: the JSD and edit-application kernels (GPU vs CPU with poisoned outputs, finite
//! differences), the exactness guarantees of `edit_models` (removed columns exactly zero,
//! exactly the top-k weights kept), and the whole training step's gradient checked end to end
//! by finite differences through the edited models and the editor.

mod common;
use common::*;
use rand::Rng;
use regop::engine::kernels::activation::Activation;
use regop::engine::kernels::apply_edit::{
    apply_edit_backward, apply_edit_forward, ApplyOpts, KEEP_ALL,
};
use regop::engine::kernels::fairness::Gap;
use regop::engine::kernels::jsd::jsd;
use regop::networks::editor::{Editor, EditorConfig};
use regop::networks::graph::PosIds;
use regop::networks::mlp::{init_params, MlpShape};
use regop::requirement::COND_DIM;
use regop::requirement::{
    Ask, Columns, EditSpec, FairTarget, MinimiseBase, PruneScore, Requirement,
};
use regop::workflows::baselines::fold_removed_means;
use regop::workflows::baselines::{choose_shift, shift_grid};
use regop::workflows::edit::edit_models;
use regop::workflows::edit::step::{step_gradient, TrainBatch};
use regop::Device;

fn bits(v: &[u32]) -> Vec<f32> {
    v.iter().map(|u| f32::from_bits(*u)).collect()
}

#[test]
fn jsd_matches_cpu_and_finite_differences() {
    let gpu = gpu();
    let mut rng = fresh_rng("jsd");
    for &(rows, classes) in &[(1, 1), (7, 1), (257, 1), (33, 3), (64, 5)] {
        let mut p = Packer::new();
        let pl = p.put(
            random(&mut rng, rows * classes)
                .iter()
                .map(|v| 3.0 * v)
                .collect(),
        );
        let ql = p.put(
            random(&mut rng, rows * classes)
                .iter()
                .map(|v| 3.0 * v)
                .collect(),
        );
        let loss = p.poison(rows);
        let dq = p.poison(rows * classes);
        let init = p.finish();
        let scale = 0.5;
        let run = |dev: &Device, buf: &regop::Buf| {
            jsd(
                dev,
                classes,
                scale,
                buf.view(pl.start, pl.len()),
                buf.view(ql.start, ql.len()),
                buf.view(loss.start, rows),
                buf.view(dq.start, dq.len()),
            )
        };
        let (cpu, g) = on_both(&gpu, &init, run);
        // Where P and Q nearly agree the divergence is a small difference of O(1) terms:
        // compare relative to the scale of the terms (norms floored at 1e-2).
        compare_with(
            &format!("jsd {rows}x{classes}"),
            &cpu,
            &g,
            &[(loss.clone(), 1e-4, 1e-2), (dq.clone(), 1e-4, 1e-2)],
        );
        for r in 0..rows {
            let l = cpu[loss.start + r];
            assert!(
                (0.0..=std::f32::consts::LN_2 + 1e-6).contains(&l),
                "JSD out of [0, ln 2]: {l}"
            );
        }
        // Finite differences: d(scale * sum of losses) / dq.
        let dev = Device::cpu();
        let total = |q: &[f32]| -> f64 {
            let mut b = init.clone();
            b[ql.clone()].copy_from_slice(q);
            let buf = dev.upload(&b).unwrap();
            run(&dev, &buf).unwrap();
            let out = dev.read_all(&buf).unwrap();
            out[loss.clone()].iter().map(|v| *v as f64).sum::<f64>() * scale as f64
        };
        let q0 = init[ql.clone()].to_vec();
        let h = 1e-2f32;
        for i in 0..q0.len().min(40) {
            let mut q = q0.clone();
            q[i] += h;
            let up = total(&q);
            q[i] -= 2.0 * h;
            let down = total(&q);
            let numeric = (up - down) / (2.0 * h as f64);
            let analytic = cpu[dq.start + i] as f64;
            assert!(
                (numeric - analytic).abs() < 2e-3 * (1.0 + analytic.abs()) + 1e-4,
                "jsd {rows}x{classes} gradient {i}: analytic {analytic}, numeric {numeric}"
            );
        }
    }
    // Identical predictions: zero divergence, zero gradient.
    let dev = Device::cpu();
    let buf = dev
        .upload(&[1.5, -0.5, 1.5, -0.5, 9.0, 9.0, 9.0, 9.0])
        .unwrap();
    jsd(
        &dev,
        1,
        1.0,
        buf.view(0, 2),
        buf.view(2, 2),
        buf.view(4, 2),
        buf.view(6, 2),
    )
    .unwrap();
    assert_eq!(dev.read(&buf, 4, 4).unwrap(), vec![0.0; 4]);
}

/// A random edit problem: `models` models of `per` parameters each, a random bijection from
/// parameters onto head rows (plus `extra` rows no parameter reads), random kinds.
struct Problem {
    orig: Vec<f32>,
    prior: Vec<f32>,
    thr: Vec<f32>,
    head: Vec<f32>,
    map: Vec<u32>,
    kind: Vec<u32>,
    inv: Vec<u32>,
    dout: Vec<f32>,
}

fn problem(rng: &mut impl Rng, models: usize, per: usize, extra: usize, prune: bool) -> Problem {
    let n = models * per;
    let rows = n + extra;
    let mut order: Vec<u32> = (0..rows as u32).collect();
    for i in (1..rows).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let map: Vec<u32> = order[..n].to_vec();
    let mut inv = vec![u32::MAX; rows];
    for (p, &h) in map.iter().enumerate() {
        inv[h as usize] = p as u32;
    }
    let kind = (0..n)
        .map(|p| ((p / per) as u32) << 2 | rng.random_range(0..3u32))
        .collect();
    Problem {
        orig: random(rng, n),
        prior: (0..n).map(|_| rng.random_range(-3.0f32..1.0)).collect(),
        thr: (0..models)
            .map(|_| {
                if prune {
                    rng.random_range(-2.0f32..1.0)
                } else {
                    KEEP_ALL
                }
            })
            .collect(),
        head: random(rng, 2 * rows),
        map,
        kind,
        inv,
        dout: random(rng, n),
    }
}

#[test]
fn edit_kernels_match_cpu_and_finite_differences() {
    let gpu = gpu();
    let mut rng = fresh_rng("edit kernels");
    let o = ApplyOpts {
        gamma: 0.7,
        tau: 0.5,
    };
    for &(models, per, extra, prune) in &[
        (1, 1, 0, false),
        (3, 7, 2, true),
        (4, 257, 33, true),
        (2, 33, 5, false),
    ] {
        let pr = problem(&mut rng, models, per, extra, prune);
        let n = models * per;
        let rows = n + extra;
        let mut p = Packer::new();
        let data = p.put([pr.orig.clone(), pr.prior.clone(), pr.thr.clone()].concat());
        let head = p.put(pr.head.clone());
        let idx = p.put(bits(
            &[pr.map.clone(), pr.kind.clone(), pr.inv.clone()].concat(),
        ));
        let dout = p.put(pr.dout.clone());
        let out = p.poison(n);
        let dhead = p.poison(2 * rows);
        let init = p.finish();
        let run = |dev: &Device, buf: &regop::Buf| {
            let v = |r: &std::ops::Range<usize>| buf.view(r.start, r.len());
            let d = v(&data);
            let ix = v(&idx);
            apply_edit_forward(
                dev,
                &o,
                d.sub(0, n),
                d.sub(n, n),
                v(&head),
                ix.sub(0, n),
                ix.sub(n, n),
                d.sub(2 * n, models),
                v(&out),
            )?;
            apply_edit_backward(
                dev,
                &o,
                d.sub(0, n),
                d.sub(n, n),
                v(&head),
                ix.sub(2 * n, rows),
                ix.sub(n, n),
                d.sub(2 * n, models),
                v(&dout),
                v(&dhead),
            )
        };
        let (cpu, g) = on_both(&gpu, &init, run);
        compare(
            &format!("edit {models}x{per}+{extra}"),
            &cpu,
            &g,
            &[out.clone(), dhead.clone()],
        );
        // Guarantees: removed weights are exactly zero, pruned weights are zero, rows no
        // parameter reads get no gradient.
        for i in 0..n {
            if pr.kind[i] & 3 == 2 {
                assert_eq!(
                    cpu[out.start + i].to_bits(),
                    0,
                    "removed weight {i} not zero"
                );
            }
        }
        for h in 0..rows {
            if pr.inv[h] == u32::MAX {
                assert_eq!(cpu[dhead.start + 2 * h], 0.0);
                assert_eq!(cpu[dhead.start + 2 * h + 1], 0.0);
            }
        }
        if prune {
            continue;
        }
        // Without a mask the edit is smooth: finite differences of sum(dout * out) by head.
        let dev = Device::cpu();
        let total = |hv: &[f32]| -> f64 {
            let mut b = init.clone();
            b[head.clone()].copy_from_slice(hv);
            let buf = dev.upload(&b).unwrap();
            run(&dev, &buf).unwrap();
            let r = dev.read_all(&buf).unwrap();
            (0..n)
                .map(|i| r[out.start + i] as f64 * pr.dout[i] as f64)
                .sum()
        };
        let h = 1e-2f32;
        for i in 0..(2 * rows).min(60) {
            let mut hv = pr.head.clone();
            hv[i] += h;
            let up = total(&hv);
            hv[i] -= 2.0 * h;
            let down = total(&hv);
            let numeric = (up - down) / (2.0 * h as f64);
            let analytic = cpu[dhead.start + i] as f64;
            assert!(
                (numeric - analytic).abs() < 1e-3 * (1.0 + analytic.abs()),
                "edit gradient {i}: analytic {analytic}, numeric {numeric}"
            );
        }
    }
}

/// Holding a learned mask's count: the per-parameter terms, their per-model sums and the held
/// gradient match on both backends (terms and sums poisoned first); after it, each model's
/// mask-logit gradients over its weights sum to zero, and no other head value moves.
#[test]
fn mask_count_kernels_match_cpu_and_hold_the_count() {
    use regop::engine::kernels::apply_edit::{mask_count_hold, mask_count_terms, MaskScores};
    use regop::engine::kernels::reduce::{reduce, Axis, Reduce};
    let gpu = gpu();
    let mut rng = fresh_rng("mask count kernels");
    let o = ApplyOpts {
        gamma: 0.7,
        tau: 0.5,
    };
    for &(models, per, extra) in &[(1, 1, 0), (3, 7, 2), (4, 257, 33)] {
        let pr = problem(&mut rng, models, per, extra, true);
        let n = models * per;
        let rows = n + extra;
        let mut p = Packer::new();
        let data = p.put([pr.orig.clone(), pr.prior.clone(), pr.thr.clone()].concat());
        let head = p.put(pr.head.clone());
        let idx = p.put(bits(
            &[pr.map.clone(), pr.kind.clone(), pr.inv.clone()].concat(),
        ));
        let dhead_start = random(&mut rng, 2 * rows);
        let dhead = p.put(dhead_start.clone());
        let terms = p.poison(2 * n);
        let sums = p.poison(2 * models);
        let init = p.finish();
        let run = |dev: &Device, buf: &regop::Buf| {
            let v = |r: &std::ops::Range<usize>| buf.view(r.start, r.len());
            let (d, ix) = (v(&data), v(&idx));
            let scores = MaskScores {
                prior: d.sub(n, n),
                thr: d.sub(2 * n, models),
                head: v(&head),
                map: ix.sub(0, n),
                kind: ix.sub(n, n),
            };
            mask_count_terms(dev, &o, scores, v(&dhead), v(&terms))?;
            reduce(
                dev,
                &Reduce::new(Axis::Cols, models, per, 2),
                v(&terms),
                v(&sums),
            )?;
            mask_count_hold(dev, &o, scores, v(&sums), v(&dhead))
        };
        let (cpu, g) = on_both(&gpu, &init, run);
        let what = format!("mask count {models}x{per}+{extra}");
        compare(
            &what,
            &cpu,
            &g,
            &[terms.clone(), sums.clone(), dhead.clone()],
        );
        let held = &cpu[dhead.clone()];
        for z in 0..models {
            let (mut sum, mut scale) = (0.0f64, 0.0f64);
            for i in z * per..(z + 1) * per {
                let h = pr.map[i] as usize;
                if pr.kind[i] & 3 == 1 {
                    sum += held[2 * h + 1] as f64;
                    scale += (dhead_start[2 * h + 1] as f64).abs();
                }
            }
            assert!(
                sum.abs() <= 1e-5 * scale.max(1.0),
                "{what}: model {z} sums to {sum}"
            );
        }
        for h in 0..rows {
            let weight = pr.inv[h] != u32::MAX && pr.kind[pr.inv[h] as usize] & 3 == 1;
            assert_eq!(
                held[2 * h],
                dhead_start[2 * h],
                "{what}: delta gradient {h} moved"
            );
            if !weight {
                assert_eq!(
                    held[2 * h + 1],
                    dhead_start[2 * h + 1],
                    "{what}: row {h} moved"
                );
            }
        }
    }
}

const POS: PosIds = PosIds {
    max_inputs: 6,
    max_hidden_layers: 2,
    max_outputs: 3,
};

fn editor_of(dev: &Device, hidden: usize, rng: &mut impl Rng) -> Editor {
    let cfg = EditorConfig {
        hidden,
        layers: 2,
        cond_dim: COND_DIM,
        pos: POS,
        edge_features: regop::networks::graph::EDGE_FEATURES,
    };
    random_editor(dev, &cfg, rng)
}

/// An edit for `req` scored by `prune_score` when pruning: deltas scaled by 0.1, no data read,
/// removed columns folded by their means.
fn plain_spec(req: Requirement, prune_score: PruneScore) -> EditSpec {
    EditSpec {
        requirement: req,
        gap: Gap::Eo,
        gamma: 0.1,
        tau: 1.0,
        prune_score,
        fair_sharpness: 1.0,
        fair_target: FairTarget::Penalty,
        signals: false,
        signal_label_weight: 0.0,
        minimise_base: MinimiseBase::Mean,
        also_drops: false,
        also_prunes: false,
        resolve_mask: false,
        natural_step: false,
    }
}

#[test]
fn edit_models_keeps_exactly_top_k_and_zeroes_removed_columns() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("edit_models");
    let ed = editor_of(&dev, 8, &mut rng);
    let shapes = [
        MlpShape::new(&[6, 5, 1], Activation::Relu),
        MlpShape::new(&[6, 4, 3, 1], Activation::Relu),
    ];
    let params: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| init_params(s, i as u64))
        .collect();
    let models: Vec<(&MlpShape, &[f32])> = shapes
        .iter()
        .zip(&params)
        .map(|(s, p)| (s, p.as_slice()))
        .collect();
    let sensitive = vec![true, false, false, false, false, false];
    for (req, prune_score) in [
        (Requirement::Minimise, PruneScore::Magnitude),
        (Requirement::Prune, PruneScore::Magnitude),
        (Requirement::Prune, PruneScore::Lamp),
    ] {
        let spec = plain_spec(req, prune_score);
        let asks: Vec<Ask> = (0..2)
            .map(|i| Ask {
                removed: (0..6)
                    .map(|c| req == Requirement::Minimise && (c == 2 || (i == 1 && c == 4)))
                    .collect(),
                lambda: 1.0,
                sparsity: [0.5, 0.9][i],
                shift: None,
            })
            .collect();
        let cols = Columns {
            sensitive: sensitive.clone(),
            means: vec![],
            calibration: Default::default(),
            moments: Default::default(),
        };
        let edited = edit_models(&dev, &ed, &spec, &models, &asks, &cols).unwrap();
        for (m, s) in shapes.iter().enumerate() {
            let e = &edited[m];
            assert_eq!(e.len(), s.n_params());
            let n_w: usize = (0..s.layers()).map(|l| s.fan_in(l) * s.fan_out(l)).sum();
            let zeros: usize = (0..s.layers())
                .flat_map(|l| e[s.weight_offset(l)..s.bias_offset(l)].iter())
                .filter(|v| **v == 0.0)
                .count();
            match req {
                Requirement::Minimise => {
                    for j in 0..s.fan_out(0) {
                        for c in 0..6 {
                            let w = e[j * 6 + c];
                            if asks[m].removed[c] {
                                assert_eq!(w.to_bits(), 0, "removed column {c} kept a weight");
                            } else {
                                assert_ne!(w, 0.0);
                            }
                        }
                    }
                    // The random editor really edits the kept weights.
                    assert!(e.iter().zip(&params[m]).any(|(a, b)| a != b && *a != 0.0));
                }
                _ => {
                    let want = (asks[m].sparsity as f64 * n_w as f64).round() as usize;
                    assert_eq!(zeros, want, "model {m}: {zeros} zero weights, want {want}");
                }
            }
        }
    }
}

/// The whole training step: d(sum over models of JSD + lambda * gap) / d(editor parameters),
/// through the edited models, the edit and the editor, against finite differences.
#[test]
fn training_step_gradients_match_finite_differences() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("train step gradcheck");
    let sensitive = vec![true, false, false, false, false, false];
    let rows = 24;
    let x = random(&mut rng, rows * 6);
    let group: Vec<u32> = (0..rows).map(|r| (r / 3 % 2) as u32).collect();
    // Non-zero means: the minimisation edit starts from the mean fold. The moments are the
    // batch's: the edit that drops the attribute starts from its least-squares fold.
    let batch = regop::io::data::Split {
        x: x.clone(),
        y: (0..rows).map(|r| (r % 2) as f32).collect(),
        group: group.clone(),
    };
    let cols = Columns {
        sensitive,
        means: vec![0.3, 0.5, -0.2, 0.1, 0.7, 0.0],
        calibration: Default::default(),
        moments: std::sync::Arc::new(batch.moments()),
    };
    // The last cases add the labels' cross-entropy (weight 0.7) to the JSD: binary, then three
    // classes (softmax).
    for (req, target, label_weight, classes) in [
        (Requirement::Minimise, FairTarget::Penalty, 0.0f32, 1),
        (Requirement::Fairness, FairTarget::Penalty, 0.0, 1),
        (Requirement::Fairness, FairTarget::Shift, 0.0, 1),
        (Requirement::Fairness, FairTarget::DropAttribute, 0.0, 1),
        (Requirement::Minimise, FairTarget::Penalty, 0.7, 1),
        (Requirement::Minimise, FairTarget::Penalty, 0.7, 3),
    ] {
        let shape = MlpShape::new(&[6, 4, classes], Activation::Tanh);
        let params: Vec<Vec<f32>> = (0..2).map(|i| init_params(&shape, 10 + i)).collect();
        let refs: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
        let labels = classes.max(2);
        let y: Vec<f32> = (0..rows).map(|r| (r % labels) as f32).collect();
        let ed = editor_of(&dev, 5, &mut rng);
        let spec = EditSpec {
            requirement: req,
            gap: Gap::Eo,
            gamma: 0.8,
            tau: 1.0,
            prune_score: PruneScore::Lamp,
            fair_sharpness: 2.0,
            fair_target: target,
            signals: false,
            signal_label_weight: 0.0,
            minimise_base: MinimiseBase::Mean,
            also_drops: false,
            also_prunes: false,
            resolve_mask: false,
            natural_step: false,
        };
        let asks: Vec<Ask> = (0..2)
            .map(|i| Ask {
                removed: (0..6)
                    .map(|c| req == Requirement::Minimise && c == 1 + i)
                    .collect(),
                lambda: [0.5, 4.0][i],
                sparsity: 0.0,
                shift: (target == FairTarget::Shift)
                    .then(|| [vec![0.7, -0.4], vec![-1.1, 0.2]][i].clone()),
            })
            .collect();
        let objective = |e: &Editor| -> f64 {
            let mut b = TrainBatch::new(&dev, e, &spec, &shape, &refs, &asks, &cols, rows).unwrap();
            b.label_weight = label_weight;
            b.forward(&dev, e).unwrap();
            b.loss(&dev, &x, &y, &group).unwrap();
            // The labels' mean cross-entropy per model, on the host.
            let logits = b.read_edited_logits(&dev).unwrap();
            let ce: f64 = logits
                .chunks(classes)
                .zip(y.iter().cycle())
                .map(|(s, &t)| match classes {
                    1 => regop::engine::kernels::bce::bce_loss(s[0], t) as f64,
                    _ => {
                        let lse = s.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                        lse - s[t as usize] as f64
                    }
                })
                .sum::<f64>()
                / rows as f64;
            b.read_losses(&dev)
                .unwrap()
                .iter()
                .zip(&asks)
                .map(|((j, f), a)| *j as f64 + a.lambda as f64 * *f as f64)
                .sum::<f64>()
                + label_weight as f64 * ce
        };
        let mut b = TrainBatch::new(&dev, &ed, &spec, &shape, &refs, &asks, &cols, rows).unwrap();
        b.label_weight = label_weight;
        b.forward(&dev, &ed).unwrap();
        b.loss(&dev, &x, &y, &group).unwrap();
        b.backward(&dev, &ed).unwrap();
        let grads = dev.read_all(&ed.grads).unwrap();
        let p0 = dev.read_all(&ed.params).unwrap();
        // Sample parameters spread over the whole layout (heads, layers, embeddings).
        let picks: Vec<usize> = (0..60).map(|i| i * p0.len() / 60).collect();
        let h = 1e-2f32;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for &i in &picks {
            let numeric = derivative(
                |v| {
                    let mut p = p0.clone();
                    p[i] = v;
                    objective(&Editor::from_params(&dev, &ed.cfg, &p).unwrap())
                },
                p0[i],
                h,
            );
            num += (numeric - grads[i] as f64).powi(2);
            den += numeric * numeric;
        }
        let rel = (num / den).sqrt();
        eprintln!(
            "{req:?} {target:?}, labels {label_weight}, {classes} outputs: relative error {rel:e} over {} parameters",
            picks.len()
        );
        assert!(den > 1e-8, "{req:?} {target:?}: gradient vanishes");
        assert!(rel < 2e-2, "{req:?} {target:?}: relative error {rel:e}");
    }
}

/// The whole training step on the GPU backend gives the CPU backend's editor gradients.
/// A training step's inputs: `models` models of [6, 5, 3, 1], column 1 sensitive, 40 rows.
struct Step {
    shape: MlpShape,
    params: Vec<Vec<f32>>,
    cols: Columns,
    rows: usize,
    x: Vec<f32>,
    y: Vec<f32>,
    group: Vec<u32>,
}

fn step_problem(rng: &mut impl Rng, models: u64) -> Step {
    let shape = MlpShape::new(&[6, 5, 3, 1], Activation::Relu);
    let rows = 40;
    Step {
        params: (0..models).map(|i| init_params(&shape, 20 + i)).collect(),
        cols: Columns {
            sensitive: vec![false, true, false, false, false, false],
            means: vec![0.2, 0.4, 0.0, -0.3, 0.1, 0.9],
            calibration: Default::default(),
            moments: Default::default(),
        },
        x: random(rng, rows * 6),
        y: (0..rows).map(|r| (r % 3 == 0) as u32 as f32).collect(),
        group: (0..rows).map(|r| (r % 2) as u32).collect(),
        rows,
        shape,
    }
}

#[test]
fn training_step_agrees_across_backends() {
    let gpu = gpu();
    let cpu = Device::cpu();
    let mut rng = fresh_rng("train step gpu");
    let Step {
        shape,
        params,
        cols,
        rows,
        x,
        y,
        group,
    } = step_problem(&mut rng, 3);
    let refs: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
    let ed_cpu = editor_of(&cpu, 6, &mut rng);
    let p = cpu.read_all(&ed_cpu.params).unwrap();
    let ed_gpu = Editor::from_params(&gpu, &ed_cpu.cfg, &p).unwrap();
    for (req, target) in [
        (Requirement::Minimise, FairTarget::Penalty),
        (Requirement::Fairness, FairTarget::Penalty),
        (Requirement::Fairness, FairTarget::Shift),
        (Requirement::Prune, FairTarget::Penalty),
    ] {
        let spec = EditSpec {
            requirement: req,
            gap: Gap::Dp,
            gamma: 0.3,
            tau: 0.5,
            prune_score: PruneScore::Lamp,
            fair_sharpness: 3.0,
            fair_target: target,
            signals: false,
            signal_label_weight: 0.0,
            minimise_base: MinimiseBase::Mean,
            also_drops: false,
            also_prunes: false,
            resolve_mask: false,
            natural_step: false,
        };
        let asks: Vec<Ask> = (0..3)
            .map(|i| Ask {
                removed: (0..6)
                    .map(|c| req == Requirement::Minimise && c == i)
                    .collect(),
                lambda: 2.0,
                sparsity: 0.6,
                shift: (target == FairTarget::Shift).then(|| vec![0.3 * i as f32, -0.5]),
            })
            .collect();
        let mut out = Vec::new();
        for (dev, ed) in [(&cpu, &ed_cpu), (&gpu, &ed_gpu)] {
            let b = TrainBatch::new(dev, ed, &spec, &shape, &refs, &asks, &cols, rows).unwrap();
            b.forward(dev, ed).unwrap();
            b.loss(dev, &x, &y, &group).unwrap();
            b.backward(dev, ed).unwrap();
            out.push((
                dev.read_all(&ed.grads).unwrap(),
                b.read_edited(dev).unwrap(),
                b.read_losses(dev).unwrap(),
            ));
        }
        let rel = |a: &[f32], b: &[f32]| {
            let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
            (num / den.max(1e-30)).sqrt()
        };
        assert!(
            rel(&out[0].1, &out[1].1) < 1e-5,
            "{req:?}: edited weights differ"
        );
        let g = rel(&out[0].0, &out[1].0);
        assert!(g < 1e-4, "{req:?}: editor gradients differ by {g:e}");
        for (a, b) in out[0].2.iter().zip(&out[1].2) {
            assert!(
                (a.0 - b.0).abs() < 1e-5 && (a.1 - b.1).abs() < 1e-5,
                "{req:?}: losses"
            );
        }
    }
}

/// A training step cut into pieces of models (as when the device has no room for all of
/// them) has the whole step's gradient and losses, on both backends.
#[test]
fn a_step_in_pieces_has_the_gradient_of_the_whole_step() {
    let mut rng = fresh_rng("step in pieces");
    let Step {
        shape,
        params,
        cols,
        x,
        y,
        group,
        ..
    } = step_problem(&mut rng, 5);
    let refs: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
    let ed_cpu = editor_of(&Device::cpu(), 6, &mut rng);
    let p = Device::cpu().read_all(&ed_cpu.params).unwrap();
    for dev in [Device::cpu(), gpu()] {
        let ed = Editor::from_params(&dev, &ed_cpu.cfg, &p).unwrap();
        for req in [
            Requirement::Minimise,
            Requirement::Fairness,
            Requirement::Prune,
        ] {
            let spec = EditSpec {
                requirement: req,
                gap: Gap::Eo,
                gamma: 0.3,
                tau: 0.5,
                prune_score: PruneScore::Lamp,
                fair_sharpness: 3.0,
                fair_target: FairTarget::Penalty,
                signals: false,
                signal_label_weight: 0.0,
                minimise_base: MinimiseBase::Mean,
                also_drops: false,
                also_prunes: false,
                resolve_mask: false,
                natural_step: false,
            };
            let asks: Vec<Ask> = (0..5)
                .map(|i| Ask {
                    removed: (0..6)
                        .map(|c| req == Requirement::Minimise && c == i)
                        .collect(),
                    lambda: 1.0 + i as f32,
                    sparsity: 0.5,
                    shift: None,
                })
                .collect();
            let batch = (x.as_slice(), y.as_slice(), group.as_slice());
            let mut runs = Vec::new();
            for piece in [5, 2, 1] {
                let losses = step_gradient(
                    &dev, &ed, &spec, &cols, &shape, &refs, &asks, batch, piece, 0.0,
                )
                .unwrap();
                runs.push((dev.read_all(&ed.grads).unwrap(), losses));
            }
            let whole = &runs[0];
            let norm = whole.0.iter().map(|g| g * g).sum::<f32>().sqrt();
            assert!(norm > 0.0);
            for (piece, (grads, losses)) in [2, 1].iter().zip(&runs[1..]) {
                let diff = grads
                    .iter()
                    .zip(&whole.0)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f32>();
                assert!(
                    diff.sqrt() / norm < 1e-5,
                    "{}: {req:?} in pieces of {piece}: gradient off by {}",
                    dev.name(),
                    diff.sqrt() / norm
                );
                assert_eq!(losses.len(), 5);
                for (a, b) in losses.iter().zip(&whole.1) {
                    assert!((a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-6);
                }
            }
        }
    }
}

/// A learned mask keeps k weights of each model whatever its logits: raising every score of a
/// model alike changes nothing, so the step's gradient along it is zero. The mask logits' bias
/// in the edge head moves every score alike: its gradient vanishes.
/// LAMP's mask learned from the model, and LAMP's mask re-solved and moved; on both backends.
#[test]
fn a_learned_mask_gets_no_gradient_from_raising_every_score() {
    let mut rng = fresh_rng("mask count held");
    let Step {
        shape,
        params,
        mut cols,
        rows,
        x,
        y,
        group,
    } = step_problem(&mut rng, 3);
    cols.calibration = regop::io::data::Split {
        x: x.clone(),
        y: y.clone(),
        group: group.clone(),
    };
    let refs: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
    let devices = [Device::cpu(), gpu()];
    let cases = [PruneScore::Lamp, PruneScore::LampReconstruction]
        .into_iter()
        .flat_map(|s| devices.iter().map(move |d| (d, s)));
    for (dev, score) in cases {
        let spec = EditSpec {
            tau: 0.5,
            ..plain_spec(Requirement::Prune, score)
        };
        let cfg = EditorConfig {
            hidden: 6,
            layers: 2,
            cond_dim: COND_DIM,
            pos: POS,
            edge_features: spec.edge_features(),
        };
        let ed = random_editor(dev, &cfg, &mut rng);
        let asks: Vec<Ask> = [0.4f32, 0.6, 0.8]
            .iter()
            .map(|&s| Ask {
                sparsity: s,
                ..Ask::new(6)
            })
            .collect();
        let b = TrainBatch::new(dev, &ed, &spec, &shape, &refs, &asks, &cols, rows).unwrap();
        b.forward(dev, &ed).unwrap();
        b.loss(dev, &x, &y, &group).unwrap();
        b.backward(dev, &ed).unwrap();
        let grads = dev.read_all(&ed.grads).unwrap();
        let b2 = ed
            .layout
            .entries
            .iter()
            .find(|e| e.name == "edge_head.b2")
            .unwrap()
            .span
            .offset;
        let norm = grads.iter().map(|g| g * g).sum::<f32>().sqrt();
        assert!(norm > 1e-6, "{}, {score:?}: no gradient at all", dev.name());
        let logit = grads[b2 + 1];
        assert!(
            logit.abs() < 1e-5 * norm.max(1.0),
            "{}, {score:?}: raising every score has gradient {logit} (all: {norm})",
            dev.name()
        );
    }
}

#[test]
fn the_mean_fold_moves_removed_columns_into_the_biases() {
    let shape = MlpShape::new(&[3, 2, 1], Activation::Relu);
    let params = init_params(&shape, 4);
    let removed = [false, true, true];
    let means = [5.0, 0.5, -2.0];
    let f = fold_removed_means(&shape, &params, &removed, &means);
    for j in 0..2 {
        let want =
            params[shape.bias_offset(0) + j] + params[j * 3 + 1] * 0.5 + params[j * 3 + 2] * -2.0;
        assert!((f[shape.bias_offset(0) + j] - want).abs() < 1e-6);
    }
    // Everything else is unchanged; nothing removed or no means: no change at all.
    for i in
        (0..params.len()).filter(|i| !(shape.bias_offset(0)..shape.bias_offset(0) + 2).contains(i))
    {
        assert_eq!(f[i], params[i]);
    }
    assert_eq!(
        fold_removed_means(&shape, &params, &[false; 3], &means),
        params
    );
    assert_eq!(fold_removed_means(&shape, &params, &removed, &[]), params);
    // With the fold, the edited model on a row equals the original on that row with the
    // removed columns replaced by their means (first layer, before the activation).
    let x = [1.5f32, 3.0, 7.0];
    let xm = [1.5f32, 0.5, -2.0];
    let mut zeroed = f.clone();
    for j in 0..2 {
        zeroed[j * 3 + 1] = 0.0;
        zeroed[j * 3 + 2] = 0.0;
    }
    let a = regop::networks::mlp::forward_host(&shape, &zeroed, &x, 1);
    let b = regop::networks::mlp::forward_host(&shape, &params, &xm, 1);
    assert!((a[0] - b[0]).abs() < 1e-5, "{a:?} vs {b:?}");
}

/// A shift editor's edit starts from the model with the mean of the asked shifts added to the
/// output bias: an untrained editor (zero heads) moves every logit by exactly that mean, so the
/// part of the shift common to all groups is exact; only the groups' differences are learned.
#[test]
fn an_untrained_shift_editor_moves_every_logit_by_the_mean_shift() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("shift fold");
    let cfg = EditorConfig {
        hidden: 6,
        layers: 2,
        cond_dim: COND_DIM,
        pos: POS,
        edge_features: regop::networks::graph::EDGE_FEATURES,
    };
    let ed = Editor::new(&dev, &cfg, 3).unwrap();
    let shape = MlpShape::new(&[6, 5, 4, 1], Activation::Relu);
    let params = init_params(&shape, 9);
    let spec = EditSpec {
        requirement: Requirement::Fairness,
        gap: Gap::Eo,
        gamma: 0.1,
        tau: 0.0,
        prune_score: PruneScore::Magnitude,
        fair_sharpness: 1.0,
        fair_target: FairTarget::Shift,
        signals: false,
        signal_label_weight: 0.0,
        minimise_base: MinimiseBase::Mean,
        also_drops: false,
        also_prunes: false,
        resolve_mask: false,
        natural_step: false,
    };
    let cols = Columns {
        sensitive: vec![false, true, false, false, false, false],
        means: vec![],
        calibration: Default::default(),
        moments: Default::default(),
    };
    let shift = [
        rng.random_range(-1.5..1.5f32),
        rng.random_range(-1.5..1.5f32),
    ];
    let ask = Ask {
        shift: Some(shift.to_vec()),
        ..Ask::new(6)
    };
    let edited = edit_models(&dev, &ed, &spec, &[(&shape, &params)], &[ask], &cols).unwrap();
    let x = random(&mut rng, 20 * 6);
    let before = regop::networks::mlp::forward_host(&shape, &params, &x, 20);
    let after = regop::networks::mlp::forward_host(&shape, &edited[0], &x, 20);
    let mean = (shift[0] + shift[1]) / 2.0;
    for (b, a) in before.iter().zip(&after) {
        assert!(
            (a - b - mean).abs() < 1e-5,
            "{a} - {b} is not the mean shift {mean}"
        );
    }
    // The training target is the original moved by each row's group shift: when both groups
    // move alike the untrained edit is exact (JSD 0); when they differ, it is not.
    let (y, group): (Vec<f32>, Vec<u32>) = (0..20)
        .map(|r| ((r % 3 == 0) as u32 as f32, (r % 2) as u32))
        .unzip();
    let jsd_at = |shift: Vec<f32>| {
        let ask = Ask {
            shift: Some(shift),
            ..Ask::new(6)
        };
        let b = TrainBatch::new(&dev, &ed, &spec, &shape, &[&params], &[ask], &cols, 20).unwrap();
        b.forward(&dev, &ed).unwrap();
        b.loss(&dev, &x, &y, &group).unwrap();
        b.read_losses(&dev).unwrap()[0]
    };
    let (same, penalty) = jsd_at(vec![0.8, 0.8]);
    assert!(
        same.abs() < 1e-6 && penalty == 0.0,
        "JSD {same}, penalty {penalty}"
    );
    let (apart, _) = jsd_at(vec![0.8, -0.8]);
    assert!(apart > 1e-3, "JSD {apart} with the groups shifted apart");
}

/// The (gap, accuracy) of binary `logits` on `split` with each row's logit moved by its group's
/// `shift`, scored from the hard decisions.
fn score_shift(
    logits: &[f32],
    split: &regop::io::data::Split,
    shift: &[f32],
    gap: Gap,
) -> (f64, f64) {
    use regop::requirement::metrics::{
        accuracy, demographic_parity_difference, equalized_odds_difference,
    };
    let pred: Vec<f32> = logits
        .iter()
        .zip(&split.group)
        .map(|(&l, &g)| (l + shift[g as usize] > 0.0) as u32 as f32)
        .collect();
    let g = match gap {
        Gap::Eo => equalized_odds_difference(&split.y, &pred, &split.group),
        Gap::Dp => demographic_parity_difference(&pred, &split.group),
    };
    (g, accuracy(&split.y, &pred))
}

/// The group shifts `choose_shift` picks: on scores where group 0 is scored low by a known
/// offset, the shifts found meet the target, and no pair of the grid that meets it is more
/// accurate (checked against every pair of the grid, scored from the decisions).
#[test]
fn choose_shift_meets_the_target_at_the_best_accuracy() {
    let mut rng = fresh_rng("choose shift");
    for groups in [2usize, 3] {
        let rows = 3000;
        let (mut logits, mut y, mut group) = (vec![], vec![], vec![]);
        for r in 0..rows {
            let g = (r % groups) as u32;
            let label = rng.random_bool(0.4);
            // Informative scores, with group g's scores pulled down by 0.6 * g.
            let s =
                if label { 1.0 } else { -1.0 } + rng.random_range(-1.6..1.6f32) - 0.6 * g as f32;
            logits.push(s);
            y.push(label as u32 as f32);
            group.push(g);
        }
        let split = regop::io::data::Split {
            x: vec![0.0; rows],
            y,
            group,
        };
        let max_gap = 0.05;
        let target = regop::requirement::SEARCH_MARGIN * max_gap;
        let none = vec![0.0; groups];
        let (g0, _) = score_shift(&logits, &split, &none, Gap::Eo);
        assert!(g0 > 2.0 * max_gap, "the test needs a gap to close: {g0}");
        let shift = choose_shift(&logits, &split, groups, Gap::Eo, max_gap);
        let (g, acc) = score_shift(&logits, &split, &shift, Gap::Eo);
        assert!(
            g <= target,
            "{groups} groups: shift {shift:?} leaves gap {g}"
        );
        if groups == 2 {
            for a in shift_grid() {
                for b in shift_grid() {
                    let (ga, aa) = score_shift(&logits, &split, &[a, b], Gap::Eo);
                    assert!(
                        ga > target || aa <= acc,
                        "[{a}, {b}] meets the target more accurately ({aa} > {acc})"
                    );
                }
            }
        }
        // The dp gap too.
        let shift = choose_shift(&logits, &split, groups, Gap::Dp, max_gap);
        let (g, _) = score_shift(&logits, &split, &shift, Gap::Dp);
        assert!(
            g <= target,
            "{groups} groups, dp: shift {shift:?} leaves gap {g}"
        );
    }
}

/// `regop edit --data` on a multi-class model (digits, 10 classes) reports accuracy over the
/// argmax class: before the edit it is the zoo's own test accuracy for that model, and a
/// larger drop than --max-drop allows is refused.
#[test]
fn edits_of_a_multi_class_model_report_its_class_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/digits");
    let (zoo, ed) = (dir.path().join("zoo"), dir.path().join("ed"));
    ok(&regop_cpu(&[
        "zoo",
        "--data",
        arg(&data),
        "--count",
        "6",
        "--widths",
        "16",
        "--depth",
        "1",
        "--epochs",
        "2",
        "--out",
        arg(&zoo),
    ]));
    ok(&regop_cpu(&[
        "train",
        "--zoo",
        arg(&zoo),
        "--data",
        arg(&data),
        "--requirement",
        "prune",
        "--prune-score",
        "magnitude",
        "--steps",
        "1",
        "--out",
        arg(&ed),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(zoo.join("manifest.json")).unwrap()).unwrap();
    let want = manifest["models"][0]["metrics"]["test"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(want > 0.2, "a 10-class model well above chance: {want}");
    let edit = |sparsity: &str| {
        let out = regop_cpu(&[
            "edit",
            "--editor",
            arg(&ed.join("editor.safetensors")),
            "--model",
            arg(&zoo.join("model-00000.safetensors")),
            "--data",
            arg(&data),
            "--sparsity",
            sparsity,
            "--out",
            arg(&dir.path().join("e.safetensors")),
            "--force",
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), r[0].clone())
    };
    let (code, r) = edit("0.3");
    assert!(
        (r["accuracy_before"].as_f64().unwrap() - want).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(code, Some(0), "{r}");
    // Pruned to almost nothing, the model loses far more than 2 points: missed (exit 1).
    let (code, r) = edit("0.99");
    assert!(r["accuracy_after"].as_f64().unwrap() < want - 0.02, "{r}");
    assert_eq!(
        (code, &r["met"]),
        (Some(1), &serde_json::json!(false)),
        "{r}"
    );
}

/// One inference gives the edit at any step along it: step 1 is `edit_models`' edit, step 0
/// where it starts (the mean fold; the magnitude mask for a score rule, the same at every
/// step), and any other step the straight line through them, removed columns exactly zero
/// throughout. The search keeps the step most accurate on its rows, on ties the one nearest 1.
#[test]
fn edits_at_steps_lie_on_one_line_and_the_search_keeps_the_most_accurate() {
    use regop::workflows::edit::edit_models_at;
    use regop::workflows::edit::search::{pick_step, search_steps, step_accuracies, STEP_GRID};
    let dev = Device::cpu();
    let mut rng = fresh_rng("edit_steps");
    let ed = editor_of(&dev, 8, &mut rng);
    let shape = MlpShape::new(&[6, 5, 1], Activation::Relu);
    let params = init_params(&shape, rng.random());
    let models = [(&shape, params.as_slice())];
    let removed: Vec<bool> = (0..6).map(|c| c == 2).collect();
    let rows = 300;
    let x: Vec<f32> = (0..rows * 6)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    for (req, prune_score) in [
        (Requirement::Minimise, PruneScore::Magnitude),
        (Requirement::Prune, PruneScore::Magnitude),
    ] {
        let spec = plain_spec(req, prune_score);
        let ask = Ask {
            removed: if req == Requirement::Minimise {
                removed.clone()
            } else {
                vec![false; 6]
            },
            lambda: 1.0,
            sparsity: 0.6,
            shift: None,
        };
        let cols = Columns {
            sensitive: vec![false; 6],
            means: vec![0.25; 6],
            calibration: Default::default(),
            moments: Default::default(),
        };
        let asks = [ask.clone()];
        let steps = [0.0f32, 1.0, 2.5];
        let at = edit_models_at(&dev, &ed, &spec, &models, &asks, &cols, &steps)
            .unwrap()
            .remove(0);
        let one = edit_models(&dev, &ed, &spec, &models, &asks, &cols)
            .unwrap()
            .remove(0);
        assert!(at[1] == one, "{req:?}: step 1 is not the edit");
        assert!(at[1] != at[0], "{req:?}: the random editor does not edit");
        if req == Requirement::Minimise {
            let mut start = fold_removed_means(&shape, &params, &removed, &cols.means);
            for j in 0..shape.fan_out(0) {
                start[j * 6 + 2] = 0.0;
            }
            assert!(at[0] == start, "step 0 is not the mean fold");
        }
        for (i, ((s0, s1), s2)) in at[0].iter().zip(&at[1]).zip(&at[2]).enumerate() {
            let line = s0 + 2.5 * (s1 - s0);
            assert!(
                (s2 - line).abs() <= 1e-5 * (1.0 + line.abs()),
                "{req:?} {i}"
            );
            assert_eq!(*s0 == 0.0, *s2 == 0.0, "{req:?} {i}: the mask moved");
        }
        for j in 0..shape.fan_out(0) {
            for s in &at {
                assert!(!ask.removed[2] || s[j * 6 + 2].to_bits() == 0);
            }
        }

        // Labels from the edit at step 2: the search must find an edit that accurate.
        let all = edit_models_at(&dev, &ed, &spec, &models, &asks, &cols, &STEP_GRID)
            .unwrap()
            .remove(0);
        let two = STEP_GRID.iter().position(|&s| s == 2.0).unwrap();
        let logits = regop::networks::mlp::predict(&dev, &shape, 1, &all[two], &x).unwrap();
        let split = regop::io::data::Split {
            x: x.clone(),
            y: logits.iter().map(|&l| (l > 0.0) as u8 as f32).collect(),
            group: vec![0; rows],
        };
        let accuracies = step_accuracies(&dev, &shape, &all, &split, usize::MAX).unwrap();
        assert_eq!(accuracies[two], 1.0);
        let found = search_steps(&dev, &ed, &spec, &cols, &models, &asks, &split).unwrap();
        let k = STEP_GRID.iter().position(|&s| s == found[0].0).unwrap();
        assert_eq!(
            accuracies[k], 1.0,
            "{req:?}: picked step {} of {accuracies:?}",
            found[0].0
        );
        assert!(found[0].1 == all[k]);
    }
    // Ties: the step nearest 1, then the smaller.
    let one = STEP_GRID.iter().position(|&s| s == 1.0).unwrap();
    assert_eq!(pick_step(&[0.5; STEP_GRID.len()]), one);
    let mut acc = vec![0.5; STEP_GRID.len()];
    let (a, b) = (
        STEP_GRID.iter().position(|&s| s == 0.75).unwrap(),
        STEP_GRID.iter().position(|&s| s == 1.25).unwrap(),
    );
    (acc[a], acc[b]) = (0.9, 0.9);
    assert_eq!(pick_step(&acc), a);
    acc[STEP_GRID.len() - 1] = 0.95;
    assert_eq!(pick_step(&acc), STEP_GRID.len() - 1);
}
