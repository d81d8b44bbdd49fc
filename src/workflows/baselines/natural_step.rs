//! One natural-gradient step on the labels: the cross-entropy of a calibration batch's labels,
//! its gradient preconditioned layer by layer by the inverse second moments of the layer's
//! inputs and of its output gradients (the Kronecker-factored Fisher, K-FAC). Where a fold has
//! made a model imitate itself without some features, what retraining finds is accuracy on the
//! labels; the best step that scales each weight's gradient alone finds half of what this
//! step finds (mnist_5k, the left ten pixel columns removed: +0.27 against +0.53 point on the
//! median, tools/one_step_bound.py).

use super::calibration;
use crate::engine::kernels::activation::sigmoid;
use crate::engine::linalg;
use crate::io::data::{ColumnMoments, Split};
use crate::networks::mlp::MlpShape;

/// Dampening of both factors, as a share of each one's mean diagonal, and the step's size.
/// Chosen on the mnist_5k zoo's 38 validation models (grid 0.1/0.3/1 by 0.03/0.1/0.3): +0.60
/// point on the median of the validation split against 0.40 for the next best.
pub const NATURAL_DAMP: f64 = 0.3;
pub const NATURAL_STEP: f64 = 0.1;

/// A step three times as long, for pruning rules: at high sparsity there is more to recover
/// than after a fold (mnist_5k, LAMP + reconstruction on the 16 validation models: at 0.95,
/// 0.7947 / 0.8093 / 0.8127 / 0.7673 with steps 0.1 / 0.2 / 0.3 / 0.5; at 0.9, 0.8813 /
/// 0.8807 / 0.8687 / 0.8280). Both are rules of `compare`, and its validation models choose.
pub const LONG_NATURAL_STEP: f64 = 3.0 * NATURAL_STEP;

/// `params` moved one natural-gradient step down the mean cross-entropy of `calib`'s labels
/// (softmax over several outputs, sigmoid over one). Zero weights stay zero: those out of
/// `removed` input columns after a fold, which the first layer's input factor leaves out,
/// and those a pruning mask removed. A removed neuron (no weight in or out, no bias) stays
/// removed: with no weight out its output gradient is exactly zero, and so is its bias's
/// step. The first layer's input factor is the training split's `moments` (the same for
/// every model); the others are the calibration batch's.
pub fn natural_step(
    shape: &MlpShape,
    params: &[f32],
    removed: &[bool],
    moments: &ColumnMoments,
    calib: &Split,
) -> Vec<f32> {
    natural_step_of(shape, params, removed, moments, calib, NATURAL_STEP)
}

/// `natural_step` of another size than `NATURAL_STEP` (a multiple of the preconditioned
/// gradient; the dampening stays `NATURAL_DAMP`).
pub fn natural_step_of(
    shape: &MlpShape,
    params: &[f32],
    removed: &[bool],
    moments: &ColumnMoments,
    calib: &Split,
    size: f64,
) -> Vec<f32> {
    let (rows, layers) = (calib.rows(), shape.layers());
    if rows == 0 || moments.rows == 0 {
        return params.to_vec();
    }
    // Every layer's pre-activation on the batch, and the hidden layers' outputs: layer l
    // reads the batch itself (l = 0) or hidden[l - 1].
    let (mut pres, mut hidden) = (Vec::with_capacity(layers), Vec::with_capacity(layers));
    for l in 0..layers {
        let input = if l == 0 { &calib.x } else { &hidden[l - 1] };
        let pre = calibration::layer_pre(shape, params, l, input, rows);
        if l + 1 < layers {
            hidden.push(
                pre.iter()
                    .map(|&v| shape.activation.apply(v))
                    .collect::<Vec<f32>>(),
            );
        }
        pres.push(pre);
    }
    let mut delta = label_delta(&pres[layers - 1], &calib.y, shape.outputs());
    let mut out = params.to_vec();
    for l in (0..layers).rev() {
        let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
        let read: Vec<usize> = match l {
            0 => (0..fi)
                .filter(|&c| !removed.get(c).copied().unwrap_or(false))
                .collect(),
            _ => (0..fi).collect(),
        };
        let factor = (l == 0).then(|| moments.input_factor(removed, NATURAL_DAMP));
        let input = if l == 0 { &calib.x } else { &hidden[l - 1] };
        let step = layer_step(input, fi, &read, &delta, fo, factor.as_deref());
        let (w, b, m) = (shape.weight_offset(l), shape.bias_offset(l), read.len() + 1);
        for o in 0..fo {
            for (a, &c) in read.iter().enumerate() {
                if params[w + o * fi + c] != 0.0 {
                    out[w + o * fi + c] -= (size * step[o * m + a]) as f32;
                }
            }
            out[b + o] -= (size * step[o * m + m - 1]) as f32;
        }
        if l > 0 {
            delta = back(shape, params, l, &delta, &pres[l - 1], rows);
        }
    }
    out
}

