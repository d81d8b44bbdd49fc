//! Training an editor on a zoo. Each step draws one architecture (in proportion to its training
//! models), a batch of its models, a requirement for each (features to remove, lambda, or a
//! sparsity) and a batch of data rows; runs the `TrainBatch` step; and takes an AdamW step.
//! Every step's draws come from a generator seeded by (seed, step), so a run resumed from a
//! checkpoint continues exactly as an uninterrupted one. Validation runs the same loss on fixed
//! validation models, asks and rows; the best checkpoint is kept.

use crate::engine::device::Device;
use crate::engine::kernels::adam::Adam;
use crate::engine::kernels::fairness::{Gap, MAX_GROUPS};
use crate::error::{Error, Result};
use crate::io::data::{Dataset, Schema};
use crate::networks::editor::{Editor, EditorConfig};
use crate::networks::graph::PosIds;
use crate::networks::mlp::MlpShape;
use crate::requirement::metrics::{accuracy, fairness_gap, predictions};
use crate::requirement::verify::{compliant, Target};
use crate::requirement::MAX_DROP;
use crate::requirement::{
    Ask, Columns, EditSpec, FairTarget, MinimiseBase, PruneScore, Requirement,
};
use crate::requirement::{COND_DIM, FAIR_SHARPNESS, MAX_SHIFT_GROUPS, SEARCH_MARGIN, SHIFT_RANGE};
use crate::workflows::baselines::natural_step::natural_step;
use crate::workflows::edit::checkpoint::{
    load_editor, save_editor, Decided, NATURAL_STEP, RESOLVE_MASK, STEP_SEARCH,
};
use crate::workflows::edit::search::{pick_step, step_accuracies, STEP_GRID, STEP_ROWS};
use crate::workflows::edit::step::{step_gradient, TrainBatch};
use crate::workflows::edit::{edit_models, edit_models_at, resolve_kept};
use crate::workflows::zoo::load::{index_split, Member, Stored};
use crate::workflows::zoo::{Manifest, ModelRecord, ModelSplit};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub requirement: Requirement,
    pub gap: Gap,
    pub steps: usize,
    /// Models per step.
    pub models: usize,
    /// Data rows per step.
    pub rows: usize,
    pub lr: f32,
    /// Later learning rates: from each (step, lr) on, that rate (steps ascending; configs saved
    /// before it existed: none). A run resumed with a new phase here continues the same run
    /// at a lower rate, where a constant one has levelled off.
    #[serde(default)]
    pub lr_schedule: Vec<(usize, f32)>,
    pub hidden: usize,
    pub layers: usize,
    pub gamma: f32,
    pub tau: f32,
    /// The pruning score's prior (configs saved before it existed used magnitude).
    #[serde(default)]
    pub prune_score: PruneScore,
    /// Sharpness of the fairness penalty's soft decisions (configs saved before it existed
    /// used 1).
    #[serde(default = "crate::requirement::one")]
    pub fair_sharpness: f32,
    /// What a fairness editor learns (configs saved before it existed: the penalty).
    #[serde(default)]
    pub fair_target: FairTarget,
    /// The editor reads data (`EditSpec::signals`).
    #[serde(default)]
    pub signals: bool,
    /// Where a minimisation edit starts (`EditSpec::minimise_base`).
    #[serde(default)]
    pub minimise_base: MinimiseBase,
    /// Fairness weight, drawn log-uniformly (penalty editors).
    pub lambda: (f32, f32),
    /// Logit shift per group, drawn uniformly (shift editors).
    #[serde(default = "default_shift_range")]
    pub shift_range: (f32, f32),
    /// The fairness bound the checkpoint is chosen for (configs saved before it existed used
    /// 0.05).
    #[serde(default = "default_max_gap")]
    pub max_gap: f64,
    /// Target sparsity, drawn uniformly.
    pub sparsity: (f32, f32),
    /// Prune editors: sparsities drawn from this many evenly spaced points of `sparsity` instead
    /// (configs saved before it existed: none). Each model then has few starts, and a start
    /// that keeps a rule's mask (OBS, neurons) is computed once per model and point.
    #[serde(default)]
    pub sparsity_grid: Option<usize>,
    /// Most features removed at once (at least one is).
    pub max_removed: usize,
    /// Prune editors: half the training asks also remove up to `max_removed` features (configs
    /// saved before it existed: none).
    #[serde(default)]
    pub also_drop: bool,
    /// Drop-attribute fairness editors: every training ask also prunes, at a sparsity drawn
    /// from `sparsity` (configs saved before it existed: none).
    #[serde(default)]
    pub also_prune: bool,
    /// Weight of a cross-entropy to the labels added to the training loss (sigmoid or softmax;
    /// configs saved before it existed: 0, the JSD alone).
    #[serde(default)]
    pub label_weight: f32,
    /// Decay of the moving average of the editor's parameters that validation reads and the
    /// kept checkpoint holds (`Editor::update_average`); 0: none, the parameters as trained
    /// (configs saved before it existed: 0).
    #[serde(default)]
    pub average: f32,
    /// Whether the editor's edits pick their step on training rows: as its validation models
    /// say (auto), or forced (configs saved before it existed: auto).
    #[serde(default)]
    pub step_search: Decision,
    /// Whether an editor that moves LAMP's mask keeps only its mask and re-solves the kept
    /// weights (`EditSpec::resolve_mask`): as its validation models say (auto), or forced
    /// (configs saved before it existed: auto).
    #[serde(default)]
    pub resolve_mask: Decision,
    /// Whether a minimisation or prune editor's edits end with a natural step on the labels
    /// (`EditSpec::natural_step`): as its validation models say (auto), or forced (configs
    /// saved before it existed: auto).
    #[serde(default)]
    pub natural_step: Decision,
    /// Rows of the calibration batch the edits' rules and signals read (OBS and neuron
    /// reconstruction, Wanda): the edits of the trained editor read as many.
    #[serde(default = "default_calibration_rows")]
    pub calibration_rows: usize,
    pub eval_every: usize,
    /// Validation models (at most) and rows.
    pub val_models: usize,
    pub val_rows: usize,
    pub seed: u64,
}

