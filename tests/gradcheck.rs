//! Finite-difference checks of every backward on the CPU backend: central differences of a
//! scalar loss built from the forward kernels, against the backward kernels.

mod common;
use common::*;
use rand::Rng;
use regop::engine::kernels::activation::{activation_backward, activation_forward, Activation};
use regop::engine::kernels::bce::{bce_backward, bce_forward, Bce};
use regop::engine::kernels::cross_entropy::{
    cross_entropy_backward, cross_entropy_forward, CrossEntropy,
};
use regop::networks::mlp::{init_params, BatchedMlp, MlpShape};
use regop::Device;

/// Asserts ||analytic - numeric|| / ||numeric|| < tol.
fn assert_close(what: &str, analytic: &[f64], numeric: &[f64], tol: f64) {
    let num: f64 = analytic
        .iter()
        .zip(numeric)
        .map(|(a, n)| (a - n).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
    assert!(
        den > 1e-6,
        "{what}: numeric gradient is zero, the check proves nothing"
    );
    assert!(
        num / den < tol,
        "{what}: gradient relative error {:e} >= {tol:e}",
        num / den
    );
}

fn central(f: &mut dyn FnMut(&[f32]) -> f64, x: &[f32], h: f32) -> Vec<f64> {
    let mut xs = x.to_vec();
    (0..x.len())
        .map(|i| {
            xs[i] = x[i] + h;
            let up = f(&xs);
            xs[i] = x[i] - h;
            let down = f(&xs);
            xs[i] = x[i];
            (up - down) / (2.0 * h as f64)
        })
        .collect()
}

#[test]
fn activation_backward_matches_finite_differences() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("grad activation");
    let n = 40;
    for act in Activation::ALL {
        // Stay off ReLU's kink so the difference quotient is the derivative.
        let x: Vec<f32> = (0..n)
            .map(|_| rng.random_range(0.1f32..3.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 })
            .collect();
        let w = random(&mut rng, n);
        let mut loss = |xs: &[f32]| {
            let buf = dev.upload(&[xs, &vec![0.0; n][..]].concat()).unwrap();
            activation_forward(&dev, act, buf.view(0, n), buf.view(n, n)).unwrap();
            let y = dev.read(&buf, n, n).unwrap();
            y.iter()
                .zip(&w)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum()
        };
        let numeric = central(&mut loss, &x, 1e-2);
        let buf = dev
            .upload(&[&x[..], &w[..], &vec![0.0; n][..]].concat())
            .unwrap();
        activation_backward(
            &dev,
            act,
            buf.view(0, n),
            buf.view(n, n),
            buf.view(2 * n, n),
        )
        .unwrap();
        let analytic: Vec<f64> = dev
            .read(&buf, 2 * n, n)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_close(&format!("{act:?}"), &analytic, &numeric, 1e-3);
    }
}

