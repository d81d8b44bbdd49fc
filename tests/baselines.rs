//! Baselines move their metric the right way, reach exactly what is asked, and the comparison
//! harness writes well-formed reports. On the built-in synthetic data at CI scale.

use regop::engine::kernels::activation::Activation;
use regop::io::data::loaders::{load, DataOptions, DatasetName};
use regop::networks::mlp::{init_params, predict, MlpShape};
use regop::requirement::metrics::{accuracy, decisions};
use regop::requirement::metrics::{neuron_sparsity, weight_sparsity};
use regop::workflows::baselines::*;
use regop::Device;
use std::process::Command;

fn regop(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn magnitude_pruning_reaches_exactly_the_asked_sparsity() {
    let shape = MlpShape::new(&[13, 32, 16, 1], Activation::Relu);
    let p = init_params(&shape, 5);
    let n_weights = 13 * 32 + 32 * 16 + 16;
    for s in [0.0, 0.5, 0.9, 0.97] {
        let g = apply(&p, &global_magnitude_mask(&shape, &p, s));
        assert_eq!(
            weight_sparsity(&shape, &g),
            (s * n_weights as f64).round() / n_weights as f64
        );
        // Global: no kept weight is smaller than a pruned one.
        let kept_min = (0..shape.layers())
            .flat_map(|l| shape.weight_offset(l)..shape.bias_offset(l))
            .filter(|&i| g[i] != 0.0)
            .map(|i| g[i].abs())
            .fold(f32::MAX, f32::min);
        let pruned_max = (0..shape.layers())
            .flat_map(|l| shape.weight_offset(l)..shape.bias_offset(l))
            .filter(|&i| g[i] == 0.0)
            .map(|i| p[i].abs())
            .fold(0.0f32, f32::max);
        assert!(s == 0.0 || pruned_max <= kept_min);
        let lw = apply(&p, &layerwise_magnitude_mask(&shape, &p, s));
        for l in 0..shape.layers() {
            let w = &lw[shape.weight_offset(l)..shape.bias_offset(l)];
            let zeros = w.iter().filter(|&&v| v == 0.0).count();
            // Rounded up per layer, so the whole model reaches the target too.
            assert_eq!(
                zeros,
                (s * w.len() as f64 - 1e-9).ceil() as usize,
                "layer {l} at {s}"
            );
        }
        assert!(
            weight_sparsity(&shape, &lw) >= s,
            "layer-wise pruning must reach the target overall"
        );
        // Biases are never pruned.
        for l in 0..shape.layers() {
            assert_eq!(
                &g[shape.bias_offset(l)..shape.bias_offset(l) + shape.fan_out(l)],
                &p[shape.bias_offset(l)..shape.bias_offset(l) + shape.fan_out(l)]
            );
        }
    }
}

/// LAMP scores against their definition computed the slow way, and LAMP pruning's guarantees:
/// exactly the asked count, every layer keeps its largest weight, the lowest scores go first.
#[test]
fn lamp_scores_follow_their_definition_and_keep_every_layer() {
    let shape = MlpShape::new(&[13, 32, 16, 1], Activation::Relu);
    let mut p = init_params(&shape, 7);
    // A layer of much smaller weights: global magnitude would empty it, LAMP must not.
    p[shape.weight_offset(1)..shape.bias_offset(1)]
        .iter_mut()
        .for_each(|v| *v *= 1e-3);
    let scores = lamp_scores(&shape, &p);
    assert_eq!(scores.len(), 13 * 32 + 32 * 16 + 16);
    for &(score, i) in &scores {
        let l = (0..shape.layers())
            .find(|&l| (shape.weight_offset(l)..shape.bias_offset(l)).contains(&i))
            .unwrap();
        let tail: f64 = (shape.weight_offset(l)..shape.bias_offset(l))
            .filter(|&j| (p[j].abs(), j) >= (p[i].abs(), i))
            .map(|j| (p[j] as f64).powi(2))
            .sum();
        let want = (p[i] as f64).powi(2) / tail;
        assert!(
            (score - want).abs() <= 1e-12 * want.max(1e-300),
            "weight {i}: {score} vs {want}"
        );
    }
    let n_weights = scores.len();
    for s in [0.5, 0.9, 0.99] {
        let m = lamp_mask(&shape, &p, s);
        let pruned = apply(&p, &m);
        assert_eq!(
            weight_sparsity(&shape, &pruned),
            (s * n_weights as f64).round() / n_weights as f64
        );
        for l in 0..shape.layers() {
            let w = &pruned[shape.weight_offset(l)..shape.bias_offset(l)];
            assert!(w.iter().any(|v| *v != 0.0), "LAMP emptied layer {l} at {s}");
        }
        let kept_min = scores
            .iter()
            .filter(|(_, i)| m[*i] == 1.0)
            .map(|(sc, _)| *sc)
            .fold(f64::MAX, f64::min);
        let pruned_max = scores
            .iter()
            .filter(|(_, i)| m[*i] == 0.0)
            .map(|(sc, _)| *sc)
            .fold(0.0, f64::max);
        assert!(pruned_max <= kept_min);
    }
    let g = apply(&p, &global_magnitude_mask(&shape, &p, 0.99));
    assert!(g[shape.weight_offset(1)..shape.bias_offset(1)]
        .iter()
        .all(|v| *v == 0.0));
}

#[test]
fn masked_fine_tuning_keeps_zeros_and_recovers_accuracy_above_zeroing() {
    let dev = Device::cpu();
    let data = load(
        DatasetName::Synthetic,
        None,
        &DataOptions {
            rows: 4000,
            ..Default::default()
        },
        2,
    )
    .unwrap();
    let shape = MlpShape::new(&[data.schema.n_columns(), 32, 1], Activation::Relu);
    let acc = |p: &[f32]| {
        accuracy(
            &data.test.y,
            &decisions(&predict(&dev, &shape, 1, p, &data.test.x).unwrap()),
        )
    };
    // Remove a feature whose information survives in others (the group, through its proxies):
    // zeroing hurts, fine-tuning around it recovers part of the loss. Averaged over three models.
    let mask = drop_mask(&shape, &data.schema, &["group".to_string()]).unwrap();
    let ft = FineTune {
        epochs: 3,
        lr: 5e-3,
        weight_decay: 1e-4,
        batch_size: 128,
        seed: 3,
    };
    let (mut a0, mut az, mut at, mut ap, mut apt) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for seed in 1..=3u64 {
        let fm = regop::workflows::fit::FitModel {
            seed,
            lr: 5e-3,
            weight_decay: 1e-4,
            epochs: 6,
        };
        let trained = regop::workflows::fit::fit(
            &dev,
            &shape,
            &init_params(&shape, seed),
            None,
            &data.train,
            &[fm],
            128,
            &mut |_, _| {},
        )
        .unwrap();
        let zeroed = apply(&trained, &mask);
        let tuned = masked_finetune(&dev, &shape, &zeroed, &mask, &data, &ft).unwrap();
        for (i, m) in mask.iter().enumerate() {
            if *m == 0.0 {
                assert_eq!(tuned[i], 0.0, "masked weight {i} moved");
            }
        }
        assert_ne!(tuned, zeroed);
        a0 += acc(&trained) / 3.0;
        az += acc(&zeroed) / 3.0;
        at += acc(&tuned) / 3.0;
        // Pruning to 90%, with and without fine-tuning.
        let pm = global_magnitude_mask(&shape, &trained, 0.9);
        let pruned = apply(&trained, &pm);
        let ptuned = masked_finetune(&dev, &shape, &pruned, &pm, &data, &ft).unwrap();
        assert_eq!(
            weight_sparsity(&shape, &ptuned),
            weight_sparsity(&shape, &pruned)
        );
        ap += acc(&pruned) / 3.0;
        apt += acc(&ptuned) / 3.0;
    }
    eprintln!("mean accuracy: trained {a0:.4}, zeroed {az:.4}, zeroed + fine-tuned {at:.4}; pruned {ap:.4}, pruned + fine-tuned {apt:.4}");
    assert!(
        az < a0 - 0.005,
        "zeroing the group should cost accuracy: {a0} -> {az}"
    );
    assert!(
        at > az + 0.005,
        "fine-tuning should recover: zeroed {az}, tuned {at}"
    );
    assert!(
        apt > ap,
        "fine-tuning should recover after pruning: {ap} -> {apt}"
    );
}

#[test]
fn compare_writes_results_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = dir.path().join("zoo");
    let z = zoo.to_str().unwrap();
    let out = regop(&[
        "--device",
        "cpu",
        "zoo",
        "--count",
        "7",
        "--rows",
        "4000",
        "--epochs",
        "6-8",
        "--batch-size",
        "128",
        "--widths",
        "16,32",
        "--out",
        z,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (req, extra) in [
        ("minimise", vec!["--drop", "group,proxy_cat"]),
        ("prune", vec!["--sparsity", "0.5,0.8"]),
        (
            "fairness",
            vec!["--gap", "dp", "--lambdas", "2,50", "--max-gap", "0.2"],
        ),
    ] {
        let mut args = vec![
            "--device",
            "cpu",
            "compare",
            "--zoo",
            z,
            "--requirement",
            req,
            "--ft-epochs",
            "1",
        ];
        args.extend(extra);
        let out = regop(&args);
        assert!(
            out.status.success(),
            "{req}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rdir = zoo.join(format!("compare-{req}"));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(rdir.join("results.json")).unwrap()).unwrap();
        let summary = r["summary"].as_array().unwrap();
        assert!(summary.len() >= 3, "{req}: {summary:?}");
        for s in summary {
            if req != "fairness" {
                assert_eq!(
                    s["satisfied"], 1.0,
                    "{req}: every baseline meets the requirement by construction: {s}"
                );
            }
            assert!(s["median_seconds"].as_f64().unwrap() >= 0.0);
        }
        if req == "minimise" {
            // Every minimisation rule, the fold + reconstruction among them, and the references.
            let methods: Vec<&str> = summary
                .iter()
                .map(|s| s["method"].as_str().unwrap())
                .collect();
            for m in [
                "zero columns",
                "mean fold",
                "least-squares fold",
                "least-squares fold + reconstruction",
                "least-squares fold + reconstruction + natural step",
                "closer fold (on calibration rows)",
                "retrain without",
            ] {
                assert!(methods.contains(&m), "{m} in {methods:?}");
            }
        }
        if req == "prune" {
            // Two sparsities: one summary line per method and sparsity, and a front per method.
            assert_eq!(summary.len(), 30, "15 methods x 2 sparsities");
            assert!(rdir.join("pareto.svg").exists());
        }
        if req == "fairness" {
            // The synthetic label depends on the group, so models start with a wide DP gap; a strong
            // penalty must shrink it.
            let rows = r["rows"].as_array().unwrap();
            let med = |m: &str| {
                let mut v: Vec<f64> = rows
                    .iter()
                    .filter(|x| x["method"] == m)
                    .map(|x| x["requirement_value"].as_f64().unwrap())
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (orig, strong) = (med("original (no edit)"), med("fair fine-tune lambda=50"));
            assert!(
                strong < orig,
                "penalised fine-tuning should shrink the DP gap: {orig} -> {strong}"
            );
            assert!(rdir.join("pareto.svg").exists());
        }
        let md = std::fs::read_to_string(rdir.join("report.md")).unwrap();
        assert!(
            md.contains("| method |") && md.contains("accuracy_vs_time.svg"),
            "{md}"
        );
        for svg in ["accuracy_vs_time.svg", "per_model.svg"] {
            let text = std::fs::read_to_string(rdir.join(svg)).unwrap();
            assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
            assert!(
                text.matches("<circle").count() >= r["rows"].as_array().unwrap().len(),
                "{svg}: a point per row"
            );
        }
        // Existing results are kept unless --force.
        assert_eq!(regop(&args).status.code(), Some(2));
        // --no-fine-tune keeps the one-shot rules and leaves out every fine-tuned reference.
        args.extend(["--force", "--no-fine-tune"]);
        assert!(regop(&args).status.success());
        let quick: serde_json::Value =
            serde_json::from_slice(&std::fs::read(rdir.join("results.json")).unwrap()).unwrap();
        let kinds = |v: &serde_json::Value| -> Vec<String> {
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["kind"].as_str().unwrap().to_string())
                .collect()
        };
        let (all, rules) = (kinds(&r), kinds(&quick));
        assert!(all.iter().any(|k| k == "fine-tuned"), "{req}: {all:?}");
        assert!(!rules.iter().any(|k| k == "fine-tuned"), "{req}: {rules:?}");
        assert_eq!(
            rules.iter().filter(|k| *k == "one-shot rule").count(),
            all.iter().filter(|k| *k == "one-shot rule").count(),
            "{req}: the same one-shot rows"
        );
    }
    // Bad requests exit 2 with a clear message.
    let bad = regop(&[
        "compare",
        "--zoo",
        z,
        "--requirement",
        "minimise",
        "--drop",
        "salary",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown feature 'salary'"));
}

#[test]
fn threshold_post_processing_closes_the_gaps() {
    use regop::requirement::metrics::{demographic_parity_difference, equalized_odds_difference};
    use regop::workflows::baselines::postprocess::{fit_demographic_parity, fit_equalized_odds};
    let dev = Device::cpu();
    let data = load(
        DatasetName::Synthetic,
        None,
        &DataOptions {
            rows: 8000,
            ..Default::default()
        },
        4,
    )
    .unwrap();
    let shape = MlpShape::new(&[data.schema.n_columns(), 32, 1], Activation::Relu);
    let fm = regop::workflows::fit::FitModel {
        seed: 4,
        lr: 5e-3,
        weight_decay: 1e-4,
        epochs: 5,
    };
    let p = regop::workflows::fit::fit(
        &dev,
        &shape,
        &init_params(&shape, 4),
        None,
        &data.train,
        &[fm],
        128,
        &mut |_, _| {},
    )
    .unwrap();
    let (val, test) = (
        predict(&dev, &shape, 1, &p, &data.val.x).unwrap(),
        predict(&dev, &shape, 1, &p, &data.test.x).unwrap(),
    );
    let base = decisions(&test);
    let (eo0, dp0) = (
        equalized_odds_difference(&data.test.y, &base, &data.test.group),
        demographic_parity_difference(&base, &data.test.group),
    );
    let eo_rule = fit_equalized_odds(&val, &data.val.y, &data.val.group, 2, 1);
    let eo_pred = eo_rule.apply(&test, &data.test.group);
    let eo1 = equalized_odds_difference(&data.test.y, &eo_pred, &data.test.group);
    // On the split it was fitted on it equalises up to its own randomisation.
    let eo_val = equalized_odds_difference(
        &data.val.y,
        &eo_rule.apply(&val, &data.val.group),
        &data.val.group,
    );
    let eo_val0 = equalized_odds_difference(&data.val.y, &decisions(&val), &data.val.group);
    eprintln!("validation EO {eo_val0:.3} -> {eo_val:.3}");
    let dp_pred =
        fit_demographic_parity(&val, &data.val.group, 2, 1).apply(&test, &data.test.group);
    let dp1 = demographic_parity_difference(&dp_pred, &data.test.group);
    eprintln!(
        "EO {eo0:.3} -> {eo1:.3}, DP {dp0:.3} -> {dp1:.3}; accuracy {:.3} -> {:.3} (EO rule)",
        accuracy(&data.test.y, &base),
        accuracy(&data.test.y, &eo_pred)
    );
    assert!(
        eo0 > 0.05 && dp0 > 0.1,
        "the synthetic model should be biased: EO {eo0}, DP {dp0}"
    );
    assert!(
        eo_val < 0.03,
        "EO post-processing must equalise the split it was fitted on: {eo_val0} -> {eo_val}"
    );
    assert!(
        eo1 < eo0,
        "EO post-processing should carry over to the test split: {eo0} -> {eo1}"
    );
    assert!(dp1 < 0.05, "DP post-processing: {dp0} -> {dp1}");
    // Same seed, same decisions.
    assert_eq!(eo_rule.apply(&test, &data.test.group), eo_pred);
}

/// Inputs with correlated columns: each row a random mix of three hidden factors, plus noise.
fn correlated_rows(rng: &mut impl rand::Rng, rows: usize, d: usize) -> Vec<f32> {
    let mix: Vec<f32> = (0..3 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut x = Vec::with_capacity(rows * d);
    for _ in 0..rows {
        let z: [f32; 3] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
        for c in 0..d {
            let v: f32 = (0..3).map(|f| z[f] * mix[f * d + c]).sum();
            x.push(v + rng.random_range(-0.05..0.05));
        }
    }
    x
}

/// Layer-wise reconstruction (OBS, as SparseGPT computes it) reproduces every layer's outputs on
/// the calibration batch at least as well as layer-wise magnitude pruning of the same count,
/// both given the same input: the input the pruned layers before it pass on.
#[test]
fn obs_reconstructs_each_layer_at_least_as_well_as_magnitude() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    // Layers of very different sizes, so that the two allocations differ.
    let shape = MlpShape::new(&[20, 64, 8, 1], Activation::Relu);
    let p = init_params(&shape, rand::random());
    let rows = 256;
    let x = correlated_rows(&mut rng, rows, 20);
    let zeros_in = |q: &[f32], l: usize| {
        q[shape.weight_offset(l)..shape.bias_offset(l)]
            .iter()
            .filter(|&&v| v == 0.0)
            .count()
    };
    let lamp = lamp_mask(&shape, &p, 0.9);
    let lamp_quotas: Vec<usize> = (0..shape.layers()).map(|l| zeros_in(&lamp, l)).collect();
    for s in [0.5, 0.8, 0.95] {
        let uniform: Vec<usize> = (0..shape.layers())
            .map(|l| {
                let n = shape.fan_in(l) * shape.fan_out(l);
                (s * n as f64 - 1e-9).ceil() as usize
            })
            .collect();
        let chosen = obs_prune(&shape, &p, &x, rows, s);
        assert!(
            weight_sparsity(&shape, &chosen) >= s - 1e-3,
            "OBS reaches the target"
        );
        for (what, quotas) in [("uniform", &uniform), ("LAMP's", &lamp_quotas)] {
            let obs = obs_prune_quotas(&shape, &p, &x, rows, quotas);
            let mut input = x.clone();
            for l in 0..shape.layers() {
                assert_eq!(
                    zeros_in(&obs, l),
                    quotas[l],
                    "{what} quotas, layer {l}: count"
                );
                // Layer l alone pruned by magnitude to the same count, against layer l as OBS
                // left it.
                let idx: Vec<usize> = (shape.weight_offset(l)..shape.bias_offset(l)).collect();
                let mut order = idx.clone();
                order.sort_by(|&a, &b| p[a].abs().total_cmp(&p[b].abs()).then(a.cmp(&b)));
                let mut only_l = p.clone();
                for &i in &order[..quotas[l]] {
                    only_l[i] = 0.0;
                }
                let e_mag = reconstruction_error(&shape, &p, &only_l, l, &input, rows);
                let e_obs = reconstruction_error(&shape, &p, &obs, l, &input, rows);
                assert!(
                    e_obs <= e_mag,
                    "sparsity {s}, {what} quotas, layer {l}: OBS error {e_obs} above magnitude's {e_mag}"
                );
                input = regop::workflows::baselines::calibration::layer_out(
                    &shape, &obs, l, &input, rows,
                );
            }
        }
        // The rule keeps whichever allocation reproduces the original's logits better.
        let logits = |q: &[f32]| regop::networks::mlp::forward_host(&shape, q, &x, rows);
        let orig = logits(&p);
        let dist = |q: &[f32]| -> f64 {
            logits(q)
                .iter()
                .zip(&orig)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum()
        };
        let lamp_s = lamp_mask(&shape, &p, s);
        let lq: Vec<usize> = (0..shape.layers()).map(|l| zeros_in(&lamp_s, l)).collect();
        let (a, b) = (
            obs_prune_quotas(&shape, &p, &x, rows, &uniform),
            obs_prune_quotas(&shape, &p, &x, rows, &lq),
        );
        let best = if dist(&b) < dist(&a) { b } else { a };
        assert_eq!(chosen, best, "sparsity {s}: not the closer allocation");
    }
    assert_ne!(
        lamp_quotas,
        (0..shape.layers())
            .map(|l| ((0.9 * (shape.fan_in(l) * shape.fan_out(l)) as f64) - 1e-9).ceil() as usize)
            .collect::<Vec<_>>(),
        "the allocations should differ"
    );
}

/// LAMP + reconstruction keeps exactly LAMP's mask and re-solves every layer's kept weights:
/// each layer reproduces its outputs on the calibration batch at least as well as the mask
/// alone, given the same input (what the layers before it, re-solved, pass on); with nothing
/// pruned it is the model itself.
#[test]
fn lamp_reconstruction_keeps_lamps_mask_and_reproduces_each_layer_better() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    let shape = MlpShape::new(&[20, 64, 8, 1], Activation::Relu);
    let p = init_params(&shape, rand::random());
    let rows = 256;
    let x = correlated_rows(&mut rng, rows, 20);
    for s in [0.0, 0.5, 0.9] {
        let mask = lamp_mask(&shape, &p, s);
        let got = lamp_reconstruction(&shape, &p, &x, rows, s);
        let masked = apply(&p, &mask);
        let mut input = x.clone();
        for l in 0..shape.layers() {
            for i in shape.weight_offset(l)..shape.bias_offset(l) {
                assert_eq!(got[i] == 0.0, mask[i] == 0.0, "sparsity {s}: weight {i}");
            }
            for i in shape.bias_offset(l)..shape.bias_offset(l) + shape.fan_out(l) {
                assert_eq!(got[i], p[i], "sparsity {s}: bias {i} moved");
            }
            let e_got = reconstruction_error(&shape, &p, &got, l, &input, rows);
            let e_mask = reconstruction_error(&shape, &p, &masked, l, &input, rows);
            let e_zero = reconstruction_error(&shape, &p, &vec![0.0; p.len()], l, &input, rows);
            if s == 0.0 {
                assert!(
                    e_got <= 1e-6 * e_zero,
                    "layer {l}: nothing pruned, yet error {e_got} (zero weights: {e_zero})"
                );
            } else {
                assert!(
                    e_got <= e_mask * (1.0 + 1e-6) + 1e-9 * e_zero,
                    "sparsity {s}, layer {l}: re-solved error {e_got} above the mask's {e_mask}"
                );
            }
            // The first layer's inputs are three factors and noise: the kept weights can take
            // over much of what the pruned ones did (less where few are kept).
            if l == 0 && s > 0.0 {
                let most = if s < 0.7 { 0.5 } else { 0.8 };
                assert!(
                    e_got < most * e_mask,
                    "sparsity {s}: re-solving gained little ({e_got} against {e_mask})"
                );
            }
            input =
                regop::workflows::baselines::calibration::layer_out(&shape, &got, l, &input, rows);
        }
        assert!(weight_sparsity(&shape, &got) >= s - 1e-3);
    }
}

/// Wanda scores |w| x the input's norm: where every input has the same norm it prunes exactly
/// what layer-wise magnitude prunes; where one input's norm is far larger, its weights stay.
#[test]
fn wanda_is_magnitude_when_input_norms_are_equal() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    let shape = MlpShape::new(&[13, 8], Activation::Relu);
    let mut p = init_params(&shape, rand::random());
    // Column 0's weights away from zero, so that a hundredfold norm outranks every other input
    // of its neuron whatever the draw (a weight near 0 would stay last at any norm).
    for o in 0..8 {
        let w = &mut p[o * 13];
        *w = w.signum() * w.abs().max(0.05);
    }
    // Four rows of +-1: every column's norm is exactly 2.
    let x: Vec<f32> = (0..4 * 13)
        .map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 })
        .collect();
    for s in [0.3, 0.5, 0.9] {
        assert_eq!(
            wanda_mask(&shape, &p, &x, 4, s),
            layerwise_magnitude_mask(&shape, &p, s)
        );
    }
    // Column 0 a hundred times louder: at 0.5 every weight out of it is kept.
    let mut loud = x.clone();
    (0..4).for_each(|r| loud[r * 13] *= 100.0);
    let m = wanda_mask(&shape, &p, &loud, 4, 0.5);
    assert!((0..8).all(|o| m[o * 13] == 1.0));
}

/// Least-squares compensation: where the kept columns carry nothing of the removed ones
/// (centred columns orthogonal) it is the mean fold; where a kept column predicts a removed
/// one, the first layer's output without it is closer to the original than the mean fold's.
#[test]
fn least_squares_fold_is_the_mean_fold_for_uncorrelated_columns() {
    // Columns of a Hadamard matrix (without its constant one): centred and orthogonal.
    let h8 = |r: usize, c: usize| {
        if (r & c).count_ones().is_multiple_of(2) {
            1.0f32
        } else {
            -1.0
        }
    };
    let (rows, d) = (8, 5);
    let offsets = [0.3f32, -1.2, 2.0, 0.7, -0.4];
    let x: Vec<f32> = (0..rows)
        .flat_map(|r| (0..d).map(move |c| h8(r, c + 1) + offsets[c]))
        .collect();
    let shape = MlpShape::new(&[d, 6, 1], Activation::Relu);
    let p = init_params(&shape, 3);
    let removed = [false, true, false, true, false];
    let means: Vec<f32> = (0..d)
        .map(|c| (0..rows).map(|r| x[r * d + c]).sum::<f32>() / rows as f32)
        .collect();
    let split = |x: &[f32]| regop::io::data::Split {
        x: x.to_vec(),
        y: vec![0.0; rows],
        group: vec![0; rows],
    };
    let ls = least_squares_fold(&shape, &p, &removed, &split(&x).moments());
    let mean = apply(
        &fold_removed_means(&shape, &p, &removed, &means),
        &removed_mask(&shape, &removed),
    );
    for (a, b) in ls.iter().zip(&mean) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Column 1 = 2 x column 0 + 1: compensation reproduces the first layer exactly.
    let x2: Vec<f32> = (0..rows)
        .flat_map(|r| {
            let a = h8(r, 1);
            [a, 2.0 * a + 1.0, h8(r, 2), h8(r, 3), h8(r, 4)]
        })
        .collect();
    let ls = least_squares_fold(
        &shape,
        &p,
        &[false, true, false, false, false],
        &split(&x2).moments(),
    );
    let before = regop::workflows::baselines::calibration::layer_pre(&shape, &p, 0, &x2, rows);
    let after = regop::workflows::baselines::calibration::layer_pre(&shape, &ls, 0, &x2, rows);
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    assert!(
        (0..6).all(|o| ls[o * d + 1] == 0.0),
        "the removed column is zero"
    );
}

/// Many columns on few rows: the fold's ridge, chosen on held-out training rows, is above the
/// smallest, and the folded first layer stays closer to the original on rows it never saw than
/// the mean fold's. A split too small to hold rows out keeps the smallest ridge.
#[test]
fn least_squares_fold_chooses_its_ridge_on_held_out_rows() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    let d = 40;
    let mut rows_of = |n: usize| -> Vec<f32> {
        (0..n)
            .flat_map(|_| {
                let z: f32 = rng.random_range(-1.0..1.0);
                (0..d)
                    .map(|_| z + rng.random_range(-1.0..1.0))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let split = |x: Vec<f32>| regop::io::data::Split {
        y: vec![0.0; x.len() / d],
        group: vec![0; x.len() / d],
        x,
    };
    let (train, fresh) = (split(rows_of(150)), rows_of(2000));
    let moments = train.moments();
    assert!(moments.ridge() > regop::engine::linalg::RIDGE_GRID[0]);
    let shape = MlpShape::new(&[d, 8, 1], Activation::Relu);
    let p = init_params(&shape, 11);
    let removed: Vec<bool> = (0..d).map(|c| c < 10).collect();
    let means: Vec<f32> = moments.mean.iter().map(|&m| m as f32).collect();
    let ls = least_squares_fold(&shape, &p, &removed, &moments);
    let mean = apply(
        &fold_removed_means(&shape, &p, &removed, &means),
        &removed_mask(&shape, &removed),
    );
    let pre = |q: &[f32]| calibration::layer_pre(&shape, q, 0, &fresh, 2000);
    let err = |q: &[f32]| -> f64 {
        pre(q)
            .iter()
            .zip(pre(&p))
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum()
    };
    assert!(err(&ls) < err(&mean), "{} vs {}", err(&ls), err(&mean));
    // The fold's coefficients are solved once per set of removed columns and then reused: the
    // same fold again, after more sets than are kept, and from a clone (which solves afresh).
    for sets in [0..10, 10..30] {
        for first in sets {
            let other: Vec<bool> = (0..d).map(|c| c == first || c == 30).collect();
            let once = least_squares_fold(&shape, &p, &other, &moments);
            assert_ne!(once, ls);
            assert_eq!(least_squares_fold(&shape, &p, &other, &moments), once);
        }
        assert_eq!(least_squares_fold(&shape, &p, &removed, &moments), ls);
    }
    assert_eq!(
        least_squares_fold(&shape, &p, &removed, &moments.clone()),
        ls
    );
    let few = split(rows_of(60));
    assert_eq!(few.moments().ridge(), regop::engine::linalg::RIDGE_GRID[0]);
}

/// The fold + reconstruction keeps the least-squares fold's first layer, the removed columns
/// zero, and re-solves every later layer: from what the edited layers before it pass on, each
/// reproduces the original model's pre-activations on the calibration batch better than its
/// own weights do. With nothing removed it is the model itself.
#[test]
fn fold_reconstruction_keeps_the_fold_and_refits_later_layers_to_the_model() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    let (rows, d) = (512, 20);
    let x = correlated_rows(&mut rng, rows, d);
    let split = regop::io::data::Split {
        x: x.clone(),
        y: vec![0.0; rows],
        group: vec![0; rows],
    };
    let moments = split.moments();
    let shape = MlpShape::new(&[d, 32, 16, 3], Activation::Relu);
    let p = init_params(&shape, rand::random());
    let removed: Vec<bool> = (0..d).map(|c| c % 3 == 1).collect();
    let got = fold_reconstruction(&shape, &p, &removed, &moments, &x, rows);
    let fold = least_squares_fold(&shape, &p, &removed, &moments);
    assert_eq!(
        got[..shape.weight_offset(1)],
        fold[..shape.weight_offset(1)],
        "the first layer is the fold's"
    );
    assert!(
        weight_sparsity(&shape, &got) > 0.0,
        "the removed columns stay zero"
    );
    let (mut seen, mut own) = (x.clone(), x.clone());
    for l in 1..shape.layers() {
        seen = calibration::layer_out(&shape, &got, l - 1, &seen, rows);
        own = calibration::layer_out(&shape, &p, l - 1, &own, rows);
        let target = calibration::layer_pre(&shape, &p, l, &own, rows);
        let err = |q: &[f32]| -> f64 {
            calibration::layer_pre(&shape, q, l, &seen, rows)
                .iter()
                .zip(&target)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum()
        };
        let (e_got, e_own) = (err(&got), err(&p));
        assert!(
            e_got < e_own,
            "layer {l}: re-solved error {e_got} against {e_own} with its own weights"
        );
    }
    for c in (0..d).filter(|&c| removed[c]) {
        for o in 0..shape.fan_out(0) {
            assert_eq!(got[o * d + c], 0.0, "removed column {c} is read");
        }
    }
    let nothing = vec![false; d];
    assert_eq!(
        fold_reconstruction(&shape, &p, &nothing, &moments, &x, rows),
        p
    );
}

/// The closer fold keeps whichever fold the calibration rows show closer to the model: the
/// least-squares fold where its prediction holds on them (column 1 = column 0), the mean fold
/// where the moments it was fitted on say otherwise than the rows (column 1 = -4 x column 0);
/// on random models, always the one of lower JSD.
#[test]
fn closer_fold_picks_the_fold_the_calibration_rows_agree_with() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    let (rows, d) = (400, 4);
    let mut rows_with = |sign: f32| -> regop::io::data::Split {
        let x: Vec<f32> = (0..rows)
            .flat_map(|_| {
                let a: f32 = rng.random_range(-2.0..2.0);
                let rest: [f32; 2] = [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)];
                [a, sign * a, rest[0], rest[1]]
            })
            .collect();
        regop::io::data::Split {
            x,
            y: vec![0.0; rows],
            group: vec![0; rows],
        }
    };
    let (same, flipped) = (rows_with(1.0), rows_with(-4.0));
    // A linear model for the two set cases: its logits move along one direction, five times
    // as far for the wrong prediction as for the mean.
    let shape = MlpShape::new(&[d, 8, 3], Activation::Identity);
    let mut p = init_params(&shape, rand::random());
    for o in 0..8 {
        p[o * d + 1] = 1.5 * if o % 2 == 0 { 1.0 } else { -1.0 };
    }
    let removed = [false, true, false, false];
    let means = vec![0.0f32; d];
    // Mean JSD of model `b`'s predictions from model `a`'s on the rows `x`.
    let jsd_from = |shape: &MlpShape, a: &[f32], b: &[f32], x: &[f32]| {
        let own = regop::networks::mlp::forward_host(shape, a, x, rows);
        let edited = regop::networks::mlp::forward_host(shape, b, x, rows);
        regop::engine::kernels::jsd::mean_jsd_host(3, &own, &edited)
    };
    let jsd = |q: &[f32], x: &[f32]| jsd_from(&shape, &p, q, x);
    let mean = apply(
        &fold_removed_means(&shape, &p, &removed, &means),
        &removed_mask(&shape, &removed),
    );
    // Moments and rows alike: the least-squares fold is (nearly) exact and is kept.
    let ls = least_squares_fold(&shape, &p, &removed, &same.moments());
    let kept = closer_fold(&shape, &p, &removed, &means, &same.moments(), &same.x, rows);
    assert_eq!(kept, ls);
    assert!(jsd(&ls, &same.x) < jsd(&mean, &same.x));
    // Moments of other rows (column 1 = -4 x column 0): on these rows that prediction is wrong.
    let wrong = least_squares_fold(&shape, &p, &removed, &flipped.moments());
    let kept = closer_fold(
        &shape,
        &p,
        &removed,
        &means,
        &flipped.moments(),
        &same.x,
        rows,
    );
    assert_eq!(kept, mean);
    assert!(jsd(&mean, &same.x) < jsd(&wrong, &same.x));
    // Random ReLU models and moments of random rows: the kept fold is one of the two, the
    // closer.
    let shape = MlpShape::new(&[d, 8, 3], Activation::Relu);
    let moments = rows_with(rand::random_range(-2.0..2.0)).moments();
    for seed in 0..8 {
        let q = init_params(&shape, rand::random::<u64>() ^ seed);
        let folds = [
            apply(
                &fold_removed_means(&shape, &q, &removed, &means),
                &removed_mask(&shape, &removed),
            ),
            least_squares_fold(&shape, &q, &removed, &moments),
        ];
        let kept = closer_fold(&shape, &q, &removed, &means, &moments, &same.x, rows);
        let at = |f: &[f32]| jsd_from(&shape, &q, f, &same.x);
        let i = folds
            .iter()
            .position(|f| *f == kept)
            .expect("one of the two folds");
        assert!(at(&folds[i]) <= at(&folds[1 - i]));
    }
}

