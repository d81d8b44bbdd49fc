//! Elementwise arithmetic (axpy, mul): WGSL launch (shaders/axpy.wgsl) and the CPU reference.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/axpy.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    x_off: u32,
    y_off: u32,
    _pad0: u32,
    alpha: f32,
    beta: f32,
    _pad1: [u32; 2],
}

/// y = alpha * x + beta * y; with beta = 0, y is not read.
pub fn axpy(dev: &Device, alpha: f32, x: View, beta: f32, y: View) -> Result<()> {
    assert_eq!(x.len, y.len, "axpy: lengths differ");
    let ops = check_disjoint([y], [x]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("axpy");
            let ([yv], [xv]) = ops.cpu();
            for (t, &s) in yv.iter_mut().zip(xv) {
                *t = if beta != 0.0 {
                    alpha * s + beta * *t
                } else {
                    alpha * s
                };
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: x.len as u32,
                x_off: x.off(),
                y_off: y.off(),
                _pad0: 0,
                alpha,
                beta,
                _pad1: [0; 2],
            };
            let grid = g.grid(x.len);
            g.launch("axpy", SHADER, "axpy", &p, &[x.buf, y.buf], grid)
        }
    }
}

/// y = x.
pub fn copy(dev: &Device, x: View, y: View) -> Result<()> {
    axpy(dev, 1.0, x, 0.0, y)
}

/// y = y * x, elementwise (x is usually a 0/1 mask, repeated per model by the caller's views).
pub fn mul(dev: &Device, x: View, y: View) -> Result<()> {
    assert_eq!(x.len, y.len, "mul: lengths differ");
    let ops = check_disjoint([y], [x]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("mul");
            use rayon::prelude::*;
            let ([yv], [xv]) = ops.cpu();
            yv.par_iter_mut()
                .zip(xv.par_iter())
                .with_min_len(4096)
                .for_each(|(t, &s)| *t *= s);
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: x.len as u32,
                x_off: x.off(),
                y_off: y.off(),
                _pad0: 0,
                alpha: 0.0,
                beta: 0.0,
                _pad1: [0; 2],
            };
            let grid = g.grid(x.len);
            g.launch("axpy", SHADER, "mul", &p, &[x.buf, y.buf], grid)
        }
    }
}
