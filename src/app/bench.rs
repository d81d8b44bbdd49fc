//! Benchmarks shared by `regop bench` and `benches/engine.rs`: GEMM GFLOP/s at several shapes and
//! batched-MLP training steps/s. GPU times come from timestamp queries around the timed work
//! (host clocks around an asynchronous submit measure the driver, not the kernels); where the
//! adapter has no timestamp queries the report says the times are host times around a full sync.

use crate::engine::device::Device;
use crate::engine::kernels::activation::Activation;
use crate::engine::kernels::adam::Adam;
use crate::engine::kernels::gemm::{gemm_with, Gemm, GemmKernel};
use crate::error::Result;
use crate::networks::mlp::{init_params, random_vec, BatchedMlp, MlpShape};
use rand::SeedableRng;
use std::time::Instant;

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub name: String,
    pub shape: String,
    pub seconds_per_iter: f64,
    /// GEMM: GFLOP/s. MLP: model-steps per second.
    pub rate: f64,
    pub unit: String,
    pub timer: String,
}

#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Small shapes and few repetitions: for software adapters and tests.
    pub quick: bool,
    pub seed: u64,
}

/// Time `iters` repetitions of `record`: GPU seconds from timestamps where available, else wall
/// time around work that the CPU backend runs synchronously (or a synced GPU submit).
fn time_iters(
    dev: &Device,
    iters: usize,
    mut record: impl FnMut() -> Result<()>,
) -> Result<(f64, &'static str)> {
    record()?; // warm-up: compiles pipelines, creates bind groups
    dev.sync()?;
    if let Device::Gpu(g) = dev {
        let t0 = Instant::now();
        let gpu_time = g.time(|| (0..iters).try_for_each(|_| record()))?;
        if let Some(s) = gpu_time {
            return Ok((s / iters as f64, "gpu timestamps"));
        }
        return Ok((
            t0.elapsed().as_secs_f64() / iters as f64,
            "host clock, synced",
        ));
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        record()?;
    }
    Ok((t0.elapsed().as_secs_f64() / iters as f64, "host clock"))
}

pub fn gemm_cases(quick: bool) -> Vec<(&'static str, Gemm)> {
    let mlp_layer = |batch| Gemm {
        batch,
        m: 256,
        n: 64,
        k: 100,
        trans_a: false,
        trans_b: true,
        a_stride: 0,
        b_stride: 64 * 100,
        c_stride: 256 * 64,
        accumulate: false,
    };
    // The editor's edge products: [edges, hidden] x [hidden, hidden]^T at hidden 32.
    let editor_edges = |edges| Gemm {
        trans_b: true,
        ..Gemm::single(edges, 32, 32)
    };
    if quick {
        return vec![
            ("square", Gemm::single(128, 128, 128)),
            ("batched", Gemm::batched(16, 64, 64, 64)),
            ("mlp layer", mlp_layer(8)),
            ("editor edges", editor_edges(4096)),
        ];
    }
    vec![
        ("square", Gemm::single(256, 256, 256)),
        ("square", Gemm::single(1024, 1024, 1024)),
        ("square", Gemm::single(2048, 2048, 2048)),
        ("batched", Gemm::batched(256, 64, 64, 64)),
        ("mlp layer", mlp_layer(512)),
        ("editor edges", editor_edges(44_032)),
        ("editor edges", editor_edges(16 * 44_032)),
    ]
}

pub fn bench_gemm(dev: &Device, opts: &BenchOptions) -> Result<Vec<BenchResult>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut out = Vec::new();
    for (name, g) in gemm_cases(opts.quick) {
        let a_len = g.a_stride * (g.batch - 1) + g.m * g.k;
        let b_len = g.b_stride * (g.batch - 1) + g.k * g.n;
        let a = dev.upload(&random_vec(&mut rng, a_len))?;
        let b = dev.upload(&random_vec(&mut rng, b_len))?;
        let c = dev.alloc(g.c_stride * (g.batch - 1) + g.m * g.n)?;
        let kernels: &[GemmKernel] = match dev.is_gpu() {
            true if (9..=32).contains(&g.n) => {
                &[GemmKernel::Naive, GemmKernel::Tiled, GemmKernel::Narrow]
            }
            true => &[GemmKernel::Naive, GemmKernel::Tiled],
            false => &[GemmKernel::Auto],
        };
        for &kernel in kernels {
            let flops = g.flops();
            let iters = if opts.quick {
                2
            } else {
                ((2e11 / flops) as usize).clamp(3, 200)
            };
            let (s, timer) = time_iters(dev, iters, || {
                gemm_with(dev, kernel, &g, a.all(), b.all(), c.all())
            })?;
            let label = if dev.is_gpu() {
                format!("gemm {name} ({})", format!("{kernel:?}").to_lowercase())
            } else {
                format!("gemm {name}")
            };
            out.push(BenchResult {
                name: label,
                shape: format!(
                    "{}x{}x{}x{}{}",
                    g.batch,
                    g.m,
                    g.n,
                    g.k,
                    if g.trans_b { " B^T" } else { "" }
                ),
                seconds_per_iter: s,
                rate: flops / s / 1e9,
                unit: "GFLOP/s".into(),
                timer: timer.into(),
            });
        }
    }
    Ok(out)
}

