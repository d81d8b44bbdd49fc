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
use crate::requirement::Requirement;
use crate::workflows::compare::{self, report::report, CompareConfig, Summary};
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
            drop: vec!["group".into(), "proxy_num".into()],
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
    let mut md = String::from("# regop demo\n\nThe built-in synthetic data (sensitive attribute `group`; `proxy_num` and `proxy_cat` correlate with it). ");
    md += &format!(
        "A zoo of {} MLPs; editors trained on its training models for {} steps each; every method below edits the same {} held-out test models, timed on one device.\n\n",
        a.models, a.steps, a.test_models
    );
    let mut beaten = Vec::new();
    for (i, cfg) in tasks(a.test_models).iter().enumerate() {
        let task = format!("{:?}", cfg.requirement).to_lowercase();
        let ed_dir = zoo.join(format!("editor-{task}"));
        p.status(&format!(
            "[{}/4] training the {task} editor ({} steps) -> {}",
            i + 2,
            a.steps,
            ed_dir.display()
        ));
        let train_cfg = TrainConfig {
            steps: a.steps,
            eval_every: 100,
            seed: g.seed,
            ..TrainConfig::new(cfg.requirement)
        };
        let trainer = Trainer::new(&train_cfg, &zoo, &manifest, &data)?;
        super::train::train_with_progress(p, &dev, &trainer, &manifest, &ed_dir, false)?;
        let cmp_dir = a.out.join(format!("compare-{task}"));
        p.status(&format!(
            "      editing {} test models and running the baselines -> {}",
            a.test_models,
            cmp_dir.display()
        ));
        let ef = EditorFile::load(&dev, &ed_dir.join(BEST))?;
        let c = compare::run(
            &dev,
            &zoo,
            &manifest,
            &data,
            Some(&ef),
            cfg,
            &mut |_, _, _| {},
        )?;
        crate::app::report::write(&cmp_dir, &report(&c, &zoo))?;
        md += &section(&task, &c.summary);
        beaten.extend(against_trivial(&task, &c.summary));
    }
    let secs = t0.elapsed().as_secs_f64();
    md += &format!("Whole demo: {secs:.0} s.\n");
    let report = a.out.join("report.md");
    crate::io::write_atomic(&report, md.as_bytes(), true)?;
    for b in &beaten {
        p.result(b);
    }
    p.result(&format!(
        "demo done in {secs:.0} s; report: {}",
        report.display()
    ));
    Ok(0)
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
    let mut md = format!("## {task}\n\nFull report: [compare-{task}/report.md](compare-{task}/report.md)\n\n| method | median accuracy | median drop | requirement met | median ms/edit |\n|---|---:|---:|---:|---:|\n");
    for r in summary {
        md += &format!(
            "| {} | {:.4} | {:+.4} | {:.0}% | {:.2} |\n",
            r.method,
            r.median_accuracy,
            -r.median_accuracy_drop,
            100.0 * r.satisfied,
            1e3 * r.median_seconds,
        );
    }
    md + "\n"
}

/// The editor's median accuracy against the trivial edit it must beat, where there is one.
fn against_trivial(task: &str, summary: &[Summary]) -> Option<String> {
    let acc = |prefix: &str| {
        summary
            .iter()
            .find(|r| r.method.starts_with(prefix))
            .map(|r| r.median_accuracy)
    };
    let trivial = match task {
        "minimise" => acc("zero columns")?,
        "prune" => acc("global magnitude @")?,
        _ => return None,
    };
    let editor = acc("editor")?;
    Some(format!(
        "{task}: editor {editor:.4} vs trivial edit {trivial:.4} median test accuracy"
    ))
}
