//! Models trained elsewhere as a zoo of test models: `regop zoo import` checks each file against
//! a zoo's data, evaluates it on every split and copies it unchanged, so that `compare
//! --test-zoo` judges the editor and the rules on models regop did not train.

use super::{write_manifest, Manifest, ModelRecord, ModelSplit};
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::io::data::Dataset;
use crate::io::model::Model;
use crate::networks::mlp::predict;
use crate::requirement::metrics::report;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Refuse a model whose inputs or outputs are not the data's, naming the file.
fn check(path: &Path, m: &Model, data: &Dataset) -> Result<()> {
    let s = &data.schema;
    let shape = m.shape();
    let bad = |msg: String| Err(Error::input(path, msg));
    if shape.dims[0] != s.n_columns() {
        return bad(format!(
            "has {} input columns; the '{}' data has {}",
            shape.dims[0],
            s.dataset,
            s.n_columns()
        ));
    }
    if let Some(f) = &m.features {
        if f != &s.column_names() {
            return bad(format!(
                "its input columns are not the '{}' data's",
                s.dataset
            ));
        }
    }
    if shape.outputs() != s.outputs() {
        return bad(format!(
            "has {} outputs; the '{}' label needs {}",
            shape.outputs(),
            s.dataset,
            s.outputs()
        ));
    }
    Ok(())
}

/// Import `files` into `out` as test models of the zoo `like` (whose data `data` is): every file
/// is read and checked before anything is written. Returns the new zoo's manifest.
pub fn import(
    dev: &Device,
    like: &Manifest,
    data: &Dataset,
    files: &[PathBuf],
    out: &Path,
    force: bool,
) -> Result<Manifest> {
    if files.is_empty() {
        return Err(Error::Usage("no model files to import".into()));
    }
    let mut models = Vec::new();
    for (id, path) in files.iter().enumerate() {
        let bytes = crate::io::read(path)?;
        let m = Model::from_bytes(path, &bytes)?;
        check(path, &m, data)?;
        let (shape, params) = (m.shape(), m.flat_params());
        let mut metrics = BTreeMap::new();
        for (name, split) in [
            ("train", &data.train),
            ("val", &data.val),
            ("test", &data.test),
        ] {
            if split.rows() > 0 {
                let logits = predict(dev, &shape, 1, &params, &split.x)?;
                let r = report(&split.y, &logits, &split.group, shape.outputs());
                metrics.insert(name.to_string(), r);
            }
        }
        // How the model was trained is unknown: the fine-tuning and retraining references
        // use the middle of the zoo's ranges.
        let c = &like.config;
        let rec = ModelRecord {
            id,
            file: format!("model-{id:05}.safetensors"),
            dims: shape.dims.clone(),
            activation: m.activation,
            seed: id as u64,
            lr: (c.lr.0 * c.lr.1).sqrt(),
            weight_decay: (c.weight_decay.0 * c.weight_decay.1).sqrt(),
            epochs: (c.epochs.0 + c.epochs.1) / 2,
            batch_size: c.batch_size,
            split: ModelSplit::Test,
            metrics,
        };
        models.push((rec, bytes));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for (rec, bytes) in &models {
        crate::io::write_atomic(&out.join(&rec.file), bytes, force)?;
    }
    let mut manifest = like.clone();
    manifest.config.count = models.len();
    manifest.shard = None;
    manifest.models = models.into_iter().map(|(r, _)| r).collect();
    write_manifest(out, &manifest, force)?;
    Ok(manifest)
}
