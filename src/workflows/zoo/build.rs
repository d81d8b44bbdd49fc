//! Building a zoo: the plan (architecture and hyper-parameters of every model, fixed by the
//! seed) and batched training on the device (models of one architecture train together, each
//! with its own initialisation, minibatch order, learning rate, weight decay and epoch count),
//! written batch by batch so that an interrupted build resumes where it stopped.

use super::{ModelRecord, ModelSplit, ZooConfig};
use crate::engine::device::Device;
use crate::error::Result;
use crate::io::data::Dataset;
use crate::networks::mlp::{init_params, predict, MlpShape};
use crate::requirement::metrics::report;
use crate::workflows::fit::{fit, FitModel};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// The plan: every model's architecture, hyper-parameters and split, from the config alone.
pub fn plan(cfg: &ZooConfig, inputs: usize, outputs: usize) -> Vec<ModelRecord> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x200_0000);
    let log_uniform = |rng: &mut rand_chacha::ChaCha8Rng, (lo, hi): (f32, f32)| {
        (rng.random_range(lo.ln()..=hi.ln())).exp()
    };
    let mut order: Vec<usize> = (0..cfg.count).collect();
    order.shuffle(&mut rng);
    let n_train = (cfg.count as f64 * cfg.model_split.0).round() as usize;
    let n_val = (cfg.count as f64 * cfg.model_split.1).round() as usize;
    let mut split = vec![ModelSplit::Test; cfg.count];
    for (rank, &id) in order.iter().enumerate() {
        split[id] = if rank < n_train {
            ModelSplit::Train
        } else if rank < n_train + n_val {
            ModelSplit::Val
        } else {
            ModelSplit::Test
        };
    }
    (0..cfg.count)
        .map(|id| {
            let depth = rng.random_range(cfg.depth.0..=cfg.depth.1);
            let width = cfg.widths[rng.random_range(0..cfg.widths.len())];
            let mut dims = vec![inputs];
            dims.extend(std::iter::repeat_n(width, depth));
            dims.push(outputs);
            ModelRecord {
                id,
                file: format!("model-{id:05}.safetensors"),
                dims,
                activation: cfg.activation,
                seed: rng.random(),
                lr: log_uniform(&mut rng, cfg.lr),
                weight_decay: log_uniform(&mut rng, cfg.weight_decay),
                epochs: rng.random_range(cfg.epochs.0..=cfg.epochs.1),
                batch_size: cfg.batch_size,
                split: split[id],
                metrics: BTreeMap::new(),
            }
        })
        .collect()
}

/// Progress callback: (model-epochs done, models finished).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Train `records` (all of one architecture) together on `data`; returns their parameters,
/// model-major, and fills in their metrics.
pub fn train_group(
    dev: &Device,
    data: &Dataset,
    records: &mut [ModelRecord],
    progress: Progress,
) -> Result<Vec<f32>> {
    let shape = MlpShape::new(&records[0].dims, records[0].activation);
    assert!(records
        .iter()
        .all(|r| r.dims == records[0].dims && r.activation == records[0].activation));
    let b = records.len();
    let init: Vec<f32> = records
        .iter()
        .flat_map(|r| init_params(&shape, r.seed))
        .collect();
    let models: Vec<FitModel> = records
        .iter()
        .map(|r| FitModel {
            seed: r.seed,
            lr: r.lr,
            weight_decay: r.weight_decay,
            epochs: r.epochs,
        })
        .collect();
    let trained = fit(
        dev,
        &shape,
        &init,
        None,
        &data.train,
        &models,
        records[0].batch_size,
        progress,
    )?;
    for (name, split) in [
        ("train", &data.train),
        ("val", &data.val),
        ("test", &data.test),
    ] {
        if split.rows() == 0 {
            continue;
        }
        let logits = predict(dev, &shape, b, &trained, &split.x)?;
        let (k, n) = (shape.outputs(), split.rows());
        for (z, r) in records.iter_mut().enumerate() {
            let own = &logits[z * n * k..(z + 1) * n * k];
            r.metrics
                .insert(name.into(), report(&split.y, own, &split.group, k));
        }
    }
    Ok(trained)
}

/// What `build` reports as it goes.
pub enum BuildEvent {
    /// Resuming: this many of the plan's models were trained before the interruption.
    Resuming { done: usize, planned: usize },
    /// Training starts: models, architectures, batches, and the model-epochs to run in all.
    Started {
        models: usize,
        architectures: usize,
        batches: usize,
        model_epochs: usize,
    },
    /// After every epoch of a batch: model-epochs and models finished so far.
    Progress { model_epochs: usize, models: usize },
}

/// How `build` runs.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Train only shard (i, n): the models whose id is i modulo n.
    pub shard: Option<(usize, usize)>,
    /// Most models trained in one batch; larger architecture groups are split.
    pub max_batch: usize,
    /// Continue an interrupted build in the same directory (same data and settings).
    pub resume: bool,
    /// Replace the files of an earlier build.
    pub force: bool,
}

