//! One model's rows: every method run and timed (wall time until the device is idle), its
//! predictions on a split checked by `verify` against the requirement; and the choice of the
//! best one-shot rule of each setting on validation models, scored on the validation split.

use super::methods::{calibration, Edited, Subject};
use super::summarise::Choice;
use super::{CompareConfig, Kind, Row, Setting};
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::io::data::{Dataset, Split};
use crate::networks::mlp::predict;
use crate::requirement::metrics::{accuracy, median, predictions};
use crate::requirement::verify::{compliant, Target};
use crate::requirement::{removed_columns, Columns, Requirement};
use crate::workflows::baselines::{least_squares_fold, zero_batch_columns, zero_columns};
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::zoo::load::Member;
use crate::workflows::zoo::ModelRecord;
use std::path::Path;
use std::time::Instant;

/// What every model's evaluation shares.
pub struct Context<'a> {
    pub dev: &'a Device,
    pub data: &'a Dataset,
    pub editor: Option<&'a EditorFile>,
    pub untrained: Option<&'a EditorFile>,
    pub cfg: &'a CompareConfig,
    /// The input columns of the data (their training means fold into the biases).
    pub columns: Columns,
    /// The calibration batch of the data-aware rules, with the columns of features dropped
    /// alongside pruning zero.
    pub calib: (Vec<f32>, usize),
    /// Prune: the columns of the features removed in the same edit (`--drop`; empty: none).
    pub dropped: Vec<bool>,
}

