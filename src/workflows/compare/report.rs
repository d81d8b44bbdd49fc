//! A comparison written up: `results.json` (settings, summary, the editor against its
//! references, every row), `report.md` (the tables and what the requirement means) and the
//! data of its plots (accuracy against time, per-model accuracy before and after, and a front:
//! accuracy against sparsity or against the fairness gap). Drawing the plots is the app's.

use super::summarise::labels;
use super::{Comparison, Row, Setting};
use crate::requirement::metrics::median;
use crate::requirement::Requirement;
use crate::workflows::edit::search::STEP_GRID;
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
        "zoo": zoo, "test_zoo": c.test_zoo, "dataset": c.dataset, "device": c.device,
        "requirement": c.cfg.requirement, "settings": c.settings,
        "fine_tune_epochs": c.cfg.ft_epochs, "max_drop": c.cfg.max_drop,
        "calibration_rows": c.cfg.calibration_rows,
        "test_models": c.test_models, "references": c.references,
        "summary": c.summary, "choices": c.choices,
        "findings": c.findings, "rows": c.rows,
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

/// Each method's front: its median accuracy at every asked weight sparsity.
fn sparsity_front(c: &Comparison) -> Vec<Series> {
    let mut methods: Vec<String> = Vec::new();
    for r in c
        .rows
        .iter()
        .filter(|r| matches!(r.setting, Some(Setting::Sparsity(_))))
    {
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
                        .filter(|r| &r.method == m && r.setting == Some(Setting::Sparsity(sp)));
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

fn pct(v: f64) -> String {
    format!("{:.0}%", 100.0 * v)
}

fn markdown(c: &Comparison) -> String {
    let mut md = format!(
        "# {}\n\nDevice: {}. Test models: {} from {}. Test split of the data: {} rows. Calibration batch of the data-aware rules: {} training rows. Fine-tuning: {} epochs at each model's own learning rate. Compliant: the requirement met with at most {:.1} points of accuracy lost.\n\n",
        title(c),
        c.device,
        c.test_models,
        c.test_zoo.display(),
        c.test_rows,
        c.cfg.calibration_rows,
        c.cfg.ft_epochs,
        100.0 * c.cfg.max_drop
    );
    if let Some(path) = &c.references {
        md += &format!("The fine-tuned references were read from {}: an earlier run measured them on the same test models, settings and calibration batch (their times are that run's).\n\n", path.display());
    }
    md += "| method | kind | median accuracy | median accuracy change | median agreement | median ms/edit | requirement met | compliant |\n|---|---|---:|---:|---:|---:|---:|---:|\n";
    for s in &c.summary {
        let label = match &s.setting {
            Some(at) => format!("{} @ {}", s.method, at.label()),
            None => s.method.clone(),
        };
        md += &format!(
            "| {label} | {} | {:.4} | {:+.4} | {:.4} | {:.2} | {} | {} |\n",
            s.kind.name(),
            s.median_accuracy,
            s.median_accuracy_change,
            s.median_agreement,
            1e3 * s.median_seconds,
            pct(s.satisfied),
            pct(s.compliant)
        );
    }
    md += &choices(c);
    md += &findings(c);
    md += requirement_note(c.cfg.requirement);
    if c.cfg.without_attribute {
        md += WITHOUT_ATTRIBUTE_NOTE;
    }
    if c.cfg.requirement == Requirement::Prune && !c.cfg.drop.is_empty() {
        md += DROP_WHILE_PRUNING_NOTE;
    }
    md += "\n![accuracy against time per edit](accuracy_vs_time.svg)\n\n![per-model accuracy before and after](per_model.svg)\n";
    md
}

/// The best one-shot rule of each setting, and the candidates it was chosen from.
fn choices(c: &Comparison) -> String {
    let Some(first) = c.choices.first() else {
        return String::new();
    };
    let mut md = format!("\nThe best one-shot rule of each setting, chosen on {} validation models of the zoo (scored on the validation split: the one most often meeting the requirement, for fairness most often compliant, then the most accurate):\n\n| setting | chosen | candidates: met (fairness: compliant), median accuracy |\n|---|---|---|\n", first.val_models);
    for ch in &c.choices {
        let cands: Vec<String> = ch
            .candidates
            .iter()
            .map(|(n, ok, acc)| format!("{n} {} {acc:.4}", pct(*ok)))
            .collect();
        md += &format!(
            "| {} | {} | {} |\n",
            ch.setting.map_or("-".into(), |s| s.label()),
            ch.rule,
            cands.join("; ")
        );
    }
    md
}

/// The editor against the chosen rule, model by model, and against the best reference.
fn findings(c: &Comparison) -> String {
    if c.findings.is_empty() {
        return String::new();
    }
    let mut md = String::from("\nThe editor against the chosen rule, model by model on the test models (accuracy difference editor - rule: median, bootstrap 95% interval, wins/ties/losses), and against the best fine-tuned reference (gap recovered: how far the editor's median accuracy goes from the rule's to the reference's, - where the reference is less than 0.1 point above the rule; speed-up: one reference run's time over one edit's, per model):\n\n| setting | rule | editor - rule | W/T/L | untrained editor - rule | median accuracy: rule / editor / reference | compliant: rule / editor / reference | gap recovered | speed-up (median, lowest) |\n|---|---|---:|---:|---:|---|---|---:|---:|\n");
    for f in &c.findings {
        let p = &f.versus_rule;
        let untrained = f.untrained_versus_rule.as_ref().map_or("-".into(), |u| {
            format!(
                "{:+.4} ({}/{}/{})",
                u.median_difference, u.wins, u.ties, u.losses
            )
        });
        let reference = f.reference.as_ref().map_or("-".into(), |r| r.clone());
        md += &format!(
            "| {} | {} | {:+.4} [{:+.4}, {:+.4}] | {}/{}/{} | {untrained} | {:.4} / {:.4} / {} ({reference}) | {} / {} / {} | {} | {} |\n",
            f.setting.map_or("-".into(), |s| s.label()),
            f.rule,
            p.median_difference,
            p.ci95.0,
            p.ci95.1,
            p.wins,
            p.ties,
            p.losses,
            f.rule_accuracy,
            f.editor_accuracy,
            f.reference_accuracy.map_or("-".into(), |v| format!("{v:.4}")),
            pct(f.rule_compliant),
            pct(f.editor_compliant),
            f.reference_compliant.map_or("-".into(), pct),
            f.gap_recovered.map_or("-".into(), pct),
            match (f.speedup_median, f.speedup_lowest) {
                (Some(m), Some(l)) => format!("{m:.1}x, {l:.1}x"),
                _ => "-".into(),
            },
        );
    }
    if let Some(found) = &c.step_search {
        md += &format!(
            "\nThe editor's step along its edit: {}. Training measured picking it per model, among {} steps from 0 (the rule) to {}, on the training rows: {:+.4} accuracy on the validation split over the edit as trained, on {} validation models.\n",
            match (c.cfg.editor_step, found.on) {
                (Some(s), _) => format!("{s}, as asked (--editor-step)"),
                (None, true) => "picked per model on the training rows (the time per edit includes it)".into(),
                (None, false) => "1, as trained".into(),
            },
            STEP_GRID.len(),
            STEP_GRID[STEP_GRID.len() - 1],
            found.gain,
            found.models
        );
    } else if let Some(s) = c.cfg.editor_step {
        md += &format!("\nThe editor's step along its edit: {s}, as asked (--editor-step).\n");
    }
    if let Some(found) = &c.resolve_mask {
        md += &format!(
            "\nThe editor's kept weights: {}. Training measured keeping only the editor's mask, its kept weights re-solved on the calibration batch as LAMP + reconstruction re-solves LAMP's: {:+.4} accuracy on the validation split over the editor's own values, on {} validation models.\n",
            if found.on {
                "re-solved on its mask (the time per edit includes it)"
            } else {
                "the editor's own"
            },
            found.gain,
            found.models
        );
    }
    if let Some(found) = &c.natural_step {
        md += &format!(
            "\nThe editor's edits: {}. Training measured one natural-gradient step on the calibration batch's labels after each edit: {:+.4} accuracy on the validation split over the edit without it, on {} validation models.\n",
            if found.on {
                "followed by the natural step (the time per edit includes it)"
            } else {
                "as the editor makes them"
            },
            found.gain,
            found.models
        );
    }
    md
}

/// Without the attribute, what fairness then also asks (`CompareConfig::without_attribute`).
const WITHOUT_ATTRIBUTE_NOTE: &str = "\nWithout the attribute: an edit must also leave every first-layer weight out of the sensitive attribute's columns exactly zero, so the edited model cannot read it; the data's groups are read only to measure the gap. The one-shot rules drop the attribute's columns (mean or least-squares fold); a drop-attribute editor starts from one of those folds (the mean fold unless trained otherwise) and picks its lambda on the validation split. What reads the attribute (group thresholds, post-processing, fine-tuning that keeps it) is listed as a reference and cannot meet this requirement.\n";

/// Prune with features removed in the same edit (`--drop`).
const DROP_WHILE_PRUNING_NOTE: &str = "\nFeatures removed in the same edit: every method prunes the model after the least-squares fold of those features' columns (zero in the calibration batch too, so that no re-solve puts weight back on them), and an edit meets the requirement only if their first-layer weights are exactly zero as well. The editor does both in one inference.\n";

fn requirement_note(req: Requirement) -> &'static str {
    match req {
        Requirement::Minimise => "\nRequirement: every first-layer weight of the removed features' input columns is exactly zero, so the model provably cannot use them. The least-squares fold replaces the removed columns by their best linear prediction from the kept ones (fitted on the training rows); the mean fold by their means.\n",
        Requirement::Prune => "\nRequirement: the asked fraction of weights (biases excluded), or of hidden neurons (their weights in and out and their bias), is exactly zero. Wanda, OBS reconstruction and LAMP + reconstruction read a calibration batch of training rows; the reconstructions re-solve each layer's kept weights to reproduce its outputs there (OBS choosing the mask, LAMP + reconstruction keeping LAMP's). With several sparsities, pareto.svg shows each method's accuracy against sparsity.\n",
        Requirement::Fairness => "\nRequirement: the fairness difference (Fairlearn's definition, hard decisions) on the test split is at most the stated bound. Group thresholds move each group's logits by shifts chosen on the validation split from the original's logits; like threshold post-processing (Hardt et al., which also randomises), they leave the network unchanged and need the sensitive attribute at prediction time as a separate input. A shift editor folds such shifts into the weights in one inference; its time includes the choice. \"drop attribute\" fine-tunings remove the attribute's columns (least-squares fold) and fine-tune with the penalty: their models do not read the attribute at all. Each lambda is one point of the trade-off; see pareto.svg.\n\n![accuracy against fairness gap](pareto.svg)\n",
    }
}
