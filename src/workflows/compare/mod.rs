//! Comparing edits on a zoo's held-out test models: every baseline (and, given one, the editor)
//! run on each model, timed on one device, checked against the requirement, summarised per
//! method and written up. A pipeline in four steps, one file each: `methods` (what runs on a
//! model), `evaluate` (one model's rows), `summarise` (medians, the editor against its
//! references), `report` (results.json, report.md and the plots' data).

pub mod evaluate;
pub mod methods;
pub mod report;
pub mod summarise;

use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::{Error, Result};
use crate::io::data::{Dataset, Schema};
use crate::requirement::Requirement;
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::zoo::{Manifest, ModelSplit};
use std::path::Path;
pub use summarise::{EditorVersus, Summary};

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareConfig {
    pub requirement: Requirement,
    /// Features to remove (minimise).
    pub drop: Vec<String>,
    /// Target sparsities (prune); several trace each method's front.
    pub sparsity: Vec<f64>,
    /// The fairness gap and its bound on the test split (fairness).
    pub gap: Gap,
    pub max_gap: f64,
    /// Penalty weights of the fairness-penalised fine-tunings.
    pub lambdas: Vec<f32>,
    /// Epochs of every fine-tuning baseline (per round for iterative pruning).
    pub ft_epochs: usize,
    /// Compare at most this many test models.
    pub max_models: Option<usize>,
}

impl CompareConfig {
    /// The defaults of `regop compare`.
    pub fn new(requirement: Requirement) -> CompareConfig {
        CompareConfig {
            requirement,
            drop: Vec::new(),
            sparsity: vec![0.9],
            gap: Gap::Eo,
            max_gap: 0.05,
            lambdas: vec![1.0, 4.0, 16.0, 64.0],
            ft_epochs: 2,
            max_models: None,
        }
    }

    /// Refuse settings that cannot be compared on data of `schema`.
    pub fn check(&self, schema: &Schema) -> Result<()> {
        match self.requirement {
            Requirement::Minimise if self.drop.is_empty() => {
                return Err(Error::Usage(
                    "--requirement minimise needs --drop FEATURE[,FEATURE]".into(),
                ))
            }
            Requirement::Prune if self.sparsity.iter().any(|s| !(0.0..1.0).contains(s)) => {
                return Err(Error::Usage("--sparsity must be in [0, 1)".into()))
            }
            _ => {}
        }
        if self.requirement == Requirement::Minimise {
            schema
                .features_named(&self.drop)
                .map_err(|m| Error::Usage(format!("--drop: {m}")))?;
        }
        Ok(())
    }

    /// The settings in words, for titles.
    pub fn settings(&self, schema: &Schema) -> String {
        match self.requirement {
            Requirement::Minimise => format!("remove {}", self.drop.join(", ")),
            Requirement::Prune => format!(
                "sparsity {}",
                self.sparsity
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Requirement::Fairness => format!(
                "{} difference <= {} on '{}'",
                self.gap.short_name(),
                self.max_gap,
                schema.sensitive.clone().unwrap_or_default()
            ),
        }
    }
}

/// One method on one test model.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Row {
    pub model: usize,
    pub method: String,
    /// The method's target where it has one (prune: the asked sparsity).
    pub setting: Option<f64>,
    pub seconds: f64,
    pub accuracy: f64,
    pub original_accuracy: f64,
    pub agreement: f64,
    /// minimise: largest first-layer column norm among removed columns (0 = provably unused);
    /// prune: achieved weight sparsity; fairness: the gap on the test split.
    pub requirement_value: f64,
    pub satisfied: bool,
}

impl Row {
    /// The method at its setting, as one line of the summary ("LAMP @ sparsity 0.9").
    pub fn label(&self) -> String {
        match self.setting {
            Some(v) => format!("{} @ sparsity {v}", self.method),
            None => self.method.clone(),
        }
    }
}

/// A finished comparison.
pub struct Comparison {
    pub cfg: CompareConfig,
    pub dataset: String,
    pub device: String,
    /// `CompareConfig::settings`.
    pub settings: String,
    pub test_models: usize,
    pub test_rows: usize,
    pub rows: Vec<Row>,
    pub summary: Vec<Summary>,
    pub findings: Vec<EditorVersus>,
}

/// Run every method on the test models of the zoo in `zoo` (its `manifest` and `data`), and the
/// editor when given; `progress` hears (models done, models in all, model id).
pub fn run(
    dev: &Device,
    zoo: &Path,
    manifest: &Manifest,
    data: &Dataset,
    editor: Option<&EditorFile>,
    cfg: &CompareConfig,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<Comparison> {
    cfg.check(&data.schema)?;
    if let Some(ef) = editor {
        if ef.spec.requirement != cfg.requirement {
            return Err(Error::Usage(format!(
                "the editor edits for {:?}, not {:?}",
                ef.spec.requirement, cfg.requirement
            )));
        }
    }
    let mut tests: Vec<_> = manifest
        .models
        .iter()
        .filter(|r| r.split == ModelSplit::Test)
        .collect();
    if let Some(m) = cfg.max_models {
        tests.truncate(m);
    }
    if tests.is_empty() {
        return Err(Error::input(zoo, "has no test models"));
    }
    let ctx = evaluate::Context::new(dev, data, editor, cfg)?;
    let mut rows = Vec::new();
    for (k, rec) in tests.iter().enumerate() {
        rows.extend(ctx.model_rows(zoo, rec)?);
        progress(k + 1, tests.len(), rec.id);
    }
    Ok(Comparison {
        cfg: cfg.clone(),
        dataset: manifest.dataset.clone(),
        device: dev.name(),
        settings: cfg.settings(&data.schema),
        test_models: tests.len(),
        test_rows: data.test.rows(),
        summary: summarise::summary(&rows),
        findings: summarise::editor_findings(cfg.requirement, &rows, &cfg.sparsity),
        rows,
    })
}