/// The first-layer mask of `removed` columns (weights out of them zero).
fn removed_mask(shape: &MlpShape, removed: &[bool]) -> Vec<f32> {
    let mut m = vec![1.0f32; shape.n_params()];
    let d = shape.fan_in(0);
    for o in 0..shape.fan_out(0) {
        for (c, _) in removed.iter().enumerate().filter(|(_, r)| **r) {
            m[o * d + c] = 0.0;
        }
    }
    m
}

/// Whole-neuron rules remove exactly the asked share of every hidden layer (rounded up), the
/// neurons gone for good (incoming, bias, outgoing all zero, also after a natural step), and
/// reconstruction reproduces the next layer better than removal alone.
#[test]
fn neuron_rules_remove_whole_neurons_and_reconstruction_compensates() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
    let shape = MlpShape::new(&[12, 24, 10, 3], Activation::Tanh);
    let p = init_params(&shape, rand::random());
    let rows = 200;
    let x = correlated_rows(&mut rng, rows, 12);
    for f in [0.25, 0.5] {
        let mag = neuron_magnitude(&shape, &p, f);
        let wanda = neuron_wanda(&shape, &p, &x, rows, f);
        let rec = neuron_reconstruct(&shape, &p, &x, rows, f);
        let want = (neurons_to_remove(24, f) + neurons_to_remove(10, f)) as f64 / 34.0;
        // The natural step after the reconstruction moves the kept neurons only.
        let labelled = regop::io::data::Split {
            x: x.clone(),
            y: (0..rows).map(|r| (r % 3) as f32).collect(),
            group: vec![0; rows],
        };
        let stepped = natural_step(&shape, &rec, &[], &labelled.moments(), &labelled);
        assert_ne!(stepped, rec, "no step was taken");
        for q in [&mag, &wanda, &rec, &stepped] {
            assert!((neuron_sparsity(&shape, q) - want).abs() < 1e-12, "{f}");
        }
        // One hidden layer's removal: the next layer, on the same input, against the original.
        let first = |q: &[f32]| {
            let mut only = p.clone();
            let end = shape.weight_offset(2);
            only[..end].copy_from_slice(&q[..end]);
            let h = regop::workflows::baselines::calibration::layer_out(&shape, &only, 0, &x, rows);
            let want = regop::workflows::baselines::calibration::layer_out(&shape, &p, 0, &x, rows);
            let a = regop::workflows::baselines::calibration::layer_pre(&shape, &p, 1, &want, rows);
            let b = regop::workflows::baselines::calibration::layer_pre(&shape, &only, 1, &h, rows);
            a.iter()
                .zip(&b)
                .map(|(u, v)| (u - v).powi(2) as f64)
                .sum::<f64>()
        };
        assert!(
            first(&rec) < first(&wanda),
            "reconstruction compensates at {f}"
        );
    }
}

