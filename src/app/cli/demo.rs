//! `regop demo`: the whole pipeline on the built-in synthetic data, with no files and no flags.
//! It builds a small zoo, trains the three editors (data minimisation, fairness, pruning),
//! edits the held-out test models with each, compares with the baselines on the same device,
//! and writes one report that links the three comparisons. Every step is the library call the
//! subcommand makes (`zoo`, `train`, `compare`).

use super::{Global, Printer};
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::io::data::loaders::{load, DataOptions, DatasetName};
use crate::io::data::Dataset;
use crate::requirement::{MinimiseBase, PruneScore, Requirement};
use crate::workflows::compare::methods::{
    LAMP_LONG_STEP, LAMP_RECONSTRUCTION, LAMP_STEP, MINIMISE_STARTS, OBS_RECONSTRUCTION,
};
use crate::workflows::compare::Summary;
use crate::workflows::compare::{self, report::report, Choice, CompareConfig, Finding, Models};
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::train::{TrainConfig, Trainer, BEST};
use crate::workflows::zoo::build::BuildOptions;
use crate::workflows::zoo::{Manifest, ZooConfig, FORMAT};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory.
    #[arg(long, default_value = "regop-demo")]
    pub out: PathBuf,
    /// Models in the zoo.
    #[arg(long, default_value_t = 64)]
    pub models: usize,
    /// Training steps per editor.
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    /// Test models compared per requirement.
    #[arg(long, default_value_t = 8)]
    pub test_models: usize,
    /// Replace an earlier demo in --out.
    #[arg(long)]
    pub force: bool,
}

/// The three requirements, each with what the demo asks of it.
fn tasks(test_models: usize) -> [CompareConfig; 3] {
    let base = |r| CompareConfig {
        max_models: Some(test_models),
        ..CompareConfig::new(r)
    };
    [
        CompareConfig {
            drop: vec!["x1".into()],
            ..base(Requirement::Minimise)
        },
        CompareConfig {
            max_gap: 0.05,
            lambdas: vec![1.0, 8.0, 64.0],
            ..base(Requirement::Fairness)
        },
        CompareConfig {
            sparsity: vec![0.8],
            ..base(Requirement::Prune)
        },
    ]
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let t0 = Instant::now();
    if a.out.join("report.md").exists() && !a.force {
        return Err(Error::input(
            &a.out,
            "already holds a demo (pass --force to replace it)",
        ));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("device: {} ({why})", dev.name()));
    let zoo = a.out.join("zoo");
    p.status(&format!(
        "[1/4] a zoo of {} MLPs on the built-in synthetic data -> {}",
        a.models,
        zoo.display()
    ));
    let (manifest, data) = build_zoo(g, p, &dev, &a, &zoo)?;
    let mut md = String::from("# regop demo\n\nThe built-in synthetic data: 18,000 rows (6,000 to train, 2,000 to validate, 10,000 to test); sensitive attribute `group` (`proxy_num` and `proxy_cat` correlate with it); `x1_proxy` a noisy measurement of `x1`, which minimisation removes. ");
    md += &format!(
        "A zoo of {} MLPs; editors trained on its training models for {} steps each; every method below edits the same {} held-out test models, timed on one device. For each requirement the best one-shot rule (no learning) is chosen on the zoo's validation models; the editor is set against it model by model. \"Compliant\": the requirement met with at most 2 points of accuracy lost.\n\n",
        a.models, a.steps, a.test_models
    );
    let mut verdicts = Vec::new();
    for (i, cfg) in tasks(a.test_models).iter().enumerate() {
        let task = format!("{:?}", cfg.requirement).to_lowercase();
        let ed_dir = zoo.join(format!("editor-{task}"));
        p.status(&format!(
            "[{}/4] training the {task} editor ({} steps) -> {}",
            i + 2,
            a.steps,
            ed_dir.display()
        ));
        let models = Models {
            zoo: &zoo,
            manifest: &manifest,
            test_zoo: None,
        };
        let mut train_cfg = TrainConfig {
            steps: a.steps,
            eval_every: 100,
            seed: g.seed,
            ..TrainConfig::new(cfg.requirement)
        };
        // The minimisation and prune editors start from the rule the validation models
        // choose (of those they can start from), so that untrained each is the rule it is
        // judged against.
        if matches!(cfg.requirement, Requirement::Minimise | Requirement::Prune) {
            let chosen = compare::choose_rules(&dev, &models, &data, cfg)?;
            let rule = if cfg.requirement == Requirement::Minimise {
                let (start, rule) = minimise_start(&chosen);
                train_cfg.minimise_base = start;
                rule
            } else {
                let (start, rule) = prune_start(&chosen);
                train_cfg.prune_score = start;
                rule
            };
            p.status(&format!(
                "      it starts from {rule}: of the rules it can start from, the one its validation models choose"
            ));
        }
        let trainer = Trainer::new(&train_cfg, &zoo, &manifest, &data)?;
        super::train::train_with_progress(p, &dev, &trainer, &manifest, &ed_dir, false)?;
        let cmp_dir = a.out.join(format!("compare-{task}"));
        p.status(&format!(
            "      editing {} test models and running the baselines -> {}",
            a.test_models,
            cmp_dir.display()
        ));
        let mut ef = EditorFile::load(&dev, &ed_dir.join(BEST))?;
        ef.attach_data(&data);
        let c = compare::run(&dev, &models, &data, Some(&ef), cfg, &mut |_, _, _| {})?;
        crate::app::report::write(&cmp_dir, &report(&c, &zoo))?;
        md += &section(&task, &c.summary);
        verdicts.extend(c.findings.iter().map(|f| verdict(&task, f)));
    }
    let secs = t0.elapsed().as_secs_f64();
    md += "## What the editors do, against the strongest rule without learning and the best fine-tuned reference\n\n";
    for v in &verdicts {
        md += &format!("- {v}\n");
    }
    md += &format!("\nWhole demo: {secs:.0} s.\n");
    let report = a.out.join("report.md");
    crate::io::write_atomic(&report, md.as_bytes(), true)?;
    for v in &verdicts {
        p.result(v);
    }
    p.result(&format!(
        "demo done in {secs:.0} s; report: {}",
        report.display()
    ));
    Ok(0)
}