/// How training sets a choice it makes on its validation models after training
/// (`checkpoint::Decided`: the step search, the mask's re-solve).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// On where it raises the validation models' accuracy on the validation split.
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

impl Decision {
    /// On or off, for a measured gain of `gain`.
    pub fn decide(self, gain: f64) -> bool {
        match self {
            Decision::Auto => gain > 0.0,
            Decision::On => true,
            Decision::Off => false,
        }
    }
}

fn default_max_gap() -> f64 {
    0.05
}

fn default_calibration_rows() -> usize {
    crate::io::data::CALIBRATION_ROWS
}

fn default_shift_range() -> (f32, f32) {
    SHIFT_RANGE
}

impl TrainConfig {
    pub fn new(requirement: Requirement) -> TrainConfig {
        TrainConfig {
            requirement,
            gap: Gap::Eo,
            steps: 2000,
            models: 8,
            // The fairness penalty's soft group rates need many rows to be steady.
            rows: match requirement {
                Requirement::Fairness => 2048,
                _ => 512,
            },
            lr: 1e-3,
            lr_schedule: Vec::new(),
            hidden: 32,
            layers: 2,
            gamma: 0.1,
            tau: 0.0,
            // Each edit starts from the strongest one-shot rule, so the untrained editor is
            // that rule and training learns only lift over it; pruning editors read the data's
            // signals, which is where their lift comes from (BENCHMARKS, "The yardstick").
            prune_score: PruneScore::Obs,
            fair_sharpness: FAIR_SHARPNESS,
            fair_target: FairTarget::Shift,
            signals: requirement == Requirement::Prune,
            minimise_base: MinimiseBase::LeastSquares,
            lambda: (0.1, 30.0),
            shift_range: SHIFT_RANGE,
            max_gap: 0.05,
            sparsity: (0.5, 0.95),
            sparsity_grid: None,
            max_removed: 4,
            also_drop: false,
            also_prune: false,
            label_weight: 0.0,
            average: 0.0,
            step_search: Decision::Auto,
            resolve_mask: Decision::Auto,
            natural_step: Decision::Auto,
            calibration_rows: crate::io::data::CALIBRATION_ROWS,
            eval_every: 100,
            val_models: 16,
            val_rows: 2048,
            seed: 0,
        }
    }

    /// The learning rate of step `step` (counted from 0).
    pub fn lr_at(&self, step: usize) -> f32 {
        self.lr_schedule
            .iter()
            .take_while(|(from, _)| *from <= step)
            .last()
            .map_or(self.lr, |&(_, lr)| lr)
    }

    /// Whether a run saved with `saved` that has done `done` steps continues as this one: the
    /// same settings but for more steps, learning rates of steps not yet done, the step search
    /// and the mask's re-solve (decided after training, so they may change on any resume).
    pub fn continues(&self, saved: &TrainConfig, done: usize) -> bool {
        let same = TrainConfig {
            steps: self.steps,
            lr_schedule: self.lr_schedule.clone(),
            step_search: self.step_search,
            resolve_mask: self.resolve_mask,
            natural_step: self.natural_step,
            ..saved.clone()
        } == *self;
        same && done <= self.steps && (0..done).all(|s| saved.lr_at(s) == self.lr_at(s))
    }
}

/// Input columns a training ask removes: on images a rectangle of pixels (what "do not use
/// these pixels" asks), from a few pixels to half the side each way; else 1 to `max_removed`
/// features.
fn draw_removed(rng: &mut impl Rng, cfg: &TrainConfig, schema: &Schema, removed: &mut [bool]) {
    if let Some(side) = schema.image_side() {
        // A rectangle with one side up to the whole image and the other up to half of it:
        // strips (a band of columns or rows) as well as patches.
        let (long, short) = (rng.random_range(1..=side), rng.random_range(1..=side / 2));
        let (h, w) = match rng.random_bool(0.5) {
            true => (long, short),
            false => (short, long),
        };
        let (r0, c0) = (
            rng.random_range(0..=side - h),
            rng.random_range(0..=side - w),
        );
        for r in r0..r0 + h {
            for c in c0..c0 + w {
                removed[r * side + c] = true;
            }
        }
        return;
    }
    let n = schema.features.len();
    let k = rng.random_range(1..=cfg.max_removed.min(n.saturating_sub(1)).max(1));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    for &f in &order[..k] {
        let f = &schema.features[f];
        removed[f.start..f.start + f.width]
            .iter_mut()
            .for_each(|c| *c = true);
    }
}