/// Training steps of B Adult-sized MLPs (100 -> 64 -> 64 -> 1) on 256 rows: forward, BCE,
/// backward, AdamW, for B models at once.
pub fn bench_mlp(dev: &Device, opts: &BenchOptions) -> Result<Vec<BenchResult>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let shape = MlpShape::new(&[100, 64, 64, 1], Activation::Relu);
    let rows = if opts.quick { 64 } else { 256 };
    let batches: &[usize] = if opts.quick {
        &[1, 8]
    } else {
        &[1, 16, 256, 1024]
    };
    let x = dev.upload(&random_vec(&mut rng, rows * 100))?;
    let y: Vec<f32> = (0..rows).map(|i| (i % 2) as f32).collect();
    let y = dev.upload(&y)?;
    let opt = Adam::default();
    let mut out = Vec::new();
    for &b in batches {
        let params: Vec<f32> = (0..b).flat_map(|m| init_params(&shape, m as u64)).collect();
        let mut net = BatchedMlp::new(dev, &shape, b, rows, &params)?;
        // ~20 dispatches a step; 100 steps stay inside one timed pass.
        let iters = if opts.quick {
            2
        } else {
            100.min((20_000 / b).max(5))
        };
        let (s, timer) = time_iters(dev, iters, || {
            net.train_step(dev, x.all(), 0, y.all(), 0, &opt)
        })?;
        out.push(BenchResult {
            name: "mlp train step".into(),
            shape: format!("B={b} rows={rows} [100,64,64,1]"),
            seconds_per_iter: s,
            rate: b as f64 / s,
            unit: "model-steps/s".into(),
            timer: timer.into(),
        });
    }
    Ok(out)
}

pub fn run_all(dev: &Device, opts: &BenchOptions) -> Result<Vec<BenchResult>> {
    let mut r = bench_gemm(dev, opts)?;
    r.extend(bench_mlp(dev, opts)?);
    r.extend(bench_editor(dev, opts)?);
    r.extend(bench_rules(opts));
    Ok(r)
}

/// The strongest one-shot pruning rule, OBS reconstruction, on the host (it runs there whatever
/// the device): a model of mnist_5k's width (784 inputs, 80% of them zero in a row, as pixels
/// are) at sparsity 0.9 on a 512-row calibration batch. "new batch": its first-layer Hessian is
/// factored; "batch seen": it is shared, as by every model pruned on one batch.
pub fn bench_rules(opts: &BenchOptions) -> Vec<BenchResult> {
    use crate::workflows::baselines::obs_prune;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let (dims, rows, iters) = match opts.quick {
        true => (vec![784, 16, 10], 64, 2),
        false => (vec![784, 128, 128, 128, 10], 512, 5),
    };
    let shape = MlpShape::new(&dims, Activation::Relu);
    let params = init_params(&shape, opts.seed);
    let mut x: Vec<f32> = random_vec(&mut rng, rows * 784)
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 5 == 0 { v.abs() } else { 0.0 })
        .collect();
    let mut out = Vec::new();
    for seen in [false, true] {
        obs_prune(&shape, &params, &x, rows, 0.9);
        let t0 = Instant::now();
        for i in 0..iters {
            if !seen {
                x[0] = i as f32 + 1.0; // another batch
            }
            obs_prune(&shape, &params, &x, rows, 0.9);
        }
        let s = t0.elapsed().as_secs_f64() / iters as f64;
        out.push(BenchResult {
            name: format!(
                "OBS prune, {}",
                if seen { "batch seen" } else { "new batch" }
            ),
            shape: format!("{dims:?} rows={rows} s=0.9"),
            seconds_per_iter: s,
            rate: 1.0 / s,
            unit: "models/s".into(),
            timer: "host clock".into(),
        });
    }
    out.extend(bench_solves(opts));
    out
}

