//! Row and column sums over a batch of matrices: WGSL launch (shaders/reduce.wgsl) and the CPU
//! reference. The CPU sums in the same order as the GPU (sequentially along the reduced axis).

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/reduce.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Sum each row: out is [batch, rows].
    Rows,
    /// Sum each column: out is [batch, cols].
    Cols,
}

/// Shape of a batched reduction of X[z] ([rows, cols], batch stride `x_stride`) into
/// out[z] (batch stride `out_stride`): out = scale * sum (+ out when `accumulate`).
#[derive(Clone, Copy, Debug)]
pub struct Reduce {
    pub axis: Axis,
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub x_stride: usize,
    pub out_stride: usize,
    pub scale: f32,
    pub accumulate: bool,
}

impl Reduce {
    /// Contiguous batch, plain sums.
    pub fn new(axis: Axis, batch: usize, rows: usize, cols: usize) -> Reduce {
        let out_len = if axis == Axis::Rows { rows } else { cols };
        Reduce {
            axis,
            batch,
            rows,
            cols,
            x_stride: rows * cols,
            out_stride: out_len,
            scale: 1.0,
            accumulate: false,
        }
    }
    fn out_len(&self) -> usize {
        if self.axis == Axis::Rows {
            self.rows
        } else {
            self.cols
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    batch: u32,
    accumulate: u32,
    x_off: u32,
    x_stride: u32,
    out_off: u32,
    out_stride: u32,
    scale: f32,
    _pad: [u32; 3],
}

pub fn reduce(dev: &Device, r: &Reduce, x: View, out: View) -> Result<()> {
    let n_out = r.out_len();
    if r.batch == 0 || n_out == 0 {
        return Ok(());
    }
    assert!(
        x.len >= (r.batch - 1) * r.x_stride + r.rows * r.cols,
        "reduce: X view too short"
    );
    assert!(
        out.len >= (r.batch - 1) * r.out_stride + n_out,
        "reduce: out view too short"
    );
    let ops = check_disjoint([out], [x]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("reduce");
            let ([ov], [xv]) = ops.cpu();
            for z in 0..r.batch {
                let xz = &xv[z * r.x_stride..];
                // Sums run along the reduced axis in order, as on the GPU; columns are summed a
                // whole row at a time so memory is read in order.
                let sums: Vec<f32> = match r.axis {
                    Axis::Rows => (0..r.rows)
                        .map(|o| {
                            xz[o * r.cols..(o + 1) * r.cols]
                                .iter()
                                .fold(0.0f32, |a, &v| a + v)
                        })
                        .collect(),
                    Axis::Cols => {
                        let mut acc = vec![0.0f32; r.cols];
                        for i in 0..r.rows {
                            acc.iter_mut()
                                .zip(&xz[i * r.cols..(i + 1) * r.cols])
                                .for_each(|(a, &v)| *a += v);
                        }
                        acc
                    }
                };
                for (o, acc) in sums.into_iter().enumerate() {
                    let dst = &mut ov[z * r.out_stride + o];
                    *dst = if r.accumulate {
                        *dst + r.scale * acc
                    } else {
                        r.scale * acc
                    };
                }
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                rows: r.rows as u32,
                cols: r.cols as u32,
                batch: r.batch as u32,
                accumulate: r.accumulate as u32,
                x_off: x.off(),
                x_stride: r.x_stride as u32,
                out_off: out.off(),
                out_stride: r.out_stride as u32,
                scale: r.scale,
                _pad: [0; 3],
            };
            let entry = if r.axis == Axis::Rows {
                "row_sum"
            } else {
                "col_sum"
            };
            let grid = g.grid(r.batch * n_out);
            g.launch("reduce", SHADER, entry, &p, &[x.buf, out.buf], grid)
        }
    }
}
