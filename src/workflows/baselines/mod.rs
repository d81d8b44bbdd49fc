//! What a user would do without a learned editor, as per-model procedures on the engine: the
//! one-shot rules (no training: masks, scores, closed-form compensation) and the fine-tuning
//! baselines. One file per requirement; `calibration` gives the rules that read data the
//! activations of a calibration batch (`engine::linalg` has the dense solves). Masks are
//! 0/1 per parameter (biases kept).

pub mod calibration;
pub mod fairness;
pub mod minimise;
pub mod natural_step;
pub mod postprocess;
pub mod prune;

pub use fairness::*;
pub use minimise::*;
pub use natural_step::*;
pub use prune::*;

use crate::engine::device::Device;
use crate::error::Result;
use crate::io::data::Dataset;
use crate::networks::mlp::{init_params, MlpShape};
use crate::workflows::fit::{fit, FitModel};

pub fn apply(params: &[f32], mask: &[f32]) -> Vec<f32> {
    params.iter().zip(mask).map(|(p, m)| p * m).collect()
}

/// Fine-tuning settings shared by the baselines.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct FineTune {
    pub epochs: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub batch_size: usize,
    pub seed: u64,
}

/// Fine-tune one model under `mask` on the training split.
pub fn masked_finetune(
    dev: &Device,
    shape: &MlpShape,
    params: &[f32],
    mask: &[f32],
    data: &Dataset,
    ft: &FineTune,
) -> Result<Vec<f32>> {
    let m = FitModel {
        seed: ft.seed,
        lr: ft.lr,
        weight_decay: ft.weight_decay,
        epochs: ft.epochs,
    };
    fit(
        dev,
        shape,
        params,
        Some(mask),
        &data.train,
        &[m],
        ft.batch_size,
        &mut |_, _| {},
    )
}

/// Retrain from scratch under `mask` with the model's own recorded seed and hyper-parameters.
pub fn retrain(
    dev: &Device,
    shape: &MlpShape,
    mask: &[f32],
    data: &Dataset,
    rec: &FitModel,
    batch_size: usize,
) -> Result<Vec<f32>> {
    fit(
        dev,
        shape,
        &init_params(shape, rec.seed),
        Some(mask),
        &data.train,
        &[*rec],
        batch_size,
        &mut |_, _| {},
    )
}
