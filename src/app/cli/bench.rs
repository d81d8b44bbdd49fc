//! `regop bench`: GEMM GFLOP/s, batched-MLP training and editor throughput on the chosen device;
//! with `--editor E --zoo Z`, edit latency and throughput on real files (see `bench_edit`).

use super::data::DataArgs;
use super::{Global, Printer};
use crate::app::bench::{run_all, table, BenchOptions};
use crate::app::bench_edit::{bench_edits, EditBenchOptions};
use crate::engine::device::Device;
use crate::error::{Error, Result};
use crate::requirement::Requirement;
use crate::requirement::{removed_columns, Ask};
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::zoo::load::zoo_data;
use crate::workflows::zoo::load::{load_models, Member};
use crate::workflows::zoo::{read_manifest, ModelSplit};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Small shapes, two repetitions: for software adapters (lavapipe) and smoke tests.
    #[arg(long)]
    pub quick: bool,
    /// Benchmark edits with this trained editor (needs --zoo) instead of the engine.
    #[arg(long, requires = "zoo")]
    pub editor: Option<PathBuf>,
    /// The zoo whose test models are edited and whose training models are trained on.
    #[arg(long, requires = "editor")]
    pub zoo: Option<PathBuf>,
    /// Batch sizes of the batched edits.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256,1024")]
    pub batches: Vec<usize>,
    /// Repetitions of each timed piece.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Models and data rows per training step.
    #[arg(long, default_value_t = 8)]
    pub train_models: usize,
    #[arg(long, default_value_t = 512)]
    pub train_rows: usize,
    /// What the edits ask: features to drop (minimise; default the sensitive attribute), a
    /// sparsity (prune), a lambda (fairness).
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    #[arg(long, default_value_t = 0.9)]
    pub sparsity: f32,
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f32,
    /// With --editor: also time every kernel of one edit and one training step (GPU timestamp
    /// queries around each dispatch; CPU wall time per kernel call).
    #[arg(long, requires = "editor")]
    pub profile: bool,
    /// Also write check files (the asks, edited models, a training batch and its gradient) here.
    #[arg(long)]
    pub check_out: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(serde::Serialize)]
struct Report {
    device: String,
    hardware_gpu: bool,
    results: Vec<crate::app::bench::BenchResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profiles: Vec<crate::app::bench_edit::Profile>,
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("benchmarking on {} ({why})", dev.name()));
    let hardware_gpu = matches!(&dev, Device::Gpu(gpu) if crate::engine::device::is_hardware(gpu.info.device_type));
    if dev.is_gpu() && !hardware_gpu && !a.quick {
        p.status("note: this adapter is a software rasteriser; its figures say nothing about GPU speed (try --quick)");
    }
    let (results, profiles) = match (&a.editor, &a.zoo) {
        (Some(editor), Some(zoo)) => edit_benchmarks(&dev, p, &a, editor, zoo)?,
        _ => (
            run_all(
                &dev,
                &BenchOptions {
                    quick: a.quick,
                    seed: g.seed,
                },
            )?,
            Vec::new(),
        ),
    };
    if p.json {
        p.json(&Report {
            device: dev.name(),
            hardware_gpu,
            results,
            profiles,
        });
    } else {
        print!("{}", table(&dev.name(), &results));
        for (title, times) in &profiles {
            print!("\n{}", crate::engine::profile::table(title, times));
        }
    }
    Ok(0)
}

fn edit_benchmarks(
    dev: &Device,
    p: &Printer,
    a: &Args,
    editor: &std::path::Path,
    zoo: &std::path::Path,
) -> Result<(
    Vec<crate::app::bench::BenchResult>,
    Vec<crate::app::bench_edit::Profile>,
)> {
    let mut ef = EditorFile::load(dev, editor)?;
    let manifest = read_manifest(zoo)?;
    let data = zoo_data(zoo, &manifest, a.data.data.as_deref())?;
    if data.schema != ef.schema {
        return Err(Error::input(
            editor,
            "was trained on other data than the zoo's (schemas differ)",
        ));
    }
    ef.attach_data(&data);
    let load = |split: ModelSplit| -> Result<Vec<Member>> {
        let models = load_models(zoo, &manifest, split)?;
        for m in &models {
            ef.check_model(&m.path, &m.model)?;
        }
        Ok(models)
    };
    let models = load(ModelSplit::Test)?;
    let mut train = load(ModelSplit::Train)?;
    if models.is_empty() || train.is_empty() {
        return Err(Error::input(zoo, "needs test and training models"));
    }
    // Training steps use one architecture: the most common one among the training models.
    let common = {
        let mut count = std::collections::BTreeMap::new();
        for m in &train {
            *count.entry(m.shape.dims.clone()).or_insert(0usize) += 1;
        }
        count.into_iter().max_by_key(|(_, c)| *c).unwrap().0
    };
    train.retain(|m| m.shape.dims == common);
    let mut ask = Ask::new(ef.schema.n_columns());
    match ef.spec.requirement {
        Requirement::Prune => ask.sparsity = a.sparsity,
        Requirement::Fairness => match ef.spec.fair_target {
            crate::requirement::FairTarget::Penalty
            | crate::requirement::FairTarget::DropAttribute => ask.lambda = a.lambda,
            // A typical threshold move: the lower-rate group's logits up by half a unit.
            crate::requirement::FairTarget::Shift => {
                let mut shift = vec![0.0; ef.schema.groups.len()];
                shift[0] = 0.5;
                ask.shift = Some(shift);
            }
        },
        Requirement::Minimise => {
            let drop = if a.drop.is_empty() {
                ef.schema.sensitive.iter().cloned().collect()
            } else {
                a.drop.clone()
            };
            ask.removed = removed_columns(&ef.schema, &drop).map_err(Error::Usage)?;
        }
    }
    p.status(&format!(
        "editing {} test models, training on {} models of {:?}",
        models.len(),
        train.len(),
        common
    ));
    bench_edits(
        dev,
        &ef,
        &models,
        &train,
        &data,
        &EditBenchOptions {
            batches: a.batches.clone(),
            iters: a.iters,
            train_models: a.train_models,
            train_rows: a.train_rows,
            ask,
            editor_path: editor.to_path_buf(),
            profile: a.profile,
        },
        a.check_out.as_deref(),
    )
}
