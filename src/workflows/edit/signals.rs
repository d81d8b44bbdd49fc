//! What an editor that reads data is told of each model where its edit starts (`Signals`): on
//! the calibration batch, the gradient of the edit's own loss (JSD to the original, or to the
//! original with its group shifts for a shift editor) with respect to every parameter of the
//! base, scaled to unit RMS, and the activation mean and spread of every neuron. With them the
//! editor can learn how far to move each weight, as an optimiser would, in one inference.
//! Models run on the device in batches of one architecture.

use crate::engine::device::Device;
use crate::engine::kernels::axpy::axpy;
use crate::engine::kernels::jsd::jsd;
use crate::error::Result;
use crate::io::data::Split;
use crate::networks::graph::Signals;
use crate::networks::mlp::{BatchedMlp, MlpShape};
use crate::requirement::Ask;
use std::collections::BTreeMap;

/// The signals of every model: `models` as they were, `bases` where their edits start (one per
/// model), `frozen` the parameters the edit cannot move (their gradient is left out).
pub fn signals(
    dev: &Device,
    models: &[(&MlpShape, &[f32])],
    bases: &[&[f32]],
    frozen: &[Vec<bool>],
    asks: &[Ask],
    calib: &Split,
) -> Result<Vec<Signals>> {
    let mut by_shape: BTreeMap<&[usize], Vec<usize>> = BTreeMap::new();
    for (i, (s, _)) in models.iter().enumerate() {
        by_shape.entry(&s.dims).or_default().push(i);
    }
    let mut out = vec![Signals::default(); models.len()];
    for members in by_shape.values() {
        let shape = models[members[0]].0;
        let (grads, acts) = gradients(dev, shape, members, models, bases, asks, calib)?;
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

/// Scale `g` to unit RMS (over its non-zero values); returns the log10 of the scale taken out.
fn normalise(g: &mut [f32]) -> f32 {
    let live = g.iter().filter(|v| **v != 0.0).count().max(1);
    let rms = (g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / live as f64).sqrt();
    if rms > 0.0 {
        g.iter_mut().for_each(|v| *v = (*v as f64 / rms) as f32);
    }
    rms.max(1e-12).log10() as f32
}

/// The gradients [members, params] of the edit's loss at the bases of `members` (one shape),
/// and every layer's output on the calibration batch ([layer][members, rows, width]).
fn gradients(
    dev: &Device,
    shape: &MlpShape,
    members: &[usize],
    models: &[(&MlpShape, &[f32])],
    bases: &[&[f32]],
    asks: &[Ask],
    calib: &Split,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let (b, rows, k) = (members.len(), calib.rows(), shape.outputs());
    let originals: Vec<f32> = members.iter().flat_map(|&i| models[i].1.to_vec()).collect();
    let starts: Vec<f32> = members.iter().flat_map(|&i| bases[i].to_vec()).collect();
    let original = BatchedMlp::inference(dev, shape, b, rows, &originals)?;
    let base = BatchedMlp::new(dev, shape, b, rows, &starts)?;
    let x = dev.upload(&calib.x)?;
    original.forward(dev, x.all(), 0)?;
    // A shift editor's target: each row's logit moved by its group's shift.
    if asks[members[0]].shift.is_some() {
        let shifts: Vec<f32> = members
            .iter()
            .flat_map(|&i| {
                let s = asks[i].shift.clone().unwrap_or_default();
                calib
                    .group
                    .iter()
                    .map(move |&g| s.get(g as usize).copied().unwrap_or(0.0))
            })
            .collect();
        let sb = dev.upload(&shifts)?;
        axpy(dev, 1.0, sb.all(), 1.0, original.logits())?;
    }
    base.forward(dev, x.all(), 0)?;
    let losses = dev.alloc(b * rows)?;
    jsd(
        dev,
        k,
        1.0 / rows as f32,
        original.logits(),
        base.logits(),
        losses.all(),
        base.dlogits(),
    )?;
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
