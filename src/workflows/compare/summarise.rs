//! A comparison's rows summarised: medians per method (at each setting), the share of models
//! that meet the requirement and that comply, and the editor against its references.

use super::Row;
use crate::requirement::metrics::median;
use crate::requirement::verify::compliant;
use crate::requirement::Requirement;

/// One method at one setting, over the test models.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Summary {
    pub method: String,
    pub models: usize,
    pub median_accuracy: f64,
    pub median_accuracy_drop: f64,
    pub median_agreement: f64,
    pub median_seconds: f64,
    pub satisfied: f64,
    /// Share of models that meet the requirement with an accuracy drop of at most
    /// `MAX_DROP` (2 points).
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
                method: m.clone(),
                models: rs.len(),
                median_accuracy: median(&f(&|r| r.accuracy)),
                median_accuracy_drop: median(&f(&|r| r.original_accuracy - r.accuracy)),
                median_agreement: median(&f(&|r| r.agreement)),
                median_seconds: median(&f(&|r| r.seconds)),
                satisfied: share(&|r| r.satisfied),
                compliant: share(&|r| compliant(r.satisfied, r.original_accuracy, r.accuracy)),
            }
        })
        .collect()
}

/// The editor against a baseline its requirement is judged by: how much of the gap between
/// the trivial edit and the reference its median accuracy recovers, and how many times faster
/// one edit is than one reference run on the same model (median and lowest over models).
#[derive(serde::Serialize, Clone, Debug)]
pub struct EditorVersus {
    pub setting: Option<f64>,
    pub reference: String,
    pub reference_accuracy: f64,
    pub editor_accuracy: f64,
    /// The trivial edit and its median accuracy, where the gap is defined.
    pub trivial: Option<(String, f64)>,
    pub gap_recovered: Option<f64>,
    pub speedup_median: f64,
    pub speedup_lowest: f64,
}

/// `EditorVersus` for the rows at `setting`: the editor's rows against those `reference` picks
/// (per model the fastest of them, when several methods qualify, as the fair fine-tunings at
/// each lambda do), with the gap from `trivial` where given. None without editor or reference
/// rows.
fn editor_versus(
    rows: &[Row],
    setting: Option<f64>,
    reference: (&str, &dyn Fn(&str) -> bool),
    trivial: Option<&dyn Fn(&str) -> bool>,
) -> Option<EditorVersus> {
    let at = |pick: &dyn Fn(&str) -> bool| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.setting == setting && pick(&r.method))
            .collect()
    };
    let editor = at(&|m: &str| m.starts_with("editor"));
    let refs = at(reference.1);
    if editor.is_empty() || refs.is_empty() {
        return None;
    }
    let acc = |rs: &[&Row]| median(&rs.iter().map(|r| r.accuracy).collect::<Vec<_>>());
    let ratios: Vec<f64> = editor
        .iter()
        .filter_map(|e| {
            let fastest = refs
                .iter()
                .filter(|r| r.model == e.model)
                .map(|r| r.seconds)
                .reduce(f64::min)?;
            Some(fastest / e.seconds.max(1e-9))
        })
        .collect();
    let (editor_accuracy, reference_accuracy) = (acc(&editor), acc(&refs));
    let trivial = trivial.and_then(|pick| {
        let rs = at(pick);
        Some((rs.first()?.method.clone(), acc(&rs)))
    });
    Some(EditorVersus {
        setting,
        reference: reference.0.to_string(),
        reference_accuracy,
        editor_accuracy,
        gap_recovered: trivial
            .as_ref()
            .map(|(_, t)| (editor_accuracy - t) / (reference_accuracy - t)),
        trivial,
        speedup_median: median(&ratios),
        speedup_lowest: ratios.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

/// What the editor is judged by, per requirement: minimisation against zeroing and retraining
/// (and zero + fine-tune for speed), pruning against global magnitude and magnitude +
/// fine-tune at each sparsity, fairness against one fair fine-tuning.
pub fn editor_findings(req: Requirement, rows: &[Row], sparsities: &[f64]) -> Vec<EditorVersus> {
    let is = |name: &'static str| move |m: &str| m == name;
    match req {
        Requirement::Minimise => [
            editor_versus(
                rows,
                None,
                ("retrain without", &is("retrain without")),
                Some(&is("zero columns")),
            ),
            editor_versus(
                rows,
                None,
                ("zero + fine-tune", &|m: &str| {
                    m.starts_with("zero + fine-tune")
                }),
                None,
            ),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Requirement::Prune => sparsities
            .iter()
            .filter_map(|&sp| {
                editor_versus(
                    rows,
                    Some(sp),
                    (
                        "global magnitude + fine-tune",
                        &is("global magnitude + fine-tune"),
                    ),
                    Some(&is("global magnitude")),
                )
            })
            .collect(),
        Requirement::Fairness => editor_versus(
            rows,
            None,
            ("fair fine-tune (the fastest lambda)", &|m: &str| {
                m.starts_with("fair fine-tune")
            }),
            None,
        )
        .into_iter()
        .collect(),
    }
}
