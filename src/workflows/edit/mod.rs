//! Edits: the exact edit users get. One editor inference per batch of models, then the
//! finishing step on the host: removed columns exactly zero, exactly the top-k scored weights
//! kept when pruning. `step` is the same edit as a differentiable training step, `search` the
//! edits that must meet a bound on data (lambda, group shifts, a feature budget), `checkpoint`
//! an editor file with what it needs to edit.

pub mod checkpoint;
pub mod search;
pub mod signals;
pub mod step;

use crate::engine::device::Device;
use crate::engine::kernels::apply_edit::{edited_value, score, ApplyOpts};
use crate::engine::kernels::apply_edit::{KEEP_ALL, PRIOR_EPS, REMOVED, WEIGHT};
use crate::error::{Error, Result};
use crate::networks::editor::{DeviceGraph, Editor, EditorConfig, InferBuffers};
use crate::networks::graph::{GraphBatch, ModelInput, ParamMap, Signals};
use crate::networks::mlp::MlpShape;
use crate::requirement::{Ask, Columns, EditSpec, MinimiseBase, PruneScore, Requirement};
use crate::workflows::baselines::{
    closer_fold, fold_reconstruction, fold_reconstruction_step, fold_removed_means,
    lamp_reconstruction, least_squares_fold, masked_reconstruction, natural_step,
    neuron_reconstruct, obs_prune, zero_batch_columns, zero_columns,
};
use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

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
        // The mask is the rule's, held fixed (see `Bases::fixed`): no scores to rank.
        PruneScore::Obs | PruneScore::LampReconstruction | PruneScore::Neurons => {}
    }
    prior
}

/// Where the edits of a batch start, packed model-major: the values the editor's deltas add
/// to, each weight's pruning-score prior, and the parameters held at exactly zero whatever
/// the editor says (a rule's pruned weights).
struct Bases {
    orig: Vec<f32>,
    prior: Vec<f32>,
    fixed: Vec<bool>,
    /// Editors that move a rule's mask (`EditSpec::moves_rule_mask`): the value each weight
    /// the rule pruned returns with, its own (0 where the rule kept it; `orig` holds the
    /// returns too). Empty for other editors.
    returns: Vec<f32>,
}

impl Bases {
    /// Parameters `range` of the edit with no delta: `orig`, less what pruned weights would
    /// return with (they are zero there).
    fn start(&self, range: std::ops::Range<usize>) -> std::borrow::Cow<'_, [f32]> {
        if self.returns.is_empty() {
            return std::borrow::Cow::Borrowed(&self.orig[range]);
        }
        let (o, r) = (&self.orig[range.clone()], &self.returns[range]);
        std::borrow::Cow::Owned(o.iter().zip(r).map(|(o, r)| o - r).collect())
    }

    /// Every model's start (`start`), in order.
    fn starts(&self, models: &[(&MlpShape, &[f32])]) -> Vec<std::borrow::Cow<'_, [f32]>> {
        let mut at = 0;
        models
            .iter()
            .map(|(_, p)| {
                at += p.len();
                self.start(at - p.len()..at)
            })
            .collect()
    }
}

/// The models as the editor sees them: where the edit starts from a rule's result (OBS), that
/// result, so the editor knows what was pruned and what the rule re-solved; else the models as
/// they are.
fn seen<'a>(
    spec: &EditSpec,
    models: &[(&'a MlpShape, &'a [f32])],
    starts: &'a [std::borrow::Cow<'a, [f32]>],
) -> Vec<(&'a MlpShape, &'a [f32])> {
    if !spec.keeps_rule_mask() {
        return models.to_vec();
    }
    models
        .iter()
        .zip(starts)
        .map(|((s, _), p)| (*s, &**p))
        .collect()
}

