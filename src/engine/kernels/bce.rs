//! Binary cross-entropy with logits, forward (per-sample losses) and backward (logit gradients):
//! WGSL launch (shaders/bce.wgsl) and the CPU reference. Mean losses come from a row sum.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::engine::kernels::activation::sigmoid;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/bce.wgsl");

/// `batch` models x `n` samples. Logits and outputs are [batch, n] with the given batch strides;
/// targets too, with `t_stride` 0 when every model shares one target vector.
#[derive(Clone, Copy, Debug)]
pub struct Bce {
    pub batch: usize,
    pub n: usize,
    pub s_stride: usize,
    pub t_stride: usize,
    pub out_stride: usize,
}

impl Bce {
    /// Contiguous logits and outputs, shared targets.
    pub fn shared_targets(batch: usize, n: usize) -> Bce {
        Bce {
            batch,
            n,
            s_stride: n,
            t_stride: 0,
            out_stride: n,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    n: u32,
    s_off: u32,
    s_stride: u32,
    t_off: u32,
    t_stride: u32,
    out_off: u32,
    out_stride: u32,
    scale: f32,
    _pad: [u32; 3],
}

pub fn bce_loss(s: f32, t: f32) -> f32 {
    s.max(0.0) - s * t + (-s.abs()).exp().ln_1p()
}

fn run(
    dev: &Device,
    b: &Bce,
    entry: &'static str,
    scale: f32,
    logits: View,
    targets: View,
    out: View,
) -> Result<()> {
    if b.batch == 0 || b.n == 0 {
        return Ok(());
    }
    assert!(
        logits.len >= (b.batch - 1) * b.s_stride + b.n,
        "bce: logits view too short"
    );
    assert!(
        targets.len >= (b.batch - 1) * b.t_stride + b.n,
        "bce: targets view too short"
    );
    assert!(
        out.len >= (b.batch - 1) * b.out_stride + b.n,
        "bce: out view too short"
    );
    let ops = check_disjoint([out], [logits, targets]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("bce_loss");
            let ([ov], [sv, tv]) = ops.cpu();
            for z in 0..b.batch {
                for i in 0..b.n {
                    let s = sv[z * b.s_stride + i];
                    let t = tv[z * b.t_stride + i];
                    ov[z * b.out_stride + i] = if entry == "bce_forward" {
                        bce_loss(s, t)
                    } else {
                        scale * (sigmoid(s) - t)
                    };
                }
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                batch: b.batch as u32,
                n: b.n as u32,
                s_off: logits.off(),
                s_stride: b.s_stride as u32,
                t_off: targets.off(),
                t_stride: b.t_stride as u32,
                out_off: out.off(),
                out_stride: b.out_stride as u32,
                scale,
                _pad: [0; 3],
            };
            let grid = g.grid(b.batch * b.n);
            g.launch(
                "bce",
                SHADER,
                entry,
                &p,
                &[logits.buf, targets.buf, out.buf],
                grid,
            )
        }
    }
}

/// out[z, i] = per-sample BCE of logit s[z, i] against target t[z, i].
pub fn bce_forward(dev: &Device, b: &Bce, logits: View, targets: View, losses: View) -> Result<()> {
    run(dev, b, "bce_forward", 1.0, logits, targets, losses)
}

/// out[z, i] = scale * (sigmoid(s) - t): the gradient of scale * sum of per-sample losses.
pub fn bce_backward(
    dev: &Device,
    b: &Bce,
    scale: f32,
    logits: View,
    targets: View,
    dlogits: View,
) -> Result<()> {
    run(dev, b, "bce_backward", scale, logits, targets, dlogits)
}