#[test]
fn bce_backward_matches_finite_differences() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("grad bce");
    let (batch, n) = (3, 9);
    let b = Bce {
        batch,
        n,
        s_stride: n,
        t_stride: 0,
        out_stride: n,
    };
    let s: Vec<f32> = (0..batch * n)
        .map(|_| rng.random_range(-4.0f32..4.0))
        .collect();
    let t: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let mut loss = |sv: &[f32]| {
        let buf = dev
            .upload(&[sv, &t[..], &vec![0.0; batch * n][..]].concat())
            .unwrap();
        bce_forward(
            &dev,
            &b,
            buf.view(0, batch * n),
            buf.view(batch * n, n),
            buf.view(batch * n + n, batch * n),
        )
        .unwrap();
        dev.read(&buf, batch * n + n, batch * n)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .sum()
    };
    let numeric = central(&mut loss, &s, 1e-2);
    let buf = dev
        .upload(&[&s[..], &t[..], &vec![0.0; batch * n][..]].concat())
        .unwrap();
    bce_backward(
        &dev,
        &b,
        1.0,
        buf.view(0, batch * n),
        buf.view(batch * n, n),
        buf.view(batch * n + n, batch * n),
    )
    .unwrap();
    let analytic: Vec<f64> = dev
        .read(&buf, batch * n + n, batch * n)
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close("bce", &analytic, &numeric, 1e-3);
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("grad cross_entropy");
    let (batch, rows, classes) = (2, 5, 4);
    let ns = batch * rows * classes;
    let s = random(&mut rng, ns);
    let labels: Vec<f32> = (0..rows)
        .map(|_| rng.random_range(0..classes) as f32)
        .collect();
    let fw = CrossEntropy {
        batch,
        rows,
        classes,
        s_stride: rows * classes,
        l_stride: 0,
        out_stride: rows,
    };
    let mut loss = |sv: &[f32]| {
        let buf = dev
            .upload(&[sv, &labels[..], &vec![0.0; batch * rows][..]].concat())
            .unwrap();
        cross_entropy_forward(
            &dev,
            &fw,
            buf.view(0, ns),
            buf.view(ns, rows),
            buf.view(ns + rows, batch * rows),
        )
        .unwrap();
        dev.read(&buf, ns + rows, batch * rows)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .sum()
    };
    let numeric = central(&mut loss, &s, 1e-2);
    let bw = CrossEntropy {
        out_stride: rows * classes,
        ..fw
    };
    let buf = dev
        .upload(&[&s[..], &labels[..], &vec![0.0; ns][..]].concat())
        .unwrap();
    cross_entropy_backward(
        &dev,
        &bw,
        1.0,
        buf.view(0, ns),
        buf.view(ns, rows),
        buf.view(ns + rows, ns),
    )
    .unwrap();
    let analytic: Vec<f64> = dev
        .read(&buf, ns + rows, ns)
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close("cross_entropy", &analytic, &numeric, 1e-3);
}

/// The whole batched MLP backward (GEMM with transposes, bias gradient by column sums, activation
/// backward, loss backward) against finite differences of the mean loss, for every parameter of
/// every model in the batch, binary and multi-class heads, shared inputs.
#[test]
fn mlp_backward_matches_finite_differences() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("grad mlp");
    for (dims, act) in [
        (vec![5, 7, 1], Activation::Tanh),
        (vec![4, 6, 5, 3], Activation::Silu),
        (vec![3, 8, 1], Activation::Sigmoid),
    ] {
        let shape = MlpShape::new(&dims, act);
        let (batch, rows) = (2, 6);
        let params: Vec<f32> = (0..batch)
            .flat_map(|m| init_params(&shape, 7 + m as u64))
            .collect();
        let x = dev.upload(&random(&mut rng, rows * dims[0])).unwrap();
        let classes = shape.outputs();
        let y: Vec<f32> = (0..rows)
            .map(|_| {
                if classes == 1 {
                    rng.random_range(0.0f32..1.0)
                } else {
                    rng.random_range(0..classes) as f32
                }
            })
            .collect();
        let y = dev.upload(&y).unwrap();
        let mut total_loss = |p: &[f32]| {
            let net = BatchedMlp::new(&dev, &shape, batch, rows, p).unwrap();
            net.forward(&dev, x.all(), 0).unwrap();
            net.loss(&dev, y.all(), 0).unwrap();
            net.read_losses(&dev)
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .sum()
        };
        let numeric = central(&mut total_loss, &params, 1e-2);
        let net = BatchedMlp::new(&dev, &shape, batch, rows, &params).unwrap();
        net.forward(&dev, x.all(), 0).unwrap();
        net.loss(&dev, y.all(), 0).unwrap();
        net.backward(&dev, x.all(), 0).unwrap();
        let analytic: Vec<f64> = dev
            .read_all(&net.grads)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_close(&format!("mlp {dims:?} {act:?}"), &analytic, &numeric, 2e-3);
    }
}
