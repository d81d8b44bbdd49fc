//! Fairness baselines: fine-tuning with a fairness penalty (with or without the sensitive
//! columns), and deterministic group thresholds chosen on data (`choose_shift`: per-group logit
//! shifts, a rule on the unchanged model that the shift editor folds into the weights).
//! `postprocess` holds the randomised thresholds of Hardt et al.

use super::FineTune;
use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::Result;
use crate::io::data::{Dataset, Split};
use crate::networks::mlp::MlpShape;
use crate::requirement::{MAX_SHIFT_GROUPS, SEARCH_MARGIN};
use crate::workflows::fit::FitModel;

/// Fairness-penalised fine-tuning: BCE + lambda * soft gap, one fine-tuned copy of the model per
/// lambda, all trained together in one batch. Returns the parameters per lambda.
pub fn fair_finetune(
    dev: &Device,
    shape: &MlpShape,
    params: &[f32],
    data: &Dataset,
    ft: &FineTune,
    gap: Gap,
    lambdas: &[f32],
) -> Result<Vec<Vec<f32>>> {
    penalised(dev, shape, params, None, data, ft, gap, lambdas)
}

/// Fairness-penalised fine-tuning of one copy of the model per lambda, under an optional mask.
#[allow(clippy::too_many_arguments)]
fn penalised(
    dev: &Device,
    shape: &MlpShape,
    params: &[f32],
    mask: Option<&[f32]>,
    data: &Dataset,
    ft: &FineTune,
    gap: Gap,
    lambdas: &[f32],
) -> Result<Vec<Vec<f32>>> {
    let b = lambdas.len();
    let init: Vec<f32> = (0..b).flat_map(|_| params.iter().copied()).collect();
    let masks: Option<Vec<f32>> = mask.map(|m| (0..b).flat_map(|_| m.iter().copied()).collect());
    let models: Vec<FitModel> = (0..b)
        .map(|_| FitModel {
            seed: ft.seed,
            lr: ft.lr,
            weight_decay: ft.weight_decay,
            epochs: ft.epochs,
        })
        .collect();
    let pen = crate::workflows::fit::Penalty {
        gap,
        groups: data.schema.groups.len(),
        // The plain sigmoid: fine-tuning on the editor's sharpened surrogate (sharpness 4) was
        // worse on the Adult zoo, 26% of test models compliant at its best lambda against 51%.
        sharpness: 1.0,
        lambdas: lambdas.to_vec(),
    };
    let out = crate::workflows::fit::fit_penalised(
        dev,
        shape,
        &init,
        masks.as_deref(),
        Some(&pen),
        &data.train,
        &models,
        ft.batch_size,
        &mut |_, _| {},
    )?;
    Ok(out.chunks(shape.n_params()).map(|c| c.to_vec()).collect())
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
    split: &Split,
    groups: usize,
    gap: Gap,
    max_gap: f64,
) -> Vec<f32> {
    use crate::requirement::metrics::{accuracy_of, fairness_gap_of, GroupCounts};
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
        (fairness_gap_of(gap, &c), accuracy_of(&c))
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

/// Decisions of group thresholds on a model's `logits` for rows of groups `group`: the logit
/// moved by its group's shift (`choose_shift`), then thresholded at 0. Deterministic, but the
/// attribute must be given at prediction time.
pub fn shifted_decisions(logits: &[f32], group: &[u32], shift: &[f32]) -> Vec<f32> {
    logits
        .iter()
        .zip(group)
        .map(|(&l, &g)| (l + shift[g as usize] > 0.0) as u32 as f32)
        .collect()
}

/// Fairness without the attribute: from `folded` (a model with the sensitive columns already
/// dropped by a fold, and perhaps pruned), fairness-penalised fine-tuning with those columns
/// and every weight that is zero in `folded` held at zero; one copy per lambda, trained in one
/// batch.
#[allow(clippy::too_many_arguments)]
pub fn fair_finetune_without(
    dev: &Device,
    shape: &MlpShape,
    folded: &[f32],
    sensitive: &[bool],
    data: &Dataset,
    ft: &FineTune,
    gap: Gap,
    lambdas: &[f32],
) -> Result<Vec<Vec<f32>>> {
    let mut mask = vec![1.0f32; shape.n_params()];
    for l in 0..shape.layers() {
        for i in shape.weight_offset(l)..shape.bias_offset(l) {
            if folded[i] == 0.0 {
                mask[i] = 0.0;
            }
        }
    }
    let d = shape.fan_in(0);
    for o in 0..shape.fan_out(0) {
        for (c, _) in sensitive.iter().enumerate().filter(|(_, s)| **s) {
            mask[shape.weight_offset(0) + o * d + c] = 0.0;
        }
    }
    penalised(dev, shape, folded, Some(&mask), data, ft, gap, lambdas)
}
