//! `regop zoo`: train a population of MLPs on a dataset, batched by architecture on the device;
//! `regop zoo merge`: join shards trained on different machines.

use super::data::DataArgs;
use super::{Global, Printer};
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::workflows::zoo::{
    merge, plan, read_manifest, to_model, train_group, write_manifest, Manifest, ModelSplit,
    ZooConfig, FORMAT, MANIFEST, PARTIAL,
};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub merge: Option<Sub>,
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
    if let Some(Sub::Merge { out, shards, force }) = a.merge {
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
    let a = a.build;
    let out = a
        .out
        .clone()
        .ok_or_else(|| Error::Usage("--out DIR is required".into()))?;
    if a.count == 0 {
        return Err(Error::Usage("--count must be at least 1".into()));
    }
    let partial_path = out.join(PARTIAL);
    if partial_path.exists() && !a.force && !a.resume {
        return Err(Error::input(
            &out,
            "holds an interrupted zoo (pass --resume to continue it, or --force to start again)",
        ));
    }
    if out.join(MANIFEST).exists() && !a.force {
        return Err(Error::input(
            &out,
            "already holds a zoo (pass --force to replace it)",
        ));
    }
    let shard = a.shard.as_deref().map(shard).transpose()?;
    let data = a.data.load(g.seed)?;
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
    let mut records = plan(&cfg, data.schema.n_columns());
    if let Some((i, n)) = shard {
        records.retain(|r| r.id % n == i);
    }
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let mut manifest = Manifest {
        format: FORMAT.into(),
        dataset: data.schema.dataset.clone(),
        loader: a.data.name(),
        data_options: a.data.options.clone(),
        data_seed: g.seed,
        schema: data.schema.clone(),
        config: cfg.clone(),
        shard,
        models: Vec::new(),
    };

    // Models finished before an interruption: recorded after every batch in the partial manifest.
    let mut done: std::collections::BTreeMap<usize, crate::workflows::zoo::ModelRecord> =
        Default::default();
    if a.resume {
        if !partial_path.exists() {
            return Err(Error::input(&out, "has no interrupted zoo to resume"));
        }
        let bytes = crate::io::read(&partial_path)?;
        let prev: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(&partial_path, format!("unreadable: {e}")))?;
        if prev.config != manifest.config
            || prev.schema != manifest.schema
            || prev.data_seed != manifest.data_seed
            || prev.loader != manifest.loader
            || prev.shard != manifest.shard
        {
            return Err(Error::input(
                &partial_path,
                "was made with other data or settings; resume with the same command line",
            ));
        }
        for r in prev.models {
            if !out.join(&r.file).exists() {
                return Err(Error::input(
                    out.join(&r.file),
                    "is recorded as finished but missing",
                ));
            }
            done.insert(r.id, r);
        }
        // A kill during a write leaves a temporary file behind: remove them.
        for e in std::fs::read_dir(&out)
            .map_err(|e| Error::io(&out, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        p.status(&format!(
            "resuming: {} of {} models already trained",
            done.len(),
            records.len()
        ));
    }

    // Group by architecture; each group trains as one batch.
    let mut groups: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
    if a.max_batch == 0 {
        return Err(Error::Usage("--max-batch must be at least 1".into()));
    }
    for (i, r) in records.iter().enumerate() {
        groups.entry(r.dims.clone()).or_default().push(i);
    }
    let batches: Vec<(Vec<usize>, Vec<usize>)> = groups
        .iter()
        .flat_map(|(dims, members)| {
            members
                .chunks(a.max_batch)
                .map(|c| (dims.clone(), c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    let total_epochs: usize = records.iter().map(|r| r.epochs).sum();
    let bar = if p.quiet || p.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total_epochs as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} model-epochs  {msg}  [{elapsed_precise} < {eta}]",
        )
        .unwrap(),
    );
    p.status(&format!(
        "training {} models: {} architectures, {} batches",
        records.len(),
        groups.len(),
        batches.len()
    ));
    let t0 = Instant::now();
    let (mut epochs_before, mut models_before) = (0usize, 0usize);
    for (dims, members) in &batches {
        if members.iter().all(|i| done.contains_key(&records[*i].id)) {
            for &i in members {
                records[i] = done[&records[i].id].clone();
            }
            epochs_before += members.iter().map(|&i| records[i].epochs).sum::<usize>();
            models_before += members.len();
            continue;
        }
        let mut group: Vec<_> = members.iter().map(|&i| records[i].clone()).collect();
        let params = train_group(&dev, &data, &mut group, &mut |done_epochs, done_models| {
            bar.set_position((epochs_before + done_epochs) as u64);
            let models = models_before + done_models;
            bar.set_message(format!(
                "{models}/{} models, {:.2} models/s",
                records.len(),
                models as f64 / t0.elapsed().as_secs_f64()
            ));
        })?;
        let np = crate::networks::mlp::MlpShape::new(dims, cfg.activation).n_params();
        for (z, r) in group.iter().enumerate() {
            to_model(r, &params[z * np..(z + 1) * np], &manifest)
                .save(&out.join(&r.file), a.force || a.resume)?;
        }
        epochs_before += group.iter().map(|r| r.epochs).sum::<usize>();
        models_before += group.len();
        for (r, &i) in group.into_iter().zip(members) {
            done.insert(r.id, r.clone());
            records[i] = r;
        }
        let partial = Manifest {
            models: done.values().cloned().collect(),
            ..manifest.clone()
        };
        crate::io::write_atomic(
            &partial_path,
            &serde_json::to_vec_pretty(&partial).unwrap(),
            true,
        )?;
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    manifest.models = records;
    write_manifest(&out, &manifest, true)?;
    let _ = std::fs::remove_file(&partial_path);

    let mut acc: Vec<f64> = manifest
        .models
        .iter()
        .map(|r| r.metrics["test"].accuracy)
        .collect();
    acc.sort_by(f64::total_cmp);
    let majority = crate::requirement::metrics::majority_accuracy(&data.test.y);
    let summary = serde_json::json!({
        "out": out, "models": manifest.models.len(), "seconds": secs, "models_per_second": manifest.models.len() as f64 / secs,
        "test_accuracy": {"min": acc[0], "median": acc[acc.len() / 2], "max": acc[acc.len() - 1]},
        "majority_class_accuracy": majority,
        "model_split": {
            "train": manifest.models.iter().filter(|r| r.split == ModelSplit::Train).count(),
            "val": manifest.models.iter().filter(|r| r.split == ModelSplit::Val).count(),
            "test": manifest.models.iter().filter(|r| r.split == ModelSplit::Test).count(),
        },
    });
    if p.json {
        p.json(&summary);
    } else {
        p.result(&format!(
            "{} models in {:.1} s ({:.2} models/s) -> {}",
            manifest.models.len(),
            secs,
            manifest.models.len() as f64 / secs,
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
    // Check the zoo reads back before calling it done.
    read_manifest(&out)?;
    Ok(0)
}
