//! What an editor that reads data is told of each model where its edit starts (`Signals`): on
//! the calibration batch, the gradient of the edit's own loss (JSD to the original, or to the
//! original with its group shifts for a shift editor; plus the labels' cross-entropy for an
//! editor trained with labels in its loss) with respect to every parameter of the base, scaled
//! to unit RMS, and the activation mean and spread of every neuron. With them the
//! editor can learn how far to move each weight, as an optimiser would, in one inference.
//! Models run on the device in batches of one architecture.

use super::step::label_gradient;
use crate::engine::device::Device;
use crate::engine::kernels::axpy::axpy;
use crate::engine::kernels::jsd::jsd;
use crate::error::{Error, Result};
use crate::io::data::Split;
use crate::networks::graph::Signals;
use crate::networks::mlp::{BatchedMlp, MlpShape};
use crate::requirement::Ask;
use std::collections::BTreeMap;

/// The signals of every model: `models` as they were, `bases` where their edits start (one per
/// model), `frozen` the parameters the edit cannot move (their gradient is left out). The loss
/// adds `label_weight` times the cross-entropy to the batch's labels (0: the JSD alone).
pub fn signals(
    dev: &Device,
    models: &[(&MlpShape, &[f32])],
    bases: &[&[f32]],
    frozen: &[Vec<bool>],
    asks: &[Ask],
    calib: &Split,
    label_weight: f32,
) -> Result<Vec<Signals>> {
    let loss = Loss {
        asks,
        calib,
        label_weight,
    };
    let mut by_shape: BTreeMap<&[usize], Vec<usize>> = BTreeMap::new();
    for (i, (s, _)) in models.iter().enumerate() {
        by_shape.entry(&s.dims).or_default().push(i);
    }
    let mut out = vec![Signals::default(); models.len()];
    for members in by_shape.values() {
        let shape = models[members[0]].0;
        let (grads, acts) = gradients(dev, shape, members, models, bases, &loss)?;
        let np = shape.n_params();
        for (z, &i) in members.iter().enumerate() {
            let mut g = grads[z * np..(z + 1) * np].to_vec();
            for (v, _) in g.iter_mut().zip(&frozen[i]).filter(|(_, f)| **f) {
                *v = 0.0;
            }
            out[i] = Signals {
                log_scale: normalise(&mut g),
                grad: g,
                activations: node_stats(shape, calib, &asks[i].removed, &acts, z, members.len()),
            };
        }
    }
    Ok(out)
}

/// What the signals' loss compares: each model's ask, and the calibration batch with the weight
/// of its labels.
#[derive(Clone, Copy)]
struct Loss<'a> {
    asks: &'a [Ask],
    calib: &'a Split,
    label_weight: f32,
}

/// Scale `g` to unit RMS (over its non-zero values); returns the log10 of the scale taken out.
fn normalise(g: &mut [f32]) -> f32 {
    let live = g.iter().filter(|v| **v != 0.0).count().max(1);
    let rms = (g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / live as f64).sqrt();
    if rms > 0.0 {
        g.iter_mut().for_each(|v| *v = (*v as f64 / rms) as f32);
    }
    rms.max(1e-12).log10() as f32
}

/// What one run of `gradients` covers: a few of a shape's models on a few calibration rows.
#[derive(Clone, Copy)]
struct Piece {
    models: usize,
    rows: usize,
}

/// The gradients [members, params] of the edit's loss at the bases of `members` (one shape),
/// and every layer's output on the calibration batch ([layer][members, rows, width]), computed
/// in pieces of models and rows that fit the device's largest buffer, halved (rows first)
/// while the device runs out of memory. The loss is a mean over rows, so the pieces' gradients
/// add up to the whole batch's.
fn gradients(
    dev: &Device,
    shape: &MlpShape,
    members: &[usize],
    models: &[(&MlpShape, &[f32])],
    bases: &[&[f32]],
    loss: &Loss,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let (b, rows, np) = (members.len(), loss.calib.rows(), shape.n_params());
    let floats = (dev.max_buffer_bytes() / 4) as usize;
    // Activations per model and row: each hidden layer's pre- and post-activation, the logits.
    let width = (0..shape.layers())
        .map(|l| shape.fan_out(l) * if l + 1 < shape.layers() { 2 } else { 1 })
        .sum::<usize>()
        .max(shape.dims[0]);
    let models_fit = (floats / np.max(1)).clamp(1, b);
    let mut piece = Piece {
        models: models_fit,
        rows: (floats / (width * models_fit)).clamp(1, rows.max(1)),
    };
    loop {
        match gradients_by(dev, shape, members, models, bases, loss, piece) {
            Err(Error::NoRoom { .. }) if piece.rows > 1 => piece.rows /= 2,
            Err(Error::NoRoom { .. }) if piece.models > 1 => piece.models /= 2,
            result => return result,
        }
    }
}

