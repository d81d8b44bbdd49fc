//! Pointwise activations, forward and backward: WGSL launch (shaders/activation.wgsl) and the
//! CPU reference.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/activation.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Identity,
    Relu,
    Tanh,
    Silu,
    Sigmoid,
}

impl Activation {
    pub const ALL: [Activation; 5] = [
        Activation::Identity,
        Activation::Relu,
        Activation::Tanh,
        Activation::Silu,
        Activation::Sigmoid,
    ];

    fn code(self) -> u32 {
        self as u32
    }
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Silu => "silu",
            Activation::Sigmoid => "sigmoid",
        }
    }
    /// Parses the names PyTorch users write (`nn.ReLU` -> "relu", "ReLU", "SiLU", "swish"...).
    pub fn parse(s: &str) -> Option<Activation> {
        match s.trim().to_ascii_lowercase().as_str() {
            "identity" | "linear" | "none" => Some(Activation::Identity),
            "relu" => Some(Activation::Relu),
            "tanh" => Some(Activation::Tanh),
            "silu" | "swish" => Some(Activation::Silu),
            "sigmoid" => Some(Activation::Sigmoid),
            _ => None,
        }
    }
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Tanh => v.tanh(),
            Activation::Silu => v * sigmoid(v),
            Activation::Sigmoid => sigmoid(v),
        }
    }
    pub fn grad(self, v: f32) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => (v > 0.0) as u32 as f32,
            // sech^2 without the cancellation of 1 - tanh^2 at large |x|.
            Activation::Tanh => {
                let e = exp(-2.0 * v.abs());
                4.0 * e / ((1.0 + e) * (1.0 + e))
            }
            Activation::Silu => {
                let s = sigmoid(v);
                s * (1.0 + v * (1.0 - s))
            }
            // e / (1 + e)^2 with e = exp(-|x|): s (1 - s) cancels where s is near 1.
            Activation::Sigmoid => {
                let e = exp(-v.abs());
                e / ((1.0 + e) * (1.0 + e))
            }
        }
    }
}

/// Logistic sigmoid, branch-free so that loops over it vectorise. exp(-v) overflows to +inf
/// only where the sigmoid is 0 to f32 precision, and 1 / (1 + inf) is that 0.
#[inline(always)]
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp(-v))
}

/// e^x to within 2 ulp, in plain f32 arithmetic that the compiler vectorises (the C library's
/// expf is a scalar call, and was the largest cost of an edit on the CPU). Cody-Waite
/// reduction x = n ln2 + r, |r| <= ln2 / 2, then a degree-6 polynomial for e^r (Cephes
/// coefficients) times 2^n, built from exponent bits in two halves so that n = 128 cannot
/// overflow them. 0 below -87.3 (where e^x is subnormal), +inf above f32's largest e^x.
#[inline(always)] // inlined into a loop, it vectorises; called, it runs one value at a time
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAX: f32 = 88.722_83;
    let xc = x.clamp(-87.3, MAX);
    let t = xc * std::f32::consts::LOG2_E;
    // Adding 1.5 * 2^23 rounds t to the nearest integer in the low mantissa bits: n as a float
    // and as bits without a float-to-int conversion (which does not vectorise).
    let shifted = t + 12_582_912.0;
    let nf = shifted - 12_582_912.0;
    let n = shifted.to_bits() as i32 - 0x4B40_0000;
    let r = xc - nf * LN2_HI - nf * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let half = n >> 1;
    let two = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let v = er * two(half) * two(n - half);
    if x > MAX {
        f32::INFINITY
    } else if x < -87.3 {
        0.0
    } else {
        v
    }
}

// The CPU loops run with 8-wide vectors where the processor has them (AVX2): the same
// operations in the same order, so the same results as the baseline 4-wide loops, about twice
// as fast (the exp of SiLU and sigmoid makes these loops compute-bound).

/// y = act(x) over one chunk.
fn forward_chunk(act: Activation, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2 (checked just above).
        return unsafe { forward_chunk_avx2(act, x, y) };
    }
    forward_loop(act, x, y)
}

