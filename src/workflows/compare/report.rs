//! A comparison written up: `results.json` (settings, summary, the editor against its
//! references, every row), `report.md` (the tables and what the requirement means) and the
//! data of its plots (accuracy against time, per-model accuracy before and after, and a front:
//! accuracy against sparsity or against the fairness gap). Drawing the plots is the app's.

use super::summarise::labels;
use super::{Comparison, Row};
use crate::requirement::metrics::median;
use crate::requirement::Requirement;
use std::path::Path;

/// One named set of points of a plot.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Join the points in order (a front), instead of a plain scatter.
    pub connect: bool,
}

/// A scatter plot to be drawn into `file`.
pub struct Plot {
    pub file: &'static str,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// x on a base-10 log axis.
    pub log_x: bool,
    pub series: Vec<Series>,
}

/// What a comparison writes: results.json, report.md and its plots.
pub struct Report {
    pub results: serde_json::Value,
    pub markdown: String,
    pub plots: Vec<Plot>,
}

/// The report of `c`, run on the zoo in `zoo`.
pub fn report(c: &Comparison, zoo: &Path) -> Report {
    let results = serde_json::json!({
        "zoo": zoo, "dataset": c.dataset, "device": c.device, "requirement": c.cfg.requirement,
        "settings": c.settings, "fine_tune_epochs": c.cfg.ft_epochs, "test_models": c.test_models,
        "summary": c.summary, "editor_versus": c.findings, "rows": c.rows,
    });
    Report {
        results,
        markdown: markdown(c),
        plots: plots(c),
    }
}

fn title(c: &Comparison) -> String {
    format!(
        "{}: {} ({} test models)",
        c.dataset, c.settings, c.test_models
    )
}

/// One series per method and setting, points from `f`.
fn by_label(rows: &[Row], f: &dyn Fn(&Row) -> (f64, f64)) -> Vec<Series> {
    labels(rows)
        .iter()
        .map(|m| Series {
            name: m.clone(),
            points: rows.iter().filter(|r| &r.label() == m).map(f).collect(),
            connect: false,
        })
        .collect()
}

fn plots(c: &Comparison) -> Vec<Plot> {
    let plot = |file, x: &str, y: &str, log_x, series| Plot {
        file,
        title: title(c),
        x_label: x.into(),
        y_label: y.into(),
        log_x,
        series,
    };
    let mut out = vec![plot(
        "accuracy_vs_time.svg",
        "seconds per edit (log scale)",
        "test accuracy",
        true,
        by_label(&c.rows, &|r| (r.seconds.max(1e-6), r.accuracy)),
    )];
    let front_y = "test accuracy (median)";
    if c.cfg.requirement == Requirement::Prune && c.cfg.sparsity.len() > 1 {
        out.push(plot(
            "pareto.svg",
            "weight sparsity",
            front_y,
            false,
            sparsity_front(c),
        ));
    }
    if c.cfg.requirement == Requirement::Fairness {
        let x = format!(
            "{} difference on the test split (median over models)",
            c.cfg.gap.short_name()
        );
        out.push(plot("pareto.svg", &x, front_y, false, fairness_front(c)));
    }
    out.push(plot(
        "per_model.svg",
        "original test accuracy",
        "edited test accuracy",
        false,
        by_label(&c.rows, &|r| (r.original_accuracy, r.accuracy)),
    ));
    out
}

/// Each method's front: its median accuracy at every asked sparsity.
fn sparsity_front(c: &Comparison) -> Vec<Series> {
    let mut methods: Vec<String> = Vec::new();
    for r in &c.rows {
        if !methods.contains(&r.method) {
            methods.push(r.method.clone());
        }
    }
    methods
        .iter()
        .map(|m| {
            let mut points: Vec<(f64, f64)> = c
                .cfg
                .sparsity
                .iter()
                .map(|&sp| {
                    let at = c
                        .rows
                        .iter()
                        .filter(|r| &r.method == m && r.setting == Some(sp));
                    (sp, median(&at.map(|r| r.accuracy).collect::<Vec<_>>()))
                })
                .collect();
            points.sort_by(|x, y| x.0.total_cmp(&y.0));
            Series {
                name: m.clone(),
                points,
                connect: true,
            }
        })
        .collect()
}

