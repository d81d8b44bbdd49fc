//! The requirement vocabulary: what a requirement asks of one model (`Ask`: removed columns,
//! a fairness weight or group shifts, a sparsity), how an editor edits (`EditSpec`), what the
//! editor knows of the input columns (`Columns`), and the named constants every workflow judges
//! an edit by. `verify` checks an edit; `metrics` holds the measures it uses.

pub mod metrics;
pub mod verify;

use crate::engine::kernels::apply_edit::ApplyOpts;
use crate::engine::kernels::fairness::Gap;
use crate::io::data::{ColumnMoments, Schema, Split};

/// Most accuracy an edit may lose and still count as compliant (2 points): `--max-drop`'s
/// default, and what the trainer's checkpoint choice and compare's "compliant" column use.
pub const MAX_DROP: f64 = 0.02;

/// Searches aim below a fairness bound by this factor: the gap measured on one split scatters
/// on another (about +-0.03 for equalised odds at a few thousand rows).
pub const SEARCH_MARGIN: f64 = 0.6;

/// Lambdas a penalty fairness editor tries in one batch when it must meet a gap bound.
pub const LAMBDA_SEARCH_POINTS: usize = 16;

/// Default range of the per-group logit shifts a shift editor is trained on: the shifts
/// `baselines::choose_shift` can pick (its grid spans -1.5..1.5).
pub const SHIFT_RANGE: (f32, f32) = (-1.5, 1.5);

/// Default sharpness of the fairness penalty's soft decisions: sigmoid(4 * logit) is within 0.05
/// of the hard decision for logits beyond +-0.75, so the soft group rates track the hard ones
/// the bound is checked on, while the gradient still reaches rows near the boundary.
pub const FAIR_SHARPNESS: f32 = 4.0;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// Stop using features (--drop).
    Minimise,
    /// Reach a weight sparsity (--sparsity).
    Prune,
    /// Close the equalised-odds (or, with --gap dp, demographic-parity) gap on the sensitive
    /// attribute.
    Fairness,
}

/// What a fairness editor is trained to do.
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
pub enum FairTarget {
    /// Minimise JSD + lambda x a soft gap penalty; the user gives lambda, or a bound that
    /// `search_lambda` meets by trying 16 lambdas.
    #[default]
    Penalty,
    /// Move each group's logits by a requested shift (a group-specific decision threshold folded
    /// into the weights): the target is JSD to sigmoid(original logit + shift of the row's group).
    /// `search_shift` picks the shifts on data from the original model's logits alone (cheap),
    /// then the editor makes them one weight edit.
    Shift,
    /// Fairness without the attribute at prediction time: the sensitive attribute's columns
    /// are removed (the edit starts from their fold, `EditSpec::minimise_base`) and the editor
    /// trades JSD
    /// against the soft gap penalty by lambda, as `Penalty` does. The edited model never reads
    /// the attribute; the data's groups are read only to measure the gap.
    #[serde(rename = "drop-attribute")]
    DropAttribute,
}

/// Most groups a shift editor conditions on (one conditioning slot each).
pub const MAX_SHIFT_GROUPS: usize = COND_DIM - 1;

/// Length of the conditioning vector: [1, log10(lambda) / 3, target sparsity, removed fraction],
/// or for a shift editor [1, shift of group 0, 1, 2].
pub const COND_DIM: usize = 4;

/// The data-free importance a weight's pruning score starts from (its prior; the editor's mask
/// logit is added to it).
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
pub enum PruneScore {
    /// log |w|: global magnitude pruning.
    #[default]
    Magnitude,
    /// log of the weight's LAMP score (`baselines::lamp_scores`): magnitude relative to the
    /// larger weights of its own layer.
    Lamp,
    /// OBS reconstruction on a calibration batch (`baselines::obs_prune`): its mask is kept and
    /// its re-solved weights are where the edit starts. Edits need the data.
    Obs,
    /// LAMP's global mask with every layer's kept weights re-solved on a calibration batch
    /// (`baselines::lamp_reconstruction`): its mask is kept and its re-solved weights are where
    /// the edit starts. Where magnitude masks fine-tune better than OBS's (Bank), it starts
    /// about as accurate and leaves more to learn. Edits need the data.
    #[serde(rename = "lamp-reconstruction")]
    LampReconstruction,
    /// Whole neurons: neuron reconstruction on a calibration batch
    /// (`baselines::neuron_reconstruct`) removes the asked share of every hidden layer's
    /// neurons (the ask's sparsity is that share); its mask is kept and its re-solved weights
    /// are where the edit starts. Edits need the data.
    Neurons,
}

impl PruneScore {
    /// Whether a rule's mask is kept and the editor learns only the kept weights (rather than
    /// the editor's scores ranking every weight).
    pub fn keeps_rule_mask(self) -> bool {
        matches!(
            self,
            PruneScore::Obs | PruneScore::LampReconstruction | PruneScore::Neurons
        )
    }
}