/// The loss's gradient with respect to the logits [rows, k], a mean over rows.
fn label_delta(logits: &[f32], labels: &[f32], k: usize) -> Vec<f64> {
    let n = labels.len().max(1) as f64;
    let mut d = vec![0.0f64; logits.len()];
    for ((dr, zr), &y) in d.chunks_mut(k).zip(logits.chunks(k)).zip(labels) {
        if k == 1 {
            dr[0] = (sigmoid(zr[0]) as f64 - y as f64) / n;
            continue;
        }
        let top = zr.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
        let sum: f64 = zr.iter().map(|&v| (v as f64 - top).exp()).sum();
        for (c, (dc, &z)) in dr.iter_mut().zip(zr).enumerate() {
            let hit = (c == y as usize) as u32 as f64;
            *dc = ((z as f64 - top).exp() / sum - hit) / n;
        }
    }
    d
}

/// Layer `l - 1`'s output gradient from layer `l`'s: back through its weights and activation.
fn back(
    shape: &MlpShape,
    params: &[f32],
    l: usize,
    delta: &[f64],
    pre: &[f32],
    rows: usize,
) -> Vec<f64> {
    let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
    let w = &params[shape.weight_offset(l)..][..fi * fo];
    let mut prev = vec![0.0f64; rows * fi];
    for r in 0..rows {
        let (dr, pr) = (
            &delta[r * fo..(r + 1) * fo],
            &mut prev[r * fi..(r + 1) * fi],
        );
        for (o, &d) in dr.iter().enumerate() {
            for (p, &v) in pr.iter_mut().zip(&w[o * fi..(o + 1) * fi]) {
                *p += d * v as f64;
            }
        }
        for (p, &z) in pr.iter_mut().zip(&pre[r * fi..(r + 1) * fi]) {
            *p *= shape.activation.grad(z) as f64;
        }
    }
    prev
}

/// One layer's natural gradient [fo, m]: S^-1 G A^-1, where G [fo, m] is the gradient of its
/// weights out of the `read` input columns and its bias (last), A [m, m] the second moments of
/// those inputs and a column of ones, S [fo, fo] those of the output gradients per row; both
/// dampened. A's Cholesky factor is `input_factor` where given (the first layer's inputs are
/// the data's columns: `ColumnMoments::input_factor`), else A comes from the batch `h`
/// [rows, fi].
fn layer_step(
    h: &[f32],
    fi: usize,
    read: &[usize],
    delta: &[f64],
    fo: usize,
    input_factor: Option<&Vec<f64>>,
) -> Vec<f64> {
    let (m, rows) = (read.len() + 1, delta.len() / fo.max(1));
    let design: Vec<f32> = (0..rows)
        .flat_map(|r| read.iter().map(move |&c| h[r * fi + c]).chain([1.0]))
        .collect();
    let from_batch;
    let factor = match input_factor {
        Some(f) => f,
        None => {
            let mut a = linalg::gram(&design, rows, m);
            a.iter_mut().for_each(|v| *v /= rows as f64);
            linalg::dampen(&mut a, m, NATURAL_DAMP);
            from_batch =
                linalg::cholesky(&a, m).expect("dampened second moments are positive definite");
            &from_batch
        }
    };
    // Per-row output gradients, their mean square [fo, fo], and G^T [m, fo].
    let per_row: Vec<f32> = delta.iter().map(|&d| (d * rows as f64) as f32).collect();
    let mut s = linalg::gram(&per_row, rows, fo);
    s.iter_mut().for_each(|v| *v /= rows as f64);
    let mut x = linalg::cross(&design, delta, rows, m, fo);
    linalg::dampen(&mut s, fo, NATURAL_DAMP);
    // A^-1 G^T [m, fo], transposed to [fo, m], then S^-1 of that.
    linalg::cholesky_solve(factor, m, &mut x, fo);
    let mut y: Vec<f64> = (0..fo * m).map(|i| x[(i % m) * fo + i / m]).collect();
    let cs = linalg::cholesky(&s, fo).expect("dampened second moments are positive definite");
    linalg::cholesky_solve(&cs, fo, &mut y, m);
    y
}