/// dx = dy * act'(x) over one chunk.
fn backward_chunk(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: as in forward_chunk.
        return unsafe { backward_chunk_avx2(act, x, dy, dx) };
    }
    backward_loop(act, x, dy, dx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn forward_chunk_avx2(act: Activation, x: &[f32], y: &mut [f32]) {
    forward_loop(act, x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn backward_chunk_avx2(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    backward_loop(act, x, dy, dx)
}

/// One tight loop per activation (the match outside it), so each one vectorises.
#[inline(always)]
fn forward_loop(act: Activation, x: &[f32], y: &mut [f32]) {
    match act {
        Activation::Identity => y.copy_from_slice(x),
        Activation::Relu => map(x, y, |v| v.max(0.0)),
        Activation::Tanh => map(x, y, |v| v.tanh()),
        Activation::Silu => map(x, y, |v| v * sigmoid(v)),
        Activation::Sigmoid => map(x, y, sigmoid),
    }
}

#[inline(always)]
fn map(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
    y.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v));
}

#[inline(always)]
fn backward_loop(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let pairs = dx.iter_mut().zip(dy.iter().zip(x));
    match act {
        // SiLU spelled out (not through `grad`) so that the loop vectorises.
        Activation::Silu => pairs.for_each(|(d, (&g, &v))| {
            let s = sigmoid(v);
            *d = g * (s * (1.0 + v * (1.0 - s)));
        }),
        _ => pairs.for_each(|(d, (&g, &v))| *d = g * act.grad(v)),
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    kind: u32,
    x_off: u32,
    y_off: u32,
    dy_off: u32,
    dx_off: u32,
    _pad: [u32; 2],
}

/// y = act(x), elementwise over `x.len` values.
pub fn activation_forward(dev: &Device, act: Activation, x: View, y: View) -> Result<()> {
    assert_eq!(x.len, y.len, "activation_forward: x and y differ in length");
    let ops = check_disjoint([y], [x]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("activation_forward");
            let ([yv], [xv]) = ops.cpu();
            use rayon::prelude::*;
            yv.par_chunks_mut(4096)
                .zip(xv.par_chunks(4096))
                .for_each(|(o, i)| forward_chunk(act, i, o));
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: x.len as u32,
                kind: act.code(),
                x_off: x.off(),
                y_off: y.off(),
                dy_off: 0,
                dx_off: 0,
                _pad: [0; 2],
            };
            let grid = g.grid(x.len);
            g.launch(
                "activation",
                SHADER,
                "activation_forward",
                &p,
                &[x.buf, y.buf],
                grid,
            )
        }
    }
}

/// dx = dy * act'(x), with x the pre-activation. `dy` and `dx` must be in the same buffer
/// (the gradient buffer); `dx` may not overlap `dy`.
pub fn activation_backward(
    dev: &Device,
    act: Activation,
    x: View,
    dy: View,
    dx: View,
) -> Result<()> {
    assert!(
        x.len == dy.len && dy.len == dx.len,
        "activation_backward: lengths differ"
    );
    assert_eq!(
        dy.buf.id, dx.buf.id,
        "activation_backward: dy and dx must share a buffer"
    );
    let ops = check_disjoint([dx], [x, dy]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("activation_backward");
            let ([dxv], [xv, dyv]) = ops.cpu();
            use rayon::prelude::*;
            dxv.par_chunks_mut(4096)
                .zip(dyv.par_chunks(4096).zip(xv.par_chunks(4096)))
                .for_each(|(dx, (dy, x))| backward_chunk(act, x, dy, dx));
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: x.len as u32,
                kind: act.code(),
                x_off: x.off(),
                y_off: 0,
                dy_off: dy.off(),
                dx_off: dx.off(),
                _pad: [0; 2],
            };
            let grid = g.grid(x.len);
            g.launch(
                "activation",
                SHADER,
                "activation_backward",
                &p,
                &[x.buf, dy.buf],
                grid,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        let mut worst = 0.0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.7 * i as f64 / 2e6;
            let got = exp(x as f32) as f64;
            let want = (x as f32 as f64).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(88.7).is_finite() && exp(88.7) > 3.0e38);
    }

    #[test]
    fn sigmoid_saturates_without_nan() {
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert!((sigmoid(-20.0) as f64 - 1.0 / (1.0 + 20f64.exp())).abs() < 1e-15);
    }

    /// sigmoid' and tanh' keep their relative accuracy where the functions saturate (there
    /// s (1 - s) and 1 - tanh^2 lose every digit to cancellation).
    #[test]
    fn saturating_gradients_keep_their_digits() {
        for x in [-30.0f64, -12.0, -3.0, 0.0, 0.5, 3.0, 12.0, 30.0] {
            // s(x) s(-x) = s (1 - s), each factor without cancellation in f64.
            let s = |v: f64| 1.0 / (1.0 + (-v).exp());
            let sech = 1.0 / x.cosh();
            for (act, want) in [
                (Activation::Sigmoid, s(x) * s(-x)),
                (Activation::Tanh, sech * sech),
            ] {
                let got = act.grad(x as f32) as f64;
                assert!(
                    ((got - want) / want).abs() < 1e-6,
                    "{act:?}' at {x}: {got} against {want}"
                );
            }
        }
    }

    /// The wide-vector loops (where the processor has AVX2) give bit for bit what the
    /// one-value-at-a-time `apply` and `grad` give, extreme inputs and NaN included.
    #[test]
    fn chunk_loops_match_the_scalar_definitions_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        let mut x: Vec<f32> = (0..4099).map(|_| rng.random_range(-12.0..12.0)).collect();
        x[..8].copy_from_slice(&[0.0, -0.0, 89.0, -100.0, 1e-40, f32::NAN, 3e38, -3e38]);
        let dy: Vec<f32> = (0..x.len()).map(|_| rng.random_range(-2.0..2.0)).collect();
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for act in Activation::ALL {
            let (mut y, mut dx) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
            forward_chunk(act, &x, &mut y);
            backward_chunk(act, &x, &dy, &mut dx);
            for i in 0..x.len() {
                assert!(same(y[i], act.apply(x[i])), "{act:?} forward at {}", x[i]);
                assert!(
                    same(dx[i], dy[i] * act.grad(x[i])),
                    "{act:?} backward at {}",
                    x[i]
                );
            }
        }
    }
}
