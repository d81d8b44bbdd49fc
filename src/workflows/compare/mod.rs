//! Judging edits: every method on held-out test models, timed on one device, checked against
//! the requirement, and the editor set against the strongest rules that need no learning. A
//! pipeline in four steps, one file each: `methods` (what runs on a model: one-shot rules,
//! fine-tuned references, the editor trained and untrained), `evaluate` (one model's rows, and
//! the choice of the best one-shot rule on validation models), `summarise` (medians, and the
//! editor against that rule model by model), `report` (results.json, report.md, plot data).
//!
//! Nothing measured on a test model chooses anything: the best one-shot rule is chosen on
//! validation models, scored on the data's validation split; test models may come from a
//! zoo of their own (`--test-zoo`), built with another seed and never trained on.

pub mod evaluate;
pub mod methods;
pub mod report;
pub mod summarise;

use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::{Error, Result};
use crate::io::data::{Dataset, Schema};
use crate::requirement::{Requirement, MAX_DROP};
use crate::workflows::edit::checkpoint::Decided;
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::zoo::{Manifest, ModelRecord, ModelSplit};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
pub use summarise::{Choice, Finding, Paired, Summary};

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareConfig {
    pub requirement: Requirement,
    /// Features to remove (minimise).
    pub drop: Vec<String>,
    /// Target weight sparsities (prune); several trace each method's front.
    pub sparsity: Vec<f64>,
    /// Shares of hidden neurons to remove (prune, whole neurons).
    pub neurons: Vec<f64>,
    /// The fairness gap and its bound on the test split (fairness).
    pub gap: Gap,
    pub max_gap: f64,
    /// Fairness without the attribute: an edit must also stop reading the sensitive
    /// attribute's columns; methods that read it become references.
    pub without_attribute: bool,
    /// Fairness without the attribute, pruned to this weight sparsity in the same edit.
    pub fair_sparsity: Option<f64>,
    /// Penalty weights of the fairness-penalised fine-tunings.
    pub lambdas: Vec<f32>,
    /// Epochs of every fine-tuning baseline (per round for iterative pruning).
    pub ft_epochs: usize,
    /// Compare at most this many test models.
    pub max_models: Option<usize>,
    /// Validation models the best one-shot rule is chosen on (drawn across architectures).
    pub val_models: usize,
    /// Most accuracy an edit may lose and still comply.
    pub max_drop: f64,
    /// Leave out the fine-tuned references (the one-shot rules and the editor alone: much
    /// faster, and no gap recovered).
    pub no_fine_tune: bool,
    /// Rows of the calibration batch the data-aware rules (and the editor) read.
    pub calibration_rows: usize,
    /// Judge the editor at this step along its edit (0: the rule it starts from; 1: the edit
    /// as trained) instead of its own choice (minimise and prune editors).
    pub editor_step: Option<f32>,
}

impl CompareConfig {
    /// The defaults of `regop compare`.
    pub fn new(requirement: Requirement) -> CompareConfig {
        CompareConfig {
            requirement,
            drop: Vec::new(),
            sparsity: vec![0.9],
            neurons: Vec::new(),
            gap: Gap::Eo,
            max_gap: 0.05,
            without_attribute: false,
            fair_sparsity: None,
            lambdas: vec![1.0, 4.0, 16.0, 64.0],
            ft_epochs: 2,
            max_models: None,
            val_models: 16,
            max_drop: MAX_DROP,
            no_fine_tune: false,
            calibration_rows: crate::io::data::CALIBRATION_ROWS,
            editor_step: None,
        }
    }