/// What the rules that re-solve weights spend their time on, on the host: a Gram matrix of a
/// calibration batch of 784 pixels, its Cholesky factor, a solve for 128 outputs, its inverse
/// (OBS's first layer), and the natural step on a model of mnist_5k's width. All but the
/// factor run on all cores: each is timed on one thread and on all cores, side by side (the
/// results are the same bit for bit); the factor runs on one thread.
pub fn bench_solves(opts: &BenchOptions) -> Vec<BenchResult> {
    use crate::engine::linalg;
    use crate::io::data::Split;
    use crate::workflows::baselines::natural_step;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let (d, rows, fo, iters) = match opts.quick {
        true => (64, 128, 16, 2),
        false => (784, 2048, 128, 5),
    };
    let x = random_vec(&mut rng, rows * d);
    let mut a = linalg::gram(&x, rows, d);
    linalg::dampen(&mut a, d, 0.1);
    let l = linalg::cholesky(&a, d).expect("a dampened Gram matrix is positive definite");
    let b = random_vec(&mut rng, d * fo);
    let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let shape = MlpShape::new(&[d, fo, fo, 10], Activation::Relu);
    let params = init_params(&shape, opts.seed);
    let split = Split {
        x: x.clone(),
        y: (0..rows).map(|r| (r % 10) as f32).collect(),
        group: vec![0; rows],
    };
    let moments = split.moments();
    // Name, shape, whether it runs on all cores, and one run.
    type Piece<'a> = (&'static str, String, bool, Box<dyn Fn() + Sync + 'a>);
    let pieces: [Piece; 5] = [
        ("Gram matrix", format!("rows={rows} d={d}"), true, {
            let x = &x;
            Box::new(move || drop(linalg::gram(x, rows, d)))
        }),
        ("Cholesky factor", format!("d={d}"), false, {
            let a = &a;
            Box::new(move || drop(linalg::cholesky(a, d)))
        }),
        ("Cholesky solve", format!("d={d} n={fo}"), true, {
            let (l, b) = (&l, &b);
            Box::new(move || linalg::cholesky_solve(l, d, &mut b.clone(), fo))
        }),
        ("SPD inverse", format!("d={d}"), true, {
            let a = &a;
            Box::new(move || drop(linalg::spd_inverse(a, d)))
        }),
        (
            "natural step",
            format!("{d}-{fo}-{fo}-10 rows={rows}"),
            true,
            {
                let (shape, params, moments, split) = (&shape, &params, &moments, &split);
                Box::new(move || drop(natural_step(shape, params, &[], moments, split)))
            },
        ),
    ];
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let mut out = Vec::new();
    for (name, shape, threaded, run) in &pieces {
        let ways = match threaded {
            true => &[("1 thread", Some(&one)), ("all cores", None)][..],
            false => &[("1 thread", Some(&one))][..],
        };
        for &(threads, on) in ways {
            let time = || {
                run();
                let t0 = Instant::now();
                (0..iters).for_each(|_| run());
                t0.elapsed().as_secs_f64() / iters as f64
            };
            let s = match on {
                Some(pool) => pool.install(time),
                None => time(),
            };
            out.push(BenchResult {
                name: format!("{name}, {threads}"),
                shape: shape.clone(),
                seconds_per_iter: s,
                rate: 1.0 / s,
                unit: "runs/s".into(),
                timer: "host clock".into(),
            });
        }
    }
    out
}

pub fn table(device: &str, results: &[BenchResult]) -> String {
    let mut s = format!("device: {device}\n");
    s += &format!(
        "{:<28} {:<30} {:>12} {:>22}  {}\n",
        "benchmark", "shape", "time/iter", "rate", "timer"
    );
    for r in results {
        let t = r.seconds_per_iter;
        let time = if t < 1e-3 {
            format!("{:.1} us", t * 1e6)
        } else if t < 1.0 {
            format!("{:.2} ms", t * 1e3)
        } else {
            format!("{t:.2} s")
        };
        s += &format!(
            "{:<28} {:<30} {:>12} {:>22}  {}\n",
            r.name,
            r.shape,
            time,
            format!("{:.1} {}", r.rate, r.unit.split('/').next().unwrap_or("")) + "/s",
            r.timer
        );
    }
    s
}