/// Whether the edit keeps the top-k pruning scores of each model (a score rule, or a rule's
/// mask the editor may move), rather than a rule's own mask.
fn ranks_scores(spec: &EditSpec) -> bool {
    spec.requirement == Requirement::Prune
        && (!spec.prune_score.keeps_rule_mask() || spec.moves_rule_mask())
}

/// The parameters `fixed` holds at zero become `REMOVED` in the map (as removed input columns'
/// weights are), so the device and the host edit alike zero them exactly.
fn fix_zeros(pm: &mut ParamMap, fixed: &[bool]) {
    for (kind, _) in pm.kind.iter_mut().zip(fixed).filter(|(_, f)| **f) {
        *kind = (*kind & !3) | REMOVED;
    }
}

fn build_graph(
    editor: &Editor,
    req: Requirement,
    models: &[(&MlpShape, &[f32])],
    asks: &[Ask],
    sensitive: &[bool],
    signals: Option<&[Signals]>,
    returns: &[f32],
) -> Result<GraphBatch> {
    let mut at = 0;
    let returns: Vec<Option<&[f32]>> = models
        .iter()
        .map(|(_, p)| {
            at += p.len();
            (!returns.is_empty()).then(|| &returns[at - p.len()..at])
        })
        .collect();
    let conds: Vec<Vec<f32>> = asks.iter().map(|a| a.cond(req)).collect();
    let inputs: Vec<ModelInput> = models
        .iter()
        .zip(asks)
        .zip(&conds)
        .enumerate()
        .map(|(i, (((shape, params), ask), cond))| ModelInput {
            shape,
            params,
            removed: &ask.removed,
            sensitive,
            cond,
            signals: signals.map(|s| &s[i]),
            returns: returns[i],
        })
        .collect();
    GraphBatch::build(&inputs, &editor.cfg.pos).map_err(Error::Usage)
}

/// The parameters an edit starts from: the model's own; with the removed columns' means, or
/// their least-squares prediction from the kept columns, folded in (minimise, and fairness
/// editors that drop the attribute); pruned and re-solved by OBS or neuron reconstruction on
/// the calibration batch, after any removed columns are folded (OBS and neuron prune editors,
/// fairness editors that also prune); or with the mean of the asked group shifts added to the
/// output bias (shift editors), so that the part of the shift common to all groups is exact and
/// the editor learns only how the groups differ.
fn base_params(
    spec: &EditSpec,
    shape: &MlpShape,
    params: &[f32],
    ask: &Ask,
    cols: &Columns,
) -> Result<Vec<f32>> {
    // A rule's pruning mask kept (OBS and neuron prune editors, fairness editors that also
    // prune): the rule's result on the model with the removed columns dropped.
    if spec.keeps_rule_mask() {
        let score = match spec.requirement {
            Requirement::Prune => spec.prune_score,
            _ => PruneScore::Obs,
        };
        let neurons = score == PruneScore::Neurons;
        if cols.calibration.rows() == 0 {
            return Err(Error::Usage(if neurons {
                "this editor removes neurons by reconstruction, which reads a calibration batch of its data: pass --data".into()
            } else {
                "this editor prunes by reconstruction (OBS, or LAMP's mask re-solved), which reads a calibration batch of its data: pass --data".into()
            }));
        }
        let (folded, x) = drop_before_pruning(spec, shape, params, ask, cols)?;
        let (rows, s) = (cols.calibration.rows(), ask.sparsity as f64);
        return Ok(match score {
            PruneScore::Neurons => neuron_reconstruct(shape, &folded, &x, rows, s),
            PruneScore::LampReconstruction => lamp_reconstruction(shape, &folded, &x, rows, s),
            _ => obs_prune(shape, &folded, &x, rows, s),
        });
    }
    let folds = spec.requirement == Requirement::Minimise || spec.drops_attribute();
    Ok(match (spec.requirement, &ask.shift) {
        _ if folds => fold(spec.minimise_base, shape, params, &ask.removed, cols)?,
        (Requirement::Fairness, Some(shift)) if !shift.is_empty() => {
            let mut p = params.to_vec();
            let mean = shift.iter().sum::<f32>() / shift.len() as f32;
            p[shape.bias_offset(shape.layers() - 1)] += mean;
            p
        }
        _ => params.to_vec(),
    })
}

