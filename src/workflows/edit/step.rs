//! The edit as a training step, for a batch of models of one architecture on the device:
//! editor forward -> edited parameters -> original and edited models on a data batch -> JSD
//! utility loss and requirement loss -> backward through the edited models -> backward through
//! the editor.

use super::{kept, prepare, ranks_scores};
use super::{select_best, values_and_scores};
use crate::engine::buffer::{Buf, View};
use crate::engine::device::Device;
use crate::engine::kernels::apply_edit::{
    apply_edit_backward, apply_edit_forward, mask_count_hold, mask_count_terms, MaskScores,
    KEEP_ALL,
};
use crate::engine::kernels::axpy::{axpy, copy};
use crate::engine::kernels::bce::{bce_backward, Bce};
use crate::engine::kernels::cross_entropy::{cross_entropy_backward, CrossEntropy};
use crate::engine::kernels::fairness::fairness_penalty;
use crate::engine::kernels::jsd::jsd;
use crate::engine::kernels::reduce::{reduce, Axis, Reduce};
use crate::error::{Error, Result};
use crate::networks::editor::{DeviceGraph, Editor, Tape};
use crate::networks::graph::ParamMap;
use crate::networks::mlp::{BatchedMlp, MlpShape};
use crate::requirement::{Ask, Columns, EditSpec, FairTarget, Requirement};

/// The training loss gradient of a step's models, summed over models, into `editor.grads`:
/// computed in pieces of at most `piece` models and added up, a piece halved while the device
/// has no room for it. `batch` is the step's (x [rows, in], labels, groups); `label_weight`
/// weighs a cross-entropy to the labels added to the loss (0: none). Returns
/// each model's (JSD, fairness penalty).
#[allow(clippy::too_many_arguments)]
pub fn step_gradient(
    dev: &Device,
    editor: &Editor,
    spec: &EditSpec,
    cols: &Columns,
    shape: &MlpShape,
    params: &[&[f32]],
    asks: &[Ask],
    (x, y, group): (&[f32], &[f32], &[u32]),
    piece: usize,
    label_weight: f32,
) -> Result<Vec<(f32, f32)>> {
    let (n, rows) = (params.len(), y.len());
    let piece = piece.clamp(1, n.max(1));
    let run = |r: std::ops::Range<usize>| -> Result<Vec<(f32, f32)>> {
        let (p, a) = (&params[r.clone()], &asks[r]);
        let mut b = TrainBatch::new(dev, editor, spec, shape, p, a, cols, rows)?;
        b.label_weight = label_weight;
        b.forward(dev, editor)?;
        b.loss(dev, x, y, group)?;
        b.backward(dev, editor)?;
        b.read_losses(dev)
    };
    // With several pieces, each overwrites the editor's gradient; their sum builds up here.
    let sum = if piece < n {
        Some(dev.alloc(editor.grads.len())?)
    } else {
        None
    };
    let mut losses = Vec::with_capacity(n);
    for from in (0..n).step_by(piece) {
        match run(from..(from + piece).min(n)) {
            Ok(l) => losses.extend(l),
            Err(Error::NoRoom { .. }) if piece > 1 => {
                drop(sum);
                let batch = (x, y, group);
                return step_gradient(
                    dev,
                    editor,
                    spec,
                    cols,
                    shape,
                    params,
                    asks,
                    batch,
                    piece / 2,
                    label_weight,
                );
            }
            Err(e) => return Err(e),
        }
        if let Some(s) = &sum {
            axpy(dev, 1.0, editor.grads.all(), 1.0, s.all())?;
        }
    }
    if let Some(s) = &sum {
        copy(dev, s.all(), editor.grads.all())?;
    }
    Ok(losses)
}

