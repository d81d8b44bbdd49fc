//! An editor checkpoint with what it needs to edit: how it edits, the data schema it was trained
//! for, how to read that data, and the range of lambdas it saw in training.

use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::io::data::Schema;
use crate::networks::editor::Editor;
use crate::requirement::{sensitive_columns, Columns, EditSpec};

/// What an edit needs of the training configuration saved with an editor (the rest of it
/// belongs to `train`).
#[derive(serde::Deserialize)]
struct TrainedOn {
    /// The fairness weights drawn in training: a lambda search stays inside them.
    lambda: (f32, f32),
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
    pub columns: Columns,
}

impl EditorFile {
    pub fn load(dev: &Device, path: &std::path::Path) -> Result<EditorFile> {
        let (editor, meta) = Editor::load(dev, path)?;
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
        let spec: EditSpec = serde_json::from_str(get("edit")?).map_err(|e| bad("edit", e))?;
        let train: TrainedOn = serde_json::from_str(get("train")?).map_err(|e| bad("train", e))?;
        let schema: Schema = serde_json::from_str(get("schema")?).map_err(|e| bad("schema", e))?;
        let means: Vec<f32> = match meta.get("column_means") {
            Some(m) => serde_json::from_str(m).map_err(|e| bad("column_means", e))?,
            None => Vec::new(),
        };
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
            editor,
        })
    }

    /// Refuse a model the editor cannot edit: other input columns than the editor's data, or
    /// deeper or wider outputs than it knows.
    pub fn check_model(
        &self,
        path: &std::path::Path,
        model: &crate::io::model::Model,
    ) -> Result<()> {
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
        Ok(())
    }
}