    /// Refuse settings that cannot be compared on data of `schema`.
    pub fn check(&self, schema: &Schema) -> Result<()> {
        let share = |v: &[f64]| v.iter().all(|s| (0.0..1.0).contains(s));
        if self.calibration_rows == 0 {
            return Err(Error::Usage("--calibration-rows: at least 1 row".into()));
        }
        match self.requirement {
            Requirement::Minimise if self.drop.is_empty() => {
                return Err(Error::Usage(
                    "--requirement minimise needs --drop FEATURE[,FEATURE]".into(),
                ))
            }
            Requirement::Prune if self.sparsity.is_empty() && self.neurons.is_empty() => {
                return Err(Error::Usage(
                    "--requirement prune needs --sparsity S or --neurons F".into(),
                ))
            }
            Requirement::Prune if !share(&self.sparsity) || !share(&self.neurons) => {
                return Err(Error::Usage(
                    "--sparsity and --neurons must be in [0, 1)".into(),
                ))
            }
            Requirement::Fairness if schema.sensitive.is_none() || !schema.classes.is_empty() => {
                return Err(Error::Usage(
                    "fairness needs binary data with a sensitive attribute".into(),
                ))
            }
            Requirement::Fairness
                if self.sparsity.len() > 1 && self.fair_sparsity.is_some()
                    || !share(&self.fair_sparsity.into_iter().collect::<Vec<_>>()) =>
            {
                return Err(Error::Usage(
                    "fairness prunes to one --sparsity in [0, 1)".into(),
                ))
            }
            _ if self.without_attribute && self.requirement != Requirement::Fairness => {
                return Err(Error::Usage(
                    "--without-attribute applies to --requirement fairness".into(),
                ))
            }
            Requirement::Fairness if self.editor_step.is_some() => {
                return Err(Error::Usage(
                    "--editor-step applies to minimise and prune editors; fairness editors search a lambda or shifts".into(),
                ))
            }
            _ if self.editor_step.is_some_and(|s| !(s >= 0.0 && s.is_finite())) => {
                return Err(Error::Usage(format!(
                    "--editor-step must be a finite step of at least 0, not {}",
                    self.editor_step.unwrap()
                )))
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.max_drop) {
            return Err(Error::Usage("--max-drop must be in [0, 1]".into()));
        }
        if !self.drop.is_empty() && self.requirement == Requirement::Fairness {
            return Err(Error::Usage(
                "--drop applies to minimise, and to prune (features removed in the same edit)"
                    .into(),
            ));
        }
        if self.requirement != Requirement::Fairness {
            schema
                .features_named(&self.drop)
                .map_err(|m| Error::Usage(format!("--drop: {m}")))?;
        }
        Ok(())
    }

    /// The settings a prune comparison runs at (none for the other requirements).
    pub fn settings(&self) -> Vec<Option<Setting>> {
        match self.requirement {
            Requirement::Prune => self
                .sparsity
                .iter()
                .map(|&s| Some(Setting::Sparsity(s)))
                .chain(self.neurons.iter().map(|&f| Some(Setting::Neurons(f))))
                .collect(),
            _ => vec![None],
        }
    }

    /// The settings in words, for titles.
    pub fn describe(&self, schema: &Schema) -> String {
        match self.requirement {
            Requirement::Minimise => format!("remove {}", self.drop.join(", ")),
            Requirement::Prune => {
                let at = self
                    .settings()
                    .iter()
                    .flatten()
                    .map(Setting::label)
                    .collect::<Vec<_>>()
                    .join(", ");
                match self.drop.is_empty() {
                    true => at,
                    false => format!("{at}; remove {} in the same edit", self.drop.join(", ")),
                }
            }
            Requirement::Fairness => {
                format!(
                    "{} difference <= {} on '{}'{}",
                    self.gap.short_name(),
                    self.max_gap,
                    schema.sensitive.clone().unwrap_or_default(),
                    if self.without_attribute {
                        ", without reading it"
                    } else {
                        ""
                    }
                ) + &self
                    .fair_sparsity
                    .map_or(String::new(), |s| format!(", at weight sparsity {s}"))
            }
        }
    }
}

/// What a method is, for judging the editor: a rule that needs no learning, a reference that
/// trains (fine-tuning, retraining), the editor, the editor untrained (the rule it starts from
/// plus nothing learned), or a point of reference that edits nothing (the original model,
/// post-processing rules on the unchanged model).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    OneShot,
    FineTuned,
    Editor,
    UntrainedEditor,
    Reference,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::OneShot => "one-shot rule",
            Kind::FineTuned => "fine-tuned",
            Kind::Editor => "editor",
            Kind::UntrainedEditor => "editor, untrained",
            Kind::Reference => "reference",
        }
    }
}

/// Where a prune method runs: a weight sparsity or a share of hidden neurons removed.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Setting {
    Sparsity(f64),
    Neurons(f64),
}

impl Setting {
    pub fn label(&self) -> String {
        match self {
            Setting::Sparsity(s) => format!("sparsity {s}"),
            Setting::Neurons(f) => format!("neurons {f}"),
        }
    }
}

/// One method on one model.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct Row {
    pub model: usize,
    pub method: String,
    pub kind: Kind,
    pub setting: Option<Setting>,
    pub seconds: f64,
    pub accuracy: f64,
    pub original_accuracy: f64,
    /// Accuracy after minus before (negative: the edit lost accuracy).
    pub accuracy_change: f64,
    pub agreement: f64,
    /// The requirement's measure (`verify::Target::measure`).
    pub requirement_value: f64,
    pub satisfied: bool,
    /// Requirement met with at most `max_drop` of accuracy lost.
    pub compliant: bool,
}

impl Row {
    /// The method at its setting, as one line of the summary ("LAMP @ sparsity 0.9").
    pub fn label(&self) -> String {
        match &self.setting {
            Some(s) => format!("{} @ {}", self.method, s.label()),
            None => self.method.clone(),
        }
    }
}

