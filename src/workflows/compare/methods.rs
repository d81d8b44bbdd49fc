//! What runs on one model: the requirement's one-shot rules (no training: masks, scores,
//! closed-form compensation), its fine-tuned references, and the editor, trained and untrained.
//! A method is a name, a kind, a setting and a closure that gives the edited parameters, or,
//! for a rule on the unchanged model (threshold post-processing), its decisions on a split.

use super::{CompareConfig, Kind, Setting};
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::io::data::{Dataset, Split};
use crate::networks::mlp::{predict, MlpShape};
use crate::requirement::verify::Target;
use crate::requirement::{removed_columns, sensitive_columns, Ask, Columns, FairTarget};
use crate::requirement::{MinimiseBase, PruneScore, Requirement, LAMBDA_SEARCH_POINTS};
use crate::workflows::baselines::postprocess::{fit_demographic_parity, fit_equalized_odds};
use crate::workflows::baselines::*;
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::edit::search::{lambda_grid, pick_lambda, score_fairness};
use crate::workflows::edit::search::{search_lambda, search_shift, search_steps};
use crate::workflows::edit::{edit_models, edit_models_at, forget_rule_starts};
use crate::workflows::fit::FitModel;
use crate::workflows::zoo::ModelRecord;

/// What a method gives: edited parameters, or (a rule on the unchanged model) decisions.
pub enum Edited {
    Params(Vec<f32>),
    Decisions(Vec<f32>),
}

type Run<'a> = Box<dyn Fn(&Split) -> Result<Edited> + 'a>;

pub struct Method<'a> {
    pub name: String,
    pub kind: Kind,
    pub setting: Option<Setting>,
    pub run: Run<'a>,
}

/// A method that edits parameters.
fn edit<'a>(
    name: impl Into<String>,
    kind: Kind,
    setting: Option<Setting>,
    run: impl Fn() -> Result<Vec<f32>> + 'a,
) -> Method<'a> {
    Method {
        name: name.into(),
        kind,
        setting,
        run: Box::new(move |_| Ok(Edited::Params(run()?))),
    }
}

/// A mask holding the zeros of `params` at zero (what fine-tuning after a rule keeps).
fn zeros_of(params: &[f32]) -> Vec<f32> {
    params.iter().map(|&v| (v != 0.0) as u32 as f32).collect()
}

/// One model and what the methods need to know of it.
pub struct Subject<'a> {
    pub dev: &'a Device,
    pub data: &'a Dataset,
    pub cfg: &'a CompareConfig,
    pub columns: &'a Columns,
    /// The calibration batch of the data-aware rules: (x, rows).
    pub calib: &'a (Vec<f32>, usize),
    pub rec: &'a ModelRecord,
    pub shape: MlpShape,
    pub params: Vec<f32>,
}

