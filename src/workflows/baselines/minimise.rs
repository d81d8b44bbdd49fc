//! Data minimisation rules: zero the removed features' input columns, with or without what
//! they carried folded into the first layer's biases and kept columns.

use crate::engine::kernels::jsd::mean_jsd_host;
use crate::engine::linalg;
use crate::io::data::{ColumnMoments, Schema, Split};
use crate::networks::mlp::{forward_host, MlpShape};
use crate::workflows::baselines::calibration;
use crate::workflows::baselines::natural_step::natural_step;

/// Mask that removes `features` (their input columns in the first layer).
pub fn drop_mask(
    shape: &MlpShape,
    schema: &Schema,
    features: &[String],
) -> std::result::Result<Vec<f32>, String> {
    let mut mask = vec![1.0f32; shape.n_params()];
    let fi = shape.fan_in(0);
    for f in schema.features_named(features)? {
        for c in f.start..f.start + f.width {
            for j in 0..shape.fan_out(0) {
                mask[shape.weight_offset(0) + j * fi + c] = 0.0;
            }
        }
    }
    Ok(mask)
}

/// The base of a minimisation edit: removing a column replaces it by its training mean, folded
/// into the first layer's biases (b_j += sum over removed c of W[j, c] * mean_c), so the model
/// sees the average of what it lost; the editor's deltas are learned on top. Numeric columns
/// are standardised (mean 0); one-hot columns fold their category frequencies.
pub fn fold_removed_means(
    shape: &MlpShape,
    params: &[f32],
    removed: &[bool],
    means: &[f32],
) -> Vec<f32> {
    let mut out = params.to_vec();
    if means.is_empty() || !removed.iter().any(|r| *r) {
        return out;
    }
    let fi = shape.fan_in(0);
    for j in 0..shape.fan_out(0) {
        let shift: f32 = (0..fi)
            .filter(|&c| removed[c])
            .map(|c| params[shape.weight_offset(0) + j * fi + c] * means[c])
            .sum();
        out[shape.bias_offset(0) + j] += shift;
    }
    out
}

/// The model with every first-layer weight out of the `removed` columns set to zero.
pub fn zero_columns(shape: &MlpShape, params: &[f32], removed: &[bool]) -> Vec<f32> {
    let mut out = params.to_vec();
    let d = shape.fan_in(0);
    for o in 0..shape.fan_out(0) {
        for (c, _) in removed.iter().enumerate().filter(|(_, r)| **r) {
            out[shape.weight_offset(0) + o * d + c] = 0.0;
        }
    }
    out
}

/// Rows `x` (row-major, one value per column of `removed`) with the removed columns set to
/// zero: what a model that no longer reads them sees of them.
pub fn zero_batch_columns(x: &[f32], removed: &[bool]) -> Vec<f32> {
    let mut out = x.to_vec();
    for row in out.chunks_mut(removed.len().max(1)) {
        for (v, _) in row.iter_mut().zip(removed).filter(|(_, r)| **r) {
            *v = 0.0;
        }
    }
    out
}

/// Least-squares compensation: each removed column's best linear prediction from the kept
/// columns (with an intercept), fitted on the training rows whose `moments` are given, folded
/// into the first layer: W_kept += W_removed A, b += W_removed c, W_removed = 0. Where the kept
/// columns say nothing of the removed ones (uncorrelated), A = 0 and c is the removed columns'
/// mean: the mean fold. Fitted on centred columns with the ridge chosen on held-out training
/// rows (`ColumnMoments::ridge`), which also keeps collinear columns (one-hot groups) solvable.
pub fn least_squares_fold(
    shape: &MlpShape,
    params: &[f32],
    removed: &[bool],
    moments: &ColumnMoments,
) -> Vec<f32> {
    let d = shape.fan_in(0);
    let kept: Vec<usize> = (0..d).filter(|&c| !removed[c]).collect();
    let gone: Vec<usize> = (0..d).filter(|&c| removed[c]).collect();
    let mut out = params.to_vec();
    if gone.is_empty() {
        return out;
    }
    let (mean, nk) = (&moments.mean, kept.len());
    let at = moments.fold_coefficients(removed);
    // x_removed ~ mean_r + A^T (x_kept - mean_k): fold it into each first-layer neuron. Its
    // kept weights gain sum over removed j of w_j A^T[j], accumulated as whole rows of A^T.
    let mut gain = vec![0.0f64; nk];
    for o in 0..shape.fan_out(0) {
        let row = shape.weight_offset(0) + o * d;
        gain.fill(0.0);
        let mut shift = 0.0f64;
        for (j, &c) in gone.iter().enumerate() {
            let w = params[row + c] as f64;
            for (g, &a) in gain.iter_mut().zip(&at[j * nk..(j + 1) * nk]) {
                *g += w * a;
            }
            shift += w * mean[c];
            out[row + c] = 0.0;
        }
        for (&k, &g) in kept.iter().zip(&gain) {
            out[row + k] += g as f32;
            shift -= g * mean[k];
        }
        out[shape.bias_offset(0) + o] += shift as f32;
    }
    out
}

