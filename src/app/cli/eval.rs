//! `regop eval --model M --data PATH`: a model's accuracy, balanced accuracy, ROC AUC and fairness
//! differences on a split of its data, and how much it depends on each feature (first-layer
//! weight norm; share of predictions that change when the feature is permuted across rows).

use super::data::DataArgs;
use super::{Global, Printer};
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::io::data::loaders::{load, DataOptions, DatasetName};
use crate::io::data::{Dataset, Split};
use crate::io::model::Model;
use crate::networks::mlp::predict;
use crate::requirement::metrics::{predictions, report, selection_rates, Report};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model file.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Which split of the data to evaluate on.
    #[arg(long, value_parser = ["train", "val", "test"], default_value = "test")]
    pub split: String,
}

#[derive(serde::Serialize)]
pub struct FeatureDependence {
    pub feature: String,
    pub columns: usize,
    pub weight_norm: f64,
    pub changed_when_permuted: f64,
}

#[derive(serde::Serialize)]
struct Evaluation {
    model: String,
    dataset: String,
    split: String,
    sensitive: Option<String>,
    metrics: Report,
    selection_rate_by_group: Vec<(String, f64)>,
    sparsity: f64,
    features: Vec<FeatureDependence>,
}

/// The dataset a model was trained on, rebuilt from its metadata (loader, options, split seed),
/// with the user's --data path and --sensitive; falls back to the command-line data arguments.
pub fn data_for_model(
    model: &Model,
    model_path: &Path,
    args: &DataArgs,
    seed: u64,
) -> Result<Dataset> {
    let meta = &model.metadata;
    let loader: Option<DatasetName> = meta
        .get("loader")
        .and_then(|s| serde_json::from_str(s).ok());
    let data = match (loader, args.dataset) {
        (Some(l), None) => {
            let mut opts: DataOptions = meta
                .get("data_options")
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            if args.options.sensitive.is_some() {
                opts.sensitive = args.options.sensitive.clone();
            }
            let data_seed = meta
                .get("data_seed")
                .and_then(|s| s.parse().ok())
                .unwrap_or(seed);
            load(l, args.data.as_deref(), &opts, data_seed)?
        }
        _ => args.load(seed)?,
    };
    check_columns(model, model_path, &data)?;
    Ok(data)
}

/// The model's input columns must be the data's, by name where the model records names.
pub fn check_columns(model: &Model, path: &Path, data: &Dataset) -> Result<()> {
    let want = data.schema.column_names();
    let inputs = model.layers[0].in_dim;
    if inputs != want.len() {
        return Err(Error::input(
            path,
            format!(
                "model takes {inputs} input columns but the {} data has {}",
                data.schema.dataset,
                want.len()
            ),
        ));
    }
    if let Some(names) = &model.features {
        if let Some(i) = (0..inputs).find(|&i| names[i] != want[i]) {
            return Err(Error::input(
                path,
                format!(
                    "input column {i} is '{}' in the model but '{}' in the data",
                    names[i], want[i]
                ),
            ));
        }
    }
    Ok(())
}