/// Point `k` of `n` evenly spaced over `range`, ends included (one point: its low end).
pub fn grid_point(range: (f32, f32), n: usize, k: usize) -> f32 {
    match n {
        1 => range.0,
        _ => range.0 + (range.1 - range.0) * k as f32 / (n - 1) as f32,
    }
}

/// What the requirement asks of one model, drawn for training.
pub fn draw_ask(rng: &mut impl Rng, cfg: &TrainConfig, schema: &Schema) -> Ask {
    let mut ask = Ask::new(schema.n_columns());
    match cfg.requirement {
        Requirement::Minimise => draw_removed(rng, cfg, schema, &mut ask.removed),
        Requirement::Fairness => match cfg.fair_target {
            FairTarget::Penalty | FairTarget::DropAttribute => {
                let (lo, hi) = (cfg.lambda.0.ln(), cfg.lambda.1.ln());
                ask.lambda = rng.random_range(lo..=hi).exp();
                if cfg.also_prune {
                    ask.sparsity = rng.random_range(cfg.sparsity.0..=cfg.sparsity.1);
                }
            }
            FairTarget::Shift => {
                let (lo, hi) = cfg.shift_range;
                ask.shift = Some(
                    (0..schema.groups.len())
                        .map(|_| rng.random_range(lo..=hi))
                        .collect(),
                );
            }
        },
        Requirement::Prune => {
            ask.sparsity = match cfg.sparsity_grid {
                Some(n) => grid_point(cfg.sparsity, n, rng.random_range(0..n)),
                None => rng.random_range(cfg.sparsity.0..=cfg.sparsity.1),
            };
            if cfg.also_drop && rng.random_bool(0.5) {
                draw_removed(rng, cfg, schema, &mut ask.removed);
            }
        }
    }
    ask
}

/// Rows drawn from a split: (x, y, group).
fn draw_rows(
    rng: &mut impl Rng,
    split: &crate::io::data::Split,
    rows: usize,
) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let d = split.x.len() / split.rows().max(1);
    let (mut x, mut y, mut g) = (Vec::with_capacity(rows * d), vec![], vec![]);
    for _ in 0..rows {
        let r = rng.random_range(0..split.rows());
        x.extend_from_slice(&split.x[r * d..(r + 1) * d]);
        y.push(split.y[r]);
        g.push(split.group[r]);
    }
    (x, y, g)
}

/// Validation figures of an editor.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Validation {
    pub step: usize,
    /// Mean of JSD + lambda * gap over the validation models (lower is better).
    pub loss: f64,
    pub jsd: f64,
    /// Mean accuracy of the edited models on the validation rows, and of the originals.
    pub accuracy: f64,
    pub original_accuracy: f64,
    /// Mean fairness gap (fairness) of the edited models at their drawn asks, and of the
    /// originals.
    pub gap: f64,
    pub original_gap: f64,
    /// Fairness: the share of validation models for which the search (`Trainer::compliant`)
    /// finds an edit within its target at an accuracy drop of at most `MAX_DROP`.
    #[serde(default)]
    pub compliant: f64,
    /// Fairness: the mean gap of the edits that search keeps.
    #[serde(default)]
    pub searched_gap: f64,
}

impl Validation {
    /// Whether this checkpoint is better than `other` for `requirement`, by what the edit is
    /// judged on where the training loss is only a proxy for it:
    /// - fairness: compliance after the lambda search (what `regop edit --max-eo-gap`
    ///   delivers), since the soft penalty at a fixed lambda can fall while the hard gap rises;
    /// - minimise: accuracy without the removed features, since agreement with the original
    ///   (the loss) rewards imitating what the removed features contributed;
    /// - prune, and ties: the validation loss.
    pub fn better_than(&self, other: &Validation, requirement: Requirement) -> bool {
        let (mine, theirs) = match requirement {
            Requirement::Fairness => (self.compliant, other.compliant),
            Requirement::Minimise => (self.accuracy, other.accuracy),
            Requirement::Prune => (0.0, 0.0),
        };
        if mine != theirs {
            return mine > theirs;
        }
        self.loss < other.loss
    }
}

