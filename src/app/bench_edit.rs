//! Edit benchmarks on real files (`regop bench --editor E --zoo Z`): one edit end to end (model
//! file in, edited file out), one edit with its graph already on the device, one edit with its
//! step picked on training rows (editors that pick it), batched edits/s, and training
//! model-steps/s. Every figure is the median of its repetitions, in host time
//! around work that has finished (a GPU read-back waits for the device).
//!
//! With `out`, it also writes what a second implementation needs to check that it computes the
//! same function: the asks, a few edited models, and one training batch with the editor's
//! gradient on it (`check.json`, `check-*.safetensors`).

use crate::app::bench::BenchResult;
use crate::engine::device::Device;
use crate::engine::kernels::adam::Adam;
use crate::engine::profile::{profile, KernelTime};
use crate::error::{Error, Result};
use crate::io::data::Dataset;
use crate::io::model::Model;
use crate::networks::editor::Editor;
use crate::networks::mlp::MlpShape;
use crate::requirement::Ask;
use crate::workflows::edit::checkpoint::EditorFile;
use crate::workflows::edit::search::search_steps;
use crate::workflows::edit::step::TrainBatch;
use crate::workflows::edit::EditBatch;
use crate::workflows::edit::{edit_models, slice_edges};
use crate::workflows::zoo::load::Member;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct EditBenchOptions {
    /// Batch sizes for batched edits.
    pub batches: Vec<usize>,
    /// Repetitions of each timed piece (fewer for large batches).
    pub iters: usize,
    /// Models and data rows per training step.
    pub train_models: usize,
    pub train_rows: usize,
    /// What every edit asks.
    pub ask: Ask,
    /// The editor's file (named in the check files).
    pub editor_path: PathBuf,
    /// Also time every kernel of one edit and one training step.
    pub profile: bool,
}

/// The name of the timing of an edit whose step is picked on training rows.
pub const STEP_PICKED: &str = "edit, step picked";

/// A profiled region and its kernels.
pub type Profile = (String, Vec<KernelTime>);

/// A directory for the edited files of the file-to-file timing, removed however the benchmark
/// ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("regop-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Median seconds of `iters` runs of `f` (after one warm-up run).
fn median_time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn result(name: &str, shape: String, s: f64, per_iter: usize, unit: &str) -> BenchResult {
    BenchResult {
        name: name.into(),
        shape,
        seconds_per_iter: s,
        rate: per_iter as f64 / s,
        unit: unit.into(),
        timer: "host clock, median".into(),
    }
}

/// `models` are the edited population (cycled to fill a batch); `train` the models the
/// training steps draw from (one architecture).
pub fn bench_edits(
    dev: &Device,
    ef: &EditorFile,
    models: &[Member],
    train: &[Member],
    data: &Dataset,
    o: &EditBenchOptions,
    out: Option<&Path>,
) -> Result<(Vec<BenchResult>, Vec<Profile>)> {
    assert!(
        !models.is_empty() && !train.is_empty(),
        "bench_edits: models"
    );
    let mut results = Vec::new();
    let mut profiles = Vec::new();
    single_edits(dev, ef, &models[0], data, o, &mut results, &mut profiles)?;
    batched_edits(dev, ef, models, o, &mut results)?;
    training_steps(
        dev,
        ef,
        models,
        train,
        data,
        o,
        out,
        &mut results,
        &mut profiles,
    )?;
    Ok((results, profiles))
}

/// The editor's size, as labels give it.
fn label(ef: &EditorFile) -> String {
    format!("H={} L={}", ef.editor.cfg.hidden, ef.editor.cfg.layers)
}

fn arch(m: &Member) -> String {
    format!("{:?}", m.shape.dims)
}

