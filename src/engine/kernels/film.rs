//! FiLM conditioning, forward and backward: WGSL launch (shaders/film.wgsl) and the CPU reference.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/film.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Default)]
struct Params {
    rows: u32,
    cols: u32,
    models: u32,
    x_off: u32,
    gb_off: u32,
    y_off: u32,
    model_off: u32,
    off_off: u32,
    dy_off: u32,
    dx_off: u32,
    dgb_off: u32,
    accumulate: u32,
}

/// Which model each row belongs to (u32 views into one graph buffer): `row_model` [rows] and
/// `row_offsets` [models + 1], rows of a model being contiguous.
#[derive(Clone, Copy)]
pub struct RowModels<'a> {
    pub row_model: View<'a>,
    pub row_offsets: View<'a>,
}

/// y = x * (1 + gamma[model]) + beta[model]; `gb` is [models, 2 * cols] (gamma | beta).
pub fn film_forward(
    dev: &Device,
    cols: usize,
    rm: RowModels,
    x: View,
    gb: View,
    y: View,
) -> Result<()> {
    let rows = x.len / cols;
    let models = rm.row_offsets.len - 1;
    assert!(
        y.len == x.len && gb.len == models * 2 * cols && rm.row_model.len == rows,
        "film_forward: shapes"
    );
    let ops = check_disjoint([y], [x, gb, rm.row_model, rm.row_offsets]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("film_forward");
            let ([yv], [xv, gv, mv, _]) = ops.cpu();
            for n in 0..rows {
                let base = mv[n].to_bits() as usize * 2 * cols;
                for c in 0..cols {
                    yv[n * cols + c] =
                        xv[n * cols + c] * (1.0 + gv[base + c]) + gv[base + cols + c];
                }
            }
            Ok(())
        }
        Device::Gpu(g) => {
            assert_eq!(
                x.buf.id, y.buf.id,
                "film_forward: x and y share the activation buffer"
            );
            assert_eq!(
                rm.row_model.buf.id, rm.row_offsets.buf.id,
                "film: graph indices share one buffer"
            );
            let p = Params {
                rows: rows as u32,
                cols: cols as u32,
                models: models as u32,
                x_off: x.off(),
                gb_off: gb.off(),
                y_off: y.off(),
                model_off: rm.row_model.off(),
                off_off: rm.row_offsets.off(),
                ..Default::default()
            };
            let grid = g.grid(rows * cols);
            g.launch(
                "film",
                SHADER,
                "film_forward",
                &p,
                &[x.buf, gb.buf, rm.row_model.buf, x.buf, x.buf],
                grid,
            )
        }
    }
}

/// dx (+)= dy * (1 + gamma[model]); dgb (+)= per-model [sum dy * x | sum dy]. dx and dy share the
/// activation-gradient buffer.
#[allow(clippy::too_many_arguments)]
pub fn film_backward(
    dev: &Device,
    cols: usize,
    rm: RowModels,
    x: View,
    gb: View,
    dy: View,
    dx: View,
    dgb: View,
    accumulate: bool,
) -> Result<()> {
    let rows = x.len / cols;
    let models = rm.row_offsets.len - 1;
    assert!(
        dy.len == x.len && dx.len == x.len && gb.len == models * 2 * cols && dgb.len == gb.len,
        "film_backward: shapes"
    );
    assert_eq!(
        dy.buf.id, dx.buf.id,
        "film_backward: dy and dx share a buffer"
    );
    let ops = check_disjoint([dx, dgb], [x, gb, dy, rm.row_model, rm.row_offsets]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("film_backward");
            let ([dxv, dgv], [xv, gv, dyv, mv, ov]) = ops.cpu();
            for n in 0..rows {
                let base = mv[n].to_bits() as usize * 2 * cols;
                for c in 0..cols {
                    let d = dyv[n * cols + c] * (1.0 + gv[base + c]);
                    let t = &mut dxv[n * cols + c];
                    *t = if accumulate { *t + d } else { d };
                }
            }
            for m in 0..models {
                let (a, b) = (ov[m].to_bits() as usize, ov[m + 1].to_bits() as usize);
                let (mut dg, mut db) = (vec![0.0f32; cols], vec![0.0f32; cols]);
                for n in a..b {
                    for c in 0..cols {
                        let d = dyv[n * cols + c];
                        dg[c] += d * xv[n * cols + c];
                        db[c] += d;
                    }
                }
                let o = m * 2 * cols;
                for c in 0..cols {
                    dgv[o + c] = if accumulate {
                        dg[c] + dgv[o + c]
                    } else {
                        dg[c]
                    };
                    dgv[o + cols + c] = if accumulate {
                        db[c] + dgv[o + cols + c]
                    } else {
                        db[c]
                    };
                }
            }
            Ok(())
        }
        Device::Gpu(g) => {
            assert_eq!(
                rm.row_model.buf.id, rm.row_offsets.buf.id,
                "film: graph indices share one buffer"
            );
            let p = Params {
                rows: rows as u32,
                cols: cols as u32,
                models: models as u32,
                x_off: x.off(),
                gb_off: gb.off(),
                y_off: 0,
                model_off: rm.row_model.off(),
                off_off: rm.row_offsets.off(),
                dy_off: dy.off(),
                dx_off: dx.off(),
                dgb_off: dgb.off(),
                accumulate: accumulate as u32,
            };
            let bufs = [x.buf, gb.buf, rm.row_model.buf, dy.buf, dgb.buf];
            g.launch(
                "film",
                SHADER,
                "film_backward_input",
                &p,
                &bufs,
                g.grid(rows * cols),
            )?;
            g.launch(
                "film",
                SHADER,
                "film_backward_params",
                &p,
                &bufs,
                g.grid(models * cols),
            )
        }
    }
}
