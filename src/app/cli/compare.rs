//! `regop compare --zoo DIR --requirement minimise|prune|fairness [--editor E]`: every baseline
//! (and the editor) on the zoo's held-out test models, timed on one device, with utility (test
//! accuracy, agreement with the original) and requirement satisfaction; writes results.json,
//! report.md and SVG plots. The work is `workflows::compare`; this file reads the flags.

use super::data::DataArgs;
use super::{Global, Printer};
use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::{Error, Result};
use crate::io::data::Dataset;
use crate::requirement::Requirement;
use crate::workflows::compare::report::report;
use crate::workflows::compare::{self, CompareConfig};
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::zoo::load::zoo_data;
use crate::workflows::zoo::read_manifest;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The zoo directory (its test models are compared).
    #[arg(long)]
    pub zoo: PathBuf,
    #[arg(long, value_enum)]
    pub requirement: Requirement,
    /// Features to remove (minimise), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// Target weight sparsity (prune); several, comma-separated, trace each method's front.
    #[arg(long, value_delimiter = ',', default_value = "0.9")]
    pub sparsity: Vec<f64>,
    /// Fairness gap to close (fairness).
    #[arg(long, value_enum, default_value = "eo")]
    pub gap: Gap,
    /// Largest acceptable gap on the test split (fairness).
    #[arg(long, default_value_t = 0.05)]
    pub max_gap: f64,
    /// Penalty weights swept by the fairness-penalised fine-tuning.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub lambdas: Vec<f32>,
    /// Epochs of fine-tuning for the fine-tuning baselines (per round for iterative pruning).
    #[arg(long, default_value_t = 2)]
    pub ft_epochs: usize,
    /// A trained editor (from `regop train`) to compare with the baselines as one more method.
    #[arg(long)]
    pub editor: Option<PathBuf>,
    /// Compare at most this many test models.
    #[arg(long)]
    pub max_models: Option<usize>,
    /// Output directory (default: ZOO/compare-REQUIREMENT).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing report.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

impl Args {
    fn config(&self) -> CompareConfig {
        CompareConfig {
            requirement: self.requirement,
            drop: self.drop.clone(),
            sparsity: self.sparsity.clone(),
            gap: self.gap,
            max_gap: self.max_gap,
            lambdas: self.lambdas.clone(),
            ft_epochs: self.ft_epochs,
            max_models: self.max_models,
        }
    }
}

/// The editor at `path`, checked to edit for `req` on data of `data`'s schema.
pub fn editor_for(
    dev: &Device,
    path: &Path,
    req: Requirement,
    data: &Dataset,
) -> Result<EditorFile> {
    let ef = EditorFile::load(dev, path)?;
    if ef.spec.requirement != req {
        return Err(Error::input(
            path,
            format!("edits for {:?}, not {req:?}", ef.spec.requirement),
        ));
    }
    if ef.schema != data.schema {
        return Err(Error::input(
            path,
            "was trained on other data than this zoo's",
        ));
    }
    Ok(ef)
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let manifest = read_manifest(&a.zoo)?;
    let out = a.out.clone().unwrap_or_else(|| {
        a.zoo
            .join(format!("compare-{:?}", a.requirement).to_lowercase())
    });
    let cfg = a.config();
    cfg.check(&manifest.schema)?;
    if out.join("results.json").exists() && !a.force {
        return Err(Error::input(
            &out,
            "already holds results (pass --force to replace them)",
        ));
    }
    let data = zoo_data(&a.zoo, &manifest, a.data.data.as_deref())?;
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("device: {} ({why})", dev.name()));
    let editor = match &a.editor {
        Some(path) => Some(editor_for(&dev, path, a.requirement, &data)?),
        None => None,
    };
    let tests = manifest
        .models
        .iter()
        .filter(|r| r.split == crate::workflows::zoo::ModelSplit::Test)
        .count()
        .min(a.max_models.unwrap_or(usize::MAX));
    p.status(&format!(
        "{tests} test models, requirement {:?}",
        a.requirement
    ));
    let c = compare::run(
        &dev,
        &a.zoo,
        &manifest,
        &data,
        editor.as_ref(),
        &cfg,
        &mut |done, all, id| p.status(&format!("  model {id} ({done}/{all}) done")),
    )?;
    let r = report(&c, &a.zoo);
    crate::app::report::write(&out, &r)?;
    if p.json {
        p.json(&r.results);
    } else {
        p.result(&format!("{}\nwritten: {}", r.markdown, out.display()));
    }
    Ok(0)
}