/// Progress reported to the caller after every step and validation.
pub enum Event<'a> {
    Step { step: usize, loss: f64 },
    Validated(&'a Validation, bool),
    StepSearch(&'a Decided),
    ResolveMask(&'a Decided),
    NaturalStep(&'a Decided),
}

pub struct Trainer<'a> {
    pub cfg: TrainConfig,
    pub spec: EditSpec,
    pub schema: &'a Schema,
    pub data: &'a Dataset,
    pub train: BTreeMap<Vec<usize>, Vec<Stored>>,
    /// The validation models that judge checkpoints (`TrainConfig::val_models`), each with its
    /// ask.
    pub val: Vec<(Member, Ask)>,
    /// The zoo's other validation models, with their asks: the step search measures on these
    /// too, since its gain is small against the spread between models. Read when it does.
    pub more_val: Vec<(Stored, Ask)>,
    pub columns: Columns,
    pub editor_cfg: EditorConfig,
}

impl<'a> Trainer<'a> {
    pub fn new(
        cfg: &TrainConfig,
        zoo: &Path,
        manifest: &Manifest,
        data: &'a Dataset,
    ) -> Result<Trainer<'a>> {
        let schema = &data.schema;
        if cfg.requirement == Requirement::Fairness {
            if schema.sensitive.is_none() {
                return Err(Error::input(
                    zoo,
                    "its data has no sensitive attribute (fairness needs one)",
                ));
            }
            if cfg.fair_target == FairTarget::Shift && schema.groups.len() > MAX_SHIFT_GROUPS {
                return Err(Error::input(
                    zoo,
                    format!(
                        "the sensitive attribute has {} groups; a shift editor takes at most \
                         {MAX_SHIFT_GROUPS} (train with --fair-target penalty)",
                        schema.groups.len()
                    ),
                ));
            }
            if schema.groups.len() > MAX_GROUPS {
                return Err(Error::input(
                    zoo,
                    format!(
                        "the sensitive attribute has {} groups; at most {MAX_GROUPS}",
                        schema.groups.len()
                    ),
                ));
            }
        }
        let train = index_split(zoo, manifest, ModelSplit::Train)?;
        if train.is_empty() {
            return Err(Error::input(zoo, "has no training models"));
        }
        if cfg.requirement == Requirement::Fairness
            && train.values().flatten().any(|m| m.shape.outputs() != 1)
        {
            return Err(Error::input(
                zoo,
                "fairness editing needs binary classifiers (one output)",
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_7a1d);
        // Validation models drawn at random across architectures, not the smallest first.
        let mut records: Vec<&ModelRecord> = (manifest.models.iter())
            .filter(|r| r.split == ModelSplit::Val)
            .collect();
        records.shuffle(&mut rng);
        let mut asks: Vec<Ask> = (records.iter())
            .map(|_| draw_ask(&mut rng, cfg, schema))
            .collect();
        let more_asks = asks.split_off(cfg.val_models.min(records.len()));
        let (records, more_records) = records.split_at(asks.len());
        let val: Vec<(Member, Ask)> = (records.iter().zip(asks))
            .map(|(r, ask)| Ok((Member::load(zoo, r)?, ask)))
            .collect::<Result<_>>()?;
        let mut more_val: Vec<(Stored, Ask)> = (more_records.iter().zip(more_asks))
            .map(|(r, ask)| Ok((Stored::index(zoo, r)?, ask)))
            .collect::<Result<_>>()?;
        if val.is_empty() {
            return Err(Error::input(
                zoo,
                "has no validation models (they pick the checkpoint)",
            ));
        }
        let all = train
            .values()
            .flatten()
            .map(|m| &m.shape)
            .chain(val.iter().map(|(m, _)| &m.shape));
        let pos = PosIds {
            max_inputs: schema.n_columns(),
            max_hidden_layers: all
                .clone()
                .map(|s| s.layers() - 1)
                .max()
                .unwrap_or(0)
                .max(1),
            max_outputs: all.map(|s| s.outputs()).max().unwrap_or(1),
        };
        // The step search may edit only models the editor takes.
        more_val.retain(|(m, _)| {
            m.shape.layers() - 1 <= pos.max_hidden_layers && m.shape.outputs() <= pos.max_outputs
        });
        let spec = EditSpec {
            requirement: cfg.requirement,
            gap: cfg.gap,
            gamma: cfg.gamma,
            tau: cfg.tau,
            prune_score: cfg.prune_score,
            fair_sharpness: cfg.fair_sharpness,
            fair_target: cfg.fair_target,
            signals: cfg.signals,
            signal_label_weight: if cfg.signals { cfg.label_weight } else { 0.0 },
            minimise_base: cfg.minimise_base,
            also_drops: cfg.also_drop && cfg.requirement == Requirement::Prune,
            also_prunes: cfg.also_prune && cfg.fair_target == FairTarget::DropAttribute,
            // Decided on validation models after training (`Trainer::resolve_mask`,
            // `Trainer::natural_step`).
            resolve_mask: false,
            natural_step: false,
        };
        Ok(Trainer {
            spec,
            editor_cfg: EditorConfig {
                hidden: cfg.hidden,
                layers: cfg.layers,
                cond_dim: COND_DIM,
                pos,
                edge_features: spec.edge_features(),
            },
            cfg: cfg.clone(),
            schema,
            data,
            train,
            val,
            more_val,
            columns: Columns::of(schema, &data.train, cfg.calibration_rows),
        })
    }

    /// One training step (number `step`, counted from 0); returns the mean loss of its models.
    pub fn step(&self, dev: &Device, editor: &mut Editor, step: usize) -> Result<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ step as u64,
        );
        let total: usize = self.train.values().map(Vec::len).sum();
        let mut pick = rng.random_range(0..total);
        let group = self
            .train
            .values()
            .find(|g| {
                if pick < g.len() {
                    true
                } else {
                    pick -= g.len();
                    false
                }
            })
            .expect("a group");
        let chosen: Vec<&Stored> = group
            .choose_multiple(&mut rng, self.cfg.models.min(group.len()))
            .collect();
        let asks: Vec<Ask> = chosen
            .iter()
            .map(|_| draw_ask(&mut rng, &self.cfg, self.schema))
            .collect();
        let (x, y, g) = draw_rows(&mut rng, &self.data.train, self.cfg.rows);
        let loaded: Vec<Vec<f32>> = chosen.iter().map(|m| m.params()).collect::<Result<_>>()?;
        let params: Vec<&[f32]> = loaded.iter().map(Vec::as_slice).collect();
        let shape = &chosen[0].shape;
        let batch = (x.as_slice(), y.as_slice(), g.as_slice());
        let s = (&self.spec, &self.columns);
        let losses = step_gradient(
            dev,
            editor,
            s.0,
            s.1,
            shape,
            &params,
            &asks,
            batch,
            params.len(),
            self.cfg.label_weight,
        )
        .map_err(|e| match e {
            Error::NoRoom { what, advice } => Error::NoRoom {
                what: format!(
                    "a training step's model of {} weights on {} rows: {what}",
                    shape.n_params(),
                    self.cfg.rows
                ),
                advice,
            },
            e => e,
        })?;
        let opt = Adam {
            lr: self.cfg.lr_at(step),
            ..Adam::default()
        };
        editor.adam_step(dev, &opt)?;
        if self.cfg.average > 0.0 {
            editor.update_average(dev, self.cfg.average)?;
        }
        Ok(losses
            .iter()
            .zip(&asks)
            .map(|((j, f), a)| (j + a.lambda * f) as f64)
            .sum::<f64>()
            / asks.len() as f64)
    }

    /// The loss and metrics on the validation models with their fixed asks, on the first
    /// `val_rows` rows of the validation split.
    pub fn validate(&self, dev: &Device, editor: &Editor, step: usize) -> Result<Validation> {
        let split = &self.data.val;
        let rows = self.cfg.val_rows.min(split.rows());
        let d = self.schema.n_columns();
        let (x, y, g) = (&split.x[..rows * d], &split.y[..rows], &split.group[..rows]);
        let mut v = Validation {
            step,
            ..Validation::default()
        };
        let n = self.val.len().max(1) as f64;
        for (member, ask) in &self.val {
            let b = TrainBatch::new(
                dev,
                editor,
                &self.spec,
                &member.shape,
                &[&member.params],
                std::slice::from_ref(ask),
                &self.columns,
                rows,
            )?;
            b.forward(dev, editor)?;
            b.loss(dev, x, y, g)?;
            let (j, f) = b.read_losses(dev)?[0];
            let k = member.shape.outputs();
            let pred = predictions(&b.read_edited_logits(dev)?, k);
            let original = crate::networks::mlp::predict(dev, &member.shape, 1, &member.params, x)?;
            let base = predictions(&original, k);
            let gap = |p: &[f32]| fairness_gap(self.cfg.gap, y, p, g);
            v.jsd += j as f64 / n;
            v.loss += (j + ask.lambda * f) as f64 / n;
            v.accuracy += accuracy(y, &pred) / n;
            v.original_accuracy += accuracy(y, &base) / n;
            if self.cfg.requirement == Requirement::Fairness {
                v.gap += gap(&pred) / n;
                v.original_gap += gap(&base) / n;
                let (compliant, searched) = self.compliant(dev, editor, member, ask)?;
                v.compliant += compliant as u8 as f64 / n;
                v.searched_gap += searched / n;
            }
        }
        Ok(v)
    }

    /// Shift editors: whether the edit at the shifts `baselines::choose_shift` picks on the
    /// validation split meets the bound there at an accuracy drop of at most `MAX_DROP`.
    /// Penalty editors: whether the lambda search on the validation split finds an edit of
    /// `member` whose gap there is within the search's own target (`SEARCH_MARGIN` x the bound,
    /// a margin for the scatter on unseen rows) at an accuracy drop of at most `MAX_DROP`.
    /// Checking on a held-out half instead was too noisy to rank checkpoints: a few hundred rows
    /// per (group, label). Returns whether it is, and the gap of the edit kept.
    fn compliant(
        &self,
        dev: &Device,
        editor: &Editor,
        member: &Member,
        ask: &Ask,
    ) -> Result<(bool, f64)> {
        use crate::workflows::edit::search::{edit_at_lambdas, lambda_grid, pick_lambda};
        use crate::workflows::edit::search::{score_fairness, search_shift};
        let (split, model) = (&self.data.val, (&member.shape, member.params.as_slice()));
        let (gap, max_gap) = (self.cfg.gap, self.cfg.max_gap);
        let score = |edited: &[Vec<f32>], max_gap: f64| {
            let without = self.spec.unread_columns(&self.columns);
            let target = Target::Fairness {
                gap,
                max_gap,
                without,
                sparsity: ask.sparsity as f64,
            };
            score_fairness(dev, &member.shape, edited, split, &target)
        };
        let (_, base) = score(std::slice::from_ref(&member.params), max_gap)?[0];
        if self.cfg.fair_target == FairTarget::Shift {
            let (spec, cols) = (&self.spec, &self.columns);
            let (_, edited) = search_shift(
                dev,
                editor,
                spec,
                cols,
                self.schema,
                model,
                split,
                gap,
                max_gap,
            )?;
            // The shifts alone meet the search's target here by construction; what is checked
            // is that the edit carries them: the bound itself, as the test split is judged.
            let (verdict, acc) = score(std::slice::from_ref(&edited), max_gap)?[0];
            return Ok((compliant(verdict.met, base, acc, MAX_DROP), verdict.value));
        }
        let grid = lambda_grid(self.cfg.lambda);
        let edited = edit_at_lambdas(dev, editor, &self.spec, &self.columns, ask, model, &grid)?;
        let scored = score(&edited, SEARCH_MARGIN * max_gap)?;
        let (verdict, acc) = scored[pick_lambda(&scored, max_gap)];
        Ok((compliant(verdict.met, base, acc, MAX_DROP), verdict.value))
    }

    /// Every validation model of the zoo with its ask: those that judge checkpoints, held in
    /// memory, then the others, read as they come.
    fn each_val_model(
        &self,
        mut f: impl FnMut(&MlpShape, &[f32], &Ask) -> Result<()>,
    ) -> Result<()> {
        for (m, ask) in &self.val {
            f(&m.shape, &m.params, ask)?;
        }
        for (m, ask) in &self.more_val {
            f(&m.shape, &m.params()?, ask)?;
        }
        Ok(())
    }

    /// Whether `editor`'s edits should pick their step on training rows (`search::search_steps`):
    /// each of the zoo's validation models edited at every step, the step picked on the
    /// training split, and its accuracy on the validation split against step 1's, the edits
    /// made as `spec` says (the trainer's, with the mask's re-solve as decided). None for
    /// fairness editors, which search a lambda instead.
    pub fn step_search(
        &self,
        dev: &Device,
        editor: &Editor,
        spec: &EditSpec,
    ) -> Result<Option<Decided>> {
        if self.cfg.requirement == Requirement::Fairness || self.val.is_empty() {
            return Ok(None);
        }
        let trained = STEP_GRID.iter().position(|&s| s == 1.0).expect("step 1");
        self.decide_on_val(self.cfg.step_search, |shape, params, ask| {
            let model = [(shape, params)];
            let (cols, ask) = (&self.columns, std::slice::from_ref(ask));
            let at = edit_models_at(dev, editor, spec, &model, ask, cols, &STEP_GRID)?.remove(0);
            let on_train = step_accuracies(dev, shape, &at, &self.data.train, STEP_ROWS)?;
            let picked = pick_step(&on_train);
            let edits = [at[trained].clone(), at[picked].clone()];
            step_accuracies(dev, shape, &edits, &self.data.val, usize::MAX)
        })
    }

    /// A choice made on every validation model of the zoo: `edits` gives a model's accuracies
    /// on the validation split without it and with it; the mean gain decides `decision`.
    fn decide_on_val(
        &self,
        decision: Decision,
        mut edits: impl FnMut(&MlpShape, &[f32], &Ask) -> Result<Vec<f64>>,
    ) -> Result<Option<Decided>> {
        let models = self.val.len() + self.more_val.len();
        let (mut gain, mut with_it) = (0.0, 0.0);
        self.each_val_model(|shape, params, ask| {
            let on_val = edits(shape, params, ask)?;
            gain += (on_val[1] - on_val[0]) / models as f64;
            with_it += on_val[1] / models as f64;
            Ok(())
        })?;
        Ok(Some(Decided {
            on: decision.decide(gain),
            gain,
            with_it,
            models,
        }))
    }

    /// Whether `editor`'s edits should keep only its mask, the kept weights re-solved
    /// (`EditSpec::resolve_mask`): each of the zoo's validation models edited as trained
    /// (step 1), its accuracy on the validation split with the re-solve against without. None
    /// for editors that do not move LAMP's mask.
    pub fn resolve_mask(&self, dev: &Device, editor: &Editor) -> Result<Option<Decided>> {
        if !self.spec.moves_rule_mask() || self.val.is_empty() {
            return Ok(None);
        }
        let spec = EditSpec {
            resolve_mask: false,
            natural_step: false,
            ..self.spec
        };
        self.decide_on_val(self.cfg.resolve_mask, |shape, params, ask| {
            let (cols, ask) = (&self.columns, std::slice::from_ref(ask));
            let mut at = edit_models(dev, editor, &spec, &[(shape, params)], ask, cols)?;
            let mut resolved = at.clone();
            resolve_kept(&spec, (shape, params), &ask[0], cols, &mut resolved)?;
            at.extend(resolved);
            step_accuracies(dev, shape, &at, &self.data.val, usize::MAX)
        })
    }

    /// Whether `editor`'s edits (made as `spec` says) should end with a natural step on the
    /// labels (`EditSpec::natural_step`): each of the zoo's validation models edited as
    /// trained (step 1), its accuracy on the validation split with the step against without.
    /// None for fairness editors.
    pub fn natural_step(
        &self,
        dev: &Device,
        editor: &Editor,
        spec: &EditSpec,
    ) -> Result<Option<Decided>> {
        if self.cfg.requirement == Requirement::Fairness || self.val.is_empty() {
            return Ok(None);
        }
        let spec = EditSpec {
            natural_step: false,
            ..*spec
        };
        let (moments, calib) = (&self.columns.moments, &self.columns.calibration);
        self.decide_on_val(self.cfg.natural_step, |shape, params, ask| {
            let (cols, asks) = (&self.columns, std::slice::from_ref(ask));
            let mut at = edit_models(dev, editor, &spec, &[(shape, params)], asks, cols)?;
            at.push(natural_step(shape, &at[0], &ask.removed, moments, calib));
            step_accuracies(dev, shape, &at, &self.data.val, usize::MAX)
        })
    }

    /// Metadata saved with the editor: how it edits, what data it edits for, how it was trained.
    pub fn metadata(
        &self,
        manifest: &Manifest,
        best: Option<&Validation>,
        history: &[Validation],
    ) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("edit".into(), serde_json::to_string(&self.spec).unwrap());
        m.insert("schema".into(), serde_json::to_string(self.schema).unwrap());
        m.insert("dataset".into(), manifest.dataset.clone());
        m.insert(
            "loader".into(),
            serde_json::to_string(&manifest.loader).unwrap(),
        );
        m.insert(
            "data_options".into(),
            serde_json::to_string(&manifest.data_options).unwrap(),
        );
        m.insert("data_seed".into(), manifest.data_seed.to_string());
        let trained_on: Vec<MlpShape> = manifest
            .models
            .iter()
            .filter(|r| r.split == crate::workflows::zoo::ModelSplit::Train)
            .map(|r| MlpShape::new(&r.dims, r.activation))
            .collect();
        if let Some(seen) = crate::workflows::edit::checkpoint::SeenModels::of(&trained_on) {
            m.insert("models".into(), serde_json::to_string(&seen).unwrap());
        }
        m.insert("train".into(), serde_json::to_string(&self.cfg).unwrap());
        m.insert(
            "column_means".into(),
            serde_json::to_string(&self.columns.means).unwrap(),
        );
        if let Some(b) = best {
            m.insert("best".into(), serde_json::to_string(b).unwrap());
        }
        m.insert("history".into(), serde_json::to_string(history).unwrap());
        m
    }
}

