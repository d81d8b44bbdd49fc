//! What runs on one test model: every baseline of the requirement and, given one, the editor.
//! A method is a name, a setting (prune: its sparsity) and a closure from nothing to the edited
//! parameters, so that `evaluate` times each the same way.

use super::CompareConfig;
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::io::data::Dataset;
use crate::networks::mlp::MlpShape;
use crate::requirement::LAMBDA_SEARCH_POINTS;
use crate::requirement::{removed_columns, Ask, Columns, FairTarget, Requirement};
use crate::workflows::baselines::*;
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::edit::edit_models;
use crate::workflows::edit::search::{lambda_grid, search_lambda, search_shift};
use crate::workflows::fit::FitModel;
use crate::workflows::zoo::ModelRecord;

pub struct Method<'a> {
    pub name: String,
    pub setting: Option<f64>,
    pub run: Box<dyn Fn() -> Result<Vec<f32>> + 'a>,
}

fn method<'a>(
    name: impl Into<String>,
    setting: Option<f64>,
    run: impl Fn() -> Result<Vec<f32>> + 'a,
) -> Method<'a> {
    Method {
        name: name.into(),
        setting,
        run: Box::new(run),
    }
}

/// One test model and what the methods need to know of it.
pub struct Subject<'a> {
    pub dev: &'a Device,
    pub data: &'a Dataset,
    pub cfg: &'a CompareConfig,
    pub columns: &'a Columns,
    pub rec: &'a ModelRecord,
    pub shape: MlpShape,
    pub params: Vec<f32>,
}

impl<'a> Subject<'a> {
    /// Fine-tuning at the model's own hyper-parameters (its seed moved, so that fine-tuning
    /// does not replay the model's own minibatch order).
    fn fine_tune(&self) -> FineTune {
        FineTune {
            epochs: self.cfg.ft_epochs,
            lr: self.rec.lr,
            weight_decay: self.rec.weight_decay,
            batch_size: self.rec.batch_size,
            seed: self.rec.seed ^ 0xf1e,
        }
    }