/// Features removed in the same edit as pruning (`EditSpec::also_drops`, or the attribute a
/// fairness editor that also prunes drops): the model with the
/// removed columns folded (`minimise_base`) and their weights zero, and the calibration batch
/// with those columns zero, so that the rule's re-solve cannot put weight back on them. With
/// nothing removed, the model and the batch as they are (the batch borrowed, not copied).
fn drop_before_pruning<'c>(
    spec: &EditSpec,
    shape: &MlpShape,
    params: &[f32],
    ask: &Ask,
    cols: &'c Columns,
) -> Result<(Vec<f32>, Cow<'c, [f32]>)> {
    let x = &cols.calibration.x;
    let own = pruned_model(spec, shape, params, ask, cols)?;
    if !ask.removed.contains(&true) {
        return Ok((own, Cow::Borrowed(x)));
    }
    Ok((own, Cow::Owned(zero_batch_columns(x, &ask.removed))))
}

/// The model a rule prunes (`drop_before_pruning`): with any removed columns folded and their
/// weights zero.
fn pruned_model(
    spec: &EditSpec,
    shape: &MlpShape,
    params: &[f32],
    ask: &Ask,
    cols: &Columns,
) -> Result<Vec<f32>> {
    if !ask.removed.contains(&true) {
        return Ok(params.to_vec());
    }
    let folded = fold(spec.minimise_base, shape, params, &ask.removed, cols)?;
    Ok(zero_columns(shape, &folded, &ask.removed))
}

/// Scale of the log LAMP scores an editor that moves LAMP's mask adds its logits to: a logit
/// of 1 moves a weight's score by a factor e^(1/scale). Chosen on validation models of
/// mnist_5k among 20, 5 and 2 (BENCHMARKS, "A learned mask on LAMP + reconstruction"): the
/// smaller, the more the mask moves.
const MOVED_MASK_PRIOR_SCALE: f32 = 2.0;

/// For an editor that moves LAMP's mask (`EditSpec::moves_rule_mask`), from the model the rule
/// pruned (`own`) and its result (`start`, zero where pruned): the value each pruned weight
/// returns with (its own; 0 where kept), and every weight's LAMP score prior, the pruned
/// weights' held just under the kept ones' so that zero mask logits keep exactly the rule's
/// mask (the f32 log can tie scores the rule told apart).
fn rule_mask_returns(
    spec: &EditSpec,
    shape: &MlpShape,
    own: &[f32],
    start: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let lamp = EditSpec {
        prune_score: PruneScore::Lamp,
        ..*spec
    };
    let mut prior = prune_prior(&lamp, shape, own);
    prior.iter_mut().for_each(|p| *p *= MOVED_MASK_PRIOR_SCALE);
    let mut returns = vec![0.0f32; own.len()];
    let mut lowest_kept = f32::INFINITY;
    for l in 0..shape.layers() {
        for i in shape.weight_offset(l)..shape.bias_offset(l) {
            if start[i] == 0.0 {
                returns[i] = own[i];
            } else {
                lowest_kept = lowest_kept.min(prior[i]);
            }
        }
    }
    for l in 0..shape.layers() {
        for i in shape.weight_offset(l)..shape.bias_offset(l) {
            if start[i] == 0.0 {
                prior[i] = prior[i].min(lowest_kept.next_down());
            }
        }
    }
    (returns, prior)
}