/// (a) One edit end to end: read and check the model file, edit, write the edited file.
/// (b) One edit with its graph already on the device: editor inference and the exact edit.
/// (c) For an editor that picks its step: one edit with the step picked on training rows, as
/// `edit` makes it (the editor's inference at every step and their predictions).
fn single_edits(
    dev: &Device,
    ef: &EditorFile,
    first: &Member,
    data: &Dataset,
    o: &EditBenchOptions,
    results: &mut Vec<BenchResult>,
    profiles: &mut Vec<Profile>,
) -> Result<()> {
    let (spec, cols, label) = (&ef.spec, &ef.columns, label(ef));
    let scratch = Scratch::new()?;
    let edited_path = scratch.0.join("edited.safetensors");
    let s = median_time(o.iters, || {
        let m = Model::load(&first.path)?;
        ef.check_model(&first.path, &m)?;
        let (shape, params) = (m.shape(), m.flat_params());
        let ask = std::slice::from_ref(&o.ask);
        let e = edit_models(dev, &ef.editor, spec, &[(&shape, &params)], ask, cols)?;
        m.with_params(&e[0]).save(&edited_path, true)
    })?;
    let shape = format!("{} {label}", arch(first));
    results.push(result("edit, file to file", shape.clone(), s, 1, "edits/s"));
    let one = EditBatch::new(
        dev,
        &ef.editor,
        spec,
        &[(&first.shape, &first.params)],
        std::slice::from_ref(&o.ask),
        cols,
        slice_edges(dev, &ef.editor.cfg),
    )?;
    let s = median_time(o.iters, || one.run(dev, &ef.editor).map(|_| ()))?;
    results.push(result(
        "edit, graph on device",
        shape.clone(),
        s,
        1,
        "edits/s",
    ));
    if ef.searches_step() {
        let model = [(&first.shape, first.params.as_slice())];
        let ask = std::slice::from_ref(&o.ask);
        let s = median_time(o.iters, || {
            search_steps(dev, &ef.editor, spec, cols, &model, ask, &data.train).map(|_| ())
        })?;
        results.push(result(STEP_PICKED, shape, s, 1, "edits/s"));
    }
    if o.profile {
        let times = profile(dev, || one.run(dev, &ef.editor).map(|_| ()))?;
        let title = format!("one edit of {}, graph on device", arch(first));
        profiles.push((title, times));
    }
    Ok(())
}

/// (c) Batched edits from host parameters, mixed architectures as the population has them.
fn batched_edits(
    dev: &Device,
    ef: &EditorFile,
    models: &[Member],
    o: &EditBenchOptions,
    results: &mut Vec<BenchResult>,
) -> Result<()> {
    for &b in &o.batches {
        let pairs: Vec<(&MlpShape, &[f32])> = (0..b)
            .map(|i| {
                let m = &models[i % models.len()];
                (&m.shape, m.params.as_slice())
            })
            .collect();
        let asks = vec![o.ask.clone(); b];
        let iters = (o.iters * 8 / b).clamp(2, o.iters.max(2));
        let s = median_time(iters, || {
            edit_models(dev, &ef.editor, &ef.spec, &pairs, &asks, &ef.columns).map(|_| ())
        })?;
        let shape = format!("B={b} {}", label(ef));
        results.push(result("edits, batched", shape, s, b, "edits/s"));
    }
    Ok(())
}

/// (d) Training steps on `train_models` models of one architecture and a fixed data batch;
/// with `out`, the check files of the first step.
#[allow(clippy::too_many_arguments)]
fn training_steps(
    dev: &Device,
    ef: &EditorFile,
    models: &[Member],
    train: &[Member],
    data: &Dataset,
    o: &EditBenchOptions,
    out: Option<&Path>,
    results: &mut Vec<BenchResult>,
    profiles: &mut Vec<Profile>,
) -> Result<()> {
    let (spec, cols) = (&ef.spec, &ef.columns);
    let tm: Vec<&Member> = (0..o.train_models)
        .map(|i| &train[i % train.len()])
        .collect();
    let rows = o.train_rows.min(data.train.rows());
    let d = data.schema.n_columns();
    let x = &data.train.x[..rows * d];
    let (y, group) = (&data.train.y[..rows], &data.train.group[..rows]);
    let params: Vec<&[f32]> = tm.iter().map(|m| m.params.as_slice()).collect();
    let asks = vec![o.ask.clone(); tm.len()];
    let cfg = &ef.editor.cfg;
    let mut editor = Editor::from_params(dev, cfg, &dev.read_all(&ef.editor.params)?)?;
    let shape = &tm[0].shape;
    // Forward, losses and backward into the editor's gradient.
    let gradient = |editor: &Editor| -> Result<TrainBatch> {
        let b = TrainBatch::new(dev, editor, spec, shape, &params, &asks, cols, rows)?;
        b.forward(dev, editor)?;
        b.loss(dev, x, y, group)?;
        b.backward(dev, editor)?;
        Ok(b)
    };
    let step = |editor: &mut Editor| -> Result<Vec<(f32, f32)>> {
        let b = gradient(editor)?;
        editor.adam_step(dev, &Adam::default())?;
        b.read_losses(dev)
    };
    if let Some(dir) = out {
        // The check batch: losses and gradient of the first step, before any update.
        let losses = gradient(&editor)?.read_losses(dev)?;
        let grads = dev.read_all(&editor.grads)?;
        let batch = (x, y, group);
        write_check(
            dir,
            ef,
            models,
            &tm,
            &o.ask,
            batch,
            &losses,
            &grads,
            dev,
            &o.editor_path,
        )?;
    }
    let s = median_time(o.iters, || step(&mut editor).map(|_| ()))?;
    let train_label = format!("B={} rows={rows} {:?} {}", tm.len(), shape.dims, label(ef));
    let steps = "model-steps/s";
    results.push(result(
        "train step",
        train_label.clone(),
        s,
        tm.len(),
        steps,
    ));
    if o.profile {
        let times = profile(dev, || step(&mut editor).map(|_| ()))?;
        profiles.push((format!("one training step, {train_label}"), times));
    }
    Ok(())
}

