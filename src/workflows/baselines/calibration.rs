//! What the data-aware rules read of a calibration batch (`Split::calibration_batch`): what one
//! layer of a model makes of its input. On the host: a batch of a few hundred rows through
//! one layer is less work than a device round trip.

use crate::networks::mlp::MlpShape;
use rayon::prelude::*;

/// Layer `l` of a model on `x` [rows, fan_in]: its pre-activation, [rows, fan_out].
pub fn layer_pre(shape: &MlpShape, params: &[f32], l: usize, x: &[f32], rows: usize) -> Vec<f32> {
    let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
    let w = &params[shape.weight_offset(l)..][..fi * fo];
    let b = &params[shape.bias_offset(l)..][..fo];
    // Pruned layers are mostly zeros: each neuron's non-zero weights, gathered once, are all
    // its sum needs (the same sum, in the same order).
    let live: Vec<Vec<(usize, f64)>> = w
        .chunks_exact(fi)
        .map(|wj| {
            (wj.iter().enumerate())
                .filter(|(_, v)| **v != 0.0)
                .map(|(i, v)| (i, *v as f64))
                .collect()
        })
        .collect();
    // Rows are independent: they run in parallel, each sum in the same order as one by one.
    let mut out = vec![0.0f32; rows * fo];
    out.par_chunks_mut(fo.max(1))
        .zip(x.par_chunks(fi.max(1)))
        .for_each(|(row, xr)| {
            for ((o, wj), bj) in row.iter_mut().zip(&live).zip(b) {
                let acc: f64 = wj.iter().map(|&(i, v)| xr[i] as f64 * v).sum();
                *o = (acc + *bj as f64) as f32;
            }
        });
    out
}

/// The input of layer `l + 1`: layer `l`'s output after the model's activation.
pub fn layer_out(shape: &MlpShape, params: &[f32], l: usize, x: &[f32], rows: usize) -> Vec<f32> {
    let mut h = layer_pre(shape, params, l, x, rows);
    if l + 1 < shape.layers() {
        h.iter_mut().for_each(|v| *v = shape.activation.apply(*v));
    }
    h
}