/// The model with the `removed` columns folded as `base` says (`MinimiseBase`).
fn fold(
    base: MinimiseBase,
    shape: &MlpShape,
    params: &[f32],
    removed: &[bool],
    cols: &Columns,
) -> Result<Vec<f32>> {
    let (x, rows) = (&cols.calibration.x, cols.calibration.rows());
    let lacks = match base {
        MinimiseBase::Mean => false,
        MinimiseBase::LeastSquares => cols.moments.mean.is_empty(),
        MinimiseBase::Closer | MinimiseBase::Reconstruction | MinimiseBase::ReconstructionStep => {
            cols.moments.mean.is_empty() || rows == 0
        }
    };
    if lacks {
        return Err(Error::Usage(
            "this editor folds removed features from what it reads of its data: pass --data".into(),
        ));
    }
    Ok(match base {
        MinimiseBase::Mean => fold_removed_means(shape, params, removed, &cols.means),
        MinimiseBase::LeastSquares => least_squares_fold(shape, params, removed, &cols.moments),
        MinimiseBase::Closer => {
            closer_fold(shape, params, removed, &cols.means, &cols.moments, x, rows)
        }
        MinimiseBase::Reconstruction => {
            fold_reconstruction(shape, params, removed, &cols.moments, x, rows)
        }
        MinimiseBase::ReconstructionStep => {
            fold_reconstruction_step(shape, params, removed, &cols.moments, &cols.calibration)
        }
    })
}

/// Number of weights a model keeps at `sparsity` (the rest, round(sparsity * weights), are zero).
fn kept(weights: usize, sparsity: f32) -> usize {
    weights - ((sparsity as f64 * weights as f64).round() as usize).min(weights)
}

