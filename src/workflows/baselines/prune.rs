//! Pruning rules: global and layer-wise magnitude, LAMP (data-free); iterative magnitude with
//! fine-tuning.

use super::{apply, calibration, masked_finetune, FineTune};
use crate::engine::device::Device;
use crate::engine::linalg;
use crate::error::Result;
use crate::io::data::Dataset;
use crate::networks::mlp::{forward_host, MlpShape};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Indices of every weight (not bias) of layer `l`, or of all layers.
fn weight_indices(shape: &MlpShape, layer: Option<usize>) -> Vec<usize> {
    let layers: Vec<usize> = layer.map_or((0..shape.layers()).collect(), |l| vec![l]);
    layers
        .into_iter()
        .flat_map(|l| (shape.weight_offset(l)..shape.bias_offset(l)).collect::<Vec<_>>())
        .collect()
}

/// A sort key ordering weights by (|w|, position) as one integer: the bits of a non-negative
/// f32 order as the values do, and integers sort several times faster than float pairs.
fn magnitude_key(w: f32, i: usize) -> u64 {
    ((w.abs().to_bits() as u64) << 32) | i as u64
}

/// Zero the `k` smallest |w| among `idx` (ties by position).
fn prune_among(params: &[f32], idx: &[usize], k: usize, mask: &mut [f32]) {
    let mut order: Vec<usize> = idx.to_vec();
    order.sort_by(|&a, &b| params[a].abs().total_cmp(&params[b].abs()).then(a.cmp(&b)));
    for &i in &order[..k] {
        mask[i] = 0.0;
    }
}

/// Global magnitude pruning: exactly round(sparsity * weights) weights zeroed, smallest |w| first.
pub fn global_magnitude_mask(shape: &MlpShape, params: &[f32], sparsity: f64) -> Vec<f32> {
    let mut mask = vec![1.0f32; shape.n_params()];
    let idx = weight_indices(shape, None);
    prune_among(
        params,
        &idx,
        (sparsity * idx.len() as f64).round() as usize,
        &mut mask,
    );
    mask
}

/// Layer-wise magnitude pruning: every layer pruned to at least `sparsity` on its own (rounded
/// up per layer, so the whole model also reaches it).
pub fn layerwise_magnitude_mask(shape: &MlpShape, params: &[f32], sparsity: f64) -> Vec<f32> {
    let mut mask = vec![1.0f32; shape.n_params()];
    for l in 0..shape.layers() {
        let idx = weight_indices(shape, Some(l));
        prune_among(
            params,
            &idx,
            (sparsity * idx.len() as f64 - 1e-9).ceil() as usize,
            &mut mask,
        );
    }
    mask
}

/// LAMP scores (layer-adaptive magnitude pruning, data-free): within a layer, a weight u scores
/// u^2 / (sum of v^2 over the layer's weights with |v| >= |u|), so every layer's largest weight
/// scores 1 and a layer of many small weights is not emptied by a global threshold. Returns
/// (score, parameter index) for every weight.
pub fn lamp_scores(shape: &MlpShape, params: &[f32]) -> Vec<(f64, usize)> {
    let mut out = Vec::with_capacity(shape.n_params());
    for l in 0..shape.layers() {
        let mut by_size: Vec<u64> = weight_indices(shape, Some(l))
            .into_iter()
            .map(|i| magnitude_key(params[i], i))
            .collect();
        by_size.sort_unstable();
        let mut tail = 0.0f64;
        let mut scored: Vec<(f64, usize)> = by_size
            .iter()
            .rev()
            .map(|&key| {
                let i = key as u32 as usize;
                let sq = (params[i] as f64).powi(2);
                tail += sq;
                (if tail > 0.0 { sq / tail } else { 0.0 }, i)
            })
            .collect();
        scored.reverse();
        out.extend(scored);
    }
    out
}

/// Global pruning by LAMP score: exactly round(sparsity * weights) weights zeroed, lowest
/// scores first (ties by position).
pub fn lamp_mask(shape: &MlpShape, params: &[f32], sparsity: f64) -> Vec<f32> {
    let mut mask = vec![1.0f32; shape.n_params()];
    let mut scores = lamp_scores(shape, params);
    let k = (sparsity * scores.len() as f64).round() as usize;
    scores.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for &(_, i) in &scores[..k] {
        mask[i] = 0.0;
    }
    mask
}