/// Refuse to build into `out` over a finished zoo (without `force`), or over an interrupted one
/// (without `force` or `resume`).
pub fn check_output(out: &std::path::Path, o: &BuildOptions) -> Result<()> {
    use crate::error::Error;
    if out.join(super::PARTIAL).exists() && !o.force && !o.resume {
        return Err(Error::input(
            out,
            "holds an interrupted zoo (pass --resume to continue it, or --force to start again)",
        ));
    }
    if out.join(super::MANIFEST).exists() && !o.force {
        return Err(Error::input(
            out,
            "already holds a zoo (pass --force to replace it)",
        ));
    }
    Ok(())
}

/// Plan and train the zoo `manifest` describes (its records are filled in) into `out`: model
/// files after every batch, with `PARTIAL` listing the models finished, then `MANIFEST`.
pub fn build(
    dev: &Device,
    data: &Dataset,
    manifest: &mut super::Manifest,
    out: &std::path::Path,
    o: &BuildOptions,
    on: &mut dyn FnMut(BuildEvent),
) -> Result<()> {
    use super::{write_manifest, PARTIAL};
    use crate::error::Error;
    check_output(out, o)?;
    let cfg = manifest.config.clone();
    let mut records = plan(&cfg, data.schema.n_columns(), data.schema.outputs());
    if let Some((i, n)) = o.shard {
        records.retain(|r| r.id % n == i);
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let partial_path = out.join(PARTIAL);
    // Models finished before an interruption: recorded after every batch in the partial manifest.
    let mut done: BTreeMap<usize, ModelRecord> = if o.resume {
        let done = resume_from(manifest, out)?;
        on(BuildEvent::Resuming {
            done: done.len(),
            planned: records.len(),
        });
        done
    } else {
        BTreeMap::new()
    };
    let batches = batches(&records, o.max_batch)?;
    on(BuildEvent::Started {
        models: records.len(),
        architectures: batches
            .iter()
            .map(|b| &b.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        batches: batches.len(),
        model_epochs: records.iter().map(|r| r.epochs).sum(),
    });
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
        let params = train_group(dev, data, &mut group, &mut |epochs, models| {
            on(BuildEvent::Progress {
                model_epochs: epochs_before + epochs,
                models: models_before + models,
            })
        })?;
        let np = MlpShape::new(dims, cfg.activation).n_params();
        for (z, r) in group.iter().enumerate() {
            super::to_model(r, &params[z * np..(z + 1) * np], manifest)
                .save(&out.join(&r.file), o.force || o.resume)?;
        }
        epochs_before += group.iter().map(|r| r.epochs).sum::<usize>();
        models_before += group.len();
        for (r, &i) in group.into_iter().zip(members) {
            done.insert(r.id, r.clone());
            records[i] = r;
        }
        let partial = super::Manifest {
            models: done.values().cloned().collect(),
            ..manifest.clone()
        };
        let bytes = serde_json::to_vec_pretty(&partial).unwrap();
        crate::io::write_atomic(&partial_path, &bytes, true)?;
    }
    manifest.models = records;
    write_manifest(out, manifest, true)?;
    let _ = std::fs::remove_file(&partial_path);
    Ok(())
}

/// The models an interrupted build in `out` finished, checked against the plan it resumes
/// (`manifest`); temporary files a kill left behind are removed.
fn resume_from(
    manifest: &super::Manifest,
    out: &std::path::Path,
) -> Result<BTreeMap<usize, ModelRecord>> {
    use crate::error::Error;
    let partial_path = out.join(super::PARTIAL);
    if !partial_path.exists() {
        return Err(Error::input(out, "has no interrupted zoo to resume"));
    }
    let bytes = crate::io::read(&partial_path)?;
    let prev: super::Manifest = serde_json::from_slice(&bytes)
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
    let mut done = BTreeMap::new();
    for r in prev.models {
        if !out.join(&r.file).exists() {
            return Err(Error::input(
                out.join(&r.file),
                "is recorded as finished but missing",
            ));
        }
        done.insert(r.id, r);
    }
    for e in std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(done)
}

/// The training batches: records grouped by architecture (in dims order), each group cut into
/// batches of at most `max_batch`. Returns (dims, indices into `records`) per batch.
fn batches(records: &[ModelRecord], max_batch: usize) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    if max_batch == 0 {
        return Err(crate::error::Error::Usage(
            "--max-batch must be at least 1".into(),
        ));
    }
    let mut groups: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        groups.entry(r.dims.clone()).or_default().push(i);
    }
    Ok(groups
        .iter()
        .flat_map(|(dims, members)| {
            members
                .chunks(max_batch)
                .map(|c| (dims.clone(), c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect())
}
