//! Softmax cross-entropy, forward (per-row losses) and backward (logit gradients): WGSL launch
//! (shaders/cross_entropy.wgsl) and the CPU reference.

use crate::engine::buffer::{check_disjoint, Operands, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/cross_entropy.wgsl");

/// `batch` models x `rows` samples x `classes`. Logits [batch, rows, classes] with batch stride
/// `s_stride`; labels [batch, rows] (class index as f32, `l_stride` 0 = shared); outputs with
/// batch stride `out_stride` ([batch, rows] forward, [batch, rows, classes] backward).
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropy {
    pub batch: usize,
    pub rows: usize,
    pub classes: usize,
    pub s_stride: usize,
    pub l_stride: usize,
    pub out_stride: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    rows: u32,
    classes: u32,
    _pad0: u32,
    s_off: u32,
    s_stride: u32,
    l_off: u32,
    l_stride: u32,
    out_off: u32,
    out_stride: u32,
    scale: f32,
    _pad1: u32,
}

fn check<'a>(
    ce: &CrossEntropy,
    logits: &View<'a>,
    labels: &View<'a>,
    out: &View<'a>,
    out_row: usize,
) -> Operands<'a, 1, 2> {
    assert!(ce.classes > 0, "cross_entropy: zero classes");
    assert!(
        logits.len >= (ce.batch - 1) * ce.s_stride + ce.rows * ce.classes,
        "cross_entropy: logits view too short"
    );
    assert!(
        labels.len >= (ce.batch - 1) * ce.l_stride + ce.rows,
        "cross_entropy: labels view too short"
    );
    assert!(
        out.len >= (ce.batch - 1) * ce.out_stride + ce.rows * out_row,
        "cross_entropy: out view too short"
    );
    check_disjoint([*out], [*logits, *labels])
}

fn launch(
    dev: &crate::engine::gpu::GpuDevice,
    ce: &CrossEntropy,
    entry: &'static str,
    scale: f32,
    logits: View,
    labels: View,
    out: View,
) -> Result<()> {
    let p = Params {
        batch: ce.batch as u32,
        rows: ce.rows as u32,
        classes: ce.classes as u32,
        _pad0: 0,
        s_off: logits.off(),
        s_stride: ce.s_stride as u32,
        l_off: labels.off(),
        l_stride: ce.l_stride as u32,
        out_off: out.off(),
        out_stride: ce.out_stride as u32,
        scale,
        _pad1: 0,
    };
    let grid = dev.grid(ce.batch * ce.rows);
    dev.launch(
        "cross_entropy",
        SHADER,
        entry,
        &p,
        &[logits.buf, labels.buf, out.buf],
        grid,
    )
}

/// Max-shifted log-sum-exp and softmax of one row.
fn row_stats(row: &[f32]) -> (f32, f32) {
    let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&v| (v - mx).exp()).sum();
    (mx, sum)
}

/// out[z, r] = -log softmax(s[z, r, :])[label[z, r]].
pub fn cross_entropy_forward(
    dev: &Device,
    ce: &CrossEntropy,
    logits: View,
    labels: View,
    losses: View,
) -> Result<()> {
    if ce.batch == 0 || ce.rows == 0 {
        return Ok(());
    }
    let ops = check(ce, &logits, &labels, &losses, 1);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("cross_entropy_forward");
            let ([ov], [sv, lv]) = ops.cpu();
            for z in 0..ce.batch {
                for r in 0..ce.rows {
                    let row = &sv[z * ce.s_stride + r * ce.classes..][..ce.classes];
                    let (mx, sum) = row_stats(row);
                    let label = lv[z * ce.l_stride + r] as usize;
                    ov[z * ce.out_stride + r] = mx + sum.ln() - row[label];
                }
            }
            Ok(())
        }
        Device::Gpu(g) => launch(g, ce, "cross_entropy_forward", 1.0, logits, labels, losses),
    }
}

/// out[z, r, c] = scale * (softmax(s[z, r, :])[c] - onehot(label)[c]).
pub fn cross_entropy_backward(
    dev: &Device,
    ce: &CrossEntropy,
    scale: f32,
    logits: View,
    labels: View,
    dlogits: View,
) -> Result<()> {
    if ce.batch == 0 || ce.rows == 0 {
        return Ok(());
    }
    let ops = check(ce, &logits, &labels, &dlogits, ce.classes);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("cross_entropy_backward");
            let ([ov], [sv, lv]) = ops.cpu();
            for z in 0..ce.batch {
                for r in 0..ce.rows {
                    let row = &sv[z * ce.s_stride + r * ce.classes..][..ce.classes];
                    let (mx, sum) = row_stats(row);
                    let label = lv[z * ce.l_stride + r] as usize;
                    let out = &mut ov[z * ce.out_stride + r * ce.classes..][..ce.classes];
                    for c in 0..ce.classes {
                        let prob = (row[c] - mx).exp() / sum;
                        out[c] = scale * (prob - (c == label) as u32 as f32);
                    }
                }
            }
            Ok(())
        }
        Device::Gpu(g) => launch(
            g,
            ce,
            "cross_entropy_backward",
            scale,
            logits,
            labels,
            dlogits,
        ),
    }
}