/// Iterative magnitude pruning: `rounds` rounds of global pruning to a rising sparsity
/// (1 - (1 - s)^(r / rounds)), each followed by masked fine-tuning for `ft.epochs`.
pub fn iterative_magnitude(
    dev: &Device,
    shape: &MlpShape,
    params: &[f32],
    sparsity: f64,
    rounds: usize,
    data: &Dataset,
    ft: &FineTune,
) -> Result<Vec<f32>> {
    let mut p = params.to_vec();
    for r in 1..=rounds {
        let s = 1.0 - (1.0 - sparsity).powf(r as f64 / rounds as f64);
        let mask = global_magnitude_mask(shape, &p, s);
        p = masked_finetune(dev, shape, &apply(&p, &mask), &mask, data, ft)?;
    }
    Ok(p)
}

/// Weights each layer prunes when every layer reaches `sparsity` on its own (rounded up, so the
/// whole model reaches it too).
fn layer_quota(len: usize, sparsity: f64) -> usize {
    ((sparsity * len as f64 - 1e-9).ceil() as usize).min(len)
}

/// Wanda (Sun et al., 2023): weight W[j, i] of layer l scores |W[j, i]| times the L2 norm of
/// input i of the layer over the calibration batch `x` [rows, inputs] (inputs from the unpruned
/// model), and each layer prunes its lowest-scoring share (ties by position). It is layer-wise
/// magnitude pruning where every input has the same norm. Returns the mask.
pub fn wanda_mask(
    shape: &MlpShape,
    params: &[f32],
    x: &[f32],
    rows: usize,
    sparsity: f64,
) -> Vec<f32> {
    let mut mask = vec![1.0f32; shape.n_params()];
    let mut input = x.to_vec();
    for l in 0..shape.layers() {
        let quota = layer_quota(shape.fan_in(l) * shape.fan_out(l), sparsity);
        let layer = wanda_layer_mask(shape, params, l, &input, rows, quota);
        let (a, b) = (shape.weight_offset(l), shape.bias_offset(l));
        mask[a..b].copy_from_slice(&layer[a..b]);
        input = calibration::layer_out(shape, params, l, &input, rows);
    }
    mask
}

