//! Reading a zoo's models for the other workflows: indexed (shape and path; weights read when
//! used, so a population of any size costs ~100 bytes a model) or loaded, one split at a time.

use super::{Manifest, ModelRecord, ModelSplit};
use crate::error::{Error, Result};
use crate::io::data::loaders::load;
use crate::io::data::Dataset;
use crate::io::model::Model;
use crate::networks::mlp::MlpShape;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One model of the population, in memory: its file as read, and its shape and parameters.
pub struct Member {
    pub id: usize,
    pub path: PathBuf,
    pub model: Model,
    pub shape: MlpShape,
    pub params: Vec<f32>,
}

impl Member {
    /// The model of manifest record `rec` in the zoo `dir`.
    pub fn load(dir: &Path, rec: &ModelRecord) -> Result<Member> {
        let path = dir.join(&rec.file);
        let model = Model::load(&path)?;
        Ok(Member {
            id: rec.id,
            shape: model.shape(),
            params: model.flat_params(),
            model,
            path,
        })
    }
}

/// The models of one split, in manifest order.
pub fn load_models(dir: &Path, m: &Manifest, split: ModelSplit) -> Result<Vec<Member>> {
    m.models
        .iter()
        .filter(|r| r.split == split)
        .map(|r| Member::load(dir, r))
        .collect()
}

/// A training model on disk: its weights are read when a step draws it, so a population of any
/// size costs ~100 bytes a model in memory (its id, shape and path).
pub struct Stored {
    pub id: usize,
    pub shape: MlpShape,
    pub path: PathBuf,
}

impl Stored {
    /// The model of manifest record `rec` in the zoo `dir`, read once to check it and learn
    /// its shape.
    pub fn index(dir: &Path, rec: &ModelRecord) -> Result<Stored> {
        let path = dir.join(&rec.file);
        let shape = Model::load(&path)?.shape();
        Ok(Stored {
            id: rec.id,
            shape,
            path,
        })
    }

    /// Its parameters, read from its file (which must still hold the same architecture).
    pub fn params(&self) -> Result<Vec<f32>> {
        let m = Model::load(&self.path)?;
        if m.shape().dims != self.shape.dims {
            return Err(Error::input(
                &self.path,
                format!(
                    "changed during training: {:?} now, {:?} before",
                    m.shape().dims,
                    self.shape.dims
                ),
            ));
        }
        Ok(m.flat_params())
    }
}

/// Index the models of one split, grouped by architecture (dims), in manifest order: every
/// file is read once and checked, and only its shape and path are kept.
pub fn index_split(
    dir: &Path,
    m: &Manifest,
    split: ModelSplit,
) -> Result<BTreeMap<Vec<usize>, Vec<Stored>>> {
    let mut out: BTreeMap<Vec<usize>, Vec<Stored>> = BTreeMap::new();
    for r in m.models.iter().filter(|r| r.split == split) {
        out.entry(r.dims.clone())
            .or_default()
            .push(Stored::index(dir, r)?);
    }
    Ok(out)
}

/// The zoo's data, read from `files` (none for the built-in data) as the zoo's manifest says,
/// and checked to be the data its models were trained on.
pub fn zoo_data(zoo: &Path, manifest: &Manifest, files: Option<&Path>) -> Result<Dataset> {
    let data = load(
        manifest.loader,
        files,
        &manifest.data_options,
        manifest.data_seed,
    )?;
    if data.schema != manifest.schema {
        return Err(Error::input(
            zoo,
            "the data given does not reproduce the zoo's schema (different files or options)",
        ));
    }
    Ok(data)
}
