//! Batched fitting of MLPs on a data split: B models of one architecture from given initial
//! weights, each with its own seed (minibatch order), learning rate, weight decay and epoch
//! count, optionally under 0/1 masks that hold weights at exactly zero. Zoo training, masked
//! fine-tuning and retraining without features all run through here.

use crate::engine::buffer::Buf;
use crate::engine::device::Device;
use crate::engine::kernels::adam::{adam_step_per_model, Adam};
use crate::engine::kernels::axpy::mul;
use crate::engine::kernels::fairness::{fairness_penalty, Gap, MAX_GROUPS};
use crate::engine::kernels::gather::gather_rows;
use crate::error::{Error, Result};
use crate::io::data::Split;
use crate::networks::mlp::{BatchedMlp, MlpShape};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// A fairness penalty added to the BCE loss: lambda per model times the soft gap on the split's
/// sensitive groups.
#[derive(Clone, Debug)]
pub struct Penalty {
    pub gap: Gap,
    pub groups: usize,
    /// Sharpness of the soft decisions (`kernels::fairness`).
    pub sharpness: f32,
    pub lambdas: Vec<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FitModel {
    pub seed: u64,
    pub lr: f32,
    pub weight_decay: f32,
    pub epochs: usize,
}

/// Train `models.len()` models from `init` (model-major) on `data`; returns the trained
/// parameters. With `masks` (same layout, 1 = free, 0 = held at zero) masked weights start at
/// zero and their gradients are zeroed every step, so they end exactly zero. `progress` gets
/// (model-epochs done, models finished) after every epoch.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    dev: &Device,
    shape: &MlpShape,
    init: &[f32],
    masks: Option<&[f32]>,
    data: &Split,
    models: &[FitModel],
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    fit_penalised(
        dev, shape, init, masks, None, data, models, batch_size, progress,
    )
}

/// `fit` with an optional fairness penalty.
#[allow(clippy::too_many_arguments)]
pub fn fit_penalised(
    dev: &Device,
    shape: &MlpShape,
    init: &[f32],
    masks: Option<&[f32]>,
    penalty: Option<&Penalty>,
    data: &Split,
    models: &[FitModel],
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let (b, bs) = (models.len(), batch_size);
    let n = data.rows();
    if n < bs {
        return Err(Error::Usage(format!(
            "training split has {n} rows, fewer than the batch size {bs}"
        )));
    }
    assert_eq!(init.len(), b * shape.n_params());
    let steps_per_epoch = n / bs;
    let bufs = Buffers::new(dev, shape, data, b, bs, masks, penalty)?;
    let mut net = BatchedMlp::new(dev, shape, b, bs, init)?;
    if let Some(m) = &bufs.mask {
        mul(dev, m.all(), net.params.all())?;
    }
    let mut rngs: Vec<rand_chacha::ChaCha8Rng> = models
        .iter()
        .map(|m| rand_chacha::ChaCha8Rng::seed_from_u64(m.seed ^ 0xda7a))
        .collect();
    let mut perms: Vec<Vec<u32>> = vec![(0..n as u32).collect(); b];
    let max_epochs = models.iter().map(|m| m.epochs).max().unwrap_or(0);
    let mut idx_host = vec![0u32; bufs.steps_per_write * b * bs];
    for epoch in 0..max_epochs {
        // A model past its epochs trains on with lr 0: frozen, while the others go on.
        let h: Vec<f32> = models
            .iter()
            .flat_map(|m| {
                if epoch < m.epochs {
                    [m.lr, m.weight_decay]
                } else {
                    [0.0, 0.0]
                }
            })
            .collect();
        dev.write(&bufs.hyper, 0, &h)?;
        for (p, rng) in perms.iter_mut().zip(&mut rngs) {
            p.shuffle(rng);
        }
        for step in 0..steps_per_epoch {
            // Step s's indices: model-major, at (s - first) * b * bs in the table.
            let slot = step % bufs.steps_per_write;
            if slot == 0 {
                let steps = bufs.steps_per_write.min(steps_per_epoch - step);
                for (s, rows) in idx_host.chunks_mut(b * bs).take(steps).enumerate() {
                    let at = (step + s) * bs;
                    for (z, p) in perms.iter().enumerate() {
                        rows[z * bs..(z + 1) * bs].copy_from_slice(&p[at..at + bs]);
                    }
                }
                dev.write_u32(&bufs.idx, 0, &idx_host[..steps * b * bs])?;
            }
            bufs.step(dev, &mut net, slot, penalty)?;
        }
        let done = models.iter().filter(|m| m.epochs <= epoch + 1).count();
        let model_epochs = models.iter().map(|m| m.epochs.min(epoch + 1)).sum();
        progress(model_epochs, done);
    }
    dev.read_all(&net.params)
}