/// `gradients` in pieces of `piece`.
fn gradients_by(
    dev: &Device,
    shape: &MlpShape,
    members: &[usize],
    models: &[(&MlpShape, &[f32])],
    bases: &[&[f32]],
    loss: &Loss,
    piece: Piece,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let (b, rows, np) = (members.len(), loss.calib.rows(), shape.n_params());
    let mut grads = vec![0.0f32; b * np];
    let mut acts: Vec<Vec<f32>> = (0..shape.layers())
        .map(|l| vec![0.0f32; b * rows * shape.fan_out(l)])
        .collect();
    for z0 in (0..b).step_by(piece.models) {
        let some = &members[z0..(z0 + piece.models).min(b)];
        for r0 in (0..rows).step_by(piece.rows) {
            let r1 = (r0 + piece.rows).min(rows);
            let (g, a) = piece_gradients(dev, shape, some, models, bases, loss, r0..r1)?;
            for (dst, src) in grads[z0 * np..].iter_mut().zip(&g) {
                *dst += src;
            }
            // Layer outputs [some, r1 - r0, width] into [members, rows, width].
            for (l, layer) in a.iter().enumerate() {
                let w = shape.fan_out(l);
                for z in 0..some.len() {
                    let from = &layer[z * (r1 - r0) * w..][..(r1 - r0) * w];
                    acts[l][((z0 + z) * rows + r0) * w..][..from.len()].copy_from_slice(from);
                }
            }
        }
    }
    Ok((grads, acts))
}

/// The gradients and layer outputs of models `some` on calibration rows `range`, the loss
/// scaled as a share of the whole batch's mean.
fn piece_gradients(
    dev: &Device,
    shape: &MlpShape,
    some: &[usize],
    models: &[(&MlpShape, &[f32])],
    bases: &[&[f32]],
    loss: &Loss,
    range: std::ops::Range<usize>,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let (b, rows, k, d) = (some.len(), range.len(), shape.outputs(), shape.dims[0]);
    let (asks, calib) = (loss.asks, loss.calib);
    let originals: Vec<f32> = some.iter().flat_map(|&i| models[i].1.to_vec()).collect();
    let starts: Vec<f32> = some.iter().flat_map(|&i| bases[i].to_vec()).collect();
    let x = dev.upload(&calib.x[range.start * d..range.end * d])?;
    // The target: the original's logits, for a shift editor each row's moved by its group's
    // shift. The original's buffers are freed before the base's are made.
    let target = {
        let original = BatchedMlp::inference(dev, shape, b, rows, &originals)?;
        original.forward(dev, x.all(), 0)?;
        let v = original.logits();
        dev.read(v.buf, v.offset, v.len)?
    };
    let mut target = target;
    if asks[some[0]].shift.is_some() {
        for (z, &i) in some.iter().enumerate() {
            let s = asks[i].shift.clone().unwrap_or_default();
            for (r, &g) in calib.group[range.clone()].iter().enumerate() {
                target[(z * rows + r) * k] += s.get(g as usize).copied().unwrap_or(0.0);
            }
        }
    }
    let target = dev.upload(&target)?;
    let base = BatchedMlp::gradients(dev, shape, b, rows, &starts)?;
    base.forward(dev, x.all(), 0)?;
    let losses = dev.alloc(b * rows)?;
    let scale = 1.0 / calib.rows() as f32;
    jsd(
        dev,
        k,
        scale,
        target.all(),
        base.logits(),
        losses.all(),
        base.dlogits(),
    )?;
    if loss.label_weight > 0.0 {
        // Every model reads the same labels.
        let labels = dev.upload(&calib.y[range.clone()])?;
        let (logits, to_labels) = (base.logits(), dev.alloc(b * rows * k)?);
        let scale = loss.label_weight * scale;
        label_gradient(
            dev,
            (b, rows, k),
            scale,
            logits,
            labels.all(),
            to_labels.all(),
        )?;
        axpy(dev, 1.0, to_labels.all(), 1.0, base.dlogits())?;
    }
    base.backward(dev, x.all(), 0)?;
    let grads = dev.read_all(&base.grads)?;
    let acts = (0..shape.layers())
        .map(|l| {
            let v = base.layer_output(l);
            dev.read(v.buf, v.offset, v.len)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((grads, acts))
}

/// Every node's (mean, standard deviation) on the calibration batch: the input columns (0 for
/// removed ones, which the edited model never reads), then each layer's outputs of model `z`
/// of a batch of `b`.
fn node_stats(
    shape: &MlpShape,
    calib: &Split,
    removed: &[bool],
    acts: &[Vec<f32>],
    z: usize,
    b: usize,
) -> Vec<f32> {
    let rows = calib.rows();
    let stats = |values: &dyn Fn(usize) -> f32| -> [f32; 2] {
        let (mut s, mut q) = (0.0f64, 0.0f64);
        for r in 0..rows {
            let v = values(r) as f64;
            s += v;
            q += v * v;
        }
        let mean = s / rows.max(1) as f64;
        let var = (q / rows.max(1) as f64 - mean * mean).max(0.0);
        [mean as f32, var.sqrt() as f32]
    };
    let d = shape.dims[0];
    let mut out = Vec::new();
    for (c, &gone) in removed.iter().enumerate().take(d) {
        match gone {
            true => out.extend([0.0, 0.0]),
            false => out.extend(stats(&|r| calib.x[r * d + c])),
        }
    }
    for (l, layer) in acts.iter().enumerate() {
        let w = shape.fan_out(l);
        debug_assert_eq!(layer.len(), b * rows * w);
        for j in 0..w {
            out.extend(stats(&|r| layer[(z * rows + r) * w + j]));
        }
    }
    out
}