/// One training step's device state for `models` models of one architecture on `rows` data
/// rows: the graph, the editor's tape, the original and edited models, the losses.
pub struct TrainBatch {
    pub shape: MlpShape,
    pub models: usize,
    pub rows: usize,
    spec: EditSpec,
    pm: ParamMap,
    dg: DeviceGraph,
    tape: Tape,
    /// map [P], kind [P], inv [E + N] (u32).
    idx: Buf,
    /// orig [P], prior [P], thr [M].
    data: Buf,
    original: BatchedMlp,
    edited: BatchedMlp,
    /// x [rows, in].
    x: Buf,
    /// labels [M, rows], lambdas [M] (fairness), then group ids [M, rows] in `groups`.
    fair: Buf,
    groups: Buf,
    /// Shift editors: the logit shift of each row's group [M, rows], added to the original
    /// logits to make the target.
    shift: Buf,
    /// JSD per row [M, rows], JSD per model [M], fairness penalty per model [M].
    losses: Buf,
    /// Weight of the mean cross-entropy of the edited logits to the labels, added to the loss
    /// (sigmoid for one output, softmax for several; 0: the JSD alone). `label_grad`
    /// [M, rows, outputs] holds its gradient.
    pub label_weight: f32,
    label_grad: Buf,
    /// A learned mask (scores ranked, tau > 0): per parameter its mask-logit gradient and
    /// surrogate weight [P, 2], and their sums per model [M, 2] (`mask_count_hold`).
    mask_count: Option<(Buf, Buf)>,
    orig_host: Vec<f32>,
    prior_host: Vec<f32>,
    asks: Vec<Ask>,
}