/// Models whose edits go into the check files.
const CHECK_EDITS: usize = 4;

#[allow(clippy::too_many_arguments)]
fn write_check(
    dir: &Path,
    ef: &EditorFile,
    models: &[Member],
    train: &[&Member],
    ask: &Ask,
    (x, y, group): (&[f32], &[f32], &[u32]),
    losses: &[(f32, f32)],
    grads: &[f32],
    dev: &Device,
    editor_path: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let checked: Vec<&Member> = models.iter().take(CHECK_EDITS).collect();
    let pairs: Vec<(&MlpShape, &[f32])> = checked
        .iter()
        .map(|m| (&m.shape, m.params.as_slice()))
        .collect();
    let edited = edit_models(
        dev,
        &ef.editor,
        &ef.spec,
        &pairs,
        &vec![ask.clone(); pairs.len()],
        &ef.columns,
    )?;
    let mut edits = Vec::new();
    for (i, (m, e)) in checked.iter().zip(&edited).enumerate() {
        let file = dir.join(format!("check-edit-{i}.safetensors"));
        m.model.with_params(e).save(&file, true)?;
        edits.push(serde_json::json!({"model": m.path, "edited": file}));
    }
    let rows = y.len();
    let tensors: Vec<(&str, Vec<usize>, Vec<f32>)> = vec![
        ("x", vec![rows, x.len() / rows.max(1)], x.to_vec()),
        ("y", vec![rows], y.to_vec()),
        (
            "group",
            vec![rows],
            group.iter().map(|&g| g as f32).collect(),
        ),
        (
            "jsd",
            vec![losses.len()],
            losses.iter().map(|l| l.0).collect(),
        ),
        (
            "penalty",
            vec![losses.len()],
            losses.iter().map(|l| l.1).collect(),
        ),
        ("grads", vec![grads.len()], grads.to_vec()),
    ];
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, s, v)| (k.to_string(), s, bytemuck::cast_slice(&v).to_vec()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("check tensor"),
            )
        })
        .collect();
    let train_file = dir.join("check-train.safetensors");
    let st = safetensors::serialize(views, None)
        .map_err(|e| Error::input(&train_file, e.to_string()))?;
    crate::io::write_atomic(&train_file, &st, true)?;
    let removed: Vec<usize> = (0..ask.removed.len()).filter(|&c| ask.removed[c]).collect();
    let check = serde_json::json!({
        "editor": editor_path,
        "ask": {"sparsity": ask.sparsity, "lambda": ask.lambda, "shift": ask.shift, "removed_columns": removed},
        "edits": edits,
        "train": {
            "models": train.iter().map(|m| &m.path).collect::<Vec<_>>(),
            "batch": train_file,
            "adam": {"lr": Adam::default().lr, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        },
    });
    let json_path = dir.join("check.json");
    crate::io::write_atomic(
        &json_path,
        serde_json::to_string_pretty(&check)
            .expect("json")
            .as_bytes(),
        true,
    )
}
