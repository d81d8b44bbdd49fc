//! A batch of B MLPs of one architecture, each with its own weights, trained or evaluated together
//! on the device: forward is a straight sequence of layer calls, backward the same calls reversed.
//!
//! Packing (one buffer per role): parameters are model-major, and inside a model layer by layer in
//! PyTorch order, `W[l]` as [out, in] then `b[l]` as [out] - so one model is one contiguous
//! `state_dict`. Activations are layer-major: for each layer the pre-activations of all models
//! [B, rows, out], then (hidden layers) the post-activations. Gradients mirror both layouts.

use crate::engine::buffer::{Buf, View};
use crate::engine::device::Device;
use crate::engine::kernels::activation::{activation_backward, activation_forward, Activation};
use crate::engine::kernels::adam::{adam_step, Adam};
use crate::engine::kernels::bce::{bce_backward, bce_forward, Bce};
use crate::engine::kernels::cross_entropy::{
    cross_entropy_backward, cross_entropy_forward, CrossEntropy,
};
use crate::engine::kernels::reduce::{reduce, Axis, Reduce};
use crate::error::{Error, Result};
use crate::networks::linear::Linear;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Layer widths, inputs first: `[in, hidden.., out]`. One output = binary logit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MlpShape {
    pub dims: Vec<usize>,
    pub activation: Activation,
}

impl MlpShape {
    pub fn new(dims: &[usize], activation: Activation) -> MlpShape {
        assert!(
            dims.len() >= 2 && dims.iter().all(|&d| d > 0),
            "an MLP needs >= 2 non-zero widths"
        );
        MlpShape {
            dims: dims.to_vec(),
            activation,
        }
    }
    pub fn layers(&self) -> usize {
        self.dims.len() - 1
    }
    pub fn fan_in(&self, l: usize) -> usize {
        self.dims[l]
    }
    pub fn fan_out(&self, l: usize) -> usize {
        self.dims[l + 1]
    }
    pub fn outputs(&self) -> usize {
        *self.dims.last().unwrap()
    }
    /// Offset of `W[l]` inside one model's parameters; `b[l]` follows it.
    pub fn weight_offset(&self, l: usize) -> usize {
        (0..l).map(|i| self.dims[i + 1] * (self.dims[i] + 1)).sum()
    }
    pub fn bias_offset(&self, l: usize) -> usize {
        self.weight_offset(l) + self.fan_in(l) * self.fan_out(l)
    }
    pub fn n_params(&self) -> usize {
        self.weight_offset(self.layers())
    }
}

/// PyTorch's default `nn.Linear` initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b.
pub fn init_params(shape: &MlpShape, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(shape.n_params());
    for l in 0..shape.layers() {
        let bound = 1.0 / (shape.fan_in(l) as f32).sqrt();
        let n = shape.fan_out(l) * (shape.fan_in(l) + 1);
        out.extend((0..n).map(|_| rng.random_range(-bound..bound)));
    }
    out
}

/// What a `BatchedMlp` is allocated for: each needs the buffers of the one before and more.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Inference,
    Gradients,
    Training,
}

pub struct BatchedMlp {
    pub shape: MlpShape,
    /// Models in the batch.
    pub batch: usize,
    /// Data rows per forward pass.
    pub rows: usize,
    pub params: Buf,
    pub grads: Buf,
    /// Adam moments: m for every parameter, then v.
    pub opt_state: Buf,
    pub acts: Buf,
    pub dacts: Buf,
    /// Per-sample losses [B, rows], then per-model mean losses [B].
    pub scratch: Buf,
    /// (pre-activation offset, post-activation offset) per layer, into `acts` / `dacts`.
    act_offsets: Vec<(usize, usize)>,
    pub step: u32,
}

impl BatchedMlp {
    /// Allocate buffers for `batch` models and upload their parameters (`batch * n_params`, model-major).
    pub fn new(
        dev: &Device,
        shape: &MlpShape,
        batch: usize,
        rows: usize,
        params: &[f32],
    ) -> Result<BatchedMlp> {
        BatchedMlp::alloc(dev, shape, batch, rows, params, Use::Training)
    }

