//! Edits that must meet a bound measured on data: a fairness gap (by editing at a grid of
//! lambdas in one batch, or by choosing group shifts from the original's logits and editing
//! once) and a feature budget (the editor chooses which features to drop); and the step along
//! an editor's edit picked on training rows.

use super::checkpoint::EditorFile;
use super::{edit_models, edit_models_at};
use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::{Error, Result};
use crate::io::data::{Schema, Split};
use crate::networks::editor::Editor;
use crate::networks::mlp::MlpShape;
use crate::requirement::metrics::{accuracy, predictions};
use crate::requirement::verify::{Target, Verdict};
use crate::requirement::{removed_columns, Ask, Columns, EditSpec};
use crate::requirement::{LAMBDA_SEARCH_POINTS, SEARCH_MARGIN};
use crate::workflows::baselines::choose_shift;

/// `n` lambdas spaced log-uniformly over `range`.
pub fn lambda_grid(range: (f32, f32)) -> Vec<f32> {
    let n = LAMBDA_SEARCH_POINTS;
    let (lo, hi) = (range.0.ln(), range.1.ln());
    (0..n)
        .map(|i| (lo + (hi - lo) * i as f32 / (n.max(2) - 1) as f32).exp())
        .collect()
}

/// Each of `edited` (models of one `shape`) checked against a fairness `target` on `split`,
/// with its accuracy there.
pub fn score_fairness(
    dev: &Device,
    shape: &MlpShape,
    edited: &[Vec<f32>],
    split: &Split,
    target: &Target,
) -> Result<Vec<(Verdict, f64)>> {
    let logits = logits_fitting(dev, shape, edited, &split.x)?;
    let rows = split.rows() * shape.outputs();
    Ok((0..edited.len())
        .map(|i| {
            let pred = predictions(&logits[i * rows..(i + 1) * rows], shape.outputs());
            let verdict = target.verify(shape, &edited[i], Some((split, &pred)));
            (verdict, accuracy(&split.y, &pred))
        })
        .collect())
}

/// Of edits scored in lambda order: the most accurate whose gap is at most `SEARCH_MARGIN *
/// max_gap` (the smaller lambda on ties), or, when none is, the one with the smallest gap.
pub fn pick_lambda(scored: &[(Verdict, f64)], max_gap: f64) -> usize {
    (0..scored.len())
        .filter(|&i| scored[i].0.value <= SEARCH_MARGIN * max_gap)
        .max_by(|&a, &b| scored[a].1.total_cmp(&scored[b].1).then(b.cmp(&a)))
        .unwrap_or_else(|| {
            (0..scored.len())
                .min_by(|&a, &b| scored[a].0.value.total_cmp(&scored[b].0.value))
                .expect("at least one lambda")
        })
}

/// One model edited once per lambda of `grid`, in one batch, each ask `ask` with its lambda.
pub fn edit_at_lambdas(
    dev: &Device,
    editor: &Editor,
    spec: &EditSpec,
    columns: &Columns,
    ask: &Ask,
    model: (&MlpShape, &[f32]),
    grid: &[f32],
) -> Result<Vec<Vec<f32>>> {
    let asks: Vec<Ask> = grid
        .iter()
        .map(|&lambda| Ask {
            lambda,
            ..ask.clone()
        })
        .collect();
    let models = vec![model; grid.len()];
    edit_models(dev, editor, spec, &models, &asks, columns)
}

/// A fairness edit that meets `max_gap`: the model edited at every lambda of `grid` in one
/// inference (at the asked `sparsity`, for editors that also prune), then the edit
/// `pick_lambda` chooses by its gap and accuracy on `split`. Returns (lambda, edited
/// parameters).
#[allow(clippy::too_many_arguments)]
pub fn search_lambda(
    dev: &Device,
    ef: &EditorFile,
    shape: &MlpShape,
    params: &[f32],
    sparsity: f32,
    split: &Split,
    gap: Gap,
    max_gap: f64,
    grid: &[f32],
) -> Result<(f32, Vec<f32>)> {
    let ask = Ask {
        sparsity,
        ..Ask::new(ef.schema.n_columns())
    };
    let model = (shape, params);
    let edited = edit_at_lambdas(dev, &ef.editor, &ef.spec, &ef.columns, &ask, model, grid)?;
    let target = Target::Fairness {
        gap,
        max_gap,
        without: ef.spec.unread_columns(&ef.columns),
        sparsity: sparsity as f64,
    };
    let best = pick_lambda(
        &score_fairness(dev, shape, &edited, split, &target)?,
        max_gap,
    );
    Ok((grid[best], edited.into_iter().nth(best).unwrap()))
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
    split: &Split,
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
    split: &Split,
    keep: usize,
    forced: &[String],
) -> Result<Vec<String>> {
    let names: Vec<String> = ef.schema.features.iter().map(|f| f.name.clone()).collect();
    let mut removed: Vec<String> = forced.to_vec();
    let k = shape.outputs();
    let base = predictions(
        &crate::networks::mlp::predict(dev, shape, 1, params, &split.x)?,
        k,
    );
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
            .map(|i| accuracy(&base, &predictions(&logits[i * rows..(i + 1) * rows], k)))
            .collect();
        let best = (0..asks.len())
            .max_by(|&a, &b| agree[a].total_cmp(&agree[b]).then(b.cmp(&a)))
            .expect("a candidate");
        removed.push(candidates[best].clone());
    }
    Ok(removed)
}

