//! A comparison's rows summarised: medians per method (at each setting), the share of models
//! that meet the requirement and that comply; and, per setting, the editor against the best
//! one-shot rule model by model (median difference, wins, ties and losses, a bootstrap 95%
//! interval), and how far it goes from that rule to the best fine-tuned reference.

use super::{Kind, Row, Setting};
use crate::requirement::metrics::median;
use rand::{Rng, SeedableRng};

/// One method at one setting, over the test models.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Summary {
    pub method: String,
    pub kind: Kind,
    pub setting: Option<Setting>,
    pub models: usize,
    pub median_accuracy: f64,
    /// Median of accuracy after minus before.
    pub median_accuracy_change: f64,
    pub median_agreement: f64,
    pub median_seconds: f64,
    pub satisfied: f64,
    /// Share of models that meet the requirement within the allowed accuracy loss.
    pub compliant: f64,
}

/// The labels of `rows` (`Row::label`), in the order the methods ran.
pub fn labels(rows: &[Row]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for r in rows {
        if !order.contains(&r.label()) {
            order.push(r.label());
        }
    }
    order
}

/// One summary line per method and setting, in the order the methods ran.
pub fn summary(rows: &[Row]) -> Vec<Summary> {
    labels(rows)
        .iter()
        .map(|m| {
            let rs: Vec<&Row> = rows.iter().filter(|r| &r.label() == m).collect();
            let f = |g: &dyn Fn(&Row) -> f64| rs.iter().map(|r| g(r)).collect::<Vec<_>>();
            let share = |keep: &dyn Fn(&Row) -> bool| {
                rs.iter().filter(|r| keep(r)).count() as f64 / rs.len() as f64
            };
            Summary {
                method: rs[0].method.clone(),
                kind: rs[0].kind,
                setting: rs[0].setting,
                models: rs.len(),
                median_accuracy: median(&f(&|r| r.accuracy)),
                median_accuracy_change: median(&f(&|r| r.accuracy_change)),
                median_agreement: median(&f(&|r| r.agreement)),
                median_seconds: median(&f(&|r| r.seconds)),
                satisfied: share(&|r| r.satisfied),
                compliant: share(&|r| r.compliant),
            }
        })
        .collect()
}

/// The best one-shot rule of a setting, chosen on validation models.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Choice {
    pub setting: Option<Setting>,
    pub rule: String,
    pub val_models: usize,
    /// Every one-shot rule: (name, share meeting the requirement (fairness: compliant), median
    /// accuracy) on the validation models.
    pub candidates: Vec<(String, f64, f64)>,
}

/// One method against another, model by model: the difference of their test accuracies.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct Paired {
    pub models: usize,
    pub median_difference: f64,
    /// Models where the first is more accurate, as accurate, less accurate.
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Bootstrap 95% interval of the median difference (models resampled).
    pub ci95: (f64, f64),
}

/// Resamples of the bootstrap interval.
const BOOTSTRAP: usize = 2000;

/// `a` against `b` on the models both ran on (accuracy differences a - b).
pub fn paired(a: &[&Row], b: &[&Row]) -> Option<Paired> {
    let d: Vec<f64> = a
        .iter()
        .filter_map(|x| {
            let y = b.iter().find(|y| y.model == x.model)?;
            Some(x.accuracy - y.accuracy)
        })
        .collect();
    if d.is_empty() {
        return None;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xb007);
    let mut medians: Vec<f64> = (0..BOOTSTRAP)
        .map(|_| {
            let s: Vec<f64> = (0..d.len())
                .map(|_| d[rng.random_range(0..d.len())])
                .collect();
            median(&s)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let q = |p: f64| medians[((p * BOOTSTRAP as f64) as usize).min(BOOTSTRAP - 1)];
    Some(Paired {
        models: d.len(),
        median_difference: median(&d),
        wins: d.iter().filter(|&&v| v > 0.0).count(),
        ties: d.iter().filter(|&&v| v == 0.0).count(),
        losses: d.iter().filter(|&&v| v < 0.0).count(),
        ci95: (q(0.025), q(0.975)),
    })
}

/// The editor at one setting against the best one-shot rule (chosen on validation models) and
/// the best fine-tuned reference (the most often compliant on the test models, then the most
/// accurate).
#[derive(serde::Serialize, Clone, Debug)]
pub struct Finding {
    pub setting: Option<Setting>,
    pub editor: String,
    pub rule: String,
    pub reference: Option<String>,
    /// Median test accuracies and shares compliant.
    pub editor_accuracy: f64,
    pub rule_accuracy: f64,
    pub reference_accuracy: Option<f64>,
    pub editor_compliant: f64,
    pub rule_compliant: f64,
    pub reference_compliant: Option<f64>,
    /// Editor minus rule, model by model; and the untrained editor minus rule.
    pub versus_rule: Paired,
    pub untrained_versus_rule: Option<Paired>,
    /// (editor - rule) / (reference - rule), of the median accuracies; none where the
    /// reference is less than `MIN_GAP` more accurate than the rule (no gap worth a share).
    pub gap_recovered: Option<f64>,
    /// One reference run's time over one edit's, per model: median and lowest.
    pub speedup_median: Option<f64>,
    pub speedup_lowest: Option<f64>,
}

/// The smallest gap in median accuracy, from the rule to the best fine-tuned reference, that
/// a share of it is reported for (0.1 point: below it the share is noise).
pub const MIN_GAP: f64 = 0.001;

/// The rows of one method (the first whose name `pick` takes, among `kind`) at `setting`.
fn method_rows<'r>(
    rows: &'r [Row],
    setting: Option<Setting>,
    pick: &dyn Fn(&Row) -> bool,
) -> Vec<&'r Row> {
    let first = rows.iter().find(|r| r.setting == setting && pick(r));
    match first {
        Some(f) => rows
            .iter()
            .filter(|r| r.setting == setting && r.method == f.method)
            .collect(),
        None => Vec::new(),
    }
}