/// Of the two folds, the one whose predictions on the calibration batch `x` [rows, columns]
/// stay closer to the model's own (mean JSD): the mean fold, its removed columns' weights zero,
/// or the least-squares fold. Which one keeps more of a model depends on the features and on
/// the model: on Adult the least-squares fold is ahead where the removed features are
/// predictable from the kept ones (sex from relationship), the mean fold where they are not
/// (age, capital-gain, hours-per-week), where the prediction moves the kept columns' weights
/// for little.
pub fn closer_fold(
    shape: &MlpShape,
    params: &[f32],
    removed: &[bool],
    means: &[f32],
    moments: &ColumnMoments,
    x: &[f32],
    rows: usize,
) -> Vec<f32> {
    let mean = zero_columns(
        shape,
        &fold_removed_means(shape, params, removed, means),
        removed,
    );
    let least_squares = least_squares_fold(shape, params, removed, moments);
    let own = forward_host(shape, params, x, rows);
    let distance =
        |p: &[f32]| mean_jsd_host(shape.outputs(), &own, &forward_host(shape, p, x, rows));
    if distance(&mean) < distance(&least_squares) {
        mean
    } else {
        least_squares
    }
}

/// The least-squares fold, then every later layer's weights and bias re-solved by least squares
/// on the calibration batch `x` [rows, columns] so that, from what the edited layers before it
/// pass on, it reproduces the pre-activations of the original model. The fold is the best
/// linear stand-in for the first layer; what it misses comes out of the activation changed,
/// and each later layer is refitted to the model's own values rather than passing the error on.
pub fn fold_reconstruction(
    shape: &MlpShape,
    params: &[f32],
    removed: &[bool],
    moments: &ColumnMoments,
    x: &[f32],
    rows: usize,
) -> Vec<f32> {
    let mut out = least_squares_fold(shape, params, removed, moments);
    if !removed.iter().any(|r| *r) {
        return out;
    }
    let (mut seen, mut own) = (x.to_vec(), x.to_vec());
    for l in 1..shape.layers() {
        seen = calibration::layer_out(shape, &out, l - 1, &seen, rows);
        own = calibration::layer_out(shape, params, l - 1, &own, rows);
        let target = calibration::layer_pre(shape, params, l, &own, rows);
        refit_layer(shape, &mut out, l, &seen, rows, &target);
    }
    out
}

/// The fold + reconstruction, then one natural-gradient step on the calibration batch's labels
/// (`natural_step`): the fold and the refit keep what the model did without the features; the
/// step moves it toward what the labels say, as retraining without them would.
pub fn fold_reconstruction_step(
    shape: &MlpShape,
    params: &[f32],
    removed: &[bool],
    moments: &ColumnMoments,
    calib: &Split,
) -> Vec<f32> {
    let rebuilt = fold_reconstruction(shape, params, removed, moments, &calib.x, calib.rows());
    if !removed.iter().any(|r| *r) {
        return rebuilt;
    }
    natural_step(shape, &rebuilt, removed, moments, calib)
}

/// Dampening of `refit_layer`'s solve, as a share of its Gram matrix's mean diagonal.
const REFIT_DAMP: f64 = 0.01;

/// Layer `l`'s weights and bias re-solved by least squares so that from `h` [rows, fan_in] it
/// reproduces `target` [rows, fan_out]. The dampening pulls toward the layer's current values,
/// not toward zero: where the batch says little (a neuron rarely active, few rows) the layer
/// keeps what it had, and where `h` already gives `target` the layer is unchanged.
fn refit_layer(
    shape: &MlpShape,
    params: &mut [f32],
    l: usize,
    h: &[f32],
    rows: usize,
    target: &[f32],
) {
    let (fi, fo, k) = (shape.fan_in(l), shape.fan_out(l), shape.fan_in(l) + 1);
    let (w, b) = (shape.weight_offset(l), shape.bias_offset(l));
    // The design: the layer's inputs and a column of ones (the bias); its current values.
    let z: Vec<f32> = (0..rows)
        .flat_map(|r| h[r * fi..(r + 1) * fi].iter().copied().chain([1.0]))
        .collect();
    let current = |a: usize, o: usize| -> f64 {
        if a < fi {
            params[w + o * fi + a] as f64
        } else {
            params[b + o] as f64
        }
    };
    let mut g = linalg::gram(&z, rows, k);
    let before: Vec<f64> = (0..k).map(|a| g[a * k + a]).collect();
    linalg::dampen(&mut g, k, REFIT_DAMP);
    let mut rhs = linalg::cross(&z, target, rows, k, fo);
    for a in 0..k {
        for o in 0..fo {
            rhs[a * fo + o] += (g[a * k + a] - before[a]) * current(a, o);
        }
    }
    let chol = linalg::cholesky(&g, k).expect("dampened Gram matrix is positive definite");
    linalg::cholesky_solve(&chol, k, &mut rhs, fo);
    for o in 0..fo {
        for a in 0..fi {
            params[w + o * fi + a] = rhs[a * fo + o] as f32;
        }
        params[b + o] = rhs[fi * fo + o] as f32;
    }
}
