//! `regop zoo`: train a population of MLPs on a dataset, batched by architecture on the device;
//! `regop zoo merge`: join shards trained on different machines.

use super::data::DataArgs;
use super::{Global, Printer};
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::workflows::zoo::build::{build, check_output, BuildEvent, BuildOptions};
use crate::workflows::zoo::{merge, read_manifest, Manifest, ModelSplit, ZooConfig, FORMAT};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub sub: Option<Sub>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Join shards of one plan (same --count, --seed and data) into one zoo.
    Merge {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Shard directories.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Replace files already in --out.
        #[arg(long)]
        force: bool,
    },
    /// Make models trained elsewhere (safetensors files, or directories of them) the test
    /// models of a zoo of --like's data, for `compare --test-zoo`.
    Import {
        /// The zoo whose data the models were trained on (its editor will edit them).
        #[arg(long)]
        like: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// That zoo's dataset files (not needed for the built-in data).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Model files or directories.
        #[arg(required = true)]
        models: Vec<PathBuf>,
        /// Replace files already in --out.
        #[arg(long)]
        force: bool,
    },
}

/// Model files: the files given, and the .safetensors files of the directories given (sorted).
fn model_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn import(g: &Global, p: &Printer, sub: Sub) -> Result<i32> {
    let Sub::Import {
        like,
        out,
        data,
        models,
        force,
    } = sub
    else {
        unreachable!("called for import only")
    };
    let manifest = read_manifest(&like)?;
    let dataset = crate::workflows::zoo::load::zoo_data(&like, &manifest, data.as_deref())?;
    let files = model_files(&models)?;
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("device: {} ({why})", dev.name()));
    let m = crate::workflows::zoo::import::import(&dev, &manifest, &dataset, &files, &out, force)?;
    for (rec, file) in m.models.iter().zip(&files) {
        let acc = rec.metrics.get("test").map_or(f64::NAN, |r| r.accuracy);
        p.status(&format!(
            "  {} <- {}: {:?} {}, test accuracy {acc:.4}",
            rec.file,
            file.display(),
            rec.dims,
            rec.activation.name()
        ));
    }
    p.status(&format!(
        "{} models imported as test models of {}'s data -> {}",
        m.models.len(),
        like.display(),
        out.display()
    ));
    if p.json {
        p.json(&serde_json::json!({"out": out, "models": m.models.len()}));
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Models in the population.
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// Output directory (one safetensors file per model + manifest.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train only shard I of N ("I/N"): models whose id is I modulo N.
    #[arg(long)]
    pub shard: Option<String>,
    /// Epochs per model, drawn from this inclusive range ("4-12").
    #[arg(long, default_value = "4-12")]
    pub epochs: String,
    /// Hidden widths to draw from.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    pub widths: Vec<usize>,
    /// Hidden layers, inclusive range ("1-3").
    #[arg(long, default_value = "1-3")]
    pub depth: String,
    /// Minibatch rows.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Most models trained in one batch; larger architecture groups are split (memory bound).
    /// 1 trains one model at a time.
    #[arg(long, default_value_t = 256)]
    pub max_batch: usize,
    /// Replace an existing zoo in --out.
    #[arg(long)]
    pub force: bool,
    /// Seed of the data's split (default: --seed). A sealed test zoo takes the data seed of the
    /// zoo it tests and another --seed: same data, other models.
    #[arg(long)]
    pub data_seed: Option<u64>,
    /// Continue an interrupted run in --out (same data, seed and settings); the result is the
    /// same as an uninterrupted run's.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
}

fn range(s: &str, what: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::Usage(format!(
            "--{what} '{s}': expected a number or a range like 4-12"
        ))
    };
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (usize, usize) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

