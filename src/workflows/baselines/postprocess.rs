//! Threshold post-processing by group (Hardt, Price and Srebro, 2016): a decision rule on top
//! of an unchanged model that takes the sensitive attribute at prediction time and, for
//! equalised odds, randomises. An edited network needs neither; reports say so.
//!
//! Equalised odds: each group's achievable (FPR, TPR) region is the convex hull of its ROC curve
//! on the validation split (mixing two thresholds reaches any point between them; mixing with a
//! random classifier moves a point down to the diagonal). The common operating point maximises
//! expected accuracy on t(f) = min over groups of the hull. Demographic parity: per-group score
//! quantiles give every group the original overall selection rate.

use rand::{Rng, SeedableRng};

/// One group's rule: accept if score > hi; at (lo, hi] accept with probability p_mid; below lo
/// never; then, with probability 1 - keep, replace the decision by a coin of bias `coin`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupRule {
    pub lo: f32,
    pub hi: f32,
    pub p_mid: f64,
    pub keep: f64,
    pub coin: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ThresholdRule {
    pub rules: Vec<GroupRule>,
    pub seed: u64,
}

impl ThresholdRule {
    /// Decisions for scores with their groups; randomness from the rule's seed (reproducible).
    pub fn apply(&self, score: &[f32], group: &[u32]) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        score
            .iter()
            .zip(group)
            .map(|(&s, &g)| {
                let r = &self.rules[g as usize];
                let mut d = if s > r.hi {
                    true
                } else if s > r.lo {
                    rng.random_bool(r.p_mid.clamp(0.0, 1.0))
                } else {
                    false
                };
                if !rng.random_bool(r.keep.clamp(0.0, 1.0)) {
                    d = rng.random_bool(r.coin.clamp(0.0, 1.0));
                }
                d as u32 as f32
            })
            .collect()
    }
}

/// Upper ROC hull of one group: points (fpr, tpr, threshold) from (0,0) to (1,1); accepting
/// scores > threshold reaches the point.
fn roc_hull(score: &[f32], y: &[f32]) -> Vec<(f64, f64, f32)> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let pos = y.iter().filter(|&&v| v > 0.5).count().max(1) as f64;
    let neg = (y.len() as f64 - y.iter().filter(|&&v| v > 0.5).count() as f64).max(1.0);
    let mut pts = vec![(0.0, 0.0, f32::INFINITY)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let s = score[idx[i]];
        while i < idx.len() && score[idx[i]] == s {
            if y[idx[i]] > 0.5 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        let next = if i < idx.len() {
            score[idx[i]]
        } else {
            f32::NEG_INFINITY
        };
        pts.push((fp / neg, tp / pos, next));
    }
    // Upper convex hull (monotone chain).
    let mut hull: Vec<(f64, f64, f32)> = Vec::new();
    for p in pts {
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            if (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    hull
}

/// Hull value at fpr f and the segment it falls in.
fn hull_at(h: &[(f64, f64, f32)], f: f64) -> (f64, usize) {
    for k in 1..h.len() {
        if f <= h[k].0 + 1e-12 {
            let (a, b) = (h[k - 1], h[k]);
            let w = if b.0 > a.0 {
                (f - a.0) / (b.0 - a.0)
            } else {
                1.0
            };
            return (a.1 + w * (b.1 - a.1), k);
        }
    }
    (1.0, h.len() - 1)
}

/// Equalised-odds post-processing fitted on (score, y, group) of a validation split.
pub fn fit_equalized_odds(
    score: &[f32],
    y: &[f32],
    group: &[u32],
    groups: usize,
    seed: u64,
) -> ThresholdRule {
    let per: Vec<(Vec<f32>, Vec<f32>)> = (0..groups as u32)
        .map(|g| {
            let i: Vec<usize> = (0..score.len()).filter(|&r| group[r] == g).collect();
            (
                i.iter().map(|&r| score[r]).collect(),
                i.iter().map(|&r| y[r]).collect(),
            )
        })
        .collect();
    let hulls: Vec<_> = per.iter().map(|(s, yy)| roc_hull(s, yy)).collect();
    let p_pos = y.iter().filter(|&&v| v > 0.5).count() as f64 / y.len().max(1) as f64;
    let mut best = (f64::MIN, 0.0, 0.0);
    for step in 0..=2000 {
        let f = step as f64 / 2000.0;
        let t = hulls
            .iter()
            .zip(&per)
            .filter(|(_, (s, _))| !s.is_empty())
            .map(|(h, _)| hull_at(h, f).0)
            .fold(1.0, f64::min)
            .max(f);
        let acc = p_pos * t + (1.0 - p_pos) * (1.0 - f);
        if acc > best.0 {
            best = (acc, f, t);
        }
    }
    let (_, f, t) = best;
    let rules = hulls
        .iter()
        .map(|h| {
            let (top, k) = hull_at(h, f);
            let (a, b) = (h[k - 1], h[k]);
            // Between thresholds b.2 (lower, reaches b) and a.2 (higher, reaches a).
            let w = if b.0 > a.0 {
                (f - a.0) / (b.0 - a.0)
            } else {
                1.0
            };
            // Mix down from the hull to the target TPR with a coin of bias f (the diagonal).
            let keep = if top - f > 1e-12 {
                ((t - f) / (top - f)).clamp(0.0, 1.0)
            } else {
                1.0
            };
            GroupRule {
                lo: b.2,
                hi: a.2,
                p_mid: w,
                keep,
                coin: f,
            }
        })
        .collect();
    ThresholdRule { rules, seed }
}

/// Demographic-parity post-processing: per-group thresholds at the quantile that gives every
/// group the overall selection rate of `score > 0` on the validation split.
pub fn fit_demographic_parity(
    score: &[f32],
    group: &[u32],
    groups: usize,
    seed: u64,
) -> ThresholdRule {
    let rate = score.iter().filter(|&&s| s > 0.0).count() as f64 / score.len().max(1) as f64;
    let rules = (0..groups as u32)
        .map(|g| {
            let mut s: Vec<f32> = (0..score.len())
                .filter(|&r| group[r] == g)
                .map(|r| score[r])
                .collect();
            s.sort_by(|a, b| b.total_cmp(a));
            let k = (rate * s.len() as f64).round() as usize;
            let hi = if k == 0 {
                f32::INFINITY
            } else if k >= s.len() {
                f32::NEG_INFINITY
            } else {
                (s[k - 1] + s[k]) / 2.0
            };
            GroupRule {
                lo: hi,
                hi,
                p_mid: 0.0,
                keep: 1.0,
                coin: 0.0,
            }
        })
        .collect();
    ThresholdRule { rules, seed }
}