impl TrainBatch {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dev: &Device,
        editor: &Editor,
        spec: &EditSpec,
        shape: &MlpShape,
        params: &[&[f32]],
        asks: &[Ask],
        cols: &Columns,
        rows: usize,
    ) -> Result<TrainBatch> {
        let models: Vec<(&MlpShape, &[f32])> = params.iter().map(|p| (shape, *p)).collect();
        // The edit's base values (`orig` in the kernels); the original models run unchanged.
        let (b, g, pm) = prepare(dev, editor, spec, &models, asks, cols)?;
        let dg = DeviceGraph::upload(dev, &g)?;
        let tape = Tape::new(dev, &editor.cfg, &dg)?;
        let raw: Vec<f32> = params.iter().flat_map(|p| p.iter().copied()).collect();
        let (orig_host, prior_host) = (b.orig, b.prior);
        let m = params.len();
        let idx = dev.upload_u32(&[pm.map.clone(), pm.kind.clone(), pm.inv.clone()].concat())?;
        let data =
            dev.upload(&[orig_host.clone(), prior_host.clone(), vec![KEEP_ALL; m]].concat())?;
        Ok(TrainBatch {
            shape: shape.clone(),
            models: m,
            rows,
            spec: *spec,
            original: BatchedMlp::inference(dev, shape, m, rows, &raw)?,
            edited: BatchedMlp::new(dev, shape, m, rows, &orig_host)?,
            x: dev.alloc(rows * shape.dims[0])?,
            fair: dev.alloc(m * rows + m)?,
            groups: dev.alloc(m * rows)?,
            shift: dev.alloc(m * rows)?,
            losses: dev.alloc(m * rows + 2 * m)?,
            label_weight: 0.0,
            label_grad: dev.alloc(m * rows * shape.outputs())?,
            mask_count: if ranks_scores(spec) && spec.tau > 0.0 {
                Some((dev.alloc(2 * orig_host.len())?, dev.alloc(2 * m)?))
            } else {
                None
            },
            pm,
            dg,
            tape,
            idx,
            data,
            orig_host,
            prior_host,
            asks: asks.to_vec(),
        })
    }

    /// Whether the target is the shifted original (shift editors) rather than the original.
    fn shifting(&self) -> bool {
        self.spec.requirement == Requirement::Fairness && self.spec.fair_target == FairTarget::Shift
    }

    fn p_len(&self) -> usize {
        self.orig_host.len()
    }

    /// Editor forward and the edited parameters. When pruning, each model's mask threshold is
    /// its k-th best score, read back from the editor's outputs.
    pub fn forward(&self, dev: &Device, editor: &Editor) -> Result<()> {
        editor.forward(dev, &self.dg, &self.tape)?;
        let (p, m) = (self.p_len(), self.models);
        if ranks_scores(&self.spec) {
            let head = dev.read(
                &self.tape.acts,
                self.tape.head().offset,
                self.tape.head().len,
            )?;
            let o = self.spec.opts();
            let thr: Vec<f32> = (0..m)
                .map(|z| {
                    let (_, mut scores) = values_and_scores(
                        &o,
                        &self.pm,
                        &head,
                        &self.orig_host,
                        &self.prior_host,
                        z,
                        1.0,
                    );
                    let keep = kept(scores.len(), self.asks[z].sparsity);
                    select_best(&mut scores, keep);
                    // Halfway between the last kept and the first dropped score, so that a
                    // backend's last-bit difference in the score cannot flip either.
                    match (keep, scores.len()) {
                        (0, _) => f32::MAX,
                        (k, n) if k == n => KEEP_ALL,
                        (k, _) => {
                            let first_dropped =
                                scores[k..].iter().fold(f32::MIN, |a, s| a.max(s.0));
                            0.5 * (scores[k - 1].0 + first_dropped)
                        }
                    }
                })
                .collect();
            dev.write(&self.data, 2 * p, &thr)?;
        }
        apply_edit_forward(
            dev,
            &self.spec.opts(),
            self.data.view(0, p),
            self.data.view(p, p),
            self.tape.head(),
            self.idx.view(0, p),
            self.idx.view(p, p),
            self.data.view(2 * p, m),
            self.edited.params.all(),
        )
    }

    /// Run the original and edited models on the batch `x` [rows, in] and compute the losses
    /// and the gradient of (JSD + lambda * gap) for the edited logits; for shift editors, of the
    /// JSD to the original with each row's logit moved by its group's shift. `y` and `group`
    /// are only read for fairness.
    pub fn loss(&self, dev: &Device, x: &[f32], y: &[f32], group: &[u32]) -> Result<()> {
        let (m, rows, k) = (self.models, self.rows, self.shape.outputs());
        dev.write(&self.x, 0, x)?;
        self.original.forward(dev, self.x.all(), 0)?;
        let shifting = self.shifting();
        if shifting {
            let shift: Vec<f32> = self
                .asks
                .iter()
                .flat_map(|a| {
                    let s = a
                        .shift
                        .as_deref()
                        .expect("a shift editor's asks carry shifts");
                    group.iter().map(move |&g| s[g as usize])
                })
                .collect();
            dev.write(&self.shift, 0, &shift)?;
            axpy(dev, 1.0, self.shift.all(), 1.0, self.original.logits())?;
        }
        self.edited.forward(dev, self.x.all(), 0)?;
        let dlogits = self.edited.dlogits();
        let row_losses = self.losses.view(0, m * rows);
        jsd(
            dev,
            k,
            1.0 / rows as f32,
            self.original.logits(),
            self.edited.logits(),
            row_losses,
            dlogits,
        )?;
        let mean = Reduce {
            scale: 1.0 / rows as f32,
            ..Reduce::new(Axis::Rows, 1, m, rows)
        };
        reduce(dev, &mean, row_losses, self.losses.view(m * rows, m))?;
        if self.label_weight > 0.0 {
            // Every model reads the same labels: the first `rows` of `fair`.
            dev.write(&self.fair, 0, y)?;
            let (scale, labels) = (self.label_weight / rows as f32, self.fair.view(0, rows));
            let (logits, grad) = (self.edited.logits(), self.label_grad.all());
            label_gradient(dev, (m, rows, k), scale, logits, labels, grad)?;
            axpy(dev, 1.0, self.label_grad.all(), 1.0, dlogits)?;
        }
        if self.spec.requirement == Requirement::Fairness && !shifting {
            let labels: Vec<f32> = (0..m).flat_map(|_| y.iter().copied()).collect();
            let lambdas: Vec<f32> = self.asks.iter().map(|a| a.lambda).collect();
            dev.write(&self.fair, 0, &[labels, lambdas].concat())?;
            let groups: Vec<u32> = (0..m).flat_map(|_| group.iter().copied()).collect();
            dev.write_u32(&self.groups, 0, &groups)?;
            let n_groups = group.iter().max().map_or(1, |g| *g as usize + 1);
            fairness_penalty(
                dev,
                self.spec.gap,
                n_groups.max(2),
                self.spec.fair_sharpness,
                self.edited.logits(),
                self.fair.view(0, m * rows),
                self.groups.all(),
                self.fair.view(m * rows, m),
                self.losses.view(m * rows + m, m),
                dlogits,
            )?;
        }
        Ok(())
    }

    /// Backward from the loss gradients into the editor's `grads` (overwritten).
    pub fn backward(&self, dev: &Device, editor: &Editor) -> Result<()> {
        let (p, m) = (self.p_len(), self.models);
        self.edited.backward(dev, self.x.all(), 0)?;
        apply_edit_backward(
            dev,
            &self.spec.opts(),
            self.data.view(0, p),
            self.data.view(p, p),
            self.tape.head(),
            self.idx.view(2 * p, self.idx.len() - 2 * p),
            self.idx.view(p, p),
            self.data.view(2 * p, m),
            self.edited.grads.all(),
            self.tape.dhead(),
        )?;
        if let Some((terms, sums)) = &self.mask_count {
            // A learned mask keeps k weights per model: the gradient that holds that count.
            let o = self.spec.opts();
            let scores = MaskScores {
                prior: self.data.view(p, p),
                thr: self.data.view(2 * p, m),
                head: self.tape.head(),
                map: self.idx.view(0, p),
                kind: self.idx.view(p, p),
            };
            let dhead = self.tape.dhead();
            mask_count_terms(dev, &o, scores, dhead, terms.all())?;
            reduce(
                dev,
                &Reduce::new(Axis::Cols, m, p / m, 2),
                terms.all(),
                sums.all(),
            )?;
            mask_count_hold(dev, &o, scores, sums.all(), dhead)?;
        }
        editor.backward(dev, &self.dg, &self.tape)
    }

    /// Per model: (JSD, fairness penalty) of the last `loss` (waits for the device).
    pub fn read_losses(&self, dev: &Device) -> Result<Vec<(f32, f32)>> {
        let (m, rows) = (self.models, self.rows);
        let v = dev.read(&self.losses, m * rows, 2 * m)?;
        let fair = self.spec.requirement == Requirement::Fairness && !self.shifting();
        Ok((0..m)
            .map(|z| (v[z], if fair { v[m + z] } else { 0.0 }))
            .collect())
    }

    /// The edited parameters of the last `forward`, packed model-major.
    pub fn read_edited(&self, dev: &Device) -> Result<Vec<f32>> {
        dev.read_all(&self.edited.params)
    }

    /// The logits of the edited models on the last batch [M, rows, outputs].
    pub fn read_edited_logits(&self, dev: &Device) -> Result<Vec<f32>> {
        let l = self.edited.logits();
        dev.read(l.buf, l.offset, l.len)
    }
}

/// `scale` times the gradient of the cross-entropy to `labels` [rows] at `logits` [models, rows,
/// classes] (`dims`), into `out`: sigmoid for one logit, softmax for several. Every model reads
/// the same labels.
pub(crate) fn label_gradient(
    dev: &Device,
    dims: (usize, usize, usize),
    scale: f32,
    logits: View,
    labels: View,
    out: View,
) -> Result<()> {
    let (models, rows, classes) = dims;
    if classes == 1 {
        let each = Bce::shared_targets(models, rows);
        return bce_backward(dev, &each, scale, logits, labels, out);
    }
    let each = CrossEntropy {
        batch: models,
        rows,
        classes,
        s_stride: rows * classes,
        l_stride: 0,
        out_stride: rows * classes,
    };
    cross_entropy_backward(dev, &each, scale, logits, labels, out)
}