/// Where a minimisation editor starts, from the rules chosen on validation models: the chosen
/// fold where an editor can start from it, else the least-squares fold (the default start).
fn minimise_start(chosen: &[Choice]) -> (MinimiseBase, &'static str) {
    let chosen = chosen.first().map(|c| c.rule.as_str());
    MINIMISE_STARTS
        .into_iter()
        .find(|(name, _)| Some(*name) == chosen)
        .map(|(name, base)| (base, name))
        .unwrap_or((MinimiseBase::LeastSquares, MINIMISE_STARTS[1].0))
}

/// Where a prune editor starts, from the rules chosen on validation models: LAMP +
/// reconstruction where the chosen rule is built on it (alone or with a natural step), else
/// OBS reconstruction (the default start).
fn prune_start(chosen: &[Choice]) -> (PruneScore, &'static str) {
    match chosen.first() {
        Some(c) if [LAMP_RECONSTRUCTION, LAMP_STEP, LAMP_LONG_STEP].contains(&c.rule.as_str()) => {
            (PruneScore::LampReconstruction, LAMP_RECONSTRUCTION)
        }
        _ => (PruneScore::Obs, OBS_RECONSTRUCTION),
    }
}

/// The demo's zoo: 64 MLPs of one or two hidden layers of width 16 or 32, trained 4 to 8 epochs
/// on the built-in synthetic data.
fn build_zoo(
    g: &Global,
    p: &Printer,
    dev: &Device,
    a: &Args,
    zoo: &Path,
) -> Result<(Manifest, Dataset)> {
    let options = DataOptions::defaults();
    let data = load(DatasetName::Synthetic, None, &options, g.seed)?;
    let config = ZooConfig {
        widths: vec![16, 32],
        depth: (1, 2),
        epochs: (4, 8),
        ..ZooConfig::new(a.models, g.seed)
    };
    let mut manifest = Manifest {
        format: FORMAT.into(),
        dataset: data.schema.dataset.clone(),
        loader: DatasetName::Synthetic,
        data_options: options,
        data_seed: g.seed,
        schema: data.schema.clone(),
        config,
        shard: None,
        models: Vec::new(),
    };
    let opts = BuildOptions {
        shard: None,
        max_batch: 256,
        resume: false,
        force: a.force,
    };
    super::zoo::build_with_progress(p, dev, &data, &mut manifest, zoo, &opts)?;
    Ok((manifest, data))
}