/// The natural step is, layer by layer, -step x S^-1 G A^-1 (both factors dampened): G and the
/// per-row output gradients that S is made of taken by central differences of the host
/// forward pass's cross-entropy (not the rule's backward pass), A from the layer's inputs.
/// Weights out of removed columns stay zero. Softmax and sigmoid outputs.
#[test]
fn natural_step_is_the_kronecker_factored_step_by_finite_differences() {
    use rand::{Rng, SeedableRng};
    use regop::engine::linalg::{dampen, spd_inverse};
    use regop::networks::mlp::forward_host;
    use regop::workflows::baselines::calibration::layer_out;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for k in [3usize, 1] {
        let (rows, d, hidden) = (40, 5, 4);
        let shape = MlpShape::new(&[d, hidden, k], Activation::Tanh);
        let mut p = init_params(&shape, rng.random());
        let removed = [false, true, false, false, false];
        for o in 0..hidden {
            p[shape.weight_offset(0) + o * d + 1] = 0.0;
        }
        let x: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-1.5..1.5)).collect();
        let y: Vec<f32> = (0..rows)
            .map(|_| rng.random_range(0..k.max(2)) as f32)
            .collect();
        let split = regop::io::data::Split {
            x: x.clone(),
            y: y.clone(),
            group: vec![0; rows],
        };
        let moved = natural_step(&shape, &p, &removed, &split.moments(), &split);
        // A longer step goes the same way, as many times as far.
        let long = natural_step_of(
            &shape,
            &p,
            &removed,
            &split.moments(),
            &split,
            LONG_NATURAL_STEP,
        );
        let times = LONG_NATURAL_STEP / NATURAL_STEP;
        for i in 0..p.len() {
            let (short, far) = ((p[i] - moved[i]) as f64, (p[i] - long[i]) as f64);
            assert!(
                (far - times * short).abs() <= 1e-5 * (1.0 + far.abs()),
                "parameter {i}: {far} against {times} x {short}"
            );
        }
        // Each row's cross-entropy, in f64 from the host logits.
        let losses = |q: &[f32]| -> Vec<f64> {
            let z = forward_host(&shape, q, &x, rows);
            (0..rows)
                .map(|r| {
                    let zr: Vec<f64> = z[r * k..(r + 1) * k].iter().map(|&v| v as f64).collect();
                    if k == 1 {
                        let s = 1.0 / (1.0 + (-zr[0]).exp());
                        -(y[r] as f64 * s.ln() + (1.0 - y[r] as f64) * (1.0 - s).ln())
                    } else {
                        let top = zr.iter().cloned().fold(f64::MIN, f64::max);
                        let sum: f64 = zr.iter().map(|v| (v - top).exp()).sum();
                        top + sum.ln() - zr[y[r] as usize]
                    }
                })
                .collect()
        };
        let eps = 1e-2f32;
        let slope = |i: usize| -> Vec<f64> {
            let (mut up, mut down) = (p.clone(), p.clone());
            up[i] += eps;
            down[i] -= eps;
            let (a, b) = (losses(&up), losses(&down));
            a.iter()
                .zip(&b)
                .map(|(a, b)| (a - b) / (2.0 * eps as f64))
                .collect()
        };
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / rows as f64;
        let inputs = [x.clone(), layer_out(&shape, &p, 0, &x, rows)];
        for (l, input) in inputs.iter().enumerate() {
            let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
            let read: Vec<usize> = (0..fi).filter(|&c| l > 0 || !removed[c]).collect();
            let m = read.len() + 1;
            let (w, b) = (shape.weight_offset(l), shape.bias_offset(l));
            let at = |o: usize, a: usize| {
                if a < read.len() {
                    w + o * fi + read[a]
                } else {
                    b + o
                }
            };
            let g: Vec<f64> = (0..fo * m).map(|i| mean(slope(at(i / m, i % m)))).collect();
            // A row's loss moves with a bias as with that neuron's pre-activation.
            let per_row: Vec<Vec<f64>> = (0..fo).map(|o| slope(b + o)).collect();
            let mut s = vec![0.0f64; fo * fo];
            let mut a = vec![0.0f64; m * m];
            for r in 0..rows {
                for (i, j) in (0..fo).flat_map(|i| (0..fo).map(move |j| (i, j))) {
                    s[i * fo + j] += per_row[i][r] * per_row[j][r] / rows as f64;
                }
                let h = |a: usize| {
                    if a < read.len() {
                        input[r * fi + read[a]] as f64
                    } else {
                        1.0
                    }
                };
                for (i, j) in (0..m).flat_map(|i| (0..m).map(move |j| (i, j))) {
                    a[i * m + j] += h(i) * h(j) / rows as f64;
                }
            }
            dampen(&mut s, fo, NATURAL_DAMP);
            dampen(&mut a, m, NATURAL_DAMP);
            let (si, ai) = (spd_inverse(&s, fo).unwrap(), spd_inverse(&a, m).unwrap());
            let mut largest = 0.0f64;
            let mut want = vec![0.0f64; fo * m];
            for (o, c) in (0..fo).flat_map(|o| (0..m).map(move |c| (o, c))) {
                let v: f64 = (0..fo)
                    .flat_map(|j| (0..m).map(move |q| (j, q)))
                    .map(|(j, q)| si[o * fo + j] * g[j * m + q] * ai[q * m + c])
                    .sum();
                want[o * m + c] = v;
                largest = largest.max(v.abs());
            }
            for (o, c) in (0..fo).flat_map(|o| (0..m).map(move |c| (o, c))) {
                let got = (p[at(o, c)] - moved[at(o, c)]) as f64 / NATURAL_STEP;
                let err = (got - want[o * m + c]).abs();
                assert!(
                    err <= 2e-3 * largest + 1e-5,
                    "{k} outputs, layer {l}, ({o}, {c}): step {got} against {}",
                    want[o * m + c]
                );
            }
        }
        for o in 0..hidden {
            assert_eq!(
                moved[shape.weight_offset(0) + o * d + 1],
                0.0,
                "a removed column moved"
            );
        }
        assert_ne!(moved, p, "no step was taken");
        // A pruned weight stays pruned; the weights beside it move.
        let pruned = shape.weight_offset(1) + 2;
        let mut q = p.clone();
        q[pruned] = 0.0;
        let stepped = natural_step(&shape, &q, &[], &split.moments(), &split);
        assert_eq!(stepped[pruned], 0.0, "a pruned weight came back");
        assert_ne!(
            stepped[pruned + 1],
            q[pruned + 1],
            "its neighbour did not move"
        );
    }
}
