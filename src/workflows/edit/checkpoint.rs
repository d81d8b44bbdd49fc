//! Editor checkpoints: the editor's tensors by name, its optimiser state and configuration
//! (safetensors, format `regop-editor/1`, written atomically, one state always the same bytes),
//! and `EditorFile`, a checkpoint with what it needs to edit: how it edits, the data schema it
//! was trained for, how to read that data, and the range of lambdas it saw in training.

use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::io::data::Schema;
use crate::networks::editor::{Editor, EditorConfig, EditorParams};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "regop-editor/1";
/// Metadata keys of what training decided (`Decided`): the step search, the mask's re-solve,
/// the natural step after the edit.
pub const STEP_SEARCH: &str = "step_search";
pub const RESOLVE_MASK: &str = "resolve_mask";
pub const NATURAL_STEP: &str = "natural_step";

/// The moving average of a checkpoint trained with averaging (`Editor::average`), kept with the
/// optimiser state so that a resumed run continues it.
const AVERAGE: &str = "optimizer.average";

/// Save the editor's parameters, optimiser state and configuration, with the caller's metadata
/// (how it edits, the data schema...).
pub fn save_editor(
    dev: &Device,
    editor: &Editor,
    path: &Path,
    extra: &BTreeMap<String, String>,
    force: bool,
) -> Result<()> {
    let params = dev.read_all(&editor.params)?;
    let state = dev.read_all(&editor.opt_state)?;
    let n = editor.layout.total;
    let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = editor
        .layout
        .entries
        .iter()
        .map(|t| {
            let values = &params[t.span.offset..][..t.span.len];
            (t.name.clone(), t.shape.clone(), bytes(values))
        })
        .collect();
    data.push(("optimizer.m".into(), vec![n], bytes(&state[..n])));
    data.push(("optimizer.v".into(), vec![n], bytes(&state[n..])));
    if let Some(avg) = &editor.average {
        let avg = dev.read_all(avg)?;
        data.push((AVERAGE.into(), vec![n], bytes(&avg)));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(k, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("shape and bytes agree");
            (k.clone(), view)
        })
        .collect();
    let mut meta: std::collections::HashMap<String, String> = extra.clone().into_iter().collect();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("config".into(), serde_json::to_string(&editor.cfg).unwrap());
    meta.insert("step".into(), editor.step.to_string());
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Usage(format!("serialising editor: {e}")))?;
    // Sorted header: one editor state always gives the same bytes.
    crate::io::write_atomic(path, &crate::io::model::canonical_header(&bytes), force)
}

/// An input layer saved before the editor read its signals (`node_in.w` [h, 3], `edge_in.w`
/// [h, 1]), widened with zero columns: the editor then ignores the signals, as it did.
fn widen_input(
    st: &safetensors::SafeTensors,
    entry: &crate::networks::editor::Entry,
) -> Option<Vec<f32>> {
    if !matches!(entry.name.as_str(), "node_in.w" | "edge_in.w") {
        return None;
    }
    let t = st.tensor(&entry.name).ok()?;
    let (rows, cols) = (entry.shape[0], entry.shape[1]);
    let old = *t.shape().get(1)?;
    if t.dtype() != safetensors::Dtype::F32 || t.shape() != [rows, old] || old >= cols {
        return None;
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        out[r * cols..r * cols + old].copy_from_slice(&v[r * old..(r + 1) * old]);
    }
    Some(out)
}