pub const BEST: &str = "editor.safetensors";
pub const LAST: &str = "last.safetensors";

/// Train (or, with `resume`, continue) an editor into `out`: `LAST` after every validation
/// after a step, `BEST` whenever validation improves (the untrained editor's validation
/// counts, its file is written with the first `LAST`). Returns the best validation.
pub fn train(
    dev: &Device,
    trainer: &Trainer,
    manifest: &Manifest,
    out: &Path,
    resume: bool,
    on: &mut dyn FnMut(Event),
) -> Result<Validation> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let last: PathBuf = out.join(LAST);
    let (mut editor, mut best, mut history) = if resume && last.exists() {
        let (ed, meta) = load_editor(dev, &last)?;
        // More steps, or a lower rate for steps not yet done, continue it: every step's draws
        // depend on (seed, step) alone and its rate on the step, so that is the longer run.
        let saved: Option<TrainConfig> =
            meta.get("train").and_then(|s| serde_json::from_str(s).ok());
        if !saved.is_some_and(|c| trainer.cfg.continues(&c, ed.step as usize)) {
            return Err(Error::input(
                &last,
                "was trained with other settings; resume with the same flags (or more --steps, or a --lr-schedule for steps not yet done) or start afresh",
            ));
        }
        let best: Option<Validation> = meta.get("best").and_then(|s| serde_json::from_str(s).ok());
        let history: Vec<Validation> = meta
            .get("history")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        (ed, best, history)
    } else {
        (
            Editor::new(dev, &trainer.editor_cfg, trainer.cfg.seed)?,
            None,
            Vec::new(),
        )
    };
    let start = editor.step as usize;
    let save = |editor: &Editor, path: &Path, best: Option<&Validation>, history: &[Validation]| {
        save_editor(
            dev,
            editor,
            path,
            &trainer.metadata(manifest, best, history),
            true,
        )
    };
    // The untrained editor's parameters while it is the best: written with the first
    // checkpoint, so that a run failing before it leaves no files.
    let mut untrained_best = None;
    if start == 0 {
        let v = trainer.validate(dev, &editor, 0)?;
        on(Event::Validated(&v, true));
        history.push(v.clone());
        best = Some(v);
        untrained_best = Some(dev.read_all(&editor.params)?);
    }
    for step in start..trainer.cfg.steps {
        let loss = trainer.step(dev, &mut editor, step)?;
        on(Event::Step {
            step: step + 1,
            loss,
        });
        let done = step + 1;
        if done % trainer.cfg.eval_every == 0 || done == trainer.cfg.steps {
            let averaged = editor.averaged(dev)?;
            let judged = averaged.as_ref().unwrap_or(&editor);
            let v = trainer.validate(dev, judged, done)?;
            let better = best
                .as_ref()
                .is_none_or(|b| v.better_than(b, trainer.cfg.requirement));
            on(Event::Validated(&v, better));
            history.push(v.clone());
            if better {
                best = Some(v.clone());
                save(judged, &out.join(BEST), best.as_ref(), &history)?;
            } else if let Some(params) = &untrained_best {
                let untrained = Editor::from_params(dev, &trainer.editor_cfg, params)?;
                save(&untrained, &out.join(BEST), best.as_ref(), &history)?;
            }
            untrained_best = None;
            save(&editor, &last, best.as_ref(), &history)?;
        }
    }
    // The kept checkpoint learns whether its edits re-solve the kept weights, then whether
    // they end with a natural step, then whether they pick their step (each decision edits
    // as those before it decided).
    let kept = out.join(BEST);
    if kept.exists() {
        let (editor, mut meta) = load_editor(dev, &kept)?;
        let (mut spec, mut decided) = (trainer.spec, false);
        if let Some(found) = trainer.resolve_mask(dev, &editor)? {
            on(Event::ResolveMask(&found));
            meta.insert(RESOLVE_MASK.into(), serde_json::to_string(&found).unwrap());
            (spec.resolve_mask, decided) = (found.on, true);
        }
        if let Some(found) = trainer.natural_step(dev, &editor, &spec)? {
            on(Event::NaturalStep(&found));
            meta.insert(NATURAL_STEP.into(), serde_json::to_string(&found).unwrap());
            (spec.natural_step, decided) = (found.on, true);
        }
        if let Some(found) = trainer.step_search(dev, &editor, &spec)? {
            on(Event::StepSearch(&found));
            meta.insert(STEP_SEARCH.into(), serde_json::to_string(&found).unwrap());
            decided = true;
        }
        if decided {
            save_editor(dev, &editor, &kept, &meta, true)?;
        }
    }
    Ok(best.expect("validated at least once"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_sets_the_rate_from_its_steps_on() {
        let cfg = TrainConfig {
            lr_schedule: vec![(10, 5e-4), (20, 1e-4)],
            ..TrainConfig::new(Requirement::Prune)
        };
        let rates: Vec<f32> = [0, 9, 10, 19, 20, 1000].map(|s| cfg.lr_at(s)).to_vec();
        assert_eq!(rates, [1e-3, 1e-3, 5e-4, 5e-4, 1e-4, 1e-4]);
        // Done steps keep their rates: 10 steps done continue under this schedule, 11 do not.
        let saved = TrainConfig {
            steps: 10,
            ..TrainConfig::new(Requirement::Prune)
        };
        let longer = TrainConfig { steps: 30, ..cfg };
        assert!(longer.continues(&saved, 10));
        assert!(!longer.continues(&saved, 11));
        assert!(!longer.continues(
            &TrainConfig {
                hidden: 64,
                ..saved.clone()
            },
            10
        ));
        // The step search is decided after training: another choice still continues the run.
        let searched = TrainConfig {
            step_search: Decision::Off,
            ..longer.clone()
        };
        assert!(searched.continues(&saved, 10));
    }

    #[test]
    fn checkpoints_are_chosen_by_what_the_edit_is_judged_on() {
        let v = |loss, accuracy, compliant| Validation {
            loss,
            accuracy,
            compliant,
            ..Validation::default()
        };
        let (low_loss, accurate, compliant) =
            (v(0.1, 0.80, 0.2), v(0.2, 0.85, 0.1), v(0.3, 0.70, 0.5));
        assert!(low_loss.better_than(&accurate, Requirement::Prune));
        assert!(low_loss.better_than(&compliant, Requirement::Prune));
        assert!(accurate.better_than(&low_loss, Requirement::Minimise));
        assert!(accurate.better_than(&compliant, Requirement::Minimise));
        assert!(compliant.better_than(&low_loss, Requirement::Fairness));
        assert!(compliant.better_than(&accurate, Requirement::Fairness));
        // Ties fall back to the loss, and nothing is better than itself.
        let twin = v(0.05, 0.70, 0.5);
        assert!(twin.better_than(&compliant, Requirement::Fairness));
        assert!(!compliant.better_than(&compliant, Requirement::Fairness));
    }
}