/// Wanda's mask of layer `l` alone, `quota` of its weights pruned, on the layer's input
/// `input` [rows, fan_in] (1 elsewhere).
fn wanda_layer_mask(
    shape: &MlpShape,
    params: &[f32],
    l: usize,
    input: &[f32],
    rows: usize,
    quota: usize,
) -> Vec<f32> {
    let mut mask = vec![1.0f32; shape.n_params()];
    let fi = shape.fan_in(l);
    let norms: Vec<f64> = (0..fi)
        .map(|i| {
            (0..rows)
                .map(|r| (input[r * fi + i] as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let off = shape.weight_offset(l);
    let mut scored: Vec<(f64, usize)> = weight_indices(shape, Some(l))
        .into_iter()
        .map(|p| (params[p].abs() as f64 * norms[(p - off) % fi], p))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for &(_, p) in &scored[..quota] {
        mask[p] = 0.0;
    }
    mask
}

/// Columns of the inverse Hessian a SparseGPT block handles at once.
const OBS_BLOCK: usize = 128;
/// Dampening of X^T X, as a share of its mean diagonal.
const OBS_DAMP: f64 = 0.01;

/// Layer-wise reconstruction in the manner of Optimal Brain Surgeon (SparseGPT, OBC): layer
/// after layer, on the calibration inputs that the layers already pruned pass on (H = X^T X),
/// the weights to keep are chosen and re-solved so that the layer reproduces its outputs. The
/// candidates: SparseGPT's (Frantar & Alistarh, 2023: least saliency w^2 / [H^-1]_ii^2 in
/// blocks of 128 inputs, each drop compensated by the OBS update of the weights after it), and
/// the masks of SparseGPT, Wanda and magnitude with every row's kept weights re-solved by least
/// squares; the one that reproduces the layer best is kept (magnitude unre-solved competes too,
/// so the layer is never reproduced worse than by magnitude pruning at its count). How many
/// weights each layer prunes is tried two ways: every layer at the asked sparsity (as
/// layer-wise magnitude pruning), and each layer as many as global LAMP pruning takes from it
/// (which spares small layers); the model whose logits on the batch are closer to the
/// original's is kept. Biases are kept. Returns the pruned parameters.
pub fn obs_prune(
    shape: &MlpShape,
    params: &[f32],
    x: &[f32],
    rows: usize,
    sparsity: f64,
) -> Vec<f32> {
    let uniform: Vec<usize> = (0..shape.layers())
        .map(|l| layer_quota(shape.fan_in(l) * shape.fan_out(l), sparsity))
        .collect();
    let lamp = lamp_mask(shape, params, sparsity);
    let lamp_quotas: Vec<usize> = (0..shape.layers())
        .map(|l| {
            lamp[shape.weight_offset(l)..shape.bias_offset(l)]
                .iter()
                .filter(|&&m| m == 0.0)
                .count()
        })
        .collect();
    let first = first_layer_hessian(x, rows, shape.fan_in(0));
    let a = obs_prune_layers(shape, params, x, rows, &uniform, Some(&first));
    if lamp_quotas == uniform {
        return a;
    }
    let b = obs_prune_layers(shape, params, x, rows, &lamp_quotas, Some(&first));
    let original = forward_host(shape, params, x, rows);
    let distance = |p: &[f32]| -> f64 {
        forward_host(shape, p, x, rows)
            .iter()
            .zip(&original)
            .map(|(u, v)| ((u - v) as f64).powi(2))
            .sum()
    };
    if distance(&b) < distance(&a) {
        b
    } else {
        a
    }
}

/// OBS reconstruction (`obs_prune`) with `quotas[l]` weights pruned in layer l.
pub fn obs_prune_quotas(
    shape: &MlpShape,
    params: &[f32],
    x: &[f32],
    rows: usize,
    quotas: &[usize],
) -> Vec<f32> {
    obs_prune_layers(shape, params, x, rows, quotas, None)
}

/// A layer's Gram matrix on its calibration input (H = X^T X), its inputs never active on the
/// batch, and the upper Cholesky factor U of the dampened H^-1 (H^-1 = U^T U, stored as its
/// transpose), whose rows drive SparseGPT's updates.
struct LayerHessian {
    gram: Vec<f64>,
    dead: Vec<bool>,
    lower: Vec<f64>,
}

fn layer_hessian(input: &[f32], rows: usize, fi: usize) -> LayerHessian {
    let gram = linalg::gram(input, rows, fi);
    let dead = (0..fi).map(|i| gram[i * fi + i] == 0.0).collect();
    let mut h = gram.clone();
    linalg::dampen(&mut h, fi, OBS_DAMP);
    let hinv = linalg::spd_inverse(&h, fi).expect("dampened Gram matrix is positive definite");
    let lower = linalg::cholesky(&hinv, fi).expect("inverse of an SPD matrix is SPD");
    LayerHessian { gram, dead, lower }
}

/// The first layer's Hessian depends only on the calibration batch, not on the model: every
/// model pruned on one batch (and both quota runs of each) shares it. The last one is kept.
static FIRST_HESSIAN: Mutex<Option<(u64, Arc<LayerHessian>)>> = Mutex::new(None);

fn first_layer_hessian(x: &[f32], rows: usize, fi: usize) -> Arc<LayerHessian> {
    let mut hasher = DefaultHasher::new();
    (rows, fi).hash(&mut hasher);
    x.iter().for_each(|v| v.to_bits().hash(&mut hasher));
    let key = hasher.finish();
    if let Some((k, h)) = FIRST_HESSIAN.lock().unwrap().as_ref() {
        if *k == key {
            return h.clone();
        }
    }
    let h = Arc::new(layer_hessian(x, rows, fi));
    *FIRST_HESSIAN.lock().unwrap() = Some((key, h.clone()));
    h
}

/// `obs_prune_quotas`, with the first layer's Hessian given where it is already known.
fn obs_prune_layers(
    shape: &MlpShape,
    params: &[f32],
    x: &[f32],
    rows: usize,
    quotas: &[usize],
    first: Option<&LayerHessian>,
) -> Vec<f32> {
    let mut out = params.to_vec();
    let mut input = x.to_vec();
    for (l, &quota) in quotas.iter().enumerate() {
        let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
        let own;
        let hess = match (l, first) {
            (0, Some(f)) => f,
            _ => {
                own = layer_hessian(&input, rows, fi);
                &own
            }
        };
        let gram = &hess.gram;
        let off = shape.weight_offset(l);
        let w: Vec<f64> = out[off..off + fi * fo].iter().map(|&v| v as f64).collect();
        let mut sparsegpt = w.clone();
        obs_layer(&mut sparsegpt, fo, fi, hess, quota);
        let kept_by =
            |m: &[f32]| -> Vec<bool> { m[off..off + fi * fo].iter().map(|&v| v != 0.0).collect() };
        let mut magnitude = vec![1.0f32; shape.n_params()];
        prune_among(&out, &weight_indices(shape, Some(l)), quota, &mut magnitude);
        let wanda = wanda_layer_mask(shape, &out, l, &input, rows, quota);
        let sgpt_kept: Vec<bool> = sparsegpt.iter().map(|&v| v != 0.0).collect();
        let plain_magnitude: Vec<f64> = w
            .iter()
            .zip(kept_by(&magnitude))
            .map(|(&v, k)| if k { v } else { 0.0 })
            .collect();
        let mut candidates = vec![sparsegpt, plain_magnitude];
        for kept in [sgpt_kept, kept_by(&magnitude), kept_by(&wanda)] {
            candidates.push(resolve_rows(&w, fo, fi, gram, &kept));
        }
        let error = |c: &Vec<f64>| layer_error(gram, &w, c, fo, fi);
        let best = candidates
            .iter()
            .min_by(|a, b| error(a).total_cmp(&error(b)))
            .expect("candidates");
        for (o, v) in out[off..off + fi * fo].iter_mut().zip(best) {
            *o = *v as f32;
        }
        input = calibration::layer_out(shape, &out, l, &input, rows);
    }
    out
}

/// ||X (w - v)^T||^2 over the batch whose Gram matrix is `gram`: how far weights `v` [rows, d]
/// are from reproducing `w`'s outputs. G E^T is accumulated along G's rows (G is symmetric),
/// for a block of rows of E at a time, and inputs whose weight did not move are skipped.
fn layer_error(gram: &[f64], w: &[f64], v: &[f64], rows: usize, d: usize) -> f64 {
    let e: Vec<f64> = w.iter().zip(v).map(|(a, b)| a - b).collect();
    let mut ge = vec![0.0f64; rows * d];
    // Blocks of rows whose share of G E^T stays in cache while G streams past.
    for (eb, geb) in e.chunks(16 * d).zip(ge.chunks_mut(16 * d)) {
        for (i, gi) in gram.chunks_exact(d).enumerate() {
            for (er, ger) in eb.chunks_exact(d).zip(geb.chunks_exact_mut(d)) {
                let eri = er[i];
                if eri == 0.0 {
                    continue;
                }
                for (g, &h) in ger.iter_mut().zip(gi) {
                    *g += eri * h;
                }
            }
        }
    }
    e.chunks_exact(d)
        .zip(ge.chunks_exact(d))
        .map(|(er, ger)| er.iter().zip(ger).map(|(a, b)| a * b).sum::<f64>())
        .sum()
}

/// Every row's weights on its kept inputs re-solved by least squares (a whisker of ridge), so
/// that the row reproduces its outputs from them alone:
/// (H_KK) v_K = H_K: w. Dropped weights are zero.
fn resolve_rows(w: &[f64], rows: usize, d: usize, gram: &[f64], kept: &[bool]) -> Vec<f64> {
    let mut out = vec![0.0f64; rows * d];
    for r in 0..rows {
        // A kept weight on an input the batch never moves keeps its value: the batch says
        // nothing of it.
        for i in (0..d).filter(|&i| kept[r * d + i] && gram[i * d + i] == 0.0) {
            out[r * d + i] = w[r * d + i];
        }
        let k: Vec<usize> = (0..d)
            .filter(|&i| kept[r * d + i] && gram[i * d + i] != 0.0)
            .collect();
        if k.is_empty() {
            continue;
        }
        let n = k.len();
        let mut h: Vec<f64> = k
            .iter()
            .flat_map(|&i| k.iter().map(move |&j| gram[i * d + j]))
            .collect();
        linalg::dampen(&mut h, n, 1e-8);
        let mut rhs: Vec<f64> = k
            .iter()
            .map(|&i| (0..d).map(|j| gram[i * d + j] * w[r * d + j]).sum())
            .collect();
        let chol = linalg::cholesky(&h, n).expect("dampened Gram matrix is positive definite");
        linalg::cholesky_solve(&chol, n, &mut rhs, 1);
        for (&i, &v) in k.iter().zip(&rhs) {
            out[r * d + i] = v;
        }
    }
    out
}

/// SparseGPT on one layer's weights `w` [rows, d] with Hessian `hess`: prune exactly `quota`
/// weights, compensating each drop in the weights of later inputs.
fn obs_layer(w: &mut [f64], rows: usize, d: usize, hess: &LayerHessian, quota: usize) {
    let (lower, dead) = (&hess.lower, &hess.dead);
    let u = |i: usize, j: usize| lower[j * d + i];
    // Each block's share of the quota, in proportion to its width (largest remainders first).
    let blocks: Vec<(usize, usize)> = (0..d)
        .step_by(OBS_BLOCK)
        .map(|a| (a, (a + OBS_BLOCK).min(d)))
        .collect();
    let mut share: Vec<usize> = blocks.iter().map(|(a, b)| quota * (b - a) / d).collect();
    let mut rem: Vec<(usize, usize)> = blocks
        .iter()
        .enumerate()
        .map(|(k, (a, b))| ((quota * (b - a)) % d, k))
        .collect();
    rem.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    for &(_, k) in rem.iter().take(quota - share.iter().sum::<usize>()) {
        share[k] += 1;
    }
    for (&(a, b), &k) in blocks.iter().zip(&share) {
        // Saliency of every weight of the block, with the updates of earlier blocks applied.
        let mut scored: Vec<(f64, usize, usize)> = (0..rows)
            .flat_map(|r| (a..b).map(move |c| (r, c)))
            .map(|(r, c)| {
                let s = if dead[c] {
                    -1.0
                } else {
                    w[r * d + c].powi(2) / u(c, c).powi(2)
                };
                (s, r, c)
            })
            .collect();
        scored.sort_by(|x, y| x.0.total_cmp(&y.0).then((x.1, x.2).cmp(&(y.1, y.2))));
        let mut drop = vec![false; rows * (b - a)];
        for &(_, r, c) in &scored[..k] {
            drop[r * (b - a) + c - a] = true;
        }
        for r in 0..rows {
            let wr = &mut w[r * d..(r + 1) * d];
            for c in a..b {
                if !drop[r * (b - a) + c - a] {
                    continue;
                }
                // Drop w[r, c]; move its error onto the inputs after it (OBS update).
                let err = wr[c] / u(c, c);
                for (j, v) in wr.iter_mut().enumerate().skip(c) {
                    *v -= err * u(c, j);
                }
                wr[c] = 0.0;
            }
        }
    }
}

/// Squared error of layer `l`'s pre-activation with parameters `edited` against `original`,
/// both on the same input `x` [rows, fan_in]: what layer-wise reconstruction minimises.
pub fn reconstruction_error(
    shape: &MlpShape,
    original: &[f32],
    edited: &[f32],
    l: usize,
    x: &[f32],
    rows: usize,
) -> f64 {
    let a = calibration::layer_pre(shape, original, l, x, rows);
    let b = calibration::layer_pre(shape, edited, l, x, rows);
    a.iter()
        .zip(&b)
        .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
        .sum()
}

/// Neurons a structured rule removes from a hidden layer of `width`: the share `fraction`,
/// rounded up, leaving at least one.
pub fn neurons_to_remove(width: usize, fraction: f64) -> usize {
    ((fraction * width as f64 - 1e-9).ceil() as usize).min(width - 1)
}

/// Hidden neuron j of layer l removed: its incoming weights and bias, and its outgoing weights
/// (the column j of layer l + 1), zero, so it is gone whatever the activation gives at 0.
pub fn remove_neuron(shape: &MlpShape, params: &mut [f32], l: usize, j: usize) {
    let (fi, fo, next) = (shape.fan_in(l), shape.fan_out(l), shape.fan_out(l + 1));
    params[shape.weight_offset(l) + j * fi..][..fi].fill(0.0);
    params[shape.bias_offset(l) + j] = 0.0;
    for k in 0..next {
        params[shape.weight_offset(l + 1) + k * fo + j] = 0.0;
    }
}

/// Norm of the outgoing weights of neuron j of hidden layer l (column j of layer l + 1).
pub(crate) fn out_norm(shape: &MlpShape, params: &[f32], l: usize, j: usize) -> f64 {
    let fo = shape.fan_out(l);
    (0..shape.fan_out(l + 1))
        .map(|k| (params[shape.weight_offset(l + 1) + k * fo + j] as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The `count` lowest of `scores` (ties by position).
fn lowest(scores: &[f64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.truncate(count);
    order
}

/// Whole-neuron magnitude pruning (data-free): neuron j of hidden layer l scores the norm of its
/// incoming weights times that of its outgoing ones; each hidden layer loses its lowest share.
pub fn neuron_magnitude(shape: &MlpShape, params: &[f32], fraction: f64) -> Vec<f32> {
    let mut out = params.to_vec();
    for l in 0..shape.layers() - 1 {
        let fi = shape.fan_in(l);
        let scores: Vec<f64> = (0..shape.fan_out(l))
            .map(|j| {
                let w = &params[shape.weight_offset(l) + j * fi..][..fi];
                let inw = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                inw * out_norm(shape, params, l, j)
            })
            .collect();
        for j in lowest(&scores, neurons_to_remove(shape.fan_out(l), fraction)) {
            remove_neuron(shape, &mut out, l, j);
        }
    }
    out
}

/// The activation norm of every neuron of hidden layer l (its output on `input`, the layer's
/// input over the calibration batch) times its outgoing weights' norm: Wanda for whole neurons.
fn neuron_scores(
    shape: &MlpShape,
    params: &[f32],
    l: usize,
    input: &[f32],
    rows: usize,
) -> Vec<f64> {
    let fo = shape.fan_out(l);
    let h = calibration::layer_out(shape, params, l, input, rows);
    (0..fo)
        .map(|j| {
            let a = (0..rows)
                .map(|r| (h[r * fo + j] as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            a * out_norm(shape, params, l, j)
        })
        .collect()
}

/// Whole-neuron Wanda: neuron j scores the norm of its activation over the calibration batch
/// times that of its outgoing weights (how much it moves the next layer); each hidden layer
/// loses its lowest share.
pub fn neuron_wanda(
    shape: &MlpShape,
    params: &[f32],
    x: &[f32],
    rows: usize,
    fraction: f64,
) -> Vec<f32> {
    let mut out = params.to_vec();
    let mut input = x.to_vec();
    for l in 0..shape.layers() - 1 {
        let scores = neuron_scores(shape, params, l, &input, rows);
        for j in lowest(&scores, neurons_to_remove(shape.fan_out(l), fraction)) {
            remove_neuron(shape, &mut out, l, j);
        }
        input = calibration::layer_out(shape, params, l, &input, rows);
    }
    out
}

/// Whole-neuron pruning with reconstruction (Optimal Brain Surgeon for neurons): neurons chosen
/// as `neuron_wanda` does, layer after layer on the network already pruned; then the next
/// layer's weights and bias are re-solved by least squares so that, from the kept neurons, it
/// reproduces on the calibration batch what it computed from all of them.
pub fn neuron_reconstruct(
    shape: &MlpShape,
    params: &[f32],
    x: &[f32],
    rows: usize,
    fraction: f64,
) -> Vec<f32> {
    let mut out = params.to_vec();
    let mut input = x.to_vec();
    for l in 0..shape.layers() - 1 {
        let scores = neuron_scores(shape, &out, l, &input, rows);
        let removed = lowest(&scores, neurons_to_remove(shape.fan_out(l), fraction));
        let h = calibration::layer_out(shape, &out, l, &input, rows);
        let target = calibration::layer_pre(shape, &out, l + 1, &h, rows);
        for &j in &removed {
            remove_neuron(shape, &mut out, l, j);
        }
        let kept: Vec<usize> = (0..shape.fan_out(l))
            .filter(|j| !removed.contains(j))
            .collect();
        resolve_next_layer(shape, &mut out, l + 1, &h, rows, &kept, &target);
        input = calibration::layer_out(shape, &out, l, &input, rows);
    }
    out
}

/// Layer `l`'s weights on inputs `kept` and its bias, re-solved by (dampened) least squares so
/// that from those columns of `h` [rows, fan_in] it reproduces `target` [rows, fan_out].
fn resolve_next_layer(
    shape: &MlpShape,
    params: &mut [f32],
    l: usize,
    h: &[f32],
    rows: usize,
    kept: &[usize],
    target: &[f32],
) {
    let (fi, fo, k) = (shape.fan_in(l), shape.fan_out(l), kept.len() + 1);
    // The design: the kept columns and a column of ones (the bias).
    let z: Vec<f32> = (0..rows)
        .flat_map(|r| {
            kept.iter()
                .map(move |&c| h[r * fi + c])
                .chain(std::iter::once(1.0))
        })
        .collect();
    let mut g = linalg::gram(&z, rows, k);
    linalg::dampen(&mut g, k, OBS_DAMP);
    let mut rhs = linalg::cross(&z, target, rows, k, fo);
    let chol = linalg::cholesky(&g, k).expect("dampened Gram matrix is positive definite");
    linalg::cholesky_solve(&chol, k, &mut rhs, fo);
    for o in 0..fo {
        for (a, &c) in kept.iter().enumerate() {
            params[shape.weight_offset(l) + o * fi + c] = rhs[a * fo + o] as f32;
        }
        params[shape.bias_offset(l) + o] = rhs[(k - 1) * fo + o] as f32;
    }
}

/// Layer after layer, every row's weights kept by `mask` re-solved by least squares on the
/// calibration inputs the layers already pruned pass on (`resolve_rows`); the others zero.
pub fn masked_reconstruction(
    shape: &MlpShape,
    params: &[f32],
    x: &[f32],
    rows: usize,
    mask: &[f32],
) -> Vec<f32> {
    let mut out = params.to_vec();
    let mut input = x.to_vec();
    for l in 0..shape.layers() {
        let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
        // The first layer's Gram matrix is the batch's alone: shared by every model.
        let first;
        let own;
        let gram: &[f64] = if l == 0 {
            first = first_layer_hessian(x, rows, fi);
            &first.gram
        } else {
            own = linalg::gram(&input, rows, fi);
            &own
        };
        let off = shape.weight_offset(l);
        let w: Vec<f64> = out[off..off + fi * fo].iter().map(|&v| v as f64).collect();
        let kept: Vec<bool> = mask[off..off + fi * fo].iter().map(|&m| m != 0.0).collect();
        let solved = resolve_rows(&w, fo, fi, gram, &kept);
        for (o, v) in out[off..off + fi * fo].iter_mut().zip(solved) {
            *o = v as f32;
        }
        input = calibration::layer_out(shape, &out, l, &input, rows);
    }
    out
}

/// LAMP's global mask at `sparsity` (which spares small layers and ranks weights by magnitude
/// within each), with every layer's kept weights re-solved on the calibration batch
/// (`masked_reconstruction`). One-shot it can match OBS reconstruction where magnitude masks
/// are the better ones to keep (they fine-tune better on Bank); it is a rule of its own.
pub fn lamp_reconstruction(
    shape: &MlpShape,
    params: &[f32],
    x: &[f32],
    rows: usize,
    sparsity: f64,
) -> Vec<f32> {
    let mask = lamp_mask(shape, params, sparsity);
    masked_reconstruction(shape, params, x, rows, &mask)
}
