//! One test model's rows: every method run and timed (wall time until the device is idle),
//! its edit's decisions on the test split, checked by `verify` against the requirement. For
//! fairness, also threshold post-processing (a rule on the unchanged model, not an edit) and
//! the unedited model as the front's reference point.

use super::methods::Subject;
use super::{CompareConfig, Row};
use crate::engine::device::Device;
use crate::engine::kernels::fairness::Gap;
use crate::error::{Error, Result};
use crate::io::data::Dataset;
use crate::networks::mlp::predict;
use crate::requirement::metrics::{accuracy, decisions};
use crate::requirement::verify::Target;
use crate::requirement::{removed_columns, Columns, Requirement};
use crate::workflows::baselines::postprocess::{fit_demographic_parity, fit_equalized_odds};
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
    pub cfg: &'a CompareConfig,
    /// The input columns of the data (their training means fold into the biases).
    pub columns: Columns,
}

impl<'a> Context<'a> {
    pub fn new(
        dev: &'a Device,
        data: &'a Dataset,
        editor: Option<&'a EditorFile>,
        cfg: &'a CompareConfig,
    ) -> Result<Context<'a>> {
        Ok(Context {
            dev,
            data,
            editor,
            cfg,
            columns: Columns::of(&data.schema, &data.train),
        })
    }

    /// The requirement a method at `setting` is checked against.
    fn target(&self, setting: Option<f64>) -> Result<Target> {
        Ok(match self.cfg.requirement {
            Requirement::Minimise => Target::Minimise {
                removed: removed_columns(&self.data.schema, &self.cfg.drop)
                    .map_err(Error::Usage)?,
            },
            Requirement::Prune => Target::Prune {
                sparsity: setting.expect("prune methods carry their sparsity"),
            },
            Requirement::Fairness => Target::Fairness {
                gap: self.cfg.gap,
                max_gap: self.cfg.max_gap,
            },
        })
    }

    /// Every method on the model of `rec` (its file in `zoo`).
    pub fn model_rows(&self, zoo: &Path, rec: &ModelRecord) -> Result<Vec<Row>> {
        let (dev, split) = (self.dev, &self.data.test);
        let model = Member::load(zoo, rec)?;
        let subject = Subject {
            dev,
            data: self.data,
            cfg: self.cfg,
            columns: &self.columns,
            rec,
            shape: model.shape,
            params: model.params,
        };
        let (shape, params) = (&subject.shape, &subject.params);
        let base = decisions(&predict(dev, shape, 1, params, &split.x)?);
        // A row for decisions `pred` of parameters `edited`, checked against `target`.
        let row =
            |method: &str, setting, seconds, edited: &[f32], pred: &[f32], target: &Target| {
                let verdict = target.verify(shape, edited, Some((split, pred)));
                Row {
                    model: rec.id,
                    method: method.to_string(),
                    setting,
                    seconds,
                    accuracy: accuracy(&split.y, pred),
                    original_accuracy: accuracy(&split.y, &base),
                    agreement: accuracy(&base, pred),
                    requirement_value: verdict.value,
                    satisfied: verdict.met,
                }
            };
        let mut methods = subject.baselines()?;
        if let Some(ef) = self.editor {
            methods.extend(subject.editor(ef)?);
        }
        let mut rows = Vec::new();
        for m in &methods {
            let t0 = Instant::now();
            let edited = (m.run)()?;
            dev.sync()?;
            let seconds = t0.elapsed().as_secs_f64();
            let pred = decisions(&predict(dev, shape, 1, &edited, &split.x)?);
            let target = self.target(m.setting)?;
            rows.push(row(&m.name, m.setting, seconds, &edited, &pred, &target));
        }
        if self.cfg.requirement == Requirement::Fairness {
            let target = self.target(None)?;
            // Post-processing leaves the network unchanged: its decisions are the rule's.
            let (pred, seconds) = self.post_process(&subject)?;
            let name = "threshold post-processing (needs the attribute; randomises)";
            rows.push(row(name, None, seconds, params, &pred, &target));
            rows.push(row("original (no edit)", None, 0.0, params, &base, &target));
        }
        Ok(rows)
    }

    /// Threshold post-processing of the unchanged model's scores, fitted on the validation
    /// split: its decisions on the test split and the seconds taken to fit and apply it.
    fn post_process(&self, s: &Subject) -> Result<(Vec<f32>, f64)> {
        let (dev, data) = (self.dev, self.data);
        let t0 = Instant::now();
        let val_scores = predict(dev, &s.shape, 1, &s.params, &data.val.x)?;
        let groups = data.schema.groups.len();
        let (val, seed) = (&data.val, s.rec.seed);
        let rule = match self.cfg.gap {
            Gap::Eo => fit_equalized_odds(&val_scores, &val.y, &val.group, groups, seed),
            Gap::Dp => fit_demographic_parity(&val_scores, &val.group, groups, seed),
        };
        let test_scores = predict(dev, &s.shape, 1, &s.params, &data.test.x)?;
        let pred = rule.apply(&test_scores, &data.test.group);
        Ok((pred, t0.elapsed().as_secs_f64()))
    }
}
