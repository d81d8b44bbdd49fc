//! LayerNorm over the last axis, forward and backward: WGSL launch (shaders/layernorm.wgsl) and
//! the CPU reference (same summation order).

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/layernorm.wgsl");
pub const EPS: f32 = 1e-5;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Default)]
struct Params {
    rows: u32,
    cols: u32,
    x_off: u32,
    y_off: u32,
    w_off: u32,
    stats_off: u32,
    dy_off: u32,
    dx_off: u32,
    dw_off: u32,
    accumulate: u32,
    eps: f32,
    _pad: u32,
}

fn row_stats(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + EPS).sqrt())
}

/// y = LayerNorm(x) * gamma + beta over rows of `cols`; `w` holds gamma then beta ([2 * cols]);
/// (mean, rstd) of every row go to `stats` ([2 * rows]) for the backward.
pub fn layernorm_forward(
    dev: &Device,
    cols: usize,
    x: View,
    w: View,
    y: View,
    stats: View,
) -> Result<()> {
    let rows = x.len / cols;
    assert!(
        y.len == x.len && w.len == 2 * cols && stats.len == 2 * rows,
        "layernorm_forward: shapes"
    );
    let ops = check_disjoint([y, stats], [x, w]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("layernorm_forward");
            let ([yv, sv], [xv, wv]) = ops.cpu();
            for r in 0..rows {
                let row = &xv[r * cols..(r + 1) * cols];
                let (mean, rstd) = row_stats(row);
                sv[2 * r] = mean;
                sv[2 * r + 1] = rstd;
                for c in 0..cols {
                    yv[r * cols + c] = (row[c] - mean) * rstd * wv[c] + wv[cols + c];
                }
            }
            Ok(())
        }
        Device::Gpu(g) => {
            assert_eq!(
                x.buf.id, y.buf.id,
                "layernorm_forward: x and y share the activation buffer"
            );
            let p = Params {
                rows: rows as u32,
                cols: cols as u32,
                x_off: x.off(),
                y_off: y.off(),
                w_off: w.off(),
                stats_off: stats.off(),
                eps: EPS,
                ..Default::default()
            };
            let grid = g.grid(rows);
            g.launch(
                "layernorm",
                SHADER,
                "layernorm_forward",
                &p,
                &[x.buf, w.buf, stats.buf, x.buf, x.buf],
                grid,
            )
        }
    }
}

/// Gradients of LayerNorm: dx (+)= from dy; dw (+)= [dgamma, dbeta]. `x` is the forward input,
/// `stats` what the forward saved. dx and dy share the activation-gradient buffer.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dev: &Device,
    cols: usize,
    x: View,
    w: View,
    stats: View,
    dy: View,
    dx: View,
    dw: View,
    accumulate: bool,
) -> Result<()> {
    let rows = x.len / cols;
    assert!(
        dy.len == x.len && dx.len == x.len && dw.len == 2 * cols && stats.len == 2 * rows,
        "layernorm_backward: shapes"
    );
    assert_eq!(
        dy.buf.id, dx.buf.id,
        "layernorm_backward: dy and dx share a buffer"
    );
    let ops = check_disjoint([dx, dw], [x, w, stats, dy]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("layernorm_backward");
            let ([dxv, dwv], [xv, wv, sv, dyv]) = ops.cpu();
            for r in 0..rows {
                let (mean, rstd) = (sv[2 * r], sv[2 * r + 1]);
                let (mut mg, mut mgx) = (0.0f32, 0.0f32);
                for c in 0..cols {
                    let gc = dyv[r * cols + c] * wv[c];
                    let xhat = (xv[r * cols + c] - mean) * rstd;
                    mg += gc;
                    mgx += gc * xhat;
                }
                mg /= cols as f32;
                mgx /= cols as f32;
                for c in 0..cols {
                    let gc = dyv[r * cols + c] * wv[c];
                    let xhat = (xv[r * cols + c] - mean) * rstd;
                    let d = rstd * (gc - mg - xhat * mgx);
                    let t = &mut dxv[r * cols + c];
                    *t = if accumulate { *t + d } else { d };
                }
            }
            // Rows in order, whole rows at a time (same summation order as the GPU).
            let (mut dg, mut db) = (vec![0.0f32; cols], vec![0.0f32; cols]);
            for r in 0..rows {
                let (mean, rstd) = (sv[2 * r], sv[2 * r + 1]);
                for c in 0..cols {
                    let d = dyv[r * cols + c];
                    dg[c] += d * (xv[r * cols + c] - mean) * rstd;
                    db[c] += d;
                }
            }
            for c in 0..cols {
                dwv[c] = if accumulate { dg[c] + dwv[c] } else { dg[c] };
                dwv[cols + c] = if accumulate {
                    db[c] + dwv[cols + c]
                } else {
                    db[c]
                };
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                rows: rows as u32,
                cols: cols as u32,
                x_off: x.off(),
                y_off: 0,
                w_off: w.off(),
                stats_off: stats.off(),
                dy_off: dy.off(),
                dx_off: dx.off(),
                dw_off: dw.off(),
                accumulate: accumulate as u32,
                eps: EPS,
                _pad: 0,
            };
            let bufs = [x.buf, w.buf, stats.buf, dy.buf, dw.buf];
            g.launch(
                "layernorm",
                SHADER,
                "layernorm_backward_input",
                &p,
                &bufs,
                g.grid(rows),
            )?;
            g.launch(
                "layernorm",
                SHADER,
                "layernorm_backward_params",
                &p,
                &bufs,
                g.grid(cols),
            )
        }
    }
}