impl<'a> Context<'a> {
    pub fn new(
        dev: &'a Device,
        data: &'a Dataset,
        editor: Option<&'a EditorFile>,
        untrained: Option<&'a EditorFile>,
        cfg: &'a CompareConfig,
    ) -> Result<Context<'a>> {
        let dropped = match cfg.requirement {
            Requirement::Prune if !cfg.drop.is_empty() => {
                removed_columns(&data.schema, &cfg.drop).map_err(Error::Usage)?
            }
            _ => Vec::new(),
        };
        let (x, rows) = calibration(data, cfg.calibration_rows);
        Ok(Context {
            dev,
            data,
            editor,
            untrained,
            cfg,
            columns: Columns::of(&data.schema, &data.train, cfg.calibration_rows),
            calib: (zero_batch_columns(&x, &dropped), rows),
            dropped,
        })
    }

    /// The requirement a method at `setting` is checked against.
    fn target(&self, setting: Option<Setting>) -> Result<Target> {
        Ok(match (self.cfg.requirement, setting) {
            (Requirement::Minimise, _) => Target::Minimise {
                removed: removed_columns(&self.data.schema, &self.cfg.drop)
                    .map_err(Error::Usage)?,
            },
            (Requirement::Prune, Some(Setting::Sparsity(sparsity))) => Target::Prune {
                sparsity,
                without: self.dropped.clone(),
            },
            (Requirement::Prune, Some(Setting::Neurons(fraction))) => Target::PruneNeurons {
                fraction,
                without: self.dropped.clone(),
            },
            (Requirement::Prune, None) => unreachable!("prune methods carry their setting"),
            (Requirement::Fairness, _) => Target::Fairness {
                gap: self.cfg.gap,
                max_gap: self.cfg.max_gap,
                without: match self.cfg.without_attribute {
                    true => self.columns.sensitive.clone(),
                    false => Vec::new(),
                },
                sparsity: self.cfg.fair_sparsity.unwrap_or(0.0),
            },
        })
    }

    /// Every method on the model of `rec` (its file in `dir`), scored on `split`; with
    /// `one_shot_only`, the one-shot rules alone.
    pub fn model_rows(
        &self,
        dir: &Path,
        rec: &ModelRecord,
        split: &Split,
        one_shot_only: bool,
    ) -> Result<Vec<Row>> {
        let dev = self.dev;
        let model = Member::load(dir, rec)?;
        // A model the editor cannot edit (another activation, deeper) is refused, as by edit.
        if let Some(ef) = self.editor.filter(|_| !one_shot_only) {
            ef.check_model(&model.path, &model.model)?;
        }
        let k = model.shape.outputs();
        let base = predictions(&predict(dev, &model.shape, 1, &model.params, &split.x)?, k);
        // Features dropped alongside pruning: every method prunes the model with them folded
        // by least squares (the editor's fold of a folded model changes nothing).
        let params = match self.dropped.contains(&true) {
            true => {
                let folded = least_squares_fold(
                    &model.shape,
                    &model.params,
                    &self.dropped,
                    &self.columns.moments,
                );
                zero_columns(&model.shape, &folded, &self.dropped)
            }
            false => model.params,
        };
        let subject = Subject {
            dev,
            data: self.data,
            cfg: self.cfg,
            columns: &self.columns,
            calib: &self.calib,
            rec,
            shape: model.shape,
            params,
        };
        let (shape, params) = (&subject.shape, &subject.params);
        let mut methods = subject.baselines(one_shot_only)?;
        if self.cfg.no_fine_tune {
            methods.retain(|m| m.kind != Kind::FineTuned);
        }
        if !one_shot_only {
            for (ef, kind) in [
                (self.editor, Kind::Editor),
                (self.untrained, Kind::UntrainedEditor),
            ] {
                if let Some(ef) = ef {
                    methods.extend(subject.editor(ef, kind)?);
                }
            }
        }
        let mut rows = Vec::new();
        for m in &methods {
            let t0 = Instant::now();
            let edited = (m.run)(split)?;
            dev.sync()?;
            let seconds = t0.elapsed().as_secs_f64();
            // A rule on the unchanged model gives decisions; an edit, parameters to predict with.
            let (weights, pred) = match &edited {
                Edited::Params(p) => (
                    p.as_slice(),
                    predictions(&predict(dev, shape, 1, p, &split.x)?, k),
                ),
                Edited::Decisions(d) => (params.as_slice(), d.clone()),
            };
            let verdict = self
                .target(m.setting)?
                .verify(shape, weights, Some((split, &pred)));
            let (before, after) = (accuracy(&split.y, &base), accuracy(&split.y, &pred));
            rows.push(Row {
                model: rec.id,
                method: m.name.clone(),
                kind: m.kind,
                setting: m.setting,
                seconds,
                accuracy: after,
                original_accuracy: before,
                accuracy_change: after - before,
                agreement: accuracy(&base, &pred),
                requirement_value: verdict.value,
                satisfied: verdict.met,
                compliant: compliant(verdict.met, before, after, self.cfg.max_drop),
            });
        }
        if self.cfg.requirement == Requirement::Fairness && !one_shot_only {
            let verdict = self
                .target(None)?
                .verify(shape, params, Some((split, &base)));
            let acc = accuracy(&split.y, &base);
            rows.push(Row {
                model: rec.id,
                method: "original (no edit)".into(),
                kind: Kind::Reference,
                setting: None,
                seconds: 0.0,
                accuracy: acc,
                original_accuracy: acc,
                accuracy_change: 0.0,
                agreement: 1.0,
                requirement_value: verdict.value,
                satisfied: verdict.met,
                compliant: verdict.met,
            });
        }
        Ok(rows)
    }

    /// The best one-shot rule of every setting, on `val` models (files in `zoo`) scored on the
    /// validation split: the rule that most often meets the requirement (fairness: complies),
    /// then the one of highest median accuracy (the earlier listed on ties).
    pub fn choose_rules(&self, zoo: &Path, val: &[&ModelRecord]) -> Result<Vec<Choice>> {
        let mut rows = Vec::new();
        for rec in val {
            rows.extend(self.model_rows(zoo, rec, &self.data.val, true)?);
        }
        Ok(self
            .cfg
            .settings()
            .into_iter()
            .filter_map(|setting| {
                let mut names: Vec<&str> = Vec::new();
                for r in rows.iter().filter(|r| r.setting == setting) {
                    if !names.contains(&r.method.as_str()) {
                        names.push(&r.method);
                    }
                }
                // Fairness rules trade accuracy for the bound: compliance ranks them. Pruning and
                // minimisation rules meet their requirement by construction: accuracy does.
                let fairness = self.cfg.requirement == Requirement::Fairness;
                let score = |name: &str| {
                    let rs: Vec<&Row> = rows
                        .iter()
                        .filter(|r| r.setting == setting && r.method == name)
                        .collect();
                    let share = |f: &dyn Fn(&Row) -> bool| {
                        rs.iter().filter(|r| f(r)).count() as f64 / rs.len() as f64
                    };
                    let ok = share(&|r| if fairness { r.compliant } else { r.satisfied });
                    (
                        ok,
                        median(&rs.iter().map(|r| r.accuracy).collect::<Vec<_>>()),
                    )
                };
                let candidates: Vec<(String, f64, f64)> = names
                    .iter()
                    .map(|&n| {
                        let (ok, acc) = score(n);
                        (n.to_string(), ok, acc)
                    })
                    .collect();
                let best = candidates.iter().enumerate().max_by(|(i, a), (j, b)| {
                    a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)).then(j.cmp(i))
                })?;
                Some(Choice {
                    setting,
                    rule: best.1 .0.clone(),
                    val_models: val.len(),
                    candidates,
                })
            })
            .collect())
    }
}
