//! Edits. What a requirement asks of one model (its conditioning vector and per-column flags);
//! `TrainBatch`, the device-side training step for a batch of models of one architecture
//! (editor forward -> edited parameters -> original and edited models on a data batch -> JSD
//! utility loss and requirement loss -> backward through the edited models -> backward through
//! the editor); and `edit_models`, the exact edit users get (hard zeros for removed columns,
//! exactly the top-k weights kept when pruning).

use crate::engine::buffer::Buf;
use crate::engine::device::Device;
use crate::engine::kernels::axpy::{axpy, copy};
use crate::engine::kernels::edit::{edit_backward, edit_forward, edit_value, score, EditOpts};
use crate::engine::kernels::edit::{KEEP_ALL, PRIOR_EPS, REMOVED, WEIGHT};
use crate::engine::kernels::fairness::{fairness_penalty, Gap};
use crate::engine::kernels::jsd::jsd;
use crate::engine::kernels::reduce::{reduce, Axis, Reduce};
use crate::error::{Error, Result};
use crate::io::data::Schema;
use crate::networks::editor::{DeviceGraph, Editor, EditorConfig, InferBuffers, Tape};
use crate::networks::graph::{EditInput, GraphBatch, ParamMap};
use crate::networks::mlp::{BatchedMlp, MlpShape};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// Stop using features (--drop).
    Minimise,
    /// Reach a weight sparsity (--sparsity).
    Prune,
    /// Close the equalised-odds (or, with --gap dp, demographic-parity) gap on the sensitive
    /// attribute.
    Fairness,
}

/// What a fairness editor is trained to do.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FairTarget {
    /// Minimise JSD + lambda x a soft gap penalty; the user gives lambda, or a bound that
    /// `search_lambda` meets by trying 16 lambdas.
    #[default]
    Penalty,
    /// Move each group's logits by a requested shift (a group-specific decision threshold folded
    /// into the weights): the target is JSD to sigmoid(original logit + shift of the row's group).
    /// `search_shift` picks the shifts on data from the original model's logits alone (cheap),
    /// then the editor makes them one weight edit.
    Shift,
}

/// Most groups a shift editor conditions on (one conditioning slot each).
pub const MAX_SHIFT_GROUPS: usize = COND_DIM - 1;

/// Length of the conditioning vector: [1, log10(lambda) / 3, target sparsity, removed fraction],
/// or for a shift editor [1, shift of group 0, 1, 2].
pub const COND_DIM: usize = 4;

/// The data-free importance a weight's pruning score starts from (its prior; the editor's mask
/// logit is added to it).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PruneScore {
    /// log |w|: global magnitude pruning.
    #[default]
    Magnitude,
    /// log of the weight's LAMP score (`baselines::lamp_scores`): magnitude relative to the
    /// larger weights of its own layer.
    Lamp,
}

/// How an editor edits (saved with it): the requirement it was trained for and the edit's
/// constants.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EditSpec {
    pub requirement: Requirement,
    pub gap: Gap,
    /// Scale of the editor's weight and bias deltas.
    pub gamma: f32,
    /// Temperature of the pruning mask's straight-through surrogate.
    pub tau: f32,
    /// The pruning score's prior (editors saved before it existed used magnitude).
    #[serde(default)]
    pub prune_score: PruneScore,
    /// Sharpness of the fairness penalty's soft decisions (`kernels::fairness`); editors saved
    /// before it existed trained at 1.
    #[serde(default = "one")]
    pub fair_sharpness: f32,
    /// What a fairness editor does (editors saved before it existed: the penalty).
    #[serde(default)]
    pub fair_target: FairTarget,
}

pub(crate) fn one() -> f32 {
    1.0
}