/// Where a minimisation edit starts: the removed columns' training means folded into the
/// first-layer biases, each removed column's least-squares prediction from the kept ones
/// folded into their weights (`baselines::least_squares_fold`; edits then need the data), or
/// per model and ask whichever of the two stays closer to the model on the calibration batch
/// (`baselines::closer_fold`; edits need the data), or the least-squares fold with every later
/// layer refitted to the model on the calibration batch (`baselines::fold_reconstruction`;
/// edits need the data), or that and one natural-gradient step on the batch's labels
/// (`baselines::fold_reconstruction_step`; edits need the data).
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
#[serde(rename_all = "kebab-case")]
pub enum MinimiseBase {
    #[default]
    Mean,
    LeastSquares,
    Closer,
    Reconstruction,
    ReconstructionStep,
}

impl MinimiseBase {
    /// Whether edits from this fold read the data (its column moments, its calibration batch).
    pub fn needs_data(self) -> bool {
        self != MinimiseBase::Mean
    }
}

/// How an editor edits (saved with it): the requirement it was trained for and the edit's
/// constants.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EditSpec {
    pub requirement: Requirement,
    pub gap: Gap,
    /// Scale of the editor's weight and bias deltas.
    pub gamma: f32,
    /// Temperature of the pruning mask's straight-through surrogate.
    pub tau: f32,
    /// The pruning score's prior (editors saved before it existed used magnitude).
    #[serde(default)]
    pub prune_score: PruneScore,
    /// Sharpness of the fairness penalty's soft decisions (`kernels::fairness`); editors saved
    /// before it existed trained at 1.
    #[serde(default = "one")]
    pub fair_sharpness: f32,
    /// What a fairness editor does (editors saved before it existed: the penalty).
    #[serde(default)]
    pub fair_target: FairTarget,
    /// The editor reads data: on a calibration batch, the gradient of its loss where the edit
    /// starts and the activations of every neuron (`edit::signals`). Edits then need the data.
    #[serde(default)]
    pub signals: bool,
    /// Weight of the labels' cross-entropy in the loss whose gradient the signals carry: the
    /// training loss's own (`train --label-weight`), so that an editor trained to be right
    /// reads which way being right lies. Editors saved before it read the JSD's alone (0).
    #[serde(default)]
    pub signal_label_weight: f32,
    /// Where a minimisation edit, or a fairness edit that drops the attribute, starts (editors
    /// saved before it existed: the mean fold).
    #[serde(default)]
    pub minimise_base: MinimiseBase,
    /// A prune editor that also removes features in the same edit (trained with asks that
    /// remove some): the removed columns are folded (`minimise_base`) before the rule prunes.
    #[serde(default)]
    pub also_drops: bool,
    /// A drop-attribute fairness editor that also prunes in the same edit (trained with asks
    /// that carry a sparsity): OBS reconstruction prunes the folded model, its mask is kept.
    #[serde(default)]
    pub also_prunes: bool,
    /// An editor that moves LAMP's mask (`moves_rule_mask`) keeps only its mask: the kept
    /// weights are then re-solved on the calibration batch as the rule re-solves its own
    /// (`edit::resolve_kept`). Training decides it on validation models after training and
    /// saves it as its own record (`checkpoint::RESOLVE_MASK`), which sets it on loading;
    /// editors without the record keep the editor's values.
    #[serde(skip)]
    pub resolve_mask: bool,
    /// A minimisation or prune editor's edit followed by one natural-gradient step on the
    /// calibration batch's labels (`baselines::natural_step`, zero weights kept zero): the
    /// untrained editor is then its rule with the step. Decided and saved as `resolve_mask`
    /// is (`checkpoint::NATURAL_STEP`); editors without the record take no step.
    #[serde(skip)]
    pub natural_step: bool,
}

pub fn one() -> f32 {
    1.0
}

impl EditSpec {
    /// Whether the edit starts from a rule's pruning mask and keeps it: OBS or neuron prune
    /// editors, and fairness editors that also prune.
    pub fn keeps_rule_mask(&self) -> bool {
        (self.requirement == Requirement::Prune && self.prune_score.keeps_rule_mask())
            || self.also_prunes
    }

    /// Whether the edit starts from LAMP's mask re-solved and the editor may move that mask
    /// (trained with `tau` above 0): the rule's kept weights start re-solved, its pruned ones
    /// at their own values, and exactly the top-k of the LAMP score prior plus the editor's mask
    /// logit are kept.
    pub fn moves_rule_mask(&self) -> bool {
        self.requirement == Requirement::Prune
            && self.prune_score == PruneScore::LampReconstruction
            && self.tau > 0.0
    }

