//! Whether an edited model meets what was asked: one check that `regop edit`, `regop compare`
//! and the trainer's checkpoint choice all call. An edit is *compliant* when it meets its
//! requirement and loses at most `MAX_DROP` of accuracy.

use super::metrics::{fairness_gap, neuron_sparsity, weight_sparsity};
use crate::engine::kernels::fairness::Gap;
use crate::io::data::Split;
use crate::networks::mlp::MlpShape;

/// A requirement with its bound.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// These input columns unused: every first-layer weight out of them exactly zero.
    Minimise { removed: Vec<bool> },
    /// At least this fraction of the weights (biases excluded) exactly zero; and the columns
    /// `without` marks (features removed in the same edit; empty: none) unused.
    Prune { sparsity: f64, without: Vec<bool> },
    /// At least this fraction of the hidden neurons removed (in, out and bias zero); and the
    /// columns `without` marks unused.
    PruneNeurons { fraction: f64, without: Vec<bool> },
    /// The fairness gap, measured on a split's hard decisions, at most `max_gap`; and when
    /// the attribute may not be read (`without` marks its columns; empty: it may), every
    /// first-layer weight out of its columns exactly zero.
    Fairness {
        gap: Gap,
        max_gap: f64,
        without: Vec<bool>,
        /// At least this fraction of the weights exactly zero too (pruned in the same edit;
        /// 0: no pruning asked).
        sparsity: f64,
    },
}

/// What `verify` found.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// The requirement's measure (see `Target::measure`).
    pub value: f64,
    pub met: bool,
}

impl Target {
    /// What `measure` measures, for reports.
    pub fn measure_name(&self) -> String {
        match self {
            Target::Minimise { .. } => "largest weight on removed columns".into(),
            Target::Prune { without, .. } if without.contains(&true) => {
                "weight sparsity, removed features unused".into()
            }
            Target::Prune { .. } => "weight sparsity".into(),
            Target::PruneNeurons { without, .. } if without.contains(&true) => {
                "share of hidden neurons removed, removed features unused".into()
            }
            Target::PruneNeurons { .. } => "share of hidden neurons removed".into(),
            Target::Fairness { gap, without, .. } if without.contains(&true) => {
                format!("{} difference without the attribute", gap.short_name())
            }
            Target::Fairness { gap, .. } => format!("{} difference", gap.short_name()),
        }
    }

    /// The requirement's measure of a model: the largest |w| among first-layer weights out of
    /// removed columns (0: provably unused); the share of weights exactly zero; the fairness gap
    /// of the model's decisions `pred` on `split` (only fairness reads them).
    pub fn measure(
        &self,
        shape: &MlpShape,
        params: &[f32],
        decided: Option<(&Split, &[f32])>,
    ) -> f64 {
        match self {
            Target::Minimise { removed } => {
                let inputs = shape.fan_in(0);
                (0..shape.fan_out(0))
                    .flat_map(|j| (0..inputs).map(move |c| (j, c)))
                    .filter(|(_, c)| removed[*c])
                    .map(|(j, c)| params[shape.weight_offset(0) + j * inputs + c].abs() as f64)
                    .fold(0.0, f64::max)
            }
            Target::Prune { .. } => weight_sparsity(shape, params),
            Target::PruneNeurons { .. } => neuron_sparsity(shape, params),
            Target::Fairness { gap, .. } => {
                let (split, pred) = decided.expect("a fairness check needs decisions on data");
                fairness_gap(*gap, &split.y, pred, &split.group)
            }
        }
    }

    /// Check an edited model (with its decisions on a split, for fairness). Pruning counts as
    /// met when the sparsity is within half a weight of the target, as rounding allows.
    pub fn verify(
        &self,
        shape: &MlpShape,
        params: &[f32],
        decided: Option<(&Split, &[f32])>,
    ) -> Verdict {
        let value = self.measure(shape, params, decided);
        let met = match self {
            Target::Minimise { .. } => value == 0.0,
            Target::Prune { sparsity, .. } => sparse_enough(shape, value, *sparsity),
            Target::PruneNeurons { fraction, .. } => {
                let hidden: usize = shape.dims[1..shape.dims.len() - 1].iter().sum();
                value + 0.5 / hidden.max(1) as f64 >= *fraction
            }
            Target::Fairness {
                max_gap, sparsity, ..
            } => {
                value <= *max_gap
                    && (*sparsity == 0.0
                        || sparse_enough(shape, weight_sparsity(shape, params), *sparsity))
            }
        };
        Verdict {
            value,
            met: met && self.reads_none_of_without(shape, params),
        }
    }

    /// Whether every first-layer weight out of the columns `without` marks (a second
    /// requirement of the same edit) is exactly zero; true where there are none.
    fn reads_none_of_without(&self, shape: &MlpShape, params: &[f32]) -> bool {
        let without = match self {
            Target::Minimise { .. } => return true,
            Target::Prune { without, .. }
            | Target::PruneNeurons { without, .. }
            | Target::Fairness { without, .. } => without,
        };
        if !without.contains(&true) {
            return true;
        }
        let unread = Target::Minimise {
            removed: without.clone(),
        };
        unread.measure(shape, params, None) == 0.0
    }
}

/// Whether a weight sparsity `value` reaches `sparsity`, within half a weight (rounding).
fn sparse_enough(shape: &MlpShape, value: f64, sparsity: f64) -> bool {
    let weights: usize = (0..shape.layers())
        .map(|l| shape.fan_in(l) * shape.fan_out(l))
        .sum();
    value + 0.5 / weights as f64 >= sparsity
}

/// Whether an edit complies: it meets its requirement and its accuracy fell by at most
/// `max_drop` (`MAX_DROP` unless the user says otherwise) from `before` to `after`.
pub fn compliant(met: bool, before: f64, after: f64, max_drop: f64) -> bool {
    met && before - after <= max_drop
}