/// One requirement's table in the demo's report.
fn section(task: &str, summary: &[Summary]) -> String {
    let mut md = format!("## {task}\n\nFull report: [compare-{task}/report.md](compare-{task}/report.md)\n\n| method | kind | median accuracy | median accuracy change | requirement met | compliant | median ms/edit |\n|---|---|---:|---:|---:|---:|---:|\n");
    for r in summary {
        let label = match &r.setting {
            Some(at) => format!("{} @ {}", r.method, at.label()),
            None => r.method.clone(),
        };
        md += &format!(
            "| {label} | {} | {:.4} | {:+.4} | {:.0}% | {:.0}% | {:.2} |\n",
            r.kind.name(),
            r.median_accuracy,
            r.median_accuracy_change,
            100.0 * r.satisfied,
            100.0 * r.compliant,
            1e3 * r.median_seconds,
        );
    }
    md + "\n"
}

/// One line per requirement and setting: the editor, the best one-shot rule (chosen on
/// validation models) and the best fine-tuned reference, whatever they show.
fn verdict(task: &str, f: &Finding) -> String {
    let at = f
        .setting
        .map_or(String::new(), |s| format!(" @ {}", s.label()));
    let p = &f.versus_rule;
    let reference = match (&f.reference, f.reference_accuracy, f.reference_compliant) {
        (Some(name), Some(acc), Some(ok)) => {
            format!(
                "best fine-tuned reference {name}: {acc:.4} ({:.0}% compliant)",
                100.0 * ok
            )
        }
        _ => "no fine-tuned reference".into(),
    };
    format!(
        "{task}{at}: editor {:.4} ({:.0}% compliant); best one-shot rule {}: {:.4} ({:.0}%); {reference}. Editor minus rule per test model: median {:+.4} [{:+.4}, {:+.4}], {} wins, {} ties, {} losses",
        f.editor_accuracy,
        100.0 * f.editor_compliant,
        f.rule,
        f.rule_accuracy,
        100.0 * f.rule_compliant,
        p.median_difference,
        p.ci95.0,
        p.ci95.1,
        p.wins,
        p.ties,
        p.losses
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule chosen on 16 validation models.
    fn choice(rule: &str) -> Choice {
        Choice {
            setting: None,
            rule: rule.into(),
            val_models: 16,
            candidates: Vec::new(),
        }
    }

    /// The start follows the chosen rule where an editor can start from it, else OBS.
    #[test]
    fn the_prune_start_is_the_chosen_reconstruction_rule() {
        for (rule, want) in [
            (LAMP_RECONSTRUCTION, PruneScore::LampReconstruction),
            (LAMP_STEP, PruneScore::LampReconstruction),
            (LAMP_LONG_STEP, PruneScore::LampReconstruction),
            (OBS_RECONSTRUCTION, PruneScore::Obs),
            ("LAMP", PruneScore::Obs),
        ] {
            assert_eq!(prune_start(&[choice(rule)]).0, want, "{rule}");
        }
        assert_eq!(prune_start(&[]).0, PruneScore::Obs);
    }

    #[test]
    fn the_minimise_start_is_the_chosen_fold() {
        for (rule, want) in [
            ("mean fold", MinimiseBase::Mean),
            (
                "least-squares fold + reconstruction",
                MinimiseBase::Reconstruction,
            ),
            (
                "least-squares fold + reconstruction + natural step",
                MinimiseBase::ReconstructionStep,
            ),
            ("closer fold (on calibration rows)", MinimiseBase::Closer),
            ("zero columns", MinimiseBase::LeastSquares),
        ] {
            assert_eq!(minimise_start(&[choice(rule)]).0, want, "{rule}");
        }
        assert_eq!(minimise_start(&[]).0, MinimiseBase::LeastSquares);
    }
}
