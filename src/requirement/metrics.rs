//! The metrics auditors use, with Fairlearn's and scikit-learn's definitions: accuracy, balanced
//! accuracy, ROC AUC, demographic-parity difference (max minus min selection rate over groups),
//! equalised-odds difference (the larger of the TPR gap and the FPR gap over groups); a rate whose
//! denominator is empty in some group counts as 0 there, as in Fairlearn. Also feature dependence
//! and sparsity. Predictions are hard 0/1 decisions (logit > 0) unless a function says scores.

use crate::engine::kernels::fairness::Gap;
use crate::networks::mlp::MlpShape;

/// Fraction of `pred` equal to `y`.
pub fn accuracy(y: &[f32], pred: &[f32]) -> f64 {
    y.iter().zip(pred).filter(|(a, b)| a == b).count() as f64 / y.len().max(1) as f64
}

fn rate(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Mean of the true-positive and true-negative rates.
pub fn balanced_accuracy(y: &[f32], pred: &[f32]) -> f64 {
    let (mut tp, mut p, mut tn, mut n) = (0, 0, 0, 0);
    for (&t, &q) in y.iter().zip(pred) {
        if t > 0.5 {
            p += 1;
            tp += (q > 0.5) as usize;
        } else {
            n += 1;
            tn += (q <= 0.5) as usize;
        }
    }
    let classes = (p > 0) as usize + (n > 0) as usize;
    (rate(tp, p) + rate(tn, n)) / classes.max(1) as f64
}

/// Area under the ROC curve from scores (Mann-Whitney U with average ranks for ties).
/// None when only one class is present.
pub fn roc_auc(y: &[f32], score: &[f32]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut ranks = vec![0.0f64; y.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    let pos = y.iter().filter(|&&t| t > 0.5).count();
    let neg = y.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let rank_sum: f64 = (0..y.len()).filter(|&k| y[k] > 0.5).map(|k| ranks[k]).sum();
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

/// Per-group counts for fairness rates; only groups present in `group` take part.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupCounts {
    pub n: usize,
    pub selected: usize,
    pub pos: usize,
    pub tp: usize,
    pub neg: usize,
    pub fp: usize,
}

impl GroupCounts {
    /// Counts of one group's rows: (label, decision) pairs.
    pub fn of(rows: impl Iterator<Item = (bool, bool)>) -> GroupCounts {
        let mut g = GroupCounts::default();
        for (label, sel) in rows {
            g.n += 1;
            g.selected += sel as usize;
            if label {
                g.pos += 1;
                g.tp += sel as usize;
            } else {
                g.neg += 1;
                g.fp += sel as usize;
            }
        }
        g
    }
}

/// The equalised-odds difference of groups' counts (groups without rows are skipped).
pub fn equalized_odds_of(counts: &[GroupCounts]) -> f64 {
    let c = counts.iter().filter(|g| g.n > 0);
    let tpr = spread(c.clone().map(|g| rate(g.tp, g.pos)));
    let fpr = spread(c.map(|g| rate(g.fp, g.neg)));
    tpr.max(fpr)
}

/// The demographic-parity difference of groups' counts (groups without rows are skipped).
pub fn demographic_parity_of(counts: &[GroupCounts]) -> f64 {
    spread(
        counts
            .iter()
            .filter(|g| g.n > 0)
            .map(|g| rate(g.selected, g.n)),
    )
}

/// The accuracy of groups' counts taken together.
pub fn accuracy_of(counts: &[GroupCounts]) -> f64 {
    let n: usize = counts.iter().map(|g| g.n).sum();
    let right: usize = counts.iter().map(|g| g.tp + g.neg - g.fp).sum();
    rate(right, n)
}

fn group_counts(y: &[f32], pred: &[f32], group: &[u32]) -> Vec<GroupCounts> {
    let k = group.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut c: Vec<GroupCounts> = (0..k)
        .map(|_| GroupCounts {
            n: 0,
            selected: 0,
            pos: 0,
            tp: 0,
            neg: 0,
            fp: 0,
        })
        .collect();
    for i in 0..y.len() {
        let g = &mut c[group[i] as usize];
        let sel = pred[i] > 0.5;
        g.n += 1;
        g.selected += sel as usize;
        if y[i] > 0.5 {
            g.pos += 1;
            g.tp += sel as usize;
        } else {
            g.neg += 1;
            g.fp += sel as usize;
        }
    }
    c.retain(|g| g.n > 0);
    c
}

fn spread(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
}

/// Selection rate of each group present, in group-index order (absent groups skipped).
pub fn selection_rates(pred: &[f32], group: &[u32]) -> Vec<f64> {
    group_counts(pred, pred, group)
        .iter()
        .map(|g| rate(g.selected, g.n))
        .collect()
}

/// Max minus min over groups of the selection rate P(pred = 1 | group).
pub fn demographic_parity_difference(pred: &[f32], group: &[u32]) -> f64 {
    demographic_parity_of(&group_counts(pred, pred, group))
}

/// The larger of the true-positive-rate gap and the false-positive-rate gap over groups.
pub fn equalized_odds_difference(y: &[f32], pred: &[f32], group: &[u32]) -> f64 {
    equalized_odds_of(&group_counts(y, pred, group))
}

/// The fairness gap `gap` names, by Fairlearn's definition: the demographic-parity or the
/// equalised-odds difference of decisions `pred` on rows with labels `y` and groups `group`.
pub fn fairness_gap(gap: Gap, y: &[f32], pred: &[f32], group: &[u32]) -> f64 {
    match gap {
        Gap::Eo => equalized_odds_difference(y, pred, group),
        Gap::Dp => demographic_parity_difference(pred, group),
    }
}

/// `fairness_gap` from per-group counts.
pub fn fairness_gap_of(gap: Gap, counts: &[GroupCounts]) -> f64 {
    match gap {
        Gap::Eo => equalized_odds_of(counts),
        Gap::Dp => demographic_parity_of(counts),
    }
}

/// Hard decisions from binary logits.
pub fn decisions(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&s| (s > 0.0) as u32 as f32).collect()
}

/// Predicted classes of logits [rows, outputs]: the sign of a binary logit (1 above 0), the
/// argmax of several (the first of equal ones).
pub fn predictions(logits: &[f32], outputs: usize) -> Vec<f32> {
    if outputs <= 1 {
        return decisions(logits);
    }
    logits
        .chunks(outputs)
        .map(|row| {
            let best = (0..outputs).fold(0, |b, k| if row[k] > row[b] { k } else { b });
            best as f32
        })
        .collect()
}

/// Everything `regop eval` and the zoo manifest report for a classifier on one split (the
/// binary measures stay at their defaults for a multi-class one).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub rows: usize,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub roc_auc: Option<f64>,
    pub positive_rate: f64,
    pub dp_difference: f64,
    pub eo_difference: f64,
}