    /// For `forward`, `backward` and `loss`, without optimiser state: gradients are read, not
    /// stepped on. Adam steps must not be called.
    pub fn gradients(
        dev: &Device,
        shape: &MlpShape,
        batch: usize,
        rows: usize,
        params: &[f32],
    ) -> Result<BatchedMlp> {
        BatchedMlp::alloc(dev, shape, batch, rows, params, Use::Gradients)
    }

    /// For `forward` only: no gradients, optimiser state or activation gradients (one value
    /// each), half the memory or less. `backward`, `loss` and Adam steps must not be called.
    pub fn inference(
        dev: &Device,
        shape: &MlpShape,
        batch: usize,
        rows: usize,
        params: &[f32],
    ) -> Result<BatchedMlp> {
        BatchedMlp::alloc(dev, shape, batch, rows, params, Use::Inference)
    }

    fn alloc(
        dev: &Device,
        shape: &MlpShape,
        batch: usize,
        rows: usize,
        params: &[f32],
        usage: Use,
    ) -> Result<BatchedMlp> {
        let (train, step) = (usage != Use::Inference, usage == Use::Training);
        let np = shape.n_params();
        assert_eq!(
            params.len(),
            batch * np,
            "parameters for {batch} models expected"
        );
        let mut act_offsets = Vec::new();
        let mut off = 0;
        for l in 0..shape.layers() {
            let size = batch * rows * shape.fan_out(l);
            let post = if l + 1 < shape.layers() {
                off + size
            } else {
                off
            };
            act_offsets.push((off, post));
            off = if l + 1 < shape.layers() {
                post + size
            } else {
                off + size
            };
        }
        Ok(BatchedMlp {
            shape: shape.clone(),
            batch,
            rows,
            params: dev.upload(params)?,
            grads: dev.alloc(if train { batch * np } else { 1 })?,
            opt_state: dev.alloc(if step { 2 * batch * np } else { 1 })?,
            acts: dev.alloc(off)?,
            dacts: dev.alloc(if train { off } else { 1 })?,
            scratch: dev.alloc(if train { batch * rows + batch } else { 1 })?,
            act_offsets,
            step: 0,
        })
    }