/// A finished comparison.
pub struct Comparison {
    pub cfg: CompareConfig,
    pub dataset: String,
    pub device: String,
    /// `CompareConfig::describe`.
    pub settings: String,
    /// Where the test models came from, and how many.
    pub test_zoo: PathBuf,
    pub test_models: usize,
    pub test_rows: usize,
    /// The best one-shot rule of every setting, chosen on validation models.
    pub choices: Vec<Choice>,
    pub rows: Vec<Row>,
    pub summary: Vec<Summary>,
    pub findings: Vec<Finding>,
    /// What the editor's training found of the step search, of re-solving its mask's kept
    /// weights and of a natural step after its edit (`Decided`), where it measured them.
    pub step_search: Option<Decided>,
    pub resolve_mask: Option<Decided>,
    pub natural_step: Option<Decided>,
    /// Where the fine-tuned references were read from, when an earlier comparison measured
    /// them (`References`).
    pub references: Option<PathBuf>,
}

/// The models a comparison runs on: validation models of the zoo the editor was trained on,
/// and test models, from that zoo or from a sealed one.
pub struct Models<'a> {
    pub zoo: &'a Path,
    pub manifest: &'a Manifest,
    /// A zoo of the same data built with another seed: all of its models are test models.
    pub test_zoo: Option<(&'a Path, &'a Manifest)>,
}

impl Models<'_> {
    /// The test models, with the directory each file is in.
    fn tests(&self, max: Option<usize>) -> Vec<(&Path, &ModelRecord)> {
        let mut out: Vec<(&Path, &ModelRecord)> = match self.test_zoo {
            Some((dir, m)) => m.models.iter().map(|r| (dir, r)).collect(),
            None => self
                .manifest
                .models
                .iter()
                .filter(|r| r.split == ModelSplit::Test)
                .map(|r| (self.zoo, r))
                .collect(),
        };
        if let Some(m) = max {
            out.truncate(m);
        }
        out
    }

    /// Up to `n` validation models, drawn at random across architectures (seeded: every
    /// comparison of one zoo chooses on the same models).
    fn validation(&self, n: usize) -> Vec<&ModelRecord> {
        let mut val: Vec<&ModelRecord> = self
            .manifest
            .models
            .iter()
            .filter(|r| r.split == ModelSplit::Val)
            .collect();
        val.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0x0a1d));
        val.truncate(n);
        val
    }
}

/// The best one-shot rule of every setting of `cfg`, chosen on the zoo's validation models as
/// `run` chooses it, without editing any test model.
pub fn choose_rules(
    dev: &Device,
    models: &Models,
    data: &Dataset,
    cfg: &CompareConfig,
) -> Result<Vec<Choice>> {
    cfg.check(&data.schema)?;
    let ctx = evaluate::Context::new(dev, data, None, None, cfg)?;
    ctx.choose_rules(models.zoo, &models.validation(cfg.val_models))
}

