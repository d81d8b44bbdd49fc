//! Bias add over a batch of matrices: WGSL launch (shaders/bias.wgsl) and the CPU reference.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/bias.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    batch: u32,
    total: u32,
    y_off: u32,
    y_stride: u32,
    b_off: u32,
    b_stride: u32,
}

/// Shape of a batched bias add: `batch` matrices Y[z] of [rows, cols] at batch stride
/// `y_stride`, bias vectors of [cols] at batch stride `b_stride`.
#[derive(Clone, Copy, Debug)]
pub struct BiasAdd {
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub y_stride: usize,
    pub b_stride: usize,
}

/// Y[z, r, j] += bias[z, j].
pub fn bias_add(dev: &Device, s: &BiasAdd, y: View, bias: View) -> Result<()> {
    let BiasAdd {
        batch,
        rows,
        cols,
        y_stride,
        b_stride,
    } = *s;
    assert!(
        batch == 0 || y.len >= (batch - 1) * y_stride + rows * cols,
        "bias_add: Y view too short"
    );
    assert!(
        batch == 0 || bias.len >= (batch - 1) * b_stride + cols,
        "bias_add: bias view too short"
    );
    let ops = check_disjoint([y], [bias]);
    let total = batch * rows * cols;
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("bias_add");
            let ([yv], [bv]) = ops.cpu();
            use rayon::prelude::*;
            for z in 0..batch {
                let b = &bv[z * b_stride..z * b_stride + cols];
                let ys = &mut yv[z * y_stride..z * y_stride + rows * cols];
                // Tasks of at least ~16k values: smaller ones cost more to hand out than to run.
                ys.par_chunks_mut(cols)
                    .with_min_len((16_384 / cols).max(1))
                    .for_each(|row| row.iter_mut().zip(b).for_each(|(v, bj)| *v += bj));
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                rows: rows as u32,
                cols: cols as u32,
                batch: batch as u32,
                total: total as u32,
                y_off: y.off(),
                y_stride: y_stride as u32,
                b_off: bias.off(),
                b_stride: b_stride as u32,
            };
            let grid = g.grid(total);
            g.launch("bias", SHADER, "bias_add", &p, &[y.buf, bias.buf], grid)
        }
    }
}
