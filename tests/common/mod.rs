//! Shared test harness: run one closure over one packed buffer on the CPU backend and on the GPU
//! backend (lavapipe where there is no GPU) and compare.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regop::{Buf, Device, DeviceChoice, Result};

pub fn gpu() -> Device {
    let (dev, _) = Device::open(DeviceChoice::Gpu)
        .expect("no wgpu adapter: install mesa-vulkan-drivers (lavapipe) to run the GPU tests");
    dev
}

/// A generator seeded from the clock: every run tries fresh inputs; the seed is printed so a
/// failure can be replayed with REGOP_TEST_SEED.
pub fn fresh_rng(tag: &str) -> ChaCha8Rng {
    let seed = std::env::var("REGOP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{tag}: REGOP_TEST_SEED={seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

/// Values uniform in [-2, 2): never zeros, never all alike.
pub fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// d f / d x at `x0` by central differences at steps h and h/2 combined (Richardson): the h^2
/// truncation term cancels, so curved losses (LayerNorm of a few values, SiLU) are checked to
/// ~h^4 while the steps stay large enough for f32 rounding.
pub fn derivative(mut f: impl FnMut(f32) -> f64, x0: f32, h: f32) -> f64 {
    let mut central = |h: f32| (f(x0 + h) - f(x0 - h)) / (2.0 * h as f64);
    let (coarse, fine) = (central(h), central(h / 2.0));
    (4.0 * fine - coarse) / 3.0
}

/// The largest |a - b| over the pairs of `a` and `b`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "max_abs_diff: lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// Run `f` on a buffer initialised to `init`, on both backends; returns (cpu, gpu) final contents.
pub fn on_both(
    gpu: &Device,
    init: &[f32],
    f: impl Fn(&Device, &Buf) -> Result<()>,
) -> (Vec<f32>, Vec<f32>) {
    let cpu = Device::cpu();
    let mut out = Vec::new();
    for dev in [&cpu, gpu] {
        let buf = dev.upload(init).unwrap();
        f(dev, &buf).unwrap();
        out.push(dev.read_all(&buf).unwrap());
    }
    let g = out.pop().unwrap();
    (out.pop().unwrap(), g)
}

/// ||gpu - cpu|| / ||cpu|| of each range in `outputs`, after checking NaN placement over the
/// whole buffer: poisoned (NaN) cells must be the same on both, so neither backend wrote outside
/// its outputs or skipped a cell; cells outside every output must be untouched (bit-identical);
/// no NaN may remain inside an output. Returns the largest relative error.
pub fn compare(what: &str, cpu: &[f32], gpu: &[f32], outputs: &[std::ops::Range<usize>]) -> f64 {
    let with: Vec<_> = outputs.iter().map(|r| (r.clone(), 1e-5, 0.0)).collect();
    compare_with(what, cpu, gpu, &with)
}

/// `compare` with a tolerance per output range and a floor under the norm it is relative to,
/// for outputs that are ill-conditioned in f32 (small differences of large terms), where the
/// backends' last bits legitimately spread.
pub fn compare_with(
    what: &str,
    cpu: &[f32],
    gpu: &[f32],
    outputs: &[(std::ops::Range<usize>, f64, f64)],
) -> f64 {
    assert_eq!(cpu.len(), gpu.len());
    let inside = |i: usize| outputs.iter().any(|(r, _, _)| r.contains(&i));
    for i in 0..cpu.len() {
        assert_eq!(
            cpu[i].is_nan(),
            gpu[i].is_nan(),
            "{what}: NaN placement differs at {i} (cpu {}, gpu {})",
            cpu[i],
            gpu[i]
        );
        if !inside(i) && !cpu[i].is_nan() {
            assert_eq!(
                cpu[i].to_bits(),
                gpu[i].to_bits(),
                "{what}: cell {i} outside the outputs changed"
            );
        }
    }
    let mut worst = 0.0f64;
    for (range, tol, floor) in outputs {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for i in range.clone() {
            assert!(!cpu[i].is_nan(), "{what}: output cell {i} never written");
            let d = (gpu[i] - cpu[i]) as f64;
            num += d * d;
            den += (cpu[i] as f64).powi(2);
        }
        let rel = (num / den.max(floor * floor).max(1e-30)).sqrt();
        assert!(
            rel < *tol,
            "{what}: relative error {rel:e} >= {tol:e} over {range:?}"
        );
        worst = worst.max(rel);
    }
    worst
}

/// Lays operands out in one buffer: each region gets an odd gap of NaN before it.
pub struct Packer {
    data: Vec<f32>,
}
impl Packer {
    pub fn new() -> Packer {
        Packer { data: Vec::new() }
    }
    pub fn gap(&mut self) {
        self.data.extend(std::iter::repeat_n(f32::NAN, 3));
    }
    pub fn put(&mut self, values: Vec<f32>) -> std::ops::Range<usize> {
        self.gap();
        let start = self.data.len();
        self.data.extend(values);
        start..self.data.len()
    }
    pub fn poison(&mut self, n: usize) -> std::ops::Range<usize> {
        self.put(vec![f32::NAN; n])
    }
    pub fn finish(mut self) -> Vec<f32> {
        self.gap();
        self.data
    }
}

/// Random editor parameters (heads and FiLM included, so every gradient path is non-zero).
pub fn random_editor(
    dev: &Device,
    cfg: &regop::networks::editor::EditorConfig,
    rng: &mut impl Rng,
) -> regop::networks::editor::Editor {
    let fresh = regop::networks::editor::Editor::new(&Device::cpu(), cfg, 0).unwrap();
    let mut p: Vec<f32> = (0..fresh.layout.total)
        .map(|_| rng.random_range(-0.5f32..0.5))
        .collect();
    for entry in &fresh.layout.entries {
        if entry.name.ends_with(".ln") {
            for v in &mut p[entry.span.offset..][..cfg.hidden] {
                *v += 1.0;
            }
        }
    }
    regop::networks::editor::Editor::from_params(dev, cfg, &p).unwrap()
}

/// A small editor (width 8, two layers) for models of up to 6 inputs, 2 hidden layers and one
/// output: what the library-level edit tests run.
pub fn small_editor_cfg() -> regop::networks::editor::EditorConfig {
    regop::networks::editor::EditorConfig {
        hidden: 8,
        layers: 2,
        cond_dim: regop::requirement::COND_DIM,
        pos: regop::networks::graph::PosIds {
            max_inputs: 6,
            max_hidden_layers: 2,
            max_outputs: 1,
        },
        edge_features: regop::networks::graph::EDGE_FEATURES,
    }
}

/// Two small ReLU models of 6 inputs (one and two hidden layers) with random parameters.
pub fn small_relu_models(
    rng: &mut impl Rng,
) -> ([regop::networks::mlp::MlpShape; 2], Vec<Vec<f32>>) {
    use regop::engine::kernels::activation::Activation;
    use regop::networks::mlp::{init_params, MlpShape};
    let shapes = [
        MlpShape::new(&[6, 8, 1], Activation::Relu),
        MlpShape::new(&[6, 5, 4, 1], Activation::Relu),
    ];
    let params = shapes
        .iter()
        .map(|s| init_params(s, rng.random()))
        .collect();
    (shapes, params)
}

/// What an editor knows of the columns of `train`: its means and moments, a calibration batch of
/// 64 rows, and which columns are `sensitive`.
pub fn columns_from(
    train: &regop::io::data::Split,
    sensitive: Vec<bool>,
) -> regop::requirement::Columns {
    let moments = std::sync::Arc::new(train.moments());
    regop::requirement::Columns {
        sensitive,
        means: moments.mean.iter().map(|m| *m as f32).collect(),
        calibration: train.calibration_batch(64),
        moments,
    }
}

/// A small synthetic zoo built by the binary on the CPU backend in `dir/zoo`: 24 models of one
/// architecture family (widths 16 or 24, one or two hidden layers), quick to train.
pub fn synthetic_zoo(dir: &std::path::Path, seed: &str) -> std::path::PathBuf {
    let z = dir.join("zoo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(["--device", "cpu", "--seed", seed, "zoo", "--count", "24"])
        .args([
            "--widths", "16,24", "--depth", "1-2", "--epochs", "4-6", "--out",
        ])
        .arg(&z)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zoo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    z
}

/// The binary on the CPU backend with `args`.
pub fn regop_cpu(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_regop"))
        .args(["--device", "cpu"])
        .args(args)
        .output()
        .unwrap()
}

/// Assert a run succeeded, showing its stderr if not.
pub fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A path as a command-line argument.
pub fn arg(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

/// The error line of a run refused with exit 2: exactly one line starting "error", no panic.
pub fn refused(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_string()
}