/// Run every method on the test models, and the editor when given (with its untrained self);
/// first choose the best one-shot rule on validation models. `progress` hears (models done,
/// models in all, model id) of the test models.
pub fn run(
    dev: &Device,
    models: &Models,
    data: &Dataset,
    editor: Option<&EditorFile>,
    cfg: &CompareConfig,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<Comparison> {
    cfg.check(&data.schema)?;
    if cfg.fair_sparsity.is_some() && !cfg.without_attribute {
        return Err(Error::Usage(
            "--sparsity with fairness prunes in the same edit as the attribute is dropped: it needs --without-attribute (or a drop-attribute editor)".into(),
        ));
    }
    if let Some((dir, m)) = models.test_zoo {
        let same = m.schema == models.manifest.schema
            && m.loader == models.manifest.loader
            && m.data_seed == models.manifest.data_seed;
        if !same {
            return Err(Error::input(
                dir,
                "is a zoo of other data (schema, loader or data seed differ from the zoo's)",
            ));
        }
    }
    let tests = models.tests(cfg.max_models);
    if tests.is_empty() {
        return Err(Error::input(models.zoo, "has no test models"));
    }
    let untrained = editor.map(|ef| ef.untrained(dev)).transpose()?;
    let ctx = evaluate::Context::new(dev, data, editor, untrained.as_ref(), cfg)?;
    let choices = ctx.choose_rules(models.zoo, &models.validation(cfg.val_models))?;
    let mut rows = Vec::new();
    for (k, (dir, rec)) in tests.iter().enumerate() {
        rows.extend(ctx.model_rows(dir, rec, &data.test, false)?);
        progress(k + 1, tests.len(), rec.id);
    }
    Ok(Comparison {
        cfg: cfg.clone(),
        dataset: models.manifest.dataset.clone(),
        device: dev.name(),
        settings: cfg.describe(&data.schema),
        test_zoo: models.test_zoo.map_or(models.zoo, |(d, _)| d).to_path_buf(),
        test_models: tests.len(),
        test_rows: data.test.rows(),
        summary: summarise::summary(&rows),
        findings: summarise::findings(&rows, &choices),
        step_search: editor.and_then(|ef| ef.step_search),
        resolve_mask: editor.and_then(|ef| ef.resolve_mask),
        natural_step: editor.and_then(|ef| ef.natural_step),
        references: None,
        choices,
        rows,
    })
}

/// Fine-tuned references an earlier comparison measured (its results.json): an editor is judged
/// against them without fine-tuning every test model again. Only references of the same
/// dataset, requirement, settings, fine-tuning, calibration batch and test models are taken.
pub struct References {
    pub path: PathBuf,
    rows: Vec<Row>,
}

/// What `References::read` takes from a results.json.
#[derive(serde::Deserialize)]
struct Earlier {
    dataset: String,
    requirement: Requirement,
    settings: String,
    fine_tune_epochs: usize,
    calibration_rows: usize,
    max_drop: f64,
    rows: Vec<Row>,
}

impl References {
    /// The fine-tuned rows of the comparison written to `path` (its results.json or its
    /// directory), refused (naming the file and what differs) unless it compared `dataset` as
    /// `cfg` asks on data of `schema`.
    pub fn read(
        path: &Path,
        dataset: &str,
        cfg: &CompareConfig,
        schema: &Schema,
    ) -> Result<References> {
        // The comparison's directory stands for its results.json.
        let file = path.join("results.json");
        let path = if path.is_dir() { file.as_path() } else { path };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let e: Earlier = serde_json::from_slice(&bytes).map_err(|err| {
            Error::input(
                path,
                format!("is not the results.json of a comparison ({err})"),
            )
        })?;
        let name = |r: Requirement| format!("{r:?}").to_lowercase();
        let asked = [
            ("dataset", e.dataset, dataset.to_string()),
            ("requirement", name(e.requirement), name(cfg.requirement)),
            ("settings", e.settings, cfg.describe(schema)),
            (
                "--ft-epochs",
                e.fine_tune_epochs.to_string(),
                cfg.ft_epochs.to_string(),
            ),
            (
                "--calibration-rows",
                e.calibration_rows.to_string(),
                cfg.calibration_rows.to_string(),
            ),
            (
                "--max-drop",
                e.max_drop.to_string(),
                cfg.max_drop.to_string(),
            ),
        ];
        if let Some((what, theirs, ours)) = asked.into_iter().find(|(_, t, o)| t != o) {
            return Err(Error::input(
                path,
                format!("holds references measured with {what} {theirs}, not {ours}"),
            ));
        }
        let rows: Vec<Row> = e
            .rows
            .into_iter()
            .filter(|r| r.kind == Kind::FineTuned)
            .collect();
        if rows.is_empty() {
            return Err(Error::input(
                path,
                "holds no fine-tuned references (its comparison ran with --no-fine-tune)",
            ));
        }
        Ok(References {
            path: path.to_path_buf(),
            rows,
        })
    }

    /// `c` with these references among its rows (each model's after its one-shot rules), its
    /// summary and findings recomputed. Refused unless they cover every test model of `c`,
    /// each as accurate before any edit as it is here (the same file on the same data); those
    /// of models `c` did not compare are left out.
    pub fn join(self, mut c: Comparison) -> Result<Comparison> {
        let mut models: Vec<(usize, f64)> = Vec::new();
        for r in &c.rows {
            if !models.iter().any(|(id, _)| *id == r.model) {
                models.push((r.model, r.original_accuracy));
            }
        }
        let other = |id: usize| {
            Error::input(
                &self.path,
                format!("holds references measured on other test models (model {id} differs or is missing)"),
            )
        };
        for r in &self.rows {
            let ours = models.iter().find(|(id, _)| *id == r.model);
            if ours.is_some_and(|&(_, before)| before != r.original_accuracy) {
                return Err(other(r.model));
            }
        }
        let mut rows = Vec::with_capacity(c.rows.len() + self.rows.len());
        for &(id, _) in &models {
            let mine: Vec<&Row> = c.rows.iter().filter(|r| r.model == id).collect();
            let theirs: Vec<&Row> = self.rows.iter().filter(|r| r.model == id).collect();
            if theirs.is_empty() {
                return Err(other(id));
            }
            let at = mine
                .iter()
                .rposition(|r| r.kind == Kind::OneShot)
                .map_or(0, |k| k + 1);
            rows.extend(mine[..at].iter().map(|r| (*r).clone()));
            rows.extend(theirs.into_iter().cloned());
            rows.extend(mine[at..].iter().map(|r| (*r).clone()));
        }
        c.summary = summarise::summary(&rows);
        c.findings = summarise::findings(&rows, &c.choices);
        c.rows = rows;
        c.references = Some(self.path);
        Ok(c)
    }
}