/// Steps along an editor's edit that a step search tries: 0 is where the edit starts (the
/// rule), 1 the edit as trained. The editor predicts a direction for each model; how far to go
/// along it varies by model more than one training loss can fix.
pub const STEP_GRID: [f32; 10] = [0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0];

/// Of accuracies at the steps of `STEP_GRID`: the index of the most accurate, on ties the step
/// nearest 1 (the edit as trained), then the smaller.
pub fn pick_step(accuracies: &[f64]) -> usize {
    let off = |i: usize| (STEP_GRID[i] - 1.0).abs();
    (0..accuracies.len())
        .max_by(|&a, &b| {
            (accuracies[a].total_cmp(&accuracies[b]))
                .then(off(b).total_cmp(&off(a)))
                .then(b.cmp(&a))
        })
        .expect("at least one step")
}

/// Training rows a step search scores on, at most: the first of the split (its rows are in
/// random order). On Adult, picking on 8,000 rows chose as well as on all 24,130.
pub const STEP_ROWS: usize = 8192;

/// `models` edited with the step along each one's edit picked on `rows` (the first
/// `STEP_ROWS` training rows, which the rules read too): every step of `STEP_GRID` from one
/// inference, the most accurate kept (`pick_step`). Returns (step, edited parameters) per model.
pub fn search_steps(
    dev: &Device,
    editor: &Editor,
    spec: &EditSpec,
    columns: &Columns,
    models: &[(&MlpShape, &[f32])],
    asks: &[Ask],
    rows: &Split,
) -> Result<Vec<(f32, Vec<f32>)>> {
    let edits = edit_models_at(dev, editor, spec, models, asks, columns, &STEP_GRID)?;
    let mut out = Vec::with_capacity(models.len());
    for ((shape, _), at) in models.iter().zip(edits) {
        let accuracies = step_accuracies(dev, shape, &at, rows, STEP_ROWS)?;
        let best = pick_step(&accuracies);
        out.push((STEP_GRID[best], at.into_iter().nth(best).expect("a step")));
    }
    Ok(out)
}

/// The accuracy of each of `edits` (models of one `shape`) on the first `most` rows of `rows`.
pub fn step_accuracies(
    dev: &Device,
    shape: &MlpShape,
    edits: &[Vec<f32>],
    rows: &Split,
    most: usize,
) -> Result<Vec<f64>> {
    let n = rows.rows().min(most);
    let x = &rows.x[..n * shape.dims[0]];
    let logits = logits_fitting(dev, shape, edits, x)?;
    let (k, per) = (shape.outputs(), n * shape.outputs());
    Ok((0..edits.len())
        .map(|i| {
            accuracy(
                &rows.y[..n],
                &predictions(&logits[i * per..(i + 1) * per], k),
            )
        })
        .collect())
}

/// The logits of `edits` on `x`, all in one batch, or in halves while the device has no room.
fn logits_fitting(
    dev: &Device,
    shape: &MlpShape,
    edits: &[Vec<f32>],
    x: &[f32],
) -> Result<Vec<f32>> {
    match crate::networks::mlp::predict(dev, shape, edits.len(), &edits.concat(), x) {
        Err(Error::NoRoom { .. }) if edits.len() > 1 => {
            let (a, b) = edits.split_at(edits.len() / 2);
            let mut out = logits_fitting(dev, shape, a, x)?;
            out.extend(logits_fitting(dev, shape, b, x)?);
            Ok(out)
        }
        result => result,
    }
}