/// The device buffers of a fitting run of `b` models on minibatches of `bs` rows.
struct Buffers {
    /// The split's inputs, labels and groups.
    x: Buf,
    y: Buf,
    groups: Buf,
    /// Minibatch indices of `steps_per_write` steps, model-major within a step.
    idx: Buf,
    steps_per_write: usize,
    /// One step's inputs; labels then one lambda per model (the penalty reads both); groups.
    xb: Buf,
    yb: Buf,
    gb: Buf,
    pen_loss: Buf,
    /// Learning rate and weight decay per model.
    hyper: Buf,
    /// 0/1 per parameter, every model's mask back to back.
    mask: Option<Buf>,
}

impl Buffers {
    fn new(
        dev: &Device,
        shape: &MlpShape,
        data: &Split,
        b: usize,
        bs: usize,
        masks: Option<&[f32]>,
        penalty: Option<&Penalty>,
    ) -> Result<Buffers> {
        let steps_per_epoch = data.rows() / bs;
        // The minibatch indices of many steps go to the device in one write (on a GPU every
        // write submits the work recorded before it), at most 4 Mi indices at a time.
        let steps_per_write = ((1 << 22) / (b * bs)).clamp(1, steps_per_epoch.max(1));
        let bufs = Buffers {
            x: dev.upload(&data.x)?,
            y: dev.upload(&data.y)?,
            idx: dev.alloc(steps_per_write * b * bs)?,
            steps_per_write,
            xb: dev.alloc(b * bs * shape.fan_in(0))?,
            yb: dev.alloc(b * bs + b)?,
            groups: dev.upload_u32(&data.group)?,
            gb: dev.alloc(b * bs)?,
            pen_loss: dev.alloc(b)?,
            hyper: dev.alloc(2 * b)?,
            mask: None,
        };
        if let Some(pen) = penalty {
            assert_eq!(pen.lambdas.len(), b, "one lambda per model");
            if pen.groups > MAX_GROUPS {
                return Err(Error::Usage(format!("the sensitive attribute has {} groups; the fairness penalty handles at most {MAX_GROUPS}", pen.groups)));
            }
            dev.write(&bufs.yb, b * bs, &pen.lambdas)?;
        }
        Ok(Buffers {
            mask: masks.map(|m| dev.upload(m)).transpose()?,
            ..bufs
        })
    }

    /// One step on the minibatch of index slot `slot`: forward, loss (and penalty), backward,
    /// gradients masked, AdamW with each model's own hyper-parameters.
    fn step(
        &self,
        dev: &Device,
        net: &mut BatchedMlp,
        slot: usize,
        penalty: Option<&Penalty>,
    ) -> Result<()> {
        let (b, bs, d) = (net.batch, net.rows, net.shape.fan_in(0));
        let step_idx = self.idx.view(slot * b * bs, b * bs);
        gather_rows(dev, d, self.x.all(), step_idx, self.xb.all())?;
        gather_rows(dev, 1, self.y.all(), step_idx, self.yb.view(0, b * bs))?;
        net.forward(dev, self.xb.all(), bs * d)?;
        net.loss(dev, self.yb.view(0, b * bs), bs)?;
        if let Some(pen) = penalty {
            gather_rows(dev, 1, self.groups.all(), step_idx, self.gb.all())?;
            let dlogits = net.dacts.view(net.logits().offset, b * bs);
            fairness_penalty(
                dev,
                pen.gap,
                pen.groups,
                pen.sharpness,
                net.logits(),
                self.yb.view(0, b * bs),
                self.gb.all(),
                self.yb.view(b * bs, b),
                self.pen_loss.all(),
                dlogits,
            )?;
        }
        net.backward(dev, self.xb.all(), bs * d)?;
        if let Some(m) = &self.mask {
            mul(dev, m.all(), net.grads.all())?;
        }
        net.step += 1;
        let np = net.params.len();
        adam_step_per_model(
            dev,
            &Adam::default(),
            net.step,
            net.shape.n_params(),
            self.hyper.all(),
            net.params.all(),
            net.grads.all(),
            net.opt_state.view(0, np),
            net.opt_state.view(np, np),
        )
    }
}