/// Names of the pruning rules a prune editor can start from (`PruneScore::Obs`,
/// `PruneScore::LampReconstruction`), as comparisons list them.
pub const OBS_RECONSTRUCTION: &str = "OBS reconstruction";
pub const LAMP_RECONSTRUCTION: &str = "LAMP + reconstruction";
/// Names of the minimisation rules a minimisation editor can start from
/// (`MinimiseBase`), as comparisons list them.
pub const MINIMISE_STARTS: [(&str, MinimiseBase); 5] = [
    ("mean fold", MinimiseBase::Mean),
    ("least-squares fold", MinimiseBase::LeastSquares),
    (
        "least-squares fold + reconstruction",
        MinimiseBase::Reconstruction,
    ),
    (
        "least-squares fold + reconstruction + natural step",
        MinimiseBase::ReconstructionStep,
    ),
    ("closer fold (on calibration rows)", MinimiseBase::Closer),
];
/// The reconstructions, then one natural-gradient step on the calibration batch's labels
/// (`baselines::natural_step`), the pruned weights and neurons staying zero.
pub const OBS_STEP: &str = "OBS reconstruction + natural step";
pub const LAMP_STEP: &str = "LAMP + reconstruction + natural step";
/// The same with a step three times as long (`LONG_NATURAL_STEP`).
pub const OBS_LONG_STEP: &str = "OBS reconstruction + natural step x3";
pub const LAMP_LONG_STEP: &str = "LAMP + reconstruction + natural step x3";
const NEURON_STEP: &str = "neuron reconstruction + natural step";

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

    /// `rule`'s edit, then masked fine-tuning that keeps its zeros.
    fn tuned(
        &'a self,
        rule: impl Fn() -> Result<Vec<f32>> + 'a,
    ) -> impl Fn() -> Result<Vec<f32>> + 'a {
        let ft = self.fine_tune();
        move || {
            let edited = rule()?;
            let mask = zeros_of(&edited);
            masked_finetune(self.dev, &self.shape, &edited, &mask, self.data, &ft)
        }
    }

    /// The requirement's one-shot rules and fine-tuned references, in the order reports list
    /// them; `one_shot_only` (choosing a rule on validation models) leaves out the rest.
    pub fn baselines(&'a self, one_shot_only: bool) -> Result<Vec<Method<'a>>> {
        let mut out = match self.cfg.requirement {
            Requirement::Minimise => self.minimise()?,
            Requirement::Prune => self
                .cfg
                .settings()
                .into_iter()
                .flatten()
                .flat_map(|s| match s {
                    Setting::Sparsity(v) => self.prune(v),
                    Setting::Neurons(f) => self.prune_neurons(f),
                })
                .collect(),
            Requirement::Fairness => self.fairness()?,
        };
        if one_shot_only {
            out.retain(|m| m.kind == Kind::OneShot);
        }
        Ok(out)
    }

    /// Zero the removed columns; with their means, or their least-squares prediction from the
    /// kept columns, folded in, or per model the one of those two folds that stays closer to it
    /// on the calibration batch; fine-tune after; retrain from scratch without them.
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
        let (r2, r3, moments) = (removed.clone(), removed.clone(), &self.columns.moments);
        let (r4, r5, labelled) = (removed.clone(), removed.clone(), &self.columns.calibration);
        let least_squares = move || Ok(least_squares_fold(shape, params, &r2, moments));
        let ls = least_squares.clone();
        let (cx, cn) = self.calib;
        let closer = move || Ok(closer_fold(shape, params, &r3, means, moments, cx, *cn));
        Ok(vec![
            edit("zero columns", Kind::OneShot, None, move || {
                Ok(apply(params, &m1))
            }),
            edit(MINIMISE_STARTS[0].0, Kind::OneShot, None, move || {
                let folded = fold_removed_means(shape, params, &removed, means);
                Ok(apply(&folded, &mask))
            }),
            edit(MINIMISE_STARTS[1].0, Kind::OneShot, None, least_squares),
            edit(MINIMISE_STARTS[2].0, Kind::OneShot, None, move || {
                Ok(fold_reconstruction(shape, params, &r4, moments, cx, *cn))
            }),
            edit(MINIMISE_STARTS[3].0, Kind::OneShot, None, move || {
                Ok(fold_reconstruction_step(
                    shape, params, &r5, moments, labelled,
                ))
            }),
            edit(MINIMISE_STARTS[4].0, Kind::OneShot, None, closer),
            edit(
                format!("zero + fine-tune ({} ep)", self.cfg.ft_epochs),
                Kind::FineTuned,
                None,
                move || masked_finetune(dev, shape, &apply(params, &m2), &m2, data, &ft),
            ),
            edit(
                format!("least-squares fold + fine-tune ({} ep)", self.cfg.ft_epochs),
                Kind::FineTuned,
                None,
                self.tuned(ls),
            ),
            edit("retrain without", Kind::FineTuned, None, move || {
                retrain(dev, shape, &m3, data, &retrain_as, rec.batch_size)
            }),
        ])
    }

    /// At weight sparsity `s`: magnitude (global, layer-wise), LAMP, Wanda, OBS reconstruction
    /// and LAMP's mask re-solved; the best of them fine-tuned, and iterative magnitude pruning.
    fn prune(&'a self, s: f64) -> Vec<Method<'a>> {
        let (shape, params, (cx, cn)) = (&self.shape, &self.params, self.calib);
        let at = Some(Setting::Sparsity(s));
        let one = |name: &str, rule: fn(&MlpShape, &[f32], f64) -> Vec<f32>| {
            edit(name, Kind::OneShot, at, move || {
                Ok(apply(params, &rule(shape, params, s)))
            })
        };
        let wanda = move || Ok(apply(params, &wanda_mask(shape, params, cx, *cn, s)));
        let obs = move || Ok(obs_prune(shape, params, cx, *cn, s));
        let lamp_re = move || Ok(lamp_reconstruction(shape, params, cx, *cn, s));
        let global = move || Ok(apply(params, &global_magnitude_mask(shape, params, s)));
        let lamp = move || Ok(apply(params, &lamp_mask(shape, params, s)));
        let (moments, labelled) = (&self.columns.moments, &self.columns.calibration);
        let stepped = move |pruned: Vec<f32>, size: f64| {
            natural_step_of(shape, &pruned, &[], moments, labelled, size)
        };
        let (dev, data, ft) = (self.dev, self.data, self.fine_tune());
        vec![
            one("global magnitude", global_magnitude_mask),
            one("layer-wise magnitude", layerwise_magnitude_mask),
            one("LAMP", lamp_mask),
            edit("Wanda", Kind::OneShot, at, wanda),
            edit(OBS_RECONSTRUCTION, Kind::OneShot, at, obs),
            edit(LAMP_RECONSTRUCTION, Kind::OneShot, at, lamp_re),
            edit(OBS_STEP, Kind::OneShot, at, move || {
                Ok(stepped(obs()?, NATURAL_STEP))
            }),
            edit(LAMP_STEP, Kind::OneShot, at, move || {
                Ok(stepped(lamp_re()?, NATURAL_STEP))
            }),
            edit(OBS_LONG_STEP, Kind::OneShot, at, move || {
                Ok(stepped(obs()?, LONG_NATURAL_STEP))
            }),
            edit(LAMP_LONG_STEP, Kind::OneShot, at, move || {
                Ok(stepped(lamp_re()?, LONG_NATURAL_STEP))
            }),
            edit(
                "global magnitude + fine-tune",
                Kind::FineTuned,
                at,
                self.tuned(global),
            ),
            edit("LAMP + fine-tune", Kind::FineTuned, at, self.tuned(lamp)),
            edit(
                "OBS reconstruction + fine-tune",
                Kind::FineTuned,
                at,
                self.tuned(obs),
            ),
            edit(
                "LAMP + reconstruction + fine-tune",
                Kind::FineTuned,
                at,
                self.tuned(lamp_re),
            ),
            edit(
                "iterative magnitude (3 rounds)",
                Kind::FineTuned,
                at,
                move || iterative_magnitude(dev, shape, params, s, 3, data, &ft),
            ),
        ]
    }

    /// Removing the share `f` of every hidden layer's neurons: by magnitude, by Wanda's
    /// activation scores, with the next layer re-solved (then one natural step); the
    /// re-solved fine-tuned.
    fn prune_neurons(&'a self, f: f64) -> Vec<Method<'a>> {
        let (shape, params, (cx, cn)) = (&self.shape, &self.params, self.calib);
        let at = Some(Setting::Neurons(f));
        let rec = move || Ok(neuron_reconstruct(shape, params, cx, *cn, f));
        let (moments, labelled) = (&self.columns.moments, &self.columns.calibration);
        vec![
            edit("neuron magnitude", Kind::OneShot, at, move || {
                Ok(neuron_magnitude(shape, params, f))
            }),
            edit("neuron Wanda", Kind::OneShot, at, move || {
                Ok(neuron_wanda(shape, params, cx, *cn, f))
            }),
            edit("neuron reconstruction", Kind::OneShot, at, rec),
            edit(NEURON_STEP, Kind::OneShot, at, move || {
                Ok(natural_step(shape, &rec()?, &[], moments, labelled))
            }),
            edit(
                "neuron reconstruction + fine-tune",
                Kind::FineTuned,
                at,
                self.tuned(rec),
            ),
        ]
    }

    /// Group thresholds on the unchanged model (deterministic; the Hardt et al. rule, which
    /// randomises, as a reference), and penalised fine-tuning at each lambda: reading the
    /// attribute, and with its columns dropped. Without the attribute, the rules are its
    /// columns dropped (mean or least-squares fold), and what reads it is a reference.
    fn fairness(&'a self) -> Result<Vec<Method<'a>>> {
        let (dev, data, shape, params, ft) = (
            self.dev,
            self.data,
            &self.shape,
            &self.params,
            self.fine_tune(),
        );
        let (gap, bound, seed) = (self.cfg.gap, self.cfg.max_gap, self.rec.seed);
        let scores = move |split: &Split| predict(dev, shape, 1, params, &split.x);
        let groups = data.schema.groups.len();
        // Without the attribute, what reads it is only a point of reference.
        let without = self.cfg.without_attribute;
        let reading = if without {
            Kind::Reference
        } else {
            Kind::OneShot
        };
        let reading_tuned = if without {
            Kind::Reference
        } else {
            Kind::FineTuned
        };
        let mut out = vec![
            Method {
                name: "group thresholds (needs the attribute)".into(),
                kind: reading,
                setting: None,
                run: Box::new(move |split| {
                    let shift = choose_shift(&scores(&data.val)?, &data.val, groups, gap, bound);
                    Ok(Edited::Decisions(shifted_decisions(
                        &scores(split)?,
                        &split.group,
                        &shift,
                    )))
                }),
            },
            Method {
                name: "threshold post-processing (needs the attribute; randomises)".into(),
                kind: Kind::Reference,
                setting: None,
                run: Box::new(move |split| {
                    let (val, v) = (&data.val, scores(&data.val)?);
                    let rule = match gap {
                        crate::engine::kernels::fairness::Gap::Eo => {
                            fit_equalized_odds(&v, &val.y, &val.group, groups, seed)
                        }
                        crate::engine::kernels::fairness::Gap::Dp => {
                            fit_demographic_parity(&v, &val.group, groups, seed)
                        }
                    };
                    Ok(Edited::Decisions(rule.apply(&scores(split)?, &split.group)))
                }),
            },
        ];
        let sensitive = sensitive_columns(&data.schema);
        let moments = &self.columns.moments;
        if without {
            out.extend(self.drop_attribute_rules()?);
        }
        for &lam in &self.cfg.lambdas {
            out.push(edit(
                format!("fair fine-tune lambda={lam}"),
                reading_tuned,
                None,
                move || Ok(fair_finetune(dev, shape, params, data, &ft, gap, &[lam])?.remove(0)),
            ));
        }
        for &lam in &self.cfg.lambdas {
            let s = sensitive.clone();
            out.push(edit(
                format!(
                    "drop attribute{} + fair fine-tune lambda={lam}",
                    self.pruning_step()
                ),
                Kind::FineTuned,
                None,
                move || {
                    let folded = self.pruned_too(least_squares_fold(shape, params, &s, moments));
                    let tuned =
                        fair_finetune_without(dev, shape, &folded, &s, data, &ft, gap, &[lam]);
                    Ok(tuned?.remove(0))
                },
            ));
        }
        if without {
            out.extend(self.picked_fine_tunes());
        }
        Ok(out)
    }

    /// Without the attribute, the one-shot rules: its columns dropped, by the mean fold or the
    /// least-squares fold.
    fn drop_attribute_rules(&'a self) -> Result<Vec<Method<'a>>> {
        let (data, shape, params) = (self.data, &self.shape, &self.params);
        let sensitive = sensitive_columns(&data.schema);
        let (s1, s2) = (sensitive.clone(), sensitive);
        let (means, moments) = (&self.columns.means, &self.columns.moments);
        let mask = drop_mask(shape, &data.schema, data.schema.sensitive.as_slice())
            .map_err(Error::Usage)?;
        Ok(vec![
            edit(
                format!("drop attribute (mean fold){}", self.pruning_step()),
                Kind::OneShot,
                None,
                move || {
                    let folded = apply(&fold_removed_means(shape, params, &s1, means), &mask);
                    Ok(self.pruned_too(folded))
                },
            ),
            edit(
                format!("drop attribute (least-squares fold){}", self.pruning_step()),
                Kind::OneShot,
                None,
                move || Ok(self.pruned_too(least_squares_fold(shape, params, &s2, moments))),
            ),
        ])
    }

    /// Fairness pruned in the same edit (`CompareConfig::fair_sparsity`): `folded` (the
    /// attribute's columns already zero) pruned by OBS reconstruction, with those columns zero
    /// in the calibration batch too; else `folded` itself.
    fn pruned_too(&self, folded: Vec<f32>) -> Vec<f32> {
        match self.cfg.fair_sparsity {
            Some(s) => {
                let sensitive = sensitive_columns(&self.data.schema);
                let (x, rows) = self.calib;
                let x = zero_batch_columns(x, &sensitive);
                obs_prune(&self.shape, &folded, &x, *rows, s)
            }
            None => folded,
        }
    }

    /// The pruning step in a fairness method's name, where it prunes too (after the fold).
    fn pruning_step(&self) -> String {
        match self.cfg.fair_sparsity {
            Some(s) => format!(" + OBS reconstruction @ sparsity {s}"),
            None => String::new(),
        }
    }

    /// Without the attribute, the fine-tuning a user would run to meet the bound, from either
    /// fold: every lambda, and the one kept as the editor's search keeps its edit (on the
    /// validation split).
    fn picked_fine_tunes(&'a self) -> Vec<Method<'a>> {
        let (dev, data, shape, params, ft) = (
            self.dev,
            self.data,
            &self.shape,
            &self.params,
            self.fine_tune(),
        );
        let (gap, bound) = (self.cfg.gap, self.cfg.max_gap);
        let (lambdas, means, moments) = (
            &self.cfg.lambdas,
            &self.columns.means,
            &self.columns.moments,
        );
        let sensitive = sensitive_columns(&data.schema);
        [false, true]
            .into_iter()
            .map(|least_squares| {
                let s = sensitive.clone();
                let fold = if least_squares {
                    "least-squares"
                } else {
                    "mean"
                };
                edit(
                    format!(
                        "{fold} fold{} + fair fine-tune, lambda picked on val",
                        self.pruning_step()
                    ),
                    Kind::FineTuned,
                    None,
                    move || {
                        let folded = self.pruned_too(match least_squares {
                            true => least_squares_fold(shape, params, &s, moments),
                            false => zero_columns(
                                shape,
                                &fold_removed_means(shape, params, &s, means),
                                &s,
                            ),
                        });
                        let tuned = fair_finetune_without(
                            dev, shape, &folded, &s, data, &ft, gap, lambdas,
                        )?;
                        let target = Target::Fairness {
                            gap,
                            max_gap: bound,
                            without: s.clone(),
                            sparsity: self.cfg.fair_sparsity.unwrap_or(0.0),
                        };
                        let scored = score_fairness(dev, shape, &tuned, &data.val, &target)?;
                        Ok(tuned.into_iter().nth(pick_lambda(&scored, bound)).unwrap())
                    },
                )
            })
            .collect()
    }

    /// The editor, as a user runs it: one inference per edit; a fairness bound met by choosing
    /// group shifts (shift editors) or a lambda (penalty editors) on the validation split. Each
    /// edit is timed as a user's first edit of the model: starts remembered from another
    /// method's edit of it (the untrained editor's) are forgotten first.
    pub fn editor(&'a self, ef: &'a EditorFile, kind: Kind) -> Result<Vec<Method<'a>>> {
        let (dev, shape, params, schema) = (self.dev, &self.shape, &self.params, &ef.schema);
        let (train_rows, fixed_step) = (&self.data.train, self.cfg.editor_step);
        let edit_one = move |ask: Ask| -> Result<Vec<f32>> {
            forget_rule_starts();
            let models = [(shape, params.as_slice())];
            let (e, spec, cols) = (&ef.editor, &ef.spec, &ef.columns);
            if let Some(step) = fixed_step {
                let at = edit_models_at(dev, e, spec, &models, &[ask], cols, &[step])?;
                return Ok(at.into_iter().next().expect("one edit").remove(0));
            }
            if ef.searches_step() {
                let found = search_steps(dev, e, spec, cols, &models, &[ask], train_rows)?;
                return Ok(found.into_iter().next().expect("one edit").1);
            }
            Ok(edit_models(dev, e, spec, &models, &[ask], cols)?.remove(0))
        };
        let untrained = kind == Kind::UntrainedEditor;
        let named = |what: &str| {
            if untrained {
                format!("editor, untrained ({what})")
            } else {
                format!("editor ({what})")
            }
        };
        let (val, gap, bound) = (&self.data.val, self.cfg.gap, self.cfg.max_gap);
        Ok(match self.cfg.requirement {
            Requirement::Minimise => {
                let removed = removed_columns(schema, &self.cfg.drop).map_err(Error::Usage)?;
                vec![edit(named("one inference"), kind, None, move || {
                    edit_one(Ask {
                        removed: removed.clone(),
                        ..Ask::new(schema.n_columns())
                    })
                })]
            }
            // A whole-neuron editor edits at the neuron settings, the others at the sparsities;
            // either reads its share as the ask's sparsity.
            Requirement::Prune => {
                let removed = removed_columns(schema, &self.cfg.drop).map_err(Error::Usage)?;
                let settings: Vec<(f64, Setting)> = match ef.spec.prune_score {
                    PruneScore::Neurons => self
                        .cfg
                        .neurons
                        .iter()
                        .map(|&f| (f, Setting::Neurons(f)))
                        .collect(),
                    _ => (self.cfg.sparsity.iter())
                        .map(|&s| (s, Setting::Sparsity(s)))
                        .collect(),
                };
                settings
                    .into_iter()
                    .map(|(sp, setting)| {
                        let (at, removed) = (Some(setting), removed.clone());
                        edit(named("one inference"), kind, at, move || {
                            edit_one(Ask {
                                sparsity: sp as f32,
                                removed: removed.clone(),
                                ..Ask::new(schema.n_columns())
                            })
                        })
                    })
                    .collect()
            }
            Requirement::Fairness if ef.spec.fair_target == FairTarget::Shift => {
                let name = named("group shifts picked on val, one inference");
                vec![edit(name, kind, None, move || {
                    let (e, spec, cols) = (&ef.editor, &ef.spec, &ef.columns);
                    let model = (shape, params.as_slice());
                    Ok(search_shift(dev, e, spec, cols, schema, model, val, gap, bound)?.1)
                })]
            }
            Requirement::Fairness => {
                let grid = lambda_grid(ef.lambda);
                let name = named(&format!(
                    "{LAMBDA_SEARCH_POINTS} lambdas in one batch, picked on val"
                ));
                vec![edit(name, kind, None, move || {
                    let sparsity = self.cfg.fair_sparsity.unwrap_or(0.0) as f32;
                    forget_rule_starts();
                    let found =
                        search_lambda(dev, ef, shape, params, sparsity, val, gap, bound, &grid)?;
                    Ok(found.1)
                })]
            }
        })
    }
}

/// The calibration batch every data-aware rule of a comparison reads: the first `rows` training
/// rows.
pub fn calibration(data: &Dataset, rows: usize) -> (Vec<f32>, usize) {
    let c = data.train.calibration_batch(rows);
    let n = c.rows();
    (c.x, n)
}