/// The trade-off: each method's median (gap, accuracy) over the test models.
fn fairness_front(c: &Comparison) -> Vec<Series> {
    labels(&c.rows)
        .iter()
        .map(|m| {
            let rs: Vec<&Row> = c.rows.iter().filter(|r| &r.label() == m).collect();
            let med =
                |f: &dyn Fn(&Row) -> f64| median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            Series {
                name: m.clone(),
                points: vec![(med(&|r| r.requirement_value), med(&|r| r.accuracy))],
                connect: false,
            }
        })
        .collect()
}

fn markdown(c: &Comparison) -> String {
    let mut md = format!("# {}\n\nDevice: {}. Test split of the data: {} rows. Fine-tuning: {} epochs at each model's own learning rate.\n\n", title(c), c.device, c.test_rows, c.cfg.ft_epochs);
    md += "| method | median accuracy | median drop | median agreement | median ms/edit | requirement met | compliant (met, drop <= 2 pts) |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for s in &c.summary {
        md += &format!(
            "| {} | {:.4} | {:+.4} | {:.4} | {:.2} | {:.0}% | {:.0}% |\n",
            s.method,
            s.median_accuracy,
            -s.median_accuracy_drop,
            s.median_agreement,
            1e3 * s.median_seconds,
            100.0 * s.satisfied,
            100.0 * s.compliant
        );
    }
    if !c.findings.is_empty() {
        md += "\nThe editor against its references (gap recovered: how far the editor's median accuracy goes from the trivial edit's to the reference's; speed-up: one reference run's time over one edit's, per model, same device):\n\n| reference | setting | gap recovered | speed-up, median | speed-up, lowest |\n|---|---|---:|---:|---:|\n";
        for f in &c.findings {
            let gap = match (&f.trivial, f.gap_recovered) {
                (Some((name, t)), Some(g)) => format!(
                    "{:.0}% ({name} {t:.4} -> editor {:.4}; reference {:.4})",
                    100.0 * g,
                    f.editor_accuracy,
                    f.reference_accuracy
                ),
                _ => "-".into(),
            };
            md += &format!(
                "| {} | {} | {gap} | {:.1}x | {:.1}x |\n",
                f.reference,
                f.setting.map_or("-".into(), |s| format!("sparsity {s}")),
                f.speedup_median,
                f.speedup_lowest
            );
        }
    }
    md += match c.cfg.requirement {
        Requirement::Minimise => "\nRequirement: every first-layer weight of the removed features' input columns is exactly zero, so the model provably cannot use them.\n",
        Requirement::Prune => "\nRequirement: the asked fraction of weights (biases excluded) is exactly zero. With several sparsities, pareto.svg shows each method's accuracy against sparsity.\n",
        Requirement::Fairness => "\nRequirement: the fairness difference (Fairlearn's definition, hard decisions) on the test split is at most the stated bound. Each lambda of the penalised fine-tuning is one point of its trade-off; see pareto.svg. Threshold post-processing (Hardt et al.) leaves the network unchanged and adds group-specific thresholds fitted on the validation split: it needs the sensitive attribute at prediction time as a separate input and, for equalised odds, randomises its decisions; an edited network needs neither. Its time is fitting plus predicting the test split. A shift editor picks deterministic group thresholds on the validation split from the original's logits and folds them into the weights in one inference; its time includes that choice.\n\n![accuracy against fairness gap](pareto.svg)\n",
    };
    md += "\n![accuracy against time per edit](accuracy_vs_time.svg)\n\n![per-model accuracy before and after](per_model.svg)\n";
    md
}