    /// Features per edge its editor reads: the value a pruned weight returns with, too, where
    /// it may bring pruned weights back.
    pub fn edge_features(&self) -> usize {
        if self.moves_rule_mask() {
            crate::networks::graph::EDGE_FEATURES_WITH_RETURNS
        } else {
            crate::networks::graph::EDGE_FEATURES
        }
    }

    /// Whether every edit removes the sensitive attribute's columns (fairness without the
    /// attribute).
    pub fn drops_attribute(&self) -> bool {
        self.requirement == Requirement::Fairness && self.fair_target == FairTarget::DropAttribute
    }

    /// The asks as this editor edits them: a fairness editor that drops the attribute removes
    /// its columns in every ask, whoever made the ask.
    pub fn effective_asks(&self, asks: &[Ask], cols: &Columns) -> Vec<Ask> {
        let mut out = asks.to_vec();
        if self.drops_attribute() {
            for a in &mut out {
                for (r, s) in a.removed.iter_mut().zip(&cols.sensitive) {
                    *r |= *s;
                }
            }
        }
        out
    }

    /// The columns this editor's edits may not read whatever is asked (`verify::Target`'s
    /// `without`): the sensitive attribute's when it drops the attribute, else none.
    pub fn unread_columns(&self, cols: &Columns) -> Vec<bool> {
        if self.drops_attribute() {
            cols.sensitive.clone()
        } else {
            Vec::new()
        }
    }

    pub fn opts(&self) -> ApplyOpts {
        ApplyOpts {
            gamma: self.gamma,
            tau: self.tau,
        }
    }
}

/// What one model is asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    /// Per input column: remove it (minimise).
    pub removed: Vec<bool>,
    /// Weight of the fairness gap against utility (fairness).
    pub lambda: f32,
    /// Target weight sparsity (prune).
    pub sparsity: f32,
    /// Logit shift per group (fairness, shift editors; then `lambda` is unused).
    pub shift: Option<Vec<f32>>,
}

impl Ask {
    pub fn new(columns: usize) -> Ask {
        Ask {
            removed: vec![false; columns],
            lambda: 1.0,
            sparsity: 0.0,
            shift: None,
        }
    }
    pub fn cond(&self, req: Requirement) -> Vec<f32> {
        let frac =
            self.removed.iter().filter(|r| **r).count() as f32 / self.removed.len().max(1) as f32;
        match req {
            Requirement::Minimise => vec![1.0, 0.0, 0.0, frac],
            Requirement::Fairness => match &self.shift {
                Some(shift) => {
                    let mut c = vec![1.0, 0.0, 0.0, 0.0];
                    c[1..1 + shift.len()].copy_from_slice(shift);
                    c
                }
                None => vec![1.0, self.lambda.max(1e-6).log10() / 3.0, self.sparsity, 0.0],
            },
            Requirement::Prune => vec![1.0, 0.0, self.sparsity, frac],
        }
    }
}

/// Per input column: it belongs to the sensitive attribute.
pub fn sensitive_columns(schema: &Schema) -> Vec<bool> {
    let mut s = vec![false; schema.n_columns()];
    if let Some(f) = schema.sensitive.as_deref().and_then(|n| schema.feature(n)) {
        s[f.start..f.start + f.width]
            .iter_mut()
            .for_each(|c| *c = true);
    }
    s
}

/// What the editor knows of the input columns of its data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Columns {
    /// Per column: it belongs to the sensitive attribute.
    pub sensitive: Vec<bool>,
    /// Per column: its mean on the training split (empty: no mean fold).
    pub means: Vec<f32>,
    /// A calibration batch of training rows, for what reads data (empty when the data was not
    /// given).
    pub calibration: Split,
    /// The training split's column moments, for least-squares folds (empty without the data).
    pub moments: std::sync::Arc<ColumnMoments>,
}

impl Columns {
    /// The columns of `schema`'s data, with a calibration batch of `calibration_rows` training
    /// rows.
    pub fn of(schema: &Schema, train: &Split, calibration_rows: usize) -> Columns {
        let d = schema.n_columns();
        let rows = train.rows().max(1);
        let mut means = vec![0.0f64; d];
        for r in train.x.chunks(d) {
            for (m, v) in means.iter_mut().zip(r) {
                *m += *v as f64;
            }
        }
        Columns {
            sensitive: sensitive_columns(schema),
            means: means.iter().map(|m| (m / rows as f64) as f32).collect(),
            calibration: train.calibration_batch(calibration_rows),
            moments: std::sync::Arc::new(train.moments()),
        }
    }
}

/// Per input column: it belongs to one of `features` (names checked by the caller).
pub fn removed_columns(
    schema: &Schema,
    features: &[String],
) -> std::result::Result<Vec<bool>, String> {
    let mut r = vec![false; schema.n_columns()];
    for f in schema.features_named(features)? {
        r[f.start..f.start + f.width]
            .iter_mut()
            .for_each(|c| *c = true);
    }
    Ok(r)
}