    fn stride(&self) -> usize {
        self.shape.n_params()
    }
    fn pre(&self, buf_is_grad: bool, l: usize) -> View<'_> {
        let b = if buf_is_grad { &self.dacts } else { &self.acts };
        b.view(
            self.act_offsets[l].0,
            self.batch * self.rows * self.shape.fan_out(l),
        )
    }
    fn post(&self, buf_is_grad: bool, l: usize) -> View<'_> {
        let b = if buf_is_grad { &self.dacts } else { &self.acts };
        b.view(
            self.act_offsets[l].1,
            self.batch * self.rows * self.shape.fan_out(l),
        )
    }
    fn weights<'a>(&self, buf: &'a Buf, l: usize) -> View<'a> {
        let n = self.shape.fan_in(l) * self.shape.fan_out(l);
        buf.view(
            self.shape.weight_offset(l),
            (self.batch - 1) * self.stride() + n,
        )
    }
    fn biases<'a>(&self, buf: &'a Buf, l: usize) -> View<'a> {
        buf.view(
            self.shape.bias_offset(l),
            (self.batch - 1) * self.stride() + self.shape.fan_out(l),
        )
    }

    /// Logits of every model, [B, rows, outputs], valid after `forward`.
    pub fn logits(&self) -> View<'_> {
        self.pre(false, self.shape.layers() - 1)
    }

    /// What layer `l` passes on, [B, rows, fan_out]: its activations, or for the last layer
    /// its logits. Valid after `forward`.
    pub fn layer_output(&self, l: usize) -> View<'_> {
        if l + 1 < self.shape.layers() {
            self.post(false, l)
        } else {
            self.logits()
        }
    }

    /// Gradients of the logits [B, rows, outputs]: what `backward` starts from.
    pub fn dlogits(&self) -> View<'_> {
        self.pre(true, self.shape.layers() - 1)
    }

    /// Run all models on `x` ([rows, in] per model, batch stride `x_stride`; 0 = one shared input).
    pub fn forward(&self, dev: &Device, x: View, x_stride: usize) -> Result<()> {
        for l in 0..self.shape.layers() {
            let (input, in_stride) = if l == 0 {
                (x, x_stride)
            } else {
                (self.post(false, l - 1), self.rows * self.shape.fan_in(l))
            };
            self.layer_forward(dev, l, input, in_stride)?;
        }
        Ok(())
    }

    /// Layer `l` of every model, inputs `in_stride` apart (0 = shared).
    fn linear(&self, l: usize, in_stride: usize) -> Linear {
        Linear {
            batch: self.batch,
            rows: self.rows,
            fan_in: self.shape.fan_in(l),
            fan_out: self.shape.fan_out(l),
            x_stride: in_stride,
            w_stride: self.stride(),
            y_stride: self.rows * self.shape.fan_out(l),
        }
    }

    fn layer_forward(&self, dev: &Device, l: usize, input: View, in_stride: usize) -> Result<()> {
        let pre = self.pre(false, l);
        let (w, b) = (self.weights(&self.params, l), self.biases(&self.params, l));
        self.linear(l, in_stride).forward(dev, input, w, b, pre)?;
        if l + 1 < self.shape.layers() {
            activation_forward(dev, self.shape.activation, pre, self.post(false, l))?;
        }
        Ok(())
    }

    /// Backpropagate the logit gradients already in `dacts` (see `loss_backward`) into `grads`,
    /// overwriting them. `x` must be the input of the last `forward`.
    pub fn backward(&self, dev: &Device, x: View, x_stride: usize) -> Result<()> {
        for l in (0..self.shape.layers()).rev() {
            if l + 1 < self.shape.layers() {
                activation_backward(
                    dev,
                    self.shape.activation,
                    self.pre(false, l),
                    self.post(true, l),
                    self.pre(true, l),
                )?;
            }
            let (input, in_stride) = if l == 0 {
                (x, x_stride)
            } else {
                (self.post(false, l - 1), self.rows * self.shape.fan_in(l))
            };
            self.layer_backward(dev, l, input, in_stride)?;
        }
        Ok(())
    }

    fn layer_backward(&self, dev: &Device, l: usize, input: View, in_stride: usize) -> Result<()> {
        let (dpre, lin) = (self.pre(true, l), self.linear(l, in_stride));
        lin.backward_weight(dev, dpre, input, self.weights(&self.grads, l))?;
        lin.backward_bias(dev, dpre, self.biases(&self.grads, l))?;
        if l > 0 {
            let dinput = self.post(true, l - 1);
            lin.backward_input(dev, dpre, self.weights(&self.params, l), dinput, false)?;
        }
        Ok(())
    }

    /// Mean loss per model against `targets` (binary: 0/1 per row; multi-class: class index per
    /// row), written to the scratch buffer; `t_stride` 0 = shared targets. Then the logit
    /// gradients of the mean loss go into `dacts`.
    pub fn loss(&self, dev: &Device, targets: View, t_stride: usize) -> Result<()> {
        let (b, rows) = (self.batch, self.rows);
        let losses = self.scratch.view(0, b * rows);
        let scale = 1.0 / rows as f32;
        let dlogits = self.pre(true, self.shape.layers() - 1);
        if self.shape.outputs() == 1 {
            let bce = Bce {
                batch: b,
                n: rows,
                s_stride: rows,
                t_stride,
                out_stride: rows,
            };
            bce_forward(dev, &bce, self.logits(), targets, losses)?;
            bce_backward(dev, &bce, scale, self.logits(), targets, dlogits)?;
        } else {
            let c = self.shape.outputs();
            let ce = CrossEntropy {
                batch: b,
                rows,
                classes: c,
                s_stride: rows * c,
                l_stride: t_stride,
                out_stride: rows,
            };
            cross_entropy_forward(dev, &ce, self.logits(), targets, losses)?;
            let ce = CrossEntropy {
                out_stride: rows * c,
                ..ce
            };
            cross_entropy_backward(dev, &ce, scale, self.logits(), targets, dlogits)?;
        }
        let mean = Reduce {
            scale,
            ..Reduce::new(Axis::Rows, 1, b, rows)
        };
        reduce(dev, &mean, losses, self.scratch.view(b * rows, b))
    }

    /// Per-model mean losses of the last `loss` call (waits for the device).
    pub fn read_losses(&self, dev: &Device) -> Result<Vec<f32>> {
        dev.read(&self.scratch, self.batch * self.rows, self.batch)
    }

    /// One full training step: forward, loss, backward, AdamW. Records work; does not wait.
    pub fn train_step(
        &mut self,
        dev: &Device,
        x: View,
        x_stride: usize,
        targets: View,
        t_stride: usize,
        opt: &Adam,
    ) -> Result<()> {
        self.forward(dev, x, x_stride)?;
        self.loss(dev, targets, t_stride)?;
        self.backward(dev, x, x_stride)?;
        self.step += 1;
        let n = self.params.len();
        adam_step(
            dev,
            opt,
            self.step,
            self.params.all(),
            self.grads.all(),
            self.opt_state.view(0, n),
            self.opt_state.view(n, n),
        )
    }
}

