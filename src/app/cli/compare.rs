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
use crate::requirement::{PruneScore, Requirement};
use crate::workflows::compare::report::report;
use crate::workflows::compare::{self, CompareConfig, Models, References};
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::zoo::load::zoo_data;
use crate::workflows::zoo::read_manifest;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The zoo directory: its validation models choose the best one-shot rule, and (without
    /// --test-zoo) its test models are compared.
    #[arg(long)]
    pub zoo: PathBuf,
    /// A sealed zoo of the same data (built with `zoo --seed S --data-seed D`, another model
    /// seed): every one of its models is a test model.
    #[arg(long)]
    pub test_zoo: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub requirement: Requirement,
    /// Features to remove (minimise), comma-separated; with prune, features removed in the same
    /// edit (every method prunes the model with them folded by least squares; the editor must
    /// have been trained with --also-drop).
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// Target weight sparsity (prune; 0.9 unless --neurons is given); several, comma-separated,
    /// trace each method's front. With fairness without the attribute, one sparsity every
    /// method also prunes to (an editor trained with --also-prune).
    #[arg(long, value_delimiter = ',')]
    pub sparsity: Vec<f64>,
    /// Share of hidden neurons to remove (prune, whole neurons), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub neurons: Vec<f64>,
    /// Fairness gap to close (fairness).
    #[arg(long, value_enum, default_value = "eo")]
    pub gap: Gap,
    /// Largest acceptable gap on the test split (fairness).
    #[arg(long, default_value_t = 0.05)]
    pub max_gap: f64,
    /// Fairness without the attribute (fairness): an edit must also stop reading the sensitive
    /// attribute's columns, and methods that read it are listed as references. Implied by an
    /// editor trained with `--fair-target drop-attribute`.
    #[arg(long)]
    pub without_attribute: bool,
    /// Penalty weights swept by the fairness-penalised fine-tuning.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub lambdas: Vec<f32>,
    /// Epochs of fine-tuning for the fine-tuning baselines (per round for iterative pruning).
    #[arg(long, default_value_t = 2)]
    pub ft_epochs: usize,
    /// A trained editor (from `regop train`) to compare with the baselines as one more method.
    #[arg(long)]
    pub editor: Option<PathBuf>,
    /// Judge the editor at this step along its edit (0: the rule it starts from; 1: the edit as
    /// trained) instead of its own choice (minimise and prune editors; needs --editor).
    #[arg(long, requires = "editor")]
    pub editor_step: Option<f32>,
    /// Compare at most this many test models.
    #[arg(long)]
    pub max_models: Option<usize>,
    /// Validation models the best one-shot rule is chosen on.
    #[arg(long, default_value_t = 16)]
    pub val_models: usize,
    /// Most accuracy (a share: 0.02 = 2 points) an edit may lose and still comply.
    #[arg(long, default_value_t = crate::requirement::MAX_DROP)]
    pub max_drop: f64,
    /// Leave out the fine-tuned references: the one-shot rules and the editor alone (much
    /// faster; no gap recovered unless --references gives them).
    #[arg(long)]
    pub no_fine_tune: bool,
    /// The results.json (or its directory) of an earlier `compare` of the same test models and
    /// settings, run with fine-tuning: its fine-tuned references stand in for this run's, which
    /// fine-tunes nothing (several editors judged against one set of references, each with
    /// its gap recovered).
    #[arg(long)]
    pub references: Option<PathBuf>,
    /// Rows of the calibration batch the data-aware rules read (default: the editor's, else
    /// 512). Give every method the same batch: it must be the editor's.
    #[arg(long)]
    pub calibration_rows: Option<usize>,
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
        let default = CompareConfig::new(self.requirement);
        let sparsity = match (self.sparsity.is_empty(), self.neurons.is_empty()) {
            (true, true) => default.sparsity,
            _ => self.sparsity.clone(),
        };
        CompareConfig {
            requirement: self.requirement,
            drop: self.drop.clone(),
            sparsity,
            neurons: self.neurons.clone(),
            gap: self.gap,
            max_gap: self.max_gap,
            without_attribute: self.without_attribute,
            fair_sparsity: match self.requirement {
                Requirement::Fairness => self.sparsity.first().copied(),
                _ => None,
            },
            lambdas: self.lambdas.clone(),
            ft_epochs: self.ft_epochs,
            max_models: self.max_models,
            val_models: self.val_models,
            max_drop: self.max_drop,
            no_fine_tune: self.no_fine_tune,
            calibration_rows: self.calibration_rows.unwrap_or(default.calibration_rows),
            editor_step: self.editor_step,
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
    let mut ef = EditorFile::load(dev, path)?;
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
    ef.attach_data(data);
    Ok(ef)
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let manifest = read_manifest(&a.zoo)?;
    let out = a.out.clone().unwrap_or_else(|| {
        a.zoo
            .join(format!("compare-{:?}", a.requirement).to_lowercase())
    });
    let mut cfg = a.config();
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
    if let (Some(ef), Some(path)) = (&editor, &a.editor) {
        match a.calibration_rows {
            Some(rows) if rows != ef.calibration_rows => {
                return Err(Error::input(
                    path,
                    format!(
                        "reads calibration batches of {} rows, not --calibration-rows {rows}",
                        ef.calibration_rows
                    ),
                ))
            }
            _ => cfg.calibration_rows = ef.calibration_rows,
        }
        if cfg.requirement == Requirement::Fairness
            && ef.spec.also_prunes != cfg.fair_sparsity.is_some()
        {
            return Err(Error::input(
                path,
                if ef.spec.also_prunes {
                    "also prunes: give --sparsity S"
                } else {
                    "does not prune: --sparsity needs an editor trained with --also-prune"
                },
            ));
        }
        if cfg.requirement == Requirement::Prune && !cfg.drop.is_empty() && !ef.spec.also_drops {
            return Err(Error::input(
                path,
                "was not trained to drop features while pruning (train one with --also-drop)",
            ));
        }
        match (ef.spec.drops_attribute(), cfg.without_attribute) {
            (true, false) => {
                p.status("the editor drops the attribute: judging fairness without reading it");
                cfg.without_attribute = true;
            }
            (false, true) => {
                return Err(Error::input(
                    path,
                    "reads the sensitive attribute, so it cannot be judged --without-attribute \
                     (train one with --fair-target drop-attribute)",
                ))
            }
            _ => {}
        }
    }
    if let Some(ef) = &editor {
        // The sparsities (shares of neurons) the editor is judged at, flagged where it was not
        // trained.
        let asked = match (cfg.requirement, ef.spec.prune_score) {
            (Requirement::Fairness, _) => cfg.fair_sparsity.into_iter().collect(),
            (_, PruneScore::Neurons) => cfg.neurons.clone(),
            _ => cfg.sparsity.clone(),
        };
        for line in asked.iter().filter_map(|&s| ef.sparsity_outside(s as f32)) {
            p.warn(&line);
        }
    }
    let test_zoo = match &a.test_zoo {
        Some(dir) => Some((dir.as_path(), read_manifest(dir)?)),
        None => None,
    };
    let models = Models {
        zoo: &a.zoo,
        manifest: &manifest,
        test_zoo: test_zoo.as_ref().map(|(d, m)| (*d, m)),
    };
    let references = match &a.references {
        Some(path) => {
            cfg.no_fine_tune = true;
            let r = References::read(path, &manifest.dataset, &cfg, &manifest.schema)?;
            p.status(&format!(
                "fine-tuned references read from {}",
                path.display()
            ));
            Some(r)
        }
        None => None,
    };
    p.status(&format!(
        "requirement {:?}: choosing the best one-shot rule on up to {} validation models",
        a.requirement, a.val_models
    ));
    let c = compare::run(
        &dev,
        &models,
        &data,
        editor.as_ref(),
        &cfg,
        &mut |done, all, id| p.status(&format!("  test model {id} ({done}/{all}) done")),
    )?;
    let c = match references {
        Some(r) => r.join(c)?,
        None => c,
    };
    let r = report(&c, &a.zoo);
    crate::app::report::write(&out, &r)?;
    if p.json {
        p.json(&r.results);
    } else {
        p.result(&format!("{}\nwritten: {}", r.markdown, out.display()));
    }
    Ok(0)
}
