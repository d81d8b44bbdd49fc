//! The batched MLP end to end on both backends: forward agrees with a plain host forward of each
//! model alone, and a few hundred training steps reach the same loss on the GPU as on the CPU.

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use regop::engine::kernels::activation::Activation;
use regop::engine::kernels::adam::Adam;
use regop::networks::mlp::{forward_host, init_params, predict_in_passes, BatchedMlp, MlpShape};
use regop::Device;

/// Toy binary problem: label = point (x0, x1) inside a circle; six more pure-noise inputs.
fn circle_data(rows: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for _ in 0..rows {
        let row: Vec<f32> = (0..8).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        y.push(((row[0] * row[0] + row[1] * row[1]) < 0.45) as u32 as f32);
        x.extend(row);
    }
    (x, y)
}

fn train(
    dev: &Device,
    shape: &MlpShape,
    batch: usize,
    steps: usize,
    x: &[f32],
    y: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let rows = y.len();
    let params: Vec<f32> = (0..batch)
        .flat_map(|m| init_params(shape, 100 + m as u64))
        .collect();
    let xb = dev.upload(x).unwrap();
    let yb = dev.upload(y).unwrap();
    let mut net = BatchedMlp::new(dev, shape, batch, rows, &params).unwrap();
    let opt = Adam {
        lr: 0.02,
        weight_decay: 1e-4,
        ..Adam::default()
    };
    net.forward(dev, xb.all(), 0).unwrap();
    net.loss(dev, yb.all(), 0).unwrap();
    let first = net.read_losses(dev).unwrap();
    for _ in 0..steps {
        net.train_step(dev, xb.all(), 0, yb.all(), 0, &opt).unwrap();
    }
    net.forward(dev, xb.all(), 0).unwrap();
    net.loss(dev, yb.all(), 0).unwrap();
    (first, net.read_losses(dev).unwrap())
}

#[test]
fn training_reaches_the_same_loss_on_both_backends() {
    let gpu = gpu();
    let (x, y) = circle_data(128, 1);
    for (dims, act) in [
        (vec![8, 16, 1], Activation::Relu),
        (vec![8, 12, 3], Activation::Tanh),
    ] {
        let shape = MlpShape::new(&dims, act);
        // Three classes: split the circle's outside by the sign of x0.
        let y: Vec<f32> = if dims[2] == 1 {
            y.clone()
        } else {
            y.iter()
                .zip(x.chunks(8))
                .map(|(&l, r)| {
                    if l > 0.5 {
                        0.0
                    } else if r[0] > 0.0 {
                        1.0
                    } else {
                        2.0
                    }
                })
                .collect()
        };
        let (first_cpu, cpu) = train(&Device::cpu(), &shape, 4, 300, &x, &y);
        let (first_gpu, g) = train(&gpu, &shape, 4, 300, &x, &y);
        for m in 0..4 {
            assert!(
                (first_cpu[m] - first_gpu[m]).abs() < 1e-5,
                "{dims:?} model {m}: initial losses differ"
            );
            assert!(
                cpu[m] < 0.5 * first_cpu[m],
                "{dims:?} model {m}: loss {} -> {} did not halve",
                first_cpu[m],
                cpu[m]
            );
            let diff = (cpu[m] - g[m]).abs();
            assert!(
                diff < 1e-3 * cpu[m].max(0.1),
                "{dims:?} model {m}: cpu loss {} vs gpu {} after 300 steps",
                cpu[m],
                g[m]
            );
        }
        eprintln!("{dims:?}: cpu {cpu:?} gpu {g:?}");
    }
}

#[test]
fn batched_forward_equals_each_model_alone() {
    let gpu = gpu();
    let mut rng = fresh_rng("batched forward");
    let shape = MlpShape::new(&[7, 33, 5, 1], Activation::Silu);
    let (batch, rows) = (5, 9);
    let params: Vec<f32> = (0..batch)
        .flat_map(|m| init_params(&shape, rng.random::<u64>() ^ m as u64))
        .collect();
    // Per-model inputs this time (batch stride rows * 7), so strides are exercised too.
    let x = random(&mut rng, batch * rows * 7);
    for dev in [&Device::cpu(), &gpu] {
        let xb = dev.upload(&x).unwrap();
        let net = BatchedMlp::new(dev, &shape, batch, rows, &params).unwrap();
        net.forward(dev, xb.all(), rows * 7).unwrap();
        let logits = dev
            .read(&net.acts, net.logits().offset, batch * rows)
            .unwrap();
        for m in 0..batch {
            let p = &params[m * shape.n_params()..(m + 1) * shape.n_params()];
            let want = forward_host(&shape, p, &x[m * rows * 7..(m + 1) * rows * 7], rows);
            for r in 0..rows {
                let got = logits[m * rows + r];
                assert!(
                    (got - want[r]).abs() <= 1e-5 * (1.0 + want[r].abs()),
                    "{}: model {m} row {r}: {got} vs {}",
                    dev.name(),
                    want[r]
                );
            }
        }
    }
}

/// `predict`, which runs inference-only nets in passes over the rows, gives each model's host
/// forward on every row, in one pass and in passes of 2048 rows (two whole passes and a
/// remainder), on both backends.
#[test]
fn predict_in_chunks_equals_each_model_alone() {
    let mut rng = fresh_rng("predict");
    let shape = MlpShape::new(&[7, 33, 5, 1], Activation::Relu);
    let (batch, rows) = (3, 4100);
    let params: Vec<f32> = (0..batch)
        .flat_map(|m| init_params(&shape, rng.random::<u64>() ^ m as u64))
        .collect();
    let x = random(&mut rng, rows * 7);
    let mut want = Vec::new();
    for m in 0..batch {
        let p = &params[m * shape.n_params()..(m + 1) * shape.n_params()];
        want.extend(forward_host(&shape, p, &x, rows));
    }
    for dev in [Device::cpu(), gpu()] {
        for max_rows in [usize::MAX, 2048] {
            let got = predict_in_passes(&dev, &shape, batch, &params, &x, max_rows).unwrap();
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{} in passes of {max_rows}: value {i}: {g} vs {w}",
                    dev.name()
                );
            }
        }
    }
}