pub fn report(y: &[f32], logits: &[f32], group: &[u32], outputs: usize) -> Report {
    let pred = predictions(logits, outputs);
    if outputs > 1 {
        return Report {
            rows: y.len(),
            accuracy: accuracy(y, &pred),
            ..Report::default()
        };
    }
    Report {
        rows: y.len(),
        accuracy: accuracy(y, &pred),
        balanced_accuracy: balanced_accuracy(y, &pred),
        roc_auc: roc_auc(y, logits),
        positive_rate: pred.iter().map(|&p| p as f64).sum::<f64>() / pred.len().max(1) as f64,
        dp_difference: demographic_parity_difference(&pred, group),
        eo_difference: equalized_odds_difference(y, &pred, group),
    }
}

/// Accuracy of always predicting the most frequent class of `y` (the floor any model must beat).
pub fn majority_accuracy(y: &[f32]) -> f64 {
    let mut counts: std::collections::BTreeMap<u32, usize> = Default::default();
    for &v in y {
        *counts.entry(v as u32).or_default() += 1;
    }
    counts.values().max().copied().unwrap_or(0) as f64 / y.len().max(1) as f64
}

/// Fraction of the weights (not biases) of a model that are exactly zero.
pub fn weight_sparsity(shape: &MlpShape, params: &[f32]) -> f64 {
    let (mut zero, mut all) = (0usize, 0usize);
    for l in 0..shape.layers() {
        let w = &params[shape.weight_offset(l)..shape.bias_offset(l)];
        zero += w.iter().filter(|&&v| v == 0.0).count();
        all += w.len();
    }
    zero as f64 / all as f64
}

/// Fraction of hidden neurons removed: incoming weights, bias and outgoing weights all zero.
pub fn neuron_sparsity(shape: &MlpShape, params: &[f32]) -> f64 {
    let (mut removed, mut all) = (0usize, 0usize);
    for l in 0..shape.layers() - 1 {
        let (fi, fo, next) = (shape.fan_in(l), shape.fan_out(l), shape.fan_out(l + 1));
        for j in 0..fo {
            let zero = |i: usize| params[i] == 0.0;
            let incoming = (0..fi).all(|i| zero(shape.weight_offset(l) + j * fi + i));
            let outgoing = (0..next).all(|k| zero(shape.weight_offset(l + 1) + k * fo + j));
            removed += (incoming && outgoing && zero(shape.bias_offset(l) + j)) as usize;
            all += 1;
        }
    }
    removed as f64 / all.max(1) as f64
}

/// The median of `v` (the mean of the middle two for an even count; NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Fraction of exactly-zero values.
pub fn sparsity(weights: &[f32]) -> f64 {
    weights.iter().filter(|&&w| w == 0.0).count() as f64 / weights.len().max(1) as f64
}
