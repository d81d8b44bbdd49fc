//! Populations ("zoos") of trained MLPs: the directory format (one PyTorch-loadable safetensors
//! file per model plus `manifest.json`, whose records hold each model's architecture,
//! hyper-parameters, split and metrics), reading it back, and merging shards of one plan.
//! `build` plans and trains a zoo; `load` reads its models for the other workflows.

pub mod build;
pub mod import;
pub mod load;

use crate::engine::kernels::activation::Activation;
use crate::error::{Error, Result};
use crate::io::data::Schema;
use crate::io::model::{Linear, Model};
use crate::networks::mlp::MlpShape;
use crate::requirement::metrics::Report;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";

/// Written after every trained batch, removed when the zoo is complete (see `--resume`).
pub const PARTIAL: &str = "manifest.partial.json";

pub const FORMAT: &str = "regop-zoo/1";

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ZooConfig {
    pub count: usize,
    pub seed: u64,
    /// Hidden layers, inclusive range.
    pub depth: (usize, usize),
    /// Hidden widths to draw from (every hidden layer of a model has the same width).
    pub widths: Vec<usize>,
    /// Learning rate, drawn log-uniformly.
    pub lr: (f32, f32),
    /// Weight decay, drawn log-uniformly.
    pub weight_decay: (f32, f32),
    /// Epochs, inclusive range.
    pub epochs: (usize, usize),
    pub batch_size: usize,
    pub activation: Activation,
    /// Fractions of models for (train, val); test models get the rest.
    pub model_split: (f64, f64),
}

impl ZooConfig {
    pub fn new(count: usize, seed: u64) -> ZooConfig {
        ZooConfig {
            count,
            seed,
            depth: (1, 3),
            widths: vec![16, 32, 64, 128],
            lr: (1e-3, 1e-2),
            weight_decay: (1e-5, 1e-3),
            epochs: (4, 12),
            batch_size: 256,
            activation: Activation::Relu,
            model_split: (0.7, 0.15),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSplit {
    Train,
    Val,
    Test,
}

/// One model's record in the manifest.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelRecord {
    pub id: usize,
    pub file: String,
    pub dims: Vec<usize>,
    pub activation: Activation,
    pub seed: u64,
    pub lr: f32,
    pub weight_decay: f32,
    pub epochs: usize,
    pub batch_size: usize,
    pub split: ModelSplit,
    /// Metrics on the data's train, val and test splits.
    pub metrics: BTreeMap<String, Report>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub format: String,
    pub dataset: String,
    /// Loader and options that read the data; with the seed of the split and the dataset files
    /// they reproduce every model's inputs.
    pub loader: crate::io::data::loaders::DatasetName,
    pub data_options: crate::io::data::loaders::DataOptions,
    pub data_seed: u64,
    pub schema: Schema,
    pub config: ZooConfig,
    /// `Some((i, n))` for one shard of a plan; `None` for a whole zoo.
    pub shard: Option<(usize, usize)>,
    pub models: Vec<ModelRecord>,
}

/// A trained model as a PyTorch `nn.Sequential` state dict: Linear layers at indices 0, 2, 4...
/// (activations between them), with the schema in its metadata.
pub fn to_model(rec: &ModelRecord, params: &[f32], manifest: &Manifest) -> Model {
    let schema = &manifest.schema;
    let shape = MlpShape::new(&rec.dims, rec.activation);
    let layers = (0..shape.layers())
        .map(|l| {
            let (fi, fo) = (shape.fan_in(l), shape.fan_out(l));
            Linear {
                name: (2 * l).to_string(),
                out_dim: fo,
                in_dim: fi,
                weight: params[shape.weight_offset(l)..][..fi * fo].to_vec(),
                bias: Some(params[shape.bias_offset(l)..][..fo].to_vec()),
            }
        })
        .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("dataset".into(), schema.dataset.clone());
    metadata.insert("schema".into(), serde_json::to_string(schema).unwrap());
    metadata.insert("data_seed".into(), manifest.data_seed.to_string());
    metadata.insert(
        "loader".into(),
        serde_json::to_string(&manifest.loader).unwrap(),
    );
    metadata.insert(
        "data_options".into(),
        serde_json::to_string(&manifest.data_options).unwrap(),
    );
    metadata.insert("zoo_id".into(), rec.id.to_string());
    Model {
        layers,
        activation: rec.activation,
        activation_recorded: true,
        features: Some(schema.column_names()),
        metadata,
        dtype: "F32".into(),
    }
}

/// Models of a zoo directory's manifest, checked against the files present.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = crate::io::read(&path)?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&path, format!("not a zoo manifest: {e}")))?;
    if m.format != FORMAT {
        return Err(Error::input(
            &path,
            format!("format '{}' is not {FORMAT}", m.format),
        ));
    }
    Ok(m)
}

pub fn write_manifest(dir: &Path, m: &Manifest, force: bool) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(m).unwrap();
    crate::io::write_atomic(&dir.join(MANIFEST), &bytes, force)
}

/// Join shards of one plan into `out`: same dataset, schema and config; every model of the plan
/// exactly once. Model files are copied.
pub fn merge(shards: &[PathBuf], out: &Path, force: bool) -> Result<Manifest> {
    let mut merged: Option<Manifest> = None;
    let mut seen: BTreeMap<usize, PathBuf> = BTreeMap::new();
    let mut models = Vec::new();
    for dir in shards {
        let m = read_manifest(dir)?;
        if let Some(first) = &merged {
            if m.config != first.config
                || m.schema != first.schema
                || m.data_seed != first.data_seed
                || m.loader != first.loader
            {
                return Err(Error::input(
                    dir.join(MANIFEST),
                    "comes from a different plan (config, schema or data seed differ)",
                ));
            }
        }
        for r in &m.models {
            if let Some(prev) = seen.insert(r.id, dir.clone()) {
                return Err(Error::input(
                    dir.join(MANIFEST),
                    format!("model {} is also in {}", r.id, prev.display()),
                ));
            }
            models.push((dir.clone(), r.clone()));
        }
        merged.get_or_insert(m);
    }
    let mut m = merged.ok_or_else(|| Error::Usage("no shards given".into()))?;
    let missing: Vec<usize> = (0..m.config.count)
        .filter(|id| !seen.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "{} of {} models missing from the shards (first: {:?})",
            missing.len(),
            m.config.count,
            &missing[..missing.len().min(5)]
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    models.sort_by_key(|(_, r)| r.id);
    for (dir, r) in &models {
        let src = dir.join(&r.file);
        let bytes = crate::io::read(&src)?;
        crate::io::write_atomic(&out.join(&r.file), &bytes, force)?;
    }
    m.shard = None;
    m.models = models.into_iter().map(|(_, r)| r).collect();
    write_manifest(out, &m, force)?;
    Ok(m)
}