/// Per parameter of a model: the prior of its pruning score (0 for biases, and for every
/// parameter when the edit does not prune).
pub fn prune_prior(spec: &EditSpec, shape: &MlpShape, base: &[f32]) -> Vec<f32> {
    let mut prior = vec![0.0f32; base.len()];
    if spec.requirement != Requirement::Prune {
        return prior;
    }
    match spec.prune_score {
        PruneScore::Magnitude => {
            for l in 0..shape.layers() {
                for i in shape.weight_offset(l)..shape.bias_offset(l) {
                    prior[i] = (base[i].abs() + PRIOR_EPS).ln();
                }
            }
        }
        PruneScore::Lamp => {
            for (score, i) in crate::workflows::baselines::lamp_scores(shape, base) {
                prior[i] = score.max(1e-30).ln() as f32;
            }
        }
    }
    prior
}

impl EditSpec {
    pub fn opts(&self) -> EditOpts {
        EditOpts {
            gamma: self.gamma,
            tau: self.tau,
        }
    }
}

/// What one model is asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    /// Per input column: remove it (minimise).
    pub removed: Vec<bool>,
    /// Weight of the fairness gap against utility (fairness).
    pub lambda: f32,
    /// Target weight sparsity (prune).
    pub sparsity: f32,
    /// Logit shift per group (fairness, shift editors; then `lambda` is unused).
    pub shift: Option<Vec<f32>>,
}

impl Ask {
    pub fn new(columns: usize) -> Ask {
        Ask {
            removed: vec![false; columns],
            lambda: 1.0,
            sparsity: 0.0,
            shift: None,
        }
    }
    pub fn cond(&self, req: Requirement) -> Vec<f32> {
        let frac =
            self.removed.iter().filter(|r| **r).count() as f32 / self.removed.len().max(1) as f32;
        match req {
            Requirement::Minimise => vec![1.0, 0.0, 0.0, frac],
            Requirement::Fairness => match &self.shift {
                Some(shift) => {
                    let mut c = vec![1.0, 0.0, 0.0, 0.0];
                    c[1..1 + shift.len()].copy_from_slice(shift);
                    c
                }
                None => vec![1.0, self.lambda.max(1e-6).log10() / 3.0, 0.0, 0.0],
            },
            Requirement::Prune => vec![1.0, 0.0, self.sparsity, 0.0],
        }
    }
}

/// Per input column: it belongs to the sensitive attribute.
pub fn sensitive_columns(schema: &Schema) -> Vec<bool> {
    let mut s = vec![false; schema.n_columns()];
    if let Some(f) = schema.sensitive.as_deref().and_then(|n| schema.feature(n)) {
        s[f.start..f.start + f.width]
            .iter_mut()
            .for_each(|c| *c = true);
    }
    s
}

/// What the editor knows of the input columns of its data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Columns {
    /// Per column: it belongs to the sensitive attribute.
    pub sensitive: Vec<bool>,
    /// Per column: its mean on the training split (empty: no mean fold).
    pub means: Vec<f32>,
}