/// Plain host forward of one model, for reading back and checking; `params` as in `BatchedMlp`.
pub fn forward_host(shape: &MlpShape, params: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
    let mut h = x.to_vec();
    for l in 0..shape.layers() {
        let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
        let w = &params[shape.weight_offset(l)..][..fi * fo];
        let b = &params[shape.bias_offset(l)..][..fo];
        // Rows are independent: they run in parallel, each sum in the same order.
        let mut out = vec![0.0f32; rows * fo];
        out.par_chunks_mut(fo.max(1))
            .zip(h.par_chunks(fi.max(1)))
            .for_each(|(row, hr)| {
                for (j, o) in row.iter_mut().enumerate() {
                    let mut acc = b[j] as f64;
                    for (x, wv) in hr.iter().zip(&w[j * fi..(j + 1) * fi]) {
                        acc += (x * wv) as f64;
                    }
                    let v = acc as f32;
                    *o = if l + 1 < shape.layers() {
                        shape.activation.apply(v)
                    } else {
                        v
                    };
                }
            });
        h = out;
    }
    h
}

/// Random inputs for tests and benchmarks: values uniform in [-1, 1).
pub fn random_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Logits of `batch` models (parameters model-major, `batch * n_params`) on the same `rows` inputs
/// `x` ([rows, in]), as [batch, rows, outputs]. Runs in passes over as many rows as fit in the
/// device's largest buffer and in 64 MB of activations (a validation or test split is usually
/// one pass: one wait for the device), halved while the device runs out of memory.
pub fn predict(
    dev: &Device,
    shape: &MlpShape,
    batch: usize,
    params: &[f32],
    x: &[f32],
) -> Result<Vec<f32>> {
    predict_in_passes(dev, shape, batch, params, x, usize::MAX)
}

/// `predict` in passes of at most `max_rows` rows.
pub fn predict_in_passes(
    dev: &Device,
    shape: &MlpShape,
    batch: usize,
    params: &[f32],
    x: &[f32],
    max_rows: usize,
) -> Result<Vec<f32>> {
    let per_row = 4
        * batch
        * (0..shape.layers())
            .map(|l| 2 * shape.fan_out(l))
            .sum::<usize>();
    let fit = dev.max_buffer_bytes().min(64 << 20) / per_row.max(1) as u64;
    let mut chunk = (fit as usize).clamp(1, max_rows.max(1));
    let d = shape.fan_in(0);
    let rows = x.len() / d;
    let k = shape.outputs();
    let xb = dev.upload(x)?;
    let mut out = vec![0.0f32; batch * rows * k];
    let mut nets: Vec<(usize, BatchedMlp)> = Vec::new();
    let mut r0 = 0;
    while r0 < rows {
        let n = chunk.min(rows - r0);
        if !nets.iter().any(|(m, _)| *m == n) {
            match BatchedMlp::inference(dev, shape, batch, n, params) {
                Ok(net) => nets.push((n, net)),
                Err(Error::NoRoom { .. }) if chunk > 1 => {
                    nets.clear();
                    chunk /= 2;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let net = &nets.iter().find(|(m, _)| *m == n).unwrap().1;
        net.forward(dev, xb.view(r0 * d, n * d), 0)?;
        let logits = dev.read(&net.acts, net.logits().offset, batch * n * k)?;
        for z in 0..batch {
            out[(z * rows + r0) * k..(z * rows + r0 + n) * k]
                .copy_from_slice(&logits[z * n * k..(z + 1) * n * k]);
        }
        r0 += n;
    }
    Ok(out)
}