/// Load a checkpoint; returns the editor and the file's metadata.
pub fn load_editor(dev: &Device, path: &Path) -> Result<(Editor, BTreeMap<String, String>)> {
    let bytes = crate::io::read(path)?;
    let bad = |m: String| Error::input(path, m);
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors editor checkpoint: {e}")))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "not a regop editor (format {:?}, expected {FORMAT})",
            meta.get("format")
        )));
    }
    let config = meta
        .get("config")
        .ok_or_else(|| bad("no config in metadata".into()))?;
    let cfg: EditorConfig =
        serde_json::from_str(config).map_err(|e| bad(format!("bad config: {e}")))?;
    let layout = EditorParams::new(&cfg);
    let read = |name: &str, len: usize| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|_| bad(format!("missing tensor '{name}'")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.data().len() != 4 * len {
            return Err(bad(format!("tensor '{name}' has the wrong dtype or size")));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    };
    let mut params = vec![0.0f32; layout.total];
    let mut widened = false;
    for t in &layout.entries {
        let values = match read(&t.name, t.span.len) {
            Ok(v) => v,
            Err(e) => {
                widened = true;
                widen_input(&st, t).ok_or(e)?
            }
        };
        params[t.span.offset..][..t.span.len].copy_from_slice(&values);
    }
    let mut ed = Editor::from_params(dev, &cfg, &params)?;
    // An older checkpoint's optimiser state belongs to its narrower input layers: training
    // that resumes from it starts the moments afresh.
    let state = if widened {
        vec![0.0f32; 2 * layout.total]
    } else {
        [
            read("optimizer.m", layout.total)?,
            read("optimizer.v", layout.total)?,
        ]
        .concat()
    };
    dev.write(&ed.opt_state, 0, &state)?;
    if st.names().contains(&AVERAGE) && !widened {
        ed.average = Some(dev.upload(&read(AVERAGE, layout.total)?)?);
    }
    ed.step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((ed, meta))
}
use crate::requirement::{sensitive_columns, Columns, EditSpec};

/// What an edit needs of the training configuration saved with an editor (the rest of it
/// belongs to `train`).
#[derive(serde::Deserialize)]
struct TrainedOn {
    /// The fairness weights drawn in training: a lambda search stays inside them.
    lambda: (f32, f32),
    /// The sparsities (or shares of neurons) drawn in training; absent in older files.
    #[serde(default)]
    sparsity: Option<(f32, f32)>,
    /// Rows of its calibration batches; older files used the default.
    #[serde(default = "default_calibration_rows")]
    calibration_rows: usize,
}

fn default_calibration_rows() -> usize {
    crate::io::data::CALIBRATION_ROWS
}

/// The models an editor was trained on (its zoo's training models): an edit of a model outside
/// them is refused (another activation, more hidden layers) or flagged (another depth or width).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeenModels {
    pub activations: Vec<crate::engine::kernels::activation::Activation>,
    /// Hidden layers, fewest and most.
    pub hidden_layers: (usize, usize),
    /// Hidden widths, narrowest and widest.
    pub widths: (usize, usize),
}

impl SeenModels {
    /// What `shapes` span (none for no shapes).
    pub fn of(shapes: &[crate::networks::mlp::MlpShape]) -> Option<SeenModels> {
        let hidden = |s: &crate::networks::mlp::MlpShape| s.layers() - 1;
        let widths = shapes
            .iter()
            .flat_map(|s| s.dims[1..s.dims.len() - 1].to_vec());
        let mut activations: Vec<_> = shapes.iter().map(|s| s.activation).collect();
        activations.sort_by_key(|a| a.name());
        activations.dedup();
        Some(SeenModels {
            activations,
            hidden_layers: (
                shapes.iter().map(hidden).min()?,
                shapes.iter().map(hidden).max()?,
            ),
            widths: (widths.clone().min().unwrap_or(0), widths.max().unwrap_or(0)),
        })
    }
}

/// A choice of how an editor's edits run that training makes on its validation models after
/// training: whether they pick their step along the edit on training rows
/// (`search::search_steps`), whether they keep only the editor's mask and re-solve the kept
/// weights (`EditSpec::resolve_mask`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decided {
    pub on: bool,
    /// Mean accuracy change, on the validation split, of the edits with it over the edits
    /// without, across the validation models.
    pub gain: f64,
    /// Mean accuracy, on the validation split, of the edits with it: what editors trained
    /// otherwise can be compared by, on the same validation models.
    #[serde(default)]
    pub with_it: f64,
    /// Validation models it was measured on.
    pub models: usize,
}

/// An editor checkpoint with what it needs to edit: how it edits, the data schema it was
/// trained for, how to read that data, and the lambdas it saw in training.
pub struct EditorFile {
    pub editor: Editor,
    pub spec: EditSpec,
    pub schema: Schema,
    pub loader: crate::io::data::loaders::DatasetName,
    pub data_options: crate::io::data::loaders::DataOptions,
    pub data_seed: u64,
    pub lambda: (f32, f32),
    /// The sparsities (or shares of neurons) it was trained on, where the file records them.
    pub sparsity: Option<(f32, f32)>,
    /// Rows of the calibration batch its edits read (`train --calibration-rows`).
    pub calibration_rows: usize,
    pub columns: Columns,
    /// The models it was trained on; none for editors saved before it was recorded.
    pub seen: Option<SeenModels>,
    /// What training found of the step search; none where it was not measured (fairness
    /// editors, which search a lambda instead, and older files): edits take step 1.
    pub step_search: Option<Decided>,
    /// What training found of re-solving the kept weights on the editor's mask (its `on` is
    /// `spec.resolve_mask`); none where it was not measured (editors that do not move LAMP's
    /// mask, and older files): edits keep the editor's values.
    pub resolve_mask: Option<Decided>,
    /// What training found of a natural step after each edit (its `on` is
    /// `spec.natural_step`); none where it was not measured (fairness editors and older
    /// files): edits take no step.
    pub natural_step: Option<Decided>,
}