fn medians(rs: &[&Row]) -> (f64, f64) {
    let acc = median(&rs.iter().map(|r| r.accuracy).collect::<Vec<_>>());
    let ok = rs.iter().filter(|r| r.compliant).count() as f64 / rs.len().max(1) as f64;
    (acc, ok)
}

/// A finding per setting where the editor ran.
pub fn findings(rows: &[Row], choices: &[Choice]) -> Vec<Finding> {
    choices
        .iter()
        .filter_map(|c| {
            let at = c.setting;
            let editor = method_rows(rows, at, &|r| r.kind == Kind::Editor);
            let rule = method_rows(rows, at, &|r| r.method == c.rule);
            if editor.is_empty() || rule.is_empty() {
                return None;
            }
            let untrained = method_rows(rows, at, &|r| r.kind == Kind::UntrainedEditor);
            let reference = best_reference(rows, at);
            let ((ea, ec), (ra, rc)) = (medians(&editor), medians(&rule));
            let refm = (!reference.is_empty()).then(|| medians(&reference));
            let ratios: Vec<f64> = editor
                .iter()
                .filter_map(|e| {
                    let r = reference.iter().find(|r| r.model == e.model)?;
                    Some(r.seconds / e.seconds.max(1e-9))
                })
                .collect();
            let gap = refm.and_then(|(fa, _)| (fa - ra >= MIN_GAP).then(|| (ea - ra) / (fa - ra)));
            Some(Finding {
                setting: at,
                editor: editor[0].method.clone(),
                rule: c.rule.clone(),
                reference: reference.first().map(|r| r.method.clone()),
                editor_accuracy: ea,
                rule_accuracy: ra,
                reference_accuracy: refm.map(|m| m.0),
                editor_compliant: ec,
                rule_compliant: rc,
                reference_compliant: refm.map(|m| m.1),
                versus_rule: paired(&editor, &rule)?,
                untrained_versus_rule: paired(&untrained, &rule),
                gap_recovered: gap,
                speedup_median: (!ratios.is_empty()).then(|| median(&ratios)),
                speedup_lowest: (!ratios.is_empty())
                    .then(|| ratios.iter().copied().fold(f64::INFINITY, f64::min)),
            })
        })
        .collect()
}

/// The fine-tuned method at `setting` most often compliant on the test models, then the most
/// accurate (the earlier listed on ties); its rows.
fn best_reference(rows: &[Row], setting: Option<Setting>) -> Vec<&Row> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.setting == setting && r.kind == Kind::FineTuned)
    {
        if !names.contains(&r.method.as_str()) {
            names.push(&r.method);
        }
    }
    let of = |n: &str| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.setting == setting && r.method == n)
            .collect()
    };
    let best = names.iter().enumerate().max_by(|(i, a), (j, b)| {
        let ((aa, ac), (ba, bc)) = (medians(&of(a)), medians(&of(b)));
        ac.total_cmp(&bc).then(aa.total_cmp(&ba)).then(j.cmp(i))
    });
    best.map_or(Vec::new(), |(_, n)| of(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: usize, method: &str, accuracy: f64) -> Row {
        Row {
            model,
            method: method.into(),
            kind: Kind::OneShot,
            setting: None,
            seconds: 1.0,
            accuracy,
            original_accuracy: 0.9,
            accuracy_change: accuracy - 0.9,
            agreement: 1.0,
            requirement_value: 0.0,
            satisfied: true,
            compliant: true,
        }
    }

    /// Paired statistics from hand-made rows: differences matched by model, not by order.
    #[test]
    fn paired_statistics_match_models_and_count_wins() {
        let a = [row(1, "a", 0.80), row(2, "a", 0.70), row(3, "a", 0.75)];
        let b = [row(3, "b", 0.70), row(2, "b", 0.70), row(1, "b", 0.90)];
        let (a, b): (Vec<&Row>, Vec<&Row>) = (a.iter().collect(), b.iter().collect());
        let p = paired(&a, &b).unwrap();
        // Differences: model 1 -0.10, model 2 0, model 3 +0.05.
        assert_eq!((p.wins, p.ties, p.losses), (1, 1, 1));
        assert!((p.median_difference - 0.0).abs() < 1e-12);
        assert!(p.ci95.0 <= p.median_difference && p.median_difference <= p.ci95.1);
        assert!(p.ci95.0 >= -0.10 - 1e-12 && p.ci95.1 <= 0.05 + 1e-12);
    }
}