    /// The baselines of the requirement, in the order reports list them.
    pub fn baselines(&'a self) -> Result<Vec<Method<'a>>> {
        match self.cfg.requirement {
            Requirement::Minimise => self.minimise(),
            Requirement::Prune => Ok(self
                .cfg
                .sparsity
                .iter()
                .flat_map(|&s| self.prune(s))
                .collect()),
            Requirement::Fairness => Ok(self.fairness()),
        }
    }

    /// Zero the removed columns (with or without their means folded into the biases), zero and
    /// fine-tune, retrain from scratch without them.
    fn minimise(&'a self) -> Result<Vec<Method<'a>>> {
        let (dev, data, shape, params) = (self.dev, self.data, &self.shape, &self.params);
        let mask = drop_mask(shape, &data.schema, &self.cfg.drop).map_err(Error::Usage)?;
        let removed = removed_columns(&data.schema, &self.cfg.drop).map_err(Error::Usage)?;
        let (ft, rec) = (self.fine_tune(), self.rec);
        let retrain_as = FitModel {
            seed: rec.seed,
            lr: rec.lr,
            weight_decay: rec.weight_decay,
            epochs: rec.epochs,
        };
        let (m1, m2, m3, means) = (
            mask.clone(),
            mask.clone(),
            mask.clone(),
            &self.columns.means,
        );
        Ok(vec![
            method("zero columns", None, move || Ok(apply(params, &m1))),
            method("zero columns + mean fold", None, move || {
                let folded = fold_removed_means(shape, params, &removed, means);
                Ok(apply(&folded, &mask))
            }),
            method(
                format!("zero + fine-tune ({} ep)", self.cfg.ft_epochs),
                None,
                move || masked_finetune(dev, shape, &apply(params, &m2), &m2, data, &ft),
            ),
            method("retrain without", None, move || {
                retrain(dev, shape, &m3, data, &retrain_as, rec.batch_size)
            }),
        ])
    }

    /// At sparsity `s`: global magnitude, layer-wise magnitude and LAMP pruning, each with and
    /// without masked fine-tuning, and iterative magnitude pruning.
    fn prune(&'a self, s: f64) -> Vec<Method<'a>> {
        type MaskFn = fn(&MlpShape, &[f32], f64) -> Vec<f32>;
        let masks: [(&str, MaskFn, bool); 6] = [
            ("global magnitude", global_magnitude_mask, false),
            ("global magnitude + fine-tune", global_magnitude_mask, true),
            ("layer-wise magnitude", layerwise_magnitude_mask, false),
            (
                "layer-wise magnitude + fine-tune",
                layerwise_magnitude_mask,
                true,
            ),
            ("LAMP", lamp_mask, false),
            ("LAMP + fine-tune", lamp_mask, true),
        ];
        let (dev, data, shape, params, ft) = (
            self.dev,
            self.data,
            &self.shape,
            &self.params,
            self.fine_tune(),
        );
        let mut out: Vec<Method> = masks
            .into_iter()
            .map(|(name, mask_of, tune)| {
                method(name, Some(s), move || {
                    let mask = mask_of(shape, params, s);
                    let pruned = apply(params, &mask);
                    if tune {
                        masked_finetune(dev, shape, &pruned, &mask, data, &ft)
                    } else {
                        Ok(pruned)
                    }
                })
            })
            .collect();
        out.push(method(
            "iterative magnitude (3 rounds)",
            Some(s),
            move || iterative_magnitude(dev, shape, params, s, 3, data, &ft),
        ));
        out
    }

    /// One fairness-penalised fine-tuning per lambda, each its own method so that the sweep
    /// traces a front. (Threshold post-processing changes no weights: `evaluate` runs it.)
    fn fairness(&'a self) -> Vec<Method<'a>> {
        let (dev, data, shape, params, ft) = (
            self.dev,
            self.data,
            &self.shape,
            &self.params,
            self.fine_tune(),
        );
        let gap = self.cfg.gap;
        self.cfg
            .lambdas
            .iter()
            .map(|&lam| {
                method(format!("fair fine-tune lambda={lam}"), None, move || {
                    Ok(fair_finetune(dev, shape, params, data, &ft, gap, &[lam])?.remove(0))
                })
            })
            .collect()
    }

    /// The editor, as a user runs it: one inference per edit; a fairness bound met by choosing
    /// group shifts (shift editors) or a lambda (penalty editors) on the validation split.
    pub fn editor(&'a self, ef: &'a EditorFile) -> Result<Vec<Method<'a>>> {
        let (dev, shape, params, schema) = (self.dev, &self.shape, &self.params, &ef.schema);
        let edit_one = move |ask: Ask| -> Result<Vec<f32>> {
            let models = [(shape, params.as_slice())];
            Ok(edit_models(dev, &ef.editor, &ef.spec, &models, &[ask], &ef.columns)?.remove(0))
        };
        let (val, gap, bound) = (&self.data.val, self.cfg.gap, self.cfg.max_gap);
        Ok(match self.cfg.requirement {
            Requirement::Minimise => {
                let removed = removed_columns(schema, &self.cfg.drop).map_err(Error::Usage)?;
                vec![method("editor (one inference)", None, move || {
                    edit_one(Ask {
                        removed: removed.clone(),
                        ..Ask::new(schema.n_columns())
                    })
                })]
            }
            Requirement::Prune => self
                .cfg
                .sparsity
                .iter()
                .map(|&sp| {
                    method("editor (one inference)", Some(sp), move || {
                        edit_one(Ask {
                            sparsity: sp as f32,
                            ..Ask::new(schema.n_columns())
                        })
                    })
                })
                .collect(),
            Requirement::Fairness if ef.spec.fair_target == FairTarget::Shift => {
                let name = "editor (group shifts picked on val, one inference)";
                vec![method(name, None, move || {
                    let (e, spec, cols) = (&ef.editor, &ef.spec, &ef.columns);
                    let model = (shape, params.as_slice());
                    Ok(search_shift(dev, e, spec, cols, schema, model, val, gap, bound)?.1)
                })]
            }
            Requirement::Fairness => {
                let grid = lambda_grid(ef.lambda);
                let name =
                    format!("editor ({LAMBDA_SEARCH_POINTS} lambdas in one batch, picked on val)");
                vec![method(name, None, move || {
                    Ok(search_lambda(dev, ef, shape, params, val, gap, bound, &grid)?.1)
                })]
            }
        })
    }
}