impl EditorFile {
    /// The same editor untrained: its heads at zero, so it edits exactly as the rule it starts
    /// from (the mean fold, the pruning prior's top-k, the mean shift in the output bias).
    pub fn untrained(&self, dev: &Device) -> Result<EditorFile> {
        Ok(EditorFile {
            editor: Editor::new(dev, &self.editor.cfg, 0)?,
            spec: self.spec,
            schema: self.schema.clone(),
            loader: self.loader,
            data_options: self.data_options.clone(),
            data_seed: self.data_seed,
            lambda: self.lambda,
            sparsity: self.sparsity,
            calibration_rows: self.calibration_rows,
            columns: self.columns.clone(),
            seen: self.seen.clone(),
            step_search: self.step_search,
            resolve_mask: self.resolve_mask,
            natural_step: self.natural_step,
        })
    }

    /// Whether its edits pick their step on training rows.
    pub fn searches_step(&self) -> bool {
        self.step_search.is_some_and(|s| s.on)
    }

    /// Where an asked sparsity (or share of neurons) lies outside those the editor was trained
    /// on: a line saying so, for the user to see. Its edits there are still exact; how much
    /// they gain over the rule was not learned.
    pub fn sparsity_outside(&self, asked: f32) -> Option<String> {
        let (lo, hi) = self.sparsity?;
        let prunes = self.spec.requirement == crate::requirement::Requirement::Prune
            || self.spec.also_prunes;
        let what = match self.spec.prune_score {
            crate::requirement::PruneScore::Neurons => "share of neurons",
            _ => "sparsity",
        };
        (prunes && !(lo - 1e-6..=hi + 1e-6).contains(&asked))
            .then(|| format!("{what} {asked} is outside the {lo}-{hi} the editor was trained on"))
    }

    /// Whether its edits read data (a calibration batch of training rows).
    pub fn needs_data(&self) -> bool {
        use crate::requirement::Requirement;
        let s = &self.spec;
        s.signals
            || s.keeps_rule_mask()
            || ((s.requirement == Requirement::Minimise || s.drops_attribute())
                && s.minimise_base.needs_data())
    }

    /// Give it its data's calibration batch and column moments (the data must be the
    /// editor's own).
    pub fn attach_data(&mut self, data: &crate::io::data::Dataset) {
        self.columns.calibration = data.train.calibration_batch(self.calibration_rows);
        if self.needs_data() {
            self.columns.moments = std::sync::Arc::new(data.train.moments());
        }
    }