/// Feature dependence of a model on `split`.
pub fn feature_dependence(
    dev: &Device,
    model: &Model,
    data: &Dataset,
    split: &Split,
    seed: u64,
) -> Result<Vec<FeatureDependence>> {
    let shape = model.shape();
    let params = model.flat_params();
    let norms = model.input_column_norms();
    let k = shape.outputs();
    let base = predictions(&predict(dev, &shape, 1, &params, &split.x)?, k);
    let w = data.schema.n_columns();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9e37);
    let mut out = Vec::new();
    for f in &data.schema.features {
        let mut perm: Vec<usize> = (0..split.rows()).collect();
        perm.shuffle(&mut rng);
        let mut x = split.x.clone();
        for (r, &src) in perm.iter().enumerate() {
            x[r * w + f.start..r * w + f.start + f.width]
                .copy_from_slice(&split.x[src * w + f.start..src * w + f.start + f.width]);
        }
        let pred = predictions(&predict(dev, &shape, 1, &params, &x)?, k);
        let changed = pred.iter().zip(&base).filter(|(a, b)| a != b).count() as f64
            / base.len().max(1) as f64;
        let norm = norms[f.start..f.start + f.width]
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        out.push(FeatureDependence {
            feature: f.name.clone(),
            columns: f.width,
            weight_norm: norm,
            changed_when_permuted: changed,
        });
    }
    Ok(out)
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let model = Model::load(&a.model)?;
    let data = data_for_model(&model, &a.model, &a.data, g.seed)?;
    let split = match a.split.as_str() {
        "train" => &data.train,
        "val" => &data.val,
        _ => &data.test,
    };
    if split.rows() == 0 {
        return Err(Error::Usage(format!("the {} split is empty", a.split)));
    }
    let (dev, _) = Device::open(g.device)?;
    let logits = predict(&dev, &model.shape(), 1, &model.flat_params(), &split.x)?;
    let k = model.shape().outputs();
    let metrics = report(&split.y, &logits, &split.group, k);
    let rates = selection_rates(&predictions(&logits, k), &split.group);
    let present: Vec<u32> = {
        let mut v: Vec<u32> = split.group.clone();
        v.sort();
        v.dedup();
        v
    };
    let weights: Vec<f32> = model
        .layers
        .iter()
        .flat_map(|l| l.weight.iter().copied())
        .collect();
    let e = Evaluation {
        model: a.model.display().to_string(),
        dataset: data.schema.dataset.clone(),
        split: a.split.clone(),
        sensitive: data.schema.sensitive.clone(),
        selection_rate_by_group: present
            .iter()
            .zip(&rates)
            .map(|(&k, &r)| (data.schema.groups[k as usize].clone(), r))
            .collect(),
        sparsity: crate::requirement::metrics::sparsity(&weights),
        features: feature_dependence(&dev, &model, &data, split, g.seed)?,
        metrics,
    };
    if p.json {
        p.json(&e);
        return Ok(0);
    }
    let m = &e.metrics;
    println!(
        "{} on {} ({} split, {} rows)",
        e.model, e.dataset, e.split, m.rows
    );
    println!("  accuracy           {:.4}", m.accuracy);
    let binary = data.schema.classes.is_empty();
    if binary {
        println!("  balanced accuracy  {:.4}", m.balanced_accuracy);
        println!(
            "  ROC AUC            {}",
            m.roc_auc
                .map_or("n/a (one class)".into(), |v| format!("{v:.4}"))
        );
        println!("  positive rate      {:.4}", m.positive_rate);
    } else {
        println!("  classes            {}", data.schema.classes.len());
    }
    if let (Some(s), true) = (&e.sensitive, binary) {
        println!(
            "  sensitive '{s}': DP difference {:.4}, EO difference {:.4}",
            m.dp_difference, m.eo_difference
        );
        for (grp, r) in &e.selection_rate_by_group {
            println!("    selection rate {grp:<24} {r:.4}");
        }
    }
    println!("  weight sparsity    {:.1}%", 100.0 * e.sparsity);
    println!("  feature dependence (first-layer weight norm; predictions changed when permuted):");
    // Images: the pixels the model depends on most, not all of them.
    let mut shown: Vec<&FeatureDependence> = e.features.iter().collect();
    if shown.len() > 40 {
        shown.sort_by(|a, b| b.changed_when_permuted.total_cmp(&a.changed_when_permuted));
        shown.truncate(20);
        println!("    (the 20 of {} it depends on most)", e.features.len());
    }
    for f in shown {
        println!(
            "    {:<28} {:>10.4} {:>9.2}%",
            f.feature,
            f.weight_norm,
            100.0 * f.changed_when_permuted
        );
    }
    Ok(0)
}