/// The edited values of one model's parameters `range`, before any pruning mask, and the
/// pruning scores of its weights (by parameter index within the model), the mask logits
/// scaled by `logit_scale`.
fn values_and_scores(
    o: &ApplyOpts,
    pm: &ParamMap,
    head: &[f32],
    orig: &[f32],
    prior: &[f32],
    m: usize,
    logit_scale: f32,
) -> (Vec<f32>, Vec<(f32, usize)>) {
    let range = pm.model_offsets[m]..pm.model_offsets[m + 1];
    let mut values = Vec::with_capacity(range.len());
    let mut scores = Vec::new();
    for (i, p) in range.clone().enumerate() {
        let h = pm.map[p] as usize;
        let kind = pm.kind[p] & 3;
        let v = edited_value(
            o,
            orig[p],
            head[2 * h],
            (prior[p], head[2 * h + 1]),
            kind,
            KEEP_ALL,
        );
        if kind == WEIGHT {
            scores.push((score(prior[p], logit_scale * head[2 * h + 1]), i));
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
    let edits = edit_models_at(dev, editor, spec, models, asks, cols, &[1.0])?;
    Ok(edits.into_iter().map(|mut at| at.remove(0)).collect())
}

/// `edit_models` with the editor's deltas scaled by each of `steps` (0: where the edit starts,
/// the rule; 1: the edit as trained), from the same inference. Returns, per model, its edited
/// parameters at every step.
pub fn edit_models_at(
    dev: &Device,
    editor: &Editor,
    spec: &EditSpec,
    models: &[(&MlpShape, &[f32])],
    asks: &[Ask],
    cols: &Columns,
    steps: &[f32],
) -> Result<Vec<Vec<Vec<f32>>>> {
    let edit = |range: std::ops::Range<usize>, slice: usize| {
        let (m, a) = (&models[range.clone()], &asks[range]);
        EditBatch::new(dev, editor, spec, m, a, cols, slice)?.run_at(dev, editor, steps)
    };
    let mut out = Vec::with_capacity(models.len());
    for range in edit_chunks(editor, models) {
        out.extend(fitting(range, slice_edges(dev, &editor.cfg), &edit)?);
    }
    if spec.resolve_mask && spec.moves_rule_mask() {
        use rayon::prelude::*;
        (out.par_iter_mut().zip(models).zip(asks))
            .try_for_each(|((at, model), ask)| resolve_kept(spec, *model, ask, cols, at))?;
    }
    if spec.natural_step && spec.requirement != Requirement::Fairness {
        use rayon::prelude::*;
        (out.par_iter_mut().zip(models).zip(asks)).for_each(|((at, (shape, _)), ask)| {
            for edit in at.iter_mut() {
                *edit = natural_step(shape, edit, &ask.removed, &cols.moments, &cols.calibration);
            }
        });
    }
    Ok(out)
}

/// `edits` of one model by an editor that moves LAMP's mask, each with only its mask kept: the
/// kept weights re-solved by least squares on the calibration batch from the model the rule
/// prunes, as the rule re-solves its own mask (`baselines::lamp_reconstruction`). Step 0 (the
/// rule's mask) gives exactly the rule. Edits with the same mask share one re-solve; the
/// others run side by side.
pub fn resolve_kept(
    spec: &EditSpec,
    (shape, params): (&MlpShape, &[f32]),
    ask: &Ask,
    cols: &Columns,
    edits: &mut [Vec<f32>],
) -> Result<()> {
    use rayon::prelude::*;
    let (own, x) = drop_before_pruning(spec, shape, params, ask, cols)?;
    let rows = cols.calibration.rows();
    let masks: Vec<Vec<f32>> = (edits.iter())
        .map(|e| e.iter().map(|&v| (v != 0.0) as u32 as f32).collect())
        .collect();
    // For each edit, the first edit with its mask.
    let first: Vec<usize> = (0..masks.len())
        .map(|i| (0..i).find(|&j| masks[j] == masks[i]).unwrap_or(i))
        .collect();
    let distinct: Vec<usize> = (0..masks.len()).filter(|&i| first[i] == i).collect();
    let solved: Vec<Vec<f32>> = (distinct.par_iter())
        .map(|&i| masked_reconstruction(shape, &own, &x, rows, &masks[i]))
        .collect();
    for (edit, f) in edits.iter_mut().zip(first) {
        let k = distinct
            .binary_search(&f)
            .expect("a first edit is distinct");
        edit.clone_from(&solved[k]);
    }
    Ok(())
}

/// Run `edit` on `range`; while the device runs out of memory, halve the range, and for a
/// single model halve the editor's edge slices (down to 1024 edges).
fn fitting<T>(
    range: std::ops::Range<usize>,
    slice: usize,
    edit: &impl Fn(std::ops::Range<usize>, usize) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
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

/// The signals of a batch's models (`signals`) at their `starts`, for editors that read data;
/// None for others.
fn batch_signals(
    dev: &Device,
    spec: &EditSpec,
    models: &[(&MlpShape, &[f32])],
    b: &Bases,
    starts: &[std::borrow::Cow<'_, [f32]>],
    asks: &[Ask],
    cols: &Columns,
) -> Result<Option<Vec<Signals>>> {
    if !spec.signals {
        return Ok(None);
    }
    if cols.calibration.rows() == 0 {
        return Err(Error::Usage(
            "this editor reads a calibration batch of its data: pass --data".into(),
        ));
    }
    let starts: Vec<&[f32]> = starts.iter().map(|s| &**s).collect();
    let (mut at, mut frozen) = (0, Vec::new());
    for ((s, p), a) in models.iter().zip(asks) {
        // What the edit cannot move: the rule's zeros and the removed columns' weights.
        let mut f = b.fixed[at..at + p.len()].to_vec();
        let d = s.fan_in(0);
        for o in 0..s.fan_out(0) {
            for (c, _) in a.removed.iter().enumerate().filter(|(_, r)| **r) {
                f[s.weight_offset(0) + o * d + c] = true;
            }
        }
        frozen.push(f);
        at += p.len();
    }
    let calib = &cols.calibration;
    let label_weight = spec.signal_label_weight;
    signals::signals(dev, models, &starts, &frozen, asks, calib, label_weight).map(Some)
}

/// Whether two edits start from the same base: the same model (the same parameters in memory)
/// asked to remove the same columns at the same sparsity and shifts (lambda does not enter the
/// base).
fn same_start(
    (s0, p0): (&MlpShape, &[f32]),
    a0: &Ask,
    (s1, p1): (&MlpShape, &[f32]),
    a1: &Ask,
) -> bool {
    std::ptr::eq(p0, p1)
        && s0 == s1
        && a0.removed == a1.removed
        && a0.sparsity == a1.sparsity
        && a0.shift == a1.shift
}

/// Starts that keep a rule's mask (OBS or neuron reconstruction, most of an edit's time), kept
/// for the process by a hash of everything they are computed from, so that a training run that
/// draws the same model at the same sparsity again (`train --sparsity-grid`) computes its start
/// once. Up to `RULE_STARTS_MAX` floats are kept; past that, starts are computed every time.
#[derive(Default)]
struct RuleStarts {
    by_key: HashMap<u64, Vec<f32>>,
    floats: usize,
}

static RULE_STARTS: Mutex<Option<RuleStarts>> = Mutex::new(None);
/// 2 GiB: every start of a 1,024-model mnist_5k zoo at 4 sparsities (about 300 Mi floats).
const RULE_STARTS_MAX: usize = 512 << 20;

/// Forget every remembered start (`rule_start`), so that the next edit pays for its own.
pub fn forget_rule_starts() {
    *RULE_STARTS.lock().unwrap() = None;
}

fn rule_start(
    spec: &EditSpec,
    shape: &MlpShape,
    params: &[f32],
    ask: &Ask,
    cols: &Columns,
) -> Result<Vec<f32>> {
    let mut h = DefaultHasher::new();
    format!("{spec:?}").hash(&mut h);
    shape.dims.hash(&mut h);
    ask.removed.hash(&mut h);
    ask.sparsity.to_bits().hash(&mut h);
    for v in params.iter().chain(&cols.calibration.x).chain(&cols.means) {
        v.to_bits().hash(&mut h);
    }
    let key = h.finish();
    if let Some(hit) = RULE_STARTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|c| c.by_key.get(&key).cloned())
    {
        return Ok(hit);
    }
    let base = base_params(spec, shape, params, ask, cols)?;
    let mut guard = RULE_STARTS.lock().unwrap();
    let starts = guard.get_or_insert_with(RuleStarts::default);
    if starts.floats + base.len() <= RULE_STARTS_MAX {
        starts.floats += base.len();
        starts.by_key.insert(key, base.clone());
    }
    Ok(base)
}

/// Every model's base values (`base_params`), pruning priors and fixed zeros.
fn bases(
    spec: &EditSpec,
    models: &[(&MlpShape, &[f32])],
    asks: &[Ask],
    cols: &Columns,
) -> Result<Bases> {
    let mut b = Bases {
        orig: Vec::new(),
        prior: Vec::new(),
        fixed: Vec::new(),
        returns: Vec::new(),
    };
    let mut previous: Option<Vec<f32>> = None;
    for (i, ((s, p), a)) in models.iter().zip(asks).enumerate() {
        // A search edits one model at many lambdas: the same start, computed once (a rule such
        // as OBS reconstruction is most of an edit's time).
        let base = match previous.take() {
            Some(prev) if i > 0 && same_start(models[i - 1], &asks[i - 1], (s, p), a) => prev,
            _ if spec.keeps_rule_mask() => rule_start(spec, s, p, a, cols)?,
            _ => base_params(spec, s, p, a, cols)?,
        };
        previous = Some(base.clone());
        if spec.moves_rule_mask() {
            let own = pruned_model(spec, s, p, a, cols)?;
            let (returns, prior) = rule_mask_returns(spec, s, &own, &base);
            b.orig.extend(base.iter().zip(&returns).map(|(v, r)| v + r));
            b.returns.extend(returns);
            b.prior.extend(prior);
            b.fixed.extend(vec![false; base.len()]);
            continue;
        }
        b.prior.extend(prune_prior(spec, s, &base));
        let mut fixed = vec![false; base.len()];
        if spec.keeps_rule_mask() {
            for l in 0..s.layers() {
                for i in s.weight_offset(l)..s.bias_offset(l) {
                    fixed[i] = base[i] == 0.0;
                }
                // A removed neuron's bias is part of it: it stays zero too.
                if spec.prune_score == PruneScore::Neurons && l + 1 < s.layers() {
                    for i in s.bias_offset(l)..s.bias_offset(l) + s.fan_out(l) {
                        fixed[i] = base[i] == 0.0;
                    }
                }
            }
        }
        b.fixed.extend(fixed);
        b.orig.extend(base);
    }
    Ok(b)
}

/// What a batch of edits (or a training step) starts from: each model's base values, priors and
/// fixed zeros; the graph the editor reads (with the data's signals where it reads them); and
/// the parameter map, where the fixed zeros are removed parameters.
fn prepare(
    dev: &Device,
    editor: &Editor,
    spec: &EditSpec,
    models: &[(&MlpShape, &[f32])],
    asks: &[Ask],
    cols: &Columns,
) -> Result<(Bases, GraphBatch, ParamMap)> {
    let asks = &spec.effective_asks(asks, cols);
    let b = bases(spec, models, asks, cols)?;
    let starts = b.starts(models);
    let seen = seen(spec, models, &starts);
    let sig = batch_signals(dev, spec, models, &b, &starts, asks, cols)?;
    let g = build_graph(
        editor,
        spec.requirement,
        &seen,
        asks,
        &cols.sensitive,
        sig.as_deref(),
        &b.returns,
    )?;
    let mut pm = g.param_map();
    fix_zeros(&mut pm, &b.fixed);
    Ok((b, g, pm))
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
        let (b, g, pm) = prepare(dev, editor, spec, models, asks, cols)?;
        let dg = DeviceGraph::upload(dev, &g)?;
        Ok(EditBatch {
            spec: *spec,
            pm,
            bufs: InferBuffers::new(dev, &editor.cfg, &dg, slice_edges)?,
            dg,
            orig: b.orig,
            prior: b.prior,
            sparsity: asks.iter().map(|a| a.sparsity).collect(),
        })
    }

    /// One editor inference, then the exact edit of every model: removed weights zero, and
    /// when pruning exactly the top-k scores kept.
    pub fn run(&self, dev: &Device, editor: &Editor) -> Result<Vec<Vec<f32>>> {
        let edits = self.run_at(dev, editor, &[1.0])?;
        Ok(edits.into_iter().map(|mut at| at.remove(0)).collect())
    }

    /// `run` with the deltas scaled by each of `steps`: per model, its exact edit at every
    /// step. The scores, and so the mask, do not depend on the step, except where the editor
    /// moves a rule's mask: there the mask logits are scaled too, so that step 0 is the rule.
    pub fn run_at(
        &self,
        dev: &Device,
        editor: &Editor,
        steps: &[f32],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let head = editor.infer(dev, &self.dg, &self.bufs)?;
        let mut out = Vec::with_capacity(self.sparsity.len());
        for (m, &sparsity) in self.sparsity.iter().enumerate() {
            let mut at = Vec::with_capacity(steps.len());
            for &step in steps {
                let mut o = self.spec.opts();
                o.gamma *= step;
                let logit_scale = if self.spec.moves_rule_mask() {
                    step
                } else {
                    1.0
                };
                let (mut values, mut scores) =
                    values_and_scores(&o, &self.pm, &head, &self.orig, &self.prior, m, logit_scale);
                if ranks_scores(&self.spec) {
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
                at.push(values);
            }
            out.push(at);
        }
        Ok(out)
    }
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