fn shard(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::Usage(format!("--shard '{s}': expected I/N with 0 <= I < N"));
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    if let Some(Sub::Merge { out, shards, force }) = a.sub {
        let m = merge(&shards, &out, force)?;
        p.status(&format!(
            "merged {} shards: {} models -> {}",
            shards.len(),
            m.models.len(),
            out.display()
        ));
        if p.json {
            p.json(&serde_json::json!({"out": out, "models": m.models.len()}));
        }
        return Ok(0);
    }
    if let Some(sub @ Sub::Import { .. }) = a.sub {
        return import(g, p, sub);
    }
    let a = a.build;
    let out = a
        .out
        .clone()
        .ok_or_else(|| Error::Usage("--out DIR is required".into()))?;
    if a.count == 0 {
        return Err(Error::Usage("--count must be at least 1".into()));
    }
    let opts = BuildOptions {
        shard: a.shard.as_deref().map(shard).transpose()?,
        max_batch: a.max_batch,
        resume: a.resume,
        force: a.force,
    };
    check_output(&out, &opts)?;
    let data_seed = a.data_seed.unwrap_or(g.seed);
    let data = a.data.load(data_seed)?;
    let mut cfg = ZooConfig::new(a.count, g.seed);
    cfg.epochs = range(&a.epochs, "epochs")?;
    cfg.depth = range(&a.depth, "depth")?;
    cfg.widths = a.widths.clone();
    cfg.batch_size = a.batch_size;
    if cfg.widths.is_empty() || cfg.widths.contains(&0) {
        return Err(Error::Usage("--widths must list positive widths".into()));
    }
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("device: {} ({why})", dev.name()));
    p.status(&format!(
        "{}: {} train / {} val / {} test rows, {} input columns",
        data.schema.dataset,
        data.train.rows(),
        data.val.rows(),
        data.test.rows(),
        data.schema.n_columns()
    ));
    let mut manifest = Manifest {
        format: FORMAT.into(),
        dataset: data.schema.dataset.clone(),
        loader: a.data.name(),
        data_options: a.data.options.clone(),
        data_seed,
        schema: data.schema.clone(),
        config: cfg,
        shard: opts.shard,
        models: Vec::new(),
    };
    let t0 = Instant::now();
    build_with_progress(p, &dev, &data, &mut manifest, &out, &opts)?;
    let secs = t0.elapsed().as_secs_f64();
    print_summary(p, &manifest, &data, &out, secs);
    // Check the zoo reads back before calling it done.
    read_manifest(&out)?;
    Ok(0)
}

/// `build` with a progress bar on stderr (hidden when quiet, in JSON mode or off a terminal;
/// off a terminal, a line at each tenth of the work instead).
pub fn build_with_progress(
    p: &Printer,
    dev: &Device,
    data: &crate::io::data::Dataset,
    manifest: &mut Manifest,
    out: &std::path::Path,
    opts: &BuildOptions,
) -> Result<()> {
    let bar = if p.quiet || p.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} model-epochs  {msg}  [{elapsed_precise} < {eta}]",
        )
        .unwrap(),
    );
    let (t0, mut total, mut planned, mut logged) = (Instant::now(), 0, 0, 0);
    build(dev, data, manifest, out, opts, &mut |e| match e {
        BuildEvent::Resuming { done, planned } => p.status(&format!(
            "resuming: {done} of {planned} models already trained"
        )),
        BuildEvent::Started {
            models,
            architectures,
            batches,
            model_epochs,
        } => {
            (total, planned) = (models, model_epochs);
            bar.set_length(model_epochs as u64);
            p.status(&format!(
                "training {models} models: {architectures} architectures, {batches} batches"
            ));
        }
        BuildEvent::Progress {
            model_epochs,
            models,
        } => {
            let msg = format!(
                "{models}/{total} models, {:.2} models/s",
                models as f64 / t0.elapsed().as_secs_f64()
            );
            bar.set_position(model_epochs as u64);
            // Off a terminal, a line at each tenth of the model-epochs.
            let tenth = 10 * model_epochs / planned.max(1);
            if tenth > logged {
                logged = tenth;
                p.progress_line(&format!("{}% of the model-epochs: {msg}", 10 * tenth));
            }
            bar.set_message(msg);
        }
    })?;
    bar.finish_and_clear();
    Ok(())
}

/// The zoo's size, speed and test accuracies, as a table or JSON.
fn print_summary(
    p: &Printer,
    manifest: &Manifest,
    data: &crate::io::data::Dataset,
    out: &std::path::Path,
    secs: f64,
) {
    let mut acc: Vec<f64> = manifest
        .models
        .iter()
        .map(|r| r.metrics["test"].accuracy)
        .collect();
    acc.sort_by(f64::total_cmp);
    let majority = crate::requirement::metrics::majority_accuracy(&data.test.y);
    let count = |s: ModelSplit| manifest.models.iter().filter(|r| r.split == s).count();
    let n = manifest.models.len();
    if p.json {
        p.json(&serde_json::json!({
            "out": out, "models": n, "seconds": secs, "models_per_second": n as f64 / secs,
            "test_accuracy": {"min": acc[0], "median": acc[acc.len() / 2], "max": acc[acc.len() - 1]},
            "majority_class_accuracy": majority,
            "model_split": {
                "train": count(ModelSplit::Train),
                "val": count(ModelSplit::Val),
                "test": count(ModelSplit::Test),
            },
        }));
        return;
    }
    p.result(&format!(
        "{n} models in {secs:.1} s ({:.2} models/s) -> {}",
        n as f64 / secs,
        out.display()
    ));
    p.result(&format!(
        "test accuracy: min {:.4}  median {:.4}  max {:.4}   (majority class {:.4})",
        acc[0],
        acc[acc.len() / 2],
        acc[acc.len() - 1],
        majority
    ));
}