impl Columns {
    pub fn of(schema: &Schema, train: &crate::io::data::Split) -> Columns {
        let d = schema.n_columns();
        let rows = train.rows().max(1);
        let mut means = vec![0.0f64; d];
        for r in train.x.chunks(d) {
            for (m, v) in means.iter_mut().zip(r) {
                *m += *v as f64;
            }
        }
        Columns {
            sensitive: sensitive_columns(schema),
            means: means.iter().map(|m| (m / rows as f64) as f32).collect(),
        }
    }
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

/// Per input column: it belongs to one of `features` (names checked by the caller).
pub fn removed_columns(
    schema: &Schema,
    features: &[String],
) -> std::result::Result<Vec<bool>, String> {
    let mut r = vec![false; schema.n_columns()];
    for f in schema.features_named(features)? {
        r[f.start..f.start + f.width]
            .iter_mut()
            .for_each(|c| *c = true);
    }
    Ok(r)
}

fn build_graph(
    editor: &Editor,
    req: Requirement,
    models: &[(&MlpShape, &[f32])],
    asks: &[Ask],
    sensitive: &[bool],
) -> Result<GraphBatch> {
    let conds: Vec<Vec<f32>> = asks.iter().map(|a| a.cond(req)).collect();
    let inputs: Vec<EditInput> = models
        .iter()
        .zip(asks)
        .zip(&conds)
        .map(|(((shape, params), ask), cond)| EditInput {
            shape,
            params,
            removed: &ask.removed,
            sensitive,
            cond,
        })
        .collect();
    GraphBatch::build(&inputs, &editor.cfg.pos).map_err(Error::Usage)
}

/// The parameters an edit starts from: the model's own; with the removed columns' means folded
/// into the biases (minimise); or with the mean of the asked group shifts added to the output
/// bias (shift editors), so that the part of the shift common to all groups is exact and the
/// editor learns only how the groups differ.
fn base_params(
    spec: &EditSpec,
    shape: &MlpShape,
    params: &[f32],
    ask: &Ask,
    cols: &Columns,
) -> Vec<f32> {
    match (spec.requirement, &ask.shift) {
        (Requirement::Minimise, _) => fold_removed_means(shape, params, &ask.removed, &cols.means),
        (Requirement::Fairness, Some(shift)) if !shift.is_empty() => {
            let mut p = params.to_vec();
            let mean = shift.iter().sum::<f32>() / shift.len() as f32;
            p[shape.bias_offset(shape.layers() - 1)] += mean;
            p
        }
        _ => params.to_vec(),
    }
}

/// Number of weights a model keeps at `sparsity` (the rest, round(sparsity * weights), are zero).
fn kept(weights: usize, sparsity: f32) -> usize {
    weights - ((sparsity as f64 * weights as f64).round() as usize).min(weights)
}

/// The edited values of one model's parameters `range`, before any pruning mask, and the
/// pruning scores of its weights (by parameter index within the model).
fn values_and_scores(
    o: &EditOpts,
    pm: &ParamMap,
    head: &[f32],
    orig: &[f32],
    prior: &[f32],
    m: usize,
) -> (Vec<f32>, Vec<(f32, usize)>) {
    let range = pm.model_offsets[m]..pm.model_offsets[m + 1];
    let mut values = Vec::with_capacity(range.len());
    let mut scores = Vec::new();
    for (i, p) in range.clone().enumerate() {
        let h = pm.map[p] as usize;
        let kind = pm.kind[p] & 3;
        let v = edit_value(
            o,
            orig[p],
            head[2 * h],
            (prior[p], head[2 * h + 1]),
            kind,
            KEEP_ALL,
        );
        if kind == WEIGHT {
            scores.push((score(prior[p], head[2 * h + 1]), i));
        }
        values.push(v);
    }
    (values, scores)
}

/// Moves the `keep` best scores to the front, in no particular order except that the last of
/// them, `scores[keep - 1]`, is the worst kept (ties by position, so the choice is
/// deterministic). A selection, not a sort: linear in the number of weights.
fn select_best(scores: &mut [(f32, usize)], keep: usize) {
    if keep > 0 && keep <= scores.len() {
        scores.select_nth_unstable_by(keep - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    }
}

/// Edit `models` in one editor inference per chunk. Removed columns come out exactly zero;
/// when pruning, exactly the top-k scored weights of each model are kept (k from its
/// sparsity). Returns each model's edited parameters.
pub fn edit_models(
    dev: &Device,
    editor: &Editor,
    spec: &EditSpec,
    models: &[(&MlpShape, &[f32])],
    asks: &[Ask],
    cols: &Columns,
) -> Result<Vec<Vec<f32>>> {
    let edit = |range: std::ops::Range<usize>, slice: usize| {
        let (m, a) = (&models[range.clone()], &asks[range]);
        EditBatch::new(dev, editor, spec, m, a, cols, slice)?.run(dev, editor)
    };
    let mut out = Vec::with_capacity(models.len());
    for range in edit_chunks(editor, models) {
        out.extend(fitting(range, slice_edges(dev, &editor.cfg), &edit)?);
    }
    Ok(out)
}

/// Run `edit` on `range`; while the device runs out of memory, halve the range, and for a
/// single model halve the editor's edge slices (down to 1024 edges).
fn fitting(
    range: std::ops::Range<usize>,
    slice: usize,
    edit: &impl Fn(std::ops::Range<usize>, usize) -> Result<Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    match edit(range.clone(), slice) {
        Err(Error::NoRoom { .. }) if range.len() > 1 => {
            let mid = range.start + range.len() / 2;
            let mut out = fitting(range.start..mid, slice, edit)?;
            out.extend(fitting(mid..range.end, slice, edit)?);
            Ok(out)
        }
        Err(Error::NoRoom { .. }) if slice > 1024 => fitting(range, slice / 2, edit),
        result => result,
    }
}

/// Consecutive ranges of `models` whose edge state in the editor (2 x hidden floats per edge,
/// see `InferBuffers`) stays near 64 MB each. A model above that is a range of its own, and
/// the editor cuts its edges into slices.
pub fn edit_chunks(editor: &Editor, models: &[(&MlpShape, &[f32])]) -> Vec<std::ops::Range<usize>> {
    let budget = (16 << 20) / (editor.cfg.hidden * 2).max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < models.len() {
        let mut end = start + 1;
        let mut edges = models[start].1.len();
        while end < models.len() && edges + models[end].1.len() <= budget {
            edges += models[end].1.len();
            end += 1;
        }
        chunks.push(start..end);
        start = end;
    }
    chunks
}

/// Edges per slice of the editor's edge state at edit time: a slice (hidden floats per edge)
/// within the adapter's largest buffer, and within 64 MB so scratch stays small.
pub fn slice_edges(dev: &Device, cfg: &EditorConfig) -> usize {
    let bytes = dev.max_buffer_bytes().min(64 << 20);
    (bytes / (4 * cfg.hidden.max(1)) as u64) as usize
}

/// Every model's base values (`base_params`) and pruning priors, packed model-major.
fn bases_and_priors(
    spec: &EditSpec,
    models: &[(&MlpShape, &[f32])],
    asks: &[Ask],
    cols: &Columns,
) -> (Vec<f32>, Vec<f32>) {
    let (mut orig, mut prior) = (Vec::new(), Vec::new());
    for ((s, p), a) in models.iter().zip(asks) {
        let base = base_params(spec, s, p, a, cols);
        prior.extend(prune_prior(spec, s, &base));
        orig.extend(base);
    }
    (orig, prior)
}

/// A batch of edits ready on the device: the graph uploaded, the editor's buffers allocated,
/// the edits' base values and per-model asks kept on the host for the exact finishing step.
pub struct EditBatch {
    spec: EditSpec,
    pm: ParamMap,
    dg: DeviceGraph,
    bufs: InferBuffers,
    orig: Vec<f32>,
    prior: Vec<f32>,
    sparsity: Vec<f32>,
}

impl EditBatch {
    pub fn new(
        dev: &Device,
        editor: &Editor,
        spec: &EditSpec,
        models: &[(&MlpShape, &[f32])],
        asks: &[Ask],
        cols: &Columns,
        slice_edges: usize,
    ) -> Result<EditBatch> {
        let g = build_graph(editor, spec.requirement, models, asks, &cols.sensitive)?;
        let dg = DeviceGraph::upload(dev, &g)?;
        let (orig, prior) = bases_and_priors(spec, models, asks, cols);
        Ok(EditBatch {
            spec: *spec,
            pm: g.param_map(),
            bufs: InferBuffers::new(dev, &editor.cfg, &dg, slice_edges)?,
            dg,
            orig,
            prior,
            sparsity: asks.iter().map(|a| a.sparsity).collect(),
        })
    }

    /// One editor inference, then the exact edit of every model: removed weights zero, and
    /// when pruning exactly the top-k scores kept.
    pub fn run(&self, dev: &Device, editor: &Editor) -> Result<Vec<Vec<f32>>> {
        let head = editor.infer(dev, &self.dg, &self.bufs)?;
        let o = self.spec.opts();
        let mut out = Vec::with_capacity(self.sparsity.len());
        for (m, &sparsity) in self.sparsity.iter().enumerate() {
            let (mut values, mut scores) =
                values_and_scores(&o, &self.pm, &head, &self.orig, &self.prior, m);
            if self.spec.requirement == Requirement::Prune {
                let keep = kept(scores.len(), sparsity);
                select_best(&mut scores, keep);
                for &(_, i) in &scores[keep..] {
                    values[i] = 0.0;
                }
            }
            let base = self.pm.model_offsets[m];
            for (i, v) in values.iter_mut().enumerate() {
                if self.pm.kind[base + i] & 3 == REMOVED {
                    *v = 0.0;
                }
            }
            out.push(values);
        }
        Ok(out)
    }
}

/// The training loss gradient of a step's models, summed over models, into `editor.grads`:
/// computed in pieces of at most `piece` models and added up, a piece halved while the device
/// has no room for it. `batch` is the step's (x [rows, in], labels, groups). Returns each
/// model's (JSD, fairness penalty).
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
) -> Result<Vec<(f32, f32)>> {
    let (n, rows) = (params.len(), y.len());
    let piece = piece.clamp(1, n.max(1));
    let run = |r: std::ops::Range<usize>| -> Result<Vec<(f32, f32)>> {
        let (p, a) = (&params[r.clone()], &asks[r]);
        let b = TrainBatch::new(dev, editor, spec, shape, p, a, cols, rows)?;
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
        let g = build_graph(editor, spec.requirement, &models, asks, &cols.sensitive)?;
        let pm = g.param_map();
        let dg = DeviceGraph::upload(dev, &g)?;
        let tape = Tape::new(dev, &editor.cfg, &dg)?;
        let raw: Vec<f32> = params.iter().flat_map(|p| p.iter().copied()).collect();
        // The edit's base values (`orig` in the kernels); the original models run unchanged.
        let (orig_host, prior_host) = bases_and_priors(spec, &models, asks, cols);
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
        if self.spec.requirement == Requirement::Prune {
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
        edit_forward(
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
        edit_backward(
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

/// An editor checkpoint with what it needs to edit: how it edits, the data schema it was
/// trained for, how to read that data, and the lambdas it saw in training.
pub struct EditorFile {
    pub editor: Editor,
    pub spec: EditSpec,
    pub schema: Schema,
    pub loader: crate::io::data::loaders::DatasetName,
    pub data_options: crate::io::data::loaders::DataOptions,
    pub data_seed: u64,
    pub lambda: (f32, f32),
    pub columns: Columns,
}

impl EditorFile {
    pub fn load(dev: &Device, path: &std::path::Path) -> Result<EditorFile> {
        let (editor, meta) = Editor::load(dev, path)?;
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                Error::input(
                    path,
                    format!("is an editor without '{k}' metadata (not trained by regop train)"),
                )
            })
        };
        let bad =
            |k: &str, e: serde_json::Error| Error::input(path, format!("bad '{k}' metadata: {e}"));
        let spec: EditSpec = serde_json::from_str(get("edit")?).map_err(|e| bad("edit", e))?;
        let train: crate::workflows::train::TrainConfig =
            serde_json::from_str(get("train")?).map_err(|e| bad("train", e))?;
        let schema: Schema = serde_json::from_str(get("schema")?).map_err(|e| bad("schema", e))?;
        let means: Vec<f32> = match meta.get("column_means") {
            Some(m) => serde_json::from_str(m).map_err(|e| bad("column_means", e))?,
            None => Vec::new(),
        };
        if !means.is_empty() && means.len() != schema.n_columns() {
            return Err(Error::input(
                path,
                "its 'column_means' do not match its schema",
            ));
        }
        Ok(EditorFile {
            columns: Columns {
                sensitive: sensitive_columns(&schema),
                means,
            },
            schema,
            spec,
            loader: serde_json::from_str(get("loader")?).map_err(|e| bad("loader", e))?,
            data_options: serde_json::from_str(get("data_options")?)
                .map_err(|e| bad("data_options", e))?,
            data_seed: get("data_seed")?
                .parse()
                .map_err(|_| Error::input(path, "bad 'data_seed' metadata"))?,
            lambda: train.lambda,
            editor,
        })
    }

    /// Refuse a model the editor cannot edit: other input columns than the editor's data, or
    /// deeper or wider outputs than it knows.
    pub fn check_model(
        &self,
        path: &std::path::Path,
        model: &crate::io::model::Model,
    ) -> Result<()> {
        let shape = model.shape();
        let cols = self.schema.column_names();
        let bad = |m: String| Err(Error::input(path, m));
        if shape.dims[0] != cols.len() {
            return bad(format!(
                "has {} input columns; the editor edits models of '{}' with {} columns",
                shape.dims[0],
                self.schema.dataset,
                cols.len()
            ));
        }
        if let Some(f) = &model.features {
            if f != &cols {
                return bad(format!(
                    "its input columns ({}...) are not the editor's ({}...)",
                    f[0], cols[0]
                ));
            }
        }
        let pos = &self.editor.cfg.pos;
        if shape.layers() - 1 > pos.max_hidden_layers || shape.outputs() > pos.max_outputs {
            return bad(format!(
                "has {} hidden layers and {} outputs; the editor handles at most {} and {}",
                shape.layers() - 1,
                shape.outputs(),
                pos.max_hidden_layers,
                pos.max_outputs
            ));
        }
        Ok(())
    }
}

/// `n` lambdas spaced log-uniformly over `range`.
pub fn lambda_grid(range: (f32, f32), n: usize) -> Vec<f32> {
    let (lo, hi) = (range.0.ln(), range.1.ln());
    (0..n)
        .map(|i| (lo + (hi - lo) * i as f32 / (n.max(2) - 1) as f32).exp())
        .collect()
}

/// Selection aims below the bound by this factor: the gap measured on one split scatters on
/// another (about +-0.03 for equalised odds at a few thousand rows).
pub const SEARCH_MARGIN: f64 = 0.6;

/// The (gap, accuracy) on `split` of each of `edited`, models of one `shape`.
pub fn score_fairness(
    dev: &Device,
    shape: &MlpShape,
    edited: &[Vec<f32>],
    split: &crate::io::data::Split,
    gap: Gap,
) -> Result<Vec<(f64, f64)>> {
    use crate::requirement::metrics::{
        accuracy, decisions, demographic_parity_difference, equalized_odds_difference,
    };
    let flat: Vec<f32> = edited.concat();
    let logits = crate::networks::mlp::predict(dev, shape, edited.len(), &flat, &split.x)?;
    let rows = split.rows() * shape.outputs();
    Ok((0..edited.len())
        .map(|i| {
            let pred = decisions(&logits[i * rows..(i + 1) * rows]);
            let g = match gap {
                Gap::Eo => equalized_odds_difference(&split.y, &pred, &split.group),
                Gap::Dp => demographic_parity_difference(&pred, &split.group),
            };
            (g, accuracy(&split.y, &pred))
        })
        .collect())
}

/// Of edits scored (gap, accuracy) in lambda order: the most accurate whose gap is at most
/// `SEARCH_MARGIN * max_gap` (the smaller lambda on ties), or, when none is, the one with the
/// smallest gap.
pub fn pick_lambda(scored: &[(f64, f64)], max_gap: f64) -> usize {
    (0..scored.len())
        .filter(|&i| scored[i].0 <= SEARCH_MARGIN * max_gap)
        .max_by(|&a, &b| scored[a].1.total_cmp(&scored[b].1).then(b.cmp(&a)))
        .unwrap_or_else(|| {
            (0..scored.len())
                .min_by(|&a, &b| scored[a].0.total_cmp(&scored[b].0))
                .expect("at least one lambda")
        })
}

/// One model (over `n_columns` input columns) edited once per lambda of `grid`, in one batch.
pub fn edit_at_lambdas(
    dev: &Device,
    editor: &Editor,
    spec: &EditSpec,
    columns: &Columns,
    n_columns: usize,
    model: (&MlpShape, &[f32]),
    grid: &[f32],
) -> Result<Vec<Vec<f32>>> {
    let asks: Vec<Ask> = grid
        .iter()
        .map(|&lambda| Ask {
            lambda,
            ..Ask::new(n_columns)
        })
        .collect();
    let models = vec![model; grid.len()];
    edit_models(dev, editor, spec, &models, &asks, columns)
}

/// A fairness edit that meets `max_gap`: the model edited at every lambda of `grid` in one
/// inference, then the edit `pick_lambda` chooses by its gap and accuracy on `split`. Returns
/// (lambda, edited parameters).
#[allow(clippy::too_many_arguments)]
pub fn search_lambda(
    dev: &Device,
    ef: &EditorFile,
    shape: &MlpShape,
    params: &[f32],
    split: &crate::io::data::Split,
    gap: Gap,
    max_gap: f64,
    grid: &[f32],
) -> Result<(f32, Vec<f32>)> {
    let edited = edit_at_lambdas(
        dev,
        &ef.editor,
        &ef.spec,
        &ef.columns,
        ef.schema.n_columns(),
        (shape, params),
        grid,
    )?;
    let best = pick_lambda(&score_fairness(dev, shape, &edited, split, gap)?, max_gap);
    Ok((grid[best], edited.into_iter().nth(best).unwrap()))
}

/// Logit shifts a shift search tries for each group.
pub fn shift_grid() -> Vec<f32> {
    (-15..=15).map(|i| i as f32 * 0.1).collect()
}

/// Per-group logit shifts for a binary model with `logits` on `split`: the decision thresholds
/// by group that the edit then folds into the weights. Every combination of `shift_grid` values
/// (one per group, at most `MAX_SHIFT_GROUPS`) is tried: the most accurate whose gap is at most
/// `SEARCH_MARGIN * max_gap`, or while none is, the smallest gap. A group's counts depend on its
/// own shift only, so they are counted once per (group, shift) and combined.
pub fn choose_shift(
    logits: &[f32],
    split: &crate::io::data::Split,
    groups: usize,
    gap: Gap,
    max_gap: f64,
) -> Vec<f32> {
    use crate::requirement::metrics::{
        accuracy_of, demographic_parity_of, equalized_odds_of, GroupCounts,
    };
    assert!(
        (1..=MAX_SHIFT_GROUPS).contains(&groups),
        "choose_shift: 1 to {MAX_SHIFT_GROUPS} groups"
    );
    let grid = shift_grid();
    // counts[g][k]: group g's counts with its logits moved by grid[k].
    let counts: Vec<Vec<GroupCounts>> = (0..groups as u32)
        .map(|g| {
            grid.iter()
                .map(|&c| {
                    GroupCounts::of(
                        logits
                            .iter()
                            .zip(&split.y)
                            .zip(&split.group)
                            .filter(|(_, &gr)| gr == g)
                            .map(|((&l, &y), _)| (y > 0.5, l + c > 0.0)),
                    )
                })
                .collect()
        })
        .collect();
    let target = SEARCH_MARGIN * max_gap;
    // Lexicographic: meeting the target first, then accuracy there, else a smaller gap.
    let better = |a: (f64, f64), b: (f64, f64)| match (a.0 <= target, b.0 <= target) {
        (true, false) => true,
        (false, true) => false,
        (true, true) => a.1 > b.1,
        (false, false) => a.0 < b.0,
    };
    let zero = grid.iter().position(|&c| c == 0.0).expect("0 on the grid");
    let score = |pick: &[usize]| {
        let c: Vec<GroupCounts> = (0..groups).map(|g| counts[g][pick[g]]).collect();
        let g = match gap {
            Gap::Eo => equalized_odds_of(&c),
            Gap::Dp => demographic_parity_of(&c),
        };
        (g, accuracy_of(&c))
    };
    let mut pick = vec![0usize; groups];
    let mut best = (vec![zero; groups], score(&vec![zero; groups]));
    loop {
        let s = score(&pick);
        if better(s, best.1) {
            best = (pick.clone(), s);
        }
        // Next combination (an odometer over grid indices, the last group turning fastest).
        match (0..groups).rev().find(|&g| pick[g] + 1 < grid.len()) {
            Some(g) => {
                pick[g] += 1;
                pick[g + 1..].iter_mut().for_each(|k| *k = 0);
            }
            None => break,
        }
    }
    best.0.iter().map(|&k| grid[k]).collect()
}

/// A fairness edit by a shift editor that meets `max_gap`: the shifts `choose_shift` picks from
/// the original model's logits on `split`, made one weight edit by `editor` (trained for data
/// of `schema`). Returns (shifts, edited parameters).
#[allow(clippy::too_many_arguments)]
pub fn search_shift(
    dev: &Device,
    editor: &Editor,
    spec: &EditSpec,
    columns: &Columns,
    schema: &Schema,
    model: (&MlpShape, &[f32]),
    split: &crate::io::data::Split,
    gap: Gap,
    max_gap: f64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let logits = crate::networks::mlp::predict(dev, model.0, 1, model.1, &split.x)?;
    let shift = choose_shift(&logits, split, schema.groups.len(), gap, max_gap);
    let ask = Ask {
        shift: Some(shift.clone()),
        ..Ask::new(schema.n_columns())
    };
    let edited = edit_models(dev, editor, spec, &[model], &[ask], columns)?;
    Ok((shift, edited.into_iter().next().expect("one edit")))
}

/// The editor picks which features to drop under a feature budget: starting from `forced`,
/// it removes one feature at a time, each round editing the model once per remaining
/// candidate in one batch and keeping the removal whose edit agrees best with the original
/// model on `split`, until at most `keep` features remain. Returns the removed feature names.
pub fn choose_features(
    dev: &Device,
    ef: &EditorFile,
    shape: &MlpShape,
    params: &[f32],
    split: &crate::io::data::Split,
    keep: usize,
    forced: &[String],
) -> Result<Vec<String>> {
    use crate::requirement::metrics::{accuracy, decisions};
    let names: Vec<String> = ef.schema.features.iter().map(|f| f.name.clone()).collect();
    let mut removed: Vec<String> = forced.to_vec();
    let base = decisions(&crate::networks::mlp::predict(
        dev, shape, 1, params, &split.x,
    )?);
    while names.len() - removed.len() > keep {
        let candidates: Vec<&String> = names.iter().filter(|n| !removed.contains(n)).collect();
        let asks: Vec<Ask> = candidates
            .iter()
            .map(|c| {
                let mut set = removed.clone();
                set.push((*c).clone());
                Ask {
                    removed: removed_columns(&ef.schema, &set).expect("schema's own names"),
                    ..Ask::new(ef.schema.n_columns())
                }
            })
            .collect();
        let models: Vec<(&MlpShape, &[f32])> = asks.iter().map(|_| (shape, params)).collect();
        let edited = edit_models(dev, &ef.editor, &ef.spec, &models, &asks, &ef.columns)?;
        let flat: Vec<f32> = edited.concat();
        let logits = crate::networks::mlp::predict(dev, shape, asks.len(), &flat, &split.x)?;
        let rows = split.rows() * shape.outputs();
        let agree: Vec<f64> = (0..asks.len())
            .map(|i| accuracy(&base, &decisions(&logits[i * rows..(i + 1) * rows])))
            .collect();
        let best = (0..asks.len())
            .max_by(|&a, &b| agree[a].total_cmp(&agree[b]).then(b.cmp(&a)))
            .expect("a candidate");
        removed.push(candidates[best].clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The selection keeps the same set as sorting every score would, ties included, and puts
    /// the worst kept score last among the kept.
    #[test]
    fn select_best_keeps_what_a_full_sort_keeps() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        for n in [1, 2, 7, 100, 1000] {
            // Few distinct values, so that many scores tie and positions decide.
            let scores: Vec<(f32, usize)> = (0..n)
                .map(|i| (rng.random_range(0..5) as f32 - 2.0, i))
                .collect();
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for keep in [0, 1, n / 3, n / 2, n.saturating_sub(1), n] {
                let mut got = scores.clone();
                select_best(&mut got, keep);
                let mut kept: Vec<usize> = got[..keep].iter().map(|s| s.1).collect();
                let mut want: Vec<usize> = sorted[..keep].iter().map(|s| s.1).collect();
                kept.sort_unstable();
                want.sort_unstable();
                assert_eq!(kept, want, "n {n}, keep {keep}");
                if keep > 0 {
                    assert_eq!(got[keep - 1], sorted[keep - 1], "n {n}, keep {keep}");
                }
            }
        }
    }
}