    pub fn load(dev: &Device, path: &std::path::Path) -> Result<EditorFile> {
        let (editor, meta) = load_editor(dev, path)?;
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                Error::input(
                    path,
                    format!("is an editor without '{k}' metadata (not trained by regop train)"),
                )
            })
        };
        let bad =
            |k: &str, e: serde_json::Error| Error::input(path, format!("bad '{k}' metadata: {e}"));
        let mut spec: EditSpec = serde_json::from_str(get("edit")?).map_err(|e| bad("edit", e))?;
        let decided = |k: &str| -> Result<Option<Decided>> {
            meta.get(k)
                .map(|m| serde_json::from_str(m).map_err(|e| bad(k, e)))
                .transpose()
        };
        let (step_search, resolve_mask) = (decided(STEP_SEARCH)?, decided(RESOLVE_MASK)?);
        spec.resolve_mask = resolve_mask.is_some_and(|d| d.on);
        let natural_step = decided(NATURAL_STEP)?;
        spec.natural_step = natural_step.is_some_and(|d| d.on);
        let train: TrainedOn = serde_json::from_str(get("train")?).map_err(|e| bad("train", e))?;
        let schema: Schema = serde_json::from_str(get("schema")?).map_err(|e| bad("schema", e))?;
        let means: Vec<f32> = match meta.get("column_means") {
            Some(m) => serde_json::from_str(m).map_err(|e| bad("column_means", e))?,
            None => Vec::new(),
        };
        if editor.cfg.edge_features != spec.edge_features() {
            return Err(Error::input(
                path,
                format!(
                    "its editor reads {} features per edge; its edits give {}",
                    editor.cfg.edge_features,
                    spec.edge_features()
                ),
            ));
        }
        if !means.is_empty() && means.len() != schema.n_columns() {
            return Err(Error::input(
                path,
                "its 'column_means' do not match its schema",
            ));
        }
        Ok(EditorFile {
            columns: Columns {
                sensitive: sensitive_columns(&schema),
                means,
                calibration: Default::default(),
                moments: Default::default(),
            },
            schema,
            spec,
            loader: serde_json::from_str(get("loader")?).map_err(|e| bad("loader", e))?,
            data_options: serde_json::from_str(get("data_options")?)
                .map_err(|e| bad("data_options", e))?,
            data_seed: get("data_seed")?
                .parse()
                .map_err(|_| Error::input(path, "bad 'data_seed' metadata"))?,
            lambda: train.lambda,
            sparsity: train.sparsity,
            calibration_rows: train.calibration_rows,
            seen: match meta.get("models") {
                Some(m) => Some(serde_json::from_str(m).map_err(|e| bad("models", e))?),
                None => None,
            },
            step_search,
            resolve_mask,
            natural_step,
            editor,
        })
    }

    /// Refuse a model the editor cannot edit: other input columns than the editor's data,
    /// another activation, or deeper or wider outputs than it knows. Returns what is outside
    /// the models it was trained on but still editable (flags for the user to see).
    pub fn check_model(
        &self,
        path: &std::path::Path,
        model: &crate::io::model::Model,
    ) -> Result<Vec<String>> {
        let shape = model.shape();
        let cols = self.schema.column_names();
        let bad = |m: String| Err(Error::input(path, m));
        if shape.dims[0] != cols.len() {
            return bad(format!(
                "has {} input columns; the editor edits models of '{}' with {} columns",
                shape.dims[0],
                self.schema.dataset,
                cols.len()
            ));
        }
        if let Some(f) = &model.features {
            if f != &cols {
                return bad(format!(
                    "its input columns ({}...) are not the editor's ({}...)",
                    f[0], cols[0]
                ));
            }
        }
        let pos = &self.editor.cfg.pos;
        if shape.layers() - 1 > pos.max_hidden_layers || shape.outputs() > pos.max_outputs {
            return bad(format!(
                "has {} hidden layers and {} outputs; the editor handles at most {} and {}",
                shape.layers() - 1,
                shape.outputs(),
                pos.max_hidden_layers,
                pos.max_outputs
            ));
        }
        if shape.outputs() != self.schema.outputs() {
            return bad(format!(
                "has {} outputs; models of '{}' have {}",
                shape.outputs(),
                self.schema.dataset,
                self.schema.outputs()
            ));
        }
        let Some(seen) = &self.seen else {
            return Ok(Vec::new());
        };
        let act = model.activation;
        if !seen.activations.contains(&act) {
            let names: Vec<&str> = seen.activations.iter().map(|a| a.name()).collect();
            let how = if model.activation_recorded {
                "uses"
            } else {
                "does not record its activation (metadata 'activation'), so it is read as"
            };
            return bad(format!(
                "{how} {}; the editor was trained on {} models",
                act.name(),
                names.join("/")
            ));
        }
        let mut flags = Vec::new();
        if !model.activation_recorded {
            flags.push(format!(
                "activation not recorded in the file; read as {} (metadata 'activation' says it)",
                act.name()
            ));
        }
        let hidden = shape.layers() - 1;
        let (lo, hi) = seen.hidden_layers;
        if hidden < lo {
            flags.push(format!(
                "{hidden} hidden layers, fewer than the editor's training models ({lo}-{hi})"
            ));
        }
        let (narrow, wide) = seen.widths;
        let outside: Vec<usize> = shape.dims[1..shape.dims.len() - 1]
            .iter()
            .copied()
            .filter(|&w| w < narrow || w > wide)
            .collect();
        if let Some(w) = outside.first() {
            flags.push(format!(
                "hidden width {w} outside the editor's training models ({narrow}-{wide})"
            ));
        }
        Ok(flags)
    }
}