/// The editor on Adult-sized MLPs (100 -> 64 -> 64 -> 1: 229 nodes, 10,560 edges each): forward
/// latency per batch (one edit per model), edits/s, and forward+backward step time.
pub fn bench_editor(dev: &Device, opts: &BenchOptions) -> Result<Vec<BenchResult>> {
    use crate::networks::editor::{DeviceGraph, Editor, EditorConfig, Tape, HEAD_OUT};
    use crate::networks::graph::{GraphBatch, ModelInput, PosIds};
    let (hidden, layers) = if opts.quick { (16, 2) } else { (64, 3) };
    let cfg = EditorConfig {
        hidden,
        layers,
        cond_dim: 8,
        pos: PosIds {
            max_inputs: 128,
            max_hidden_layers: 4,
            max_outputs: 4,
        },
        edge_features: crate::networks::graph::EDGE_FEATURES,
    };
    let ed = Editor::new(dev, &cfg, opts.seed)?;
    let shape = MlpShape::new(&[100, 64, 64, 1], Activation::Relu);
    let batches: &[usize] = if opts.quick {
        &[1]
    } else {
        &[1, 8, 64, 256, 1024]
    };
    // A tape holds ~20 [edges, hidden] tensors: large batches are edited in chunks that fit in
    // memory (the CPU) or in one storage binding (a GPU), reusing one tape.
    let per_model_bytes = {
        let one = GraphBatch::build(
            &[ModelInput {
                shape: &shape,
                params: &init_params(&shape, 0),
                removed: &[false; 100],
                sensitive: &[false; 100],
                cond: &[0.5; 8],
                signals: None,
                returns: None,
            }],
            &cfg.pos,
        )
        .map_err(crate::error::Error::Usage)?;
        let dg = DeviceGraph::upload(&Device::cpu(), &one)?;
        Tape::new(&Device::cpu(), &cfg, &dg)?.acts.len() * 4
    };
    let budget = match dev {
        Device::Gpu(g) => g
            .limits
            .max_storage_buffer_binding_size
            .min(g.limits.max_buffer_size) as usize,
        Device::Cpu(_) => 2 << 30,
    };
    let max_chunk = (budget / per_model_bytes).max(1);
    let mut out = Vec::new();
    for &b in batches {
        // Balanced chunks: the last one is never much smaller than the others.
        let chunks = b.div_ceil(max_chunk);
        let chunk = b.div_ceil(chunks);
        let params: Vec<Vec<f32>> = (0..chunk).map(|m| init_params(&shape, m as u64)).collect();
        let (removed, sensitive, cond) = (vec![false; 100], vec![false; 100], vec![0.5f32; 8]);
        let inputs: Vec<ModelInput> = params
            .iter()
            .map(|p| ModelInput {
                shape: &shape,
                params: p,
                removed: &removed,
                sensitive: &sensitive,
                cond: &cond,
                signals: None,
                returns: None,
            })
            .collect();
        let g = GraphBatch::build(&inputs, &cfg.pos).map_err(crate::error::Error::Usage)?;
        let dg = DeviceGraph::upload(dev, &g)?;
        let tape = Tape::new(dev, &cfg, &dg)?;
        let label = if chunks > 1 {
            format!("B={b} ({chunks} chunks of {chunk}) H={hidden} L={layers}")
        } else {
            format!("B={b} H={hidden} L={layers} E={}", dg.e)
        };
        let iters = if opts.quick {
            2
        } else {
            (64 / chunk).clamp(2, 20)
        };
        // Every chunk has the same shape, so the batch takes `chunks` times one chunk (an upper
        // bound: chunks x chunk may exceed b by less than one chunk's worth of models).
        let (s, timer) = time_iters(dev, iters, || ed.forward(dev, &dg, &tape))?;
        out.push(BenchResult {
            name: "editor forward".into(),
            shape: label.clone(),
            seconds_per_iter: s * chunks as f64,
            rate: b as f64 / (s * chunks as f64),
            unit: "edits/s".into(),
            timer: timer.into(),
        });
        let grad = vec![0.01f32; dg.e * HEAD_OUT];
        dev.write(&tape.dacts, tape.at.edge_out.offset, &grad)?;
        let (s, timer) = time_iters(dev, iters, || {
            ed.forward(dev, &dg, &tape)?;
            ed.backward(dev, &dg, &tape)
        })?;
        out.push(BenchResult {
            name: "editor fwd+bwd".into(),
            shape: label,
            seconds_per_iter: s * chunks as f64,
            rate: b as f64 / (s * chunks as f64),
            unit: "model-steps/s".into(),
            timer: timer.into(),
        });
    }
    Ok(out)
}
