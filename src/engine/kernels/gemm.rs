//! Batched GEMM with either operand transposed: WGSL launch (shaders/gemm.wgsl) and the CPU
//! reference (the `gemm` crate, batch items spread over rayon).

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;
use rayon::prelude::*;

const SHADER: &str = include_str!("../../../shaders/gemm.wgsl");

/// C[z] = op(A[z]) @ op(B[z]) (+ C[z]) for z in 0..batch; all row-major, offsets in the views,
/// batch strides in elements (0 = the same operand for every z).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored k x m (its transpose is used).
    pub trans_a: bool,
    /// B is stored n x k.
    pub trans_b: bool,
    pub a_stride: usize,
    pub b_stride: usize,
    pub c_stride: usize,
    /// Add into C instead of overwriting it (gradient accumulation).
    pub accumulate: bool,
}

impl Gemm {
    /// A single matrix product, contiguous operands.
    pub fn single(m: usize, n: usize, k: usize) -> Gemm {
        Gemm {
            batch: 1,
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            a_stride: m * k,
            b_stride: k * n,
            c_stride: m * n,
            accumulate: false,
        }
    }
    /// `batch` independent products packed back to back.
    pub fn batched(batch: usize, m: usize, n: usize, k: usize) -> Gemm {
        Gemm {
            batch,
            ..Gemm::single(m, n, k)
        }
    }
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }
    fn span(stride: usize, batch: usize, size: usize) -> usize {
        if batch == 0 || size == 0 {
            0
        } else {
            stride * (batch - 1) + size
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// Tiled for shapes that fill at least one 64x64 tile, narrow tiles for outputs 9 to 32
    /// wide, naive below that.
    Auto,
    Naive,
    Tiled,
    Narrow,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    trans_a: u32,
    a_stride: u32,
    b_stride: u32,
    c_stride: u32,
    trans_b: u32,
    _pad: [u32; 4],
}

pub fn gemm(dev: &Device, g: &Gemm, a: View, b: View, c: View) -> Result<()> {
    gemm_with(dev, GemmKernel::Auto, g, a, b, c)
}

pub fn gemm_with(
    dev: &Device,
    kernel: GemmKernel,
    g: &Gemm,
    a: View,
    b: View,
    c: View,
) -> Result<()> {
    assert!(
        a.len >= Gemm::span(g.a_stride, g.batch, g.m * g.k),
        "gemm: A view too short"
    );
    assert!(
        b.len >= Gemm::span(g.b_stride, g.batch, g.k * g.n),
        "gemm: B view too short"
    );
    assert!(
        c.len >= Gemm::span(g.c_stride, g.batch, g.m * g.n),
        "gemm: C view too short"
    );
    assert!(
        g.batch <= 1 || g.c_stride >= g.m * g.n,
        "gemm: C batch items overlap"
    );
    let ops = check_disjoint([c], [a, b]);
    if g.batch == 0 || g.m == 0 || g.n == 0 {
        return Ok(());
    }
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("gemm");
            let ([cv], [av, bv]) = ops.cpu();
            gemm_cpu(g, av, bv, cv);
            Ok(())
        }
        Device::Gpu(gpu) => {
            let kernel = match kernel {
                GemmKernel::Auto if g.m * g.n < 64 * 64 || g.k < 16 => GemmKernel::Naive,
                GemmKernel::Auto if (9..=32).contains(&g.n) => GemmKernel::Narrow,
                GemmKernel::Auto => GemmKernel::Tiled,
                k => k,
            };
            // Entry point and output tile (columns, rows) per workgroup.
            let (entry, tile) = match kernel {
                GemmKernel::Naive => ("gemm_naive", (16, 16)),
                GemmKernel::Narrow => ("gemm_narrow", (32, 128)),
                _ => ("gemm_tiled", (64, 64)),
            };
            let max_z = gpu.limits.max_compute_workgroups_per_dimension as usize;
            let mut z0 = 0;
            while z0 < g.batch {
                let nz = (g.batch - z0).min(max_z);
                let p = Params {
                    m: g.m as u32,
                    n: g.n as u32,
                    k: g.k as u32,
                    accumulate: g.accumulate as u32,
                    a_off: (a.offset + z0 * g.a_stride) as u32,
                    b_off: (b.offset + z0 * g.b_stride) as u32,
                    c_off: (c.offset + z0 * g.c_stride) as u32,
                    trans_a: g.trans_a as u32,
                    a_stride: g.a_stride as u32,
                    b_stride: g.b_stride as u32,
                    c_stride: g.c_stride as u32,
                    trans_b: g.trans_b as u32,
                    _pad: [0; 4],
                };
                let groups = [
                    g.n.div_ceil(tile.0) as u32,
                    g.m.div_ceil(tile.1) as u32,
                    nz as u32,
                ];
                gpu.launch("gemm", SHADER, entry, &p, &[a.buf, b.buf, c.buf], groups)?;
                z0 += nz;
            }
            Ok(())
        }
    }
}

/// CPU reference. Batch item z of C is `c[z * c_stride..][..m * n]`; the items do not overlap.
fn gemm_cpu(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (a_rs, a_cs) = if g.trans_a {
        (1, g.m as isize)
    } else {
        (g.k as isize, 1)
    };
    let (b_rs, b_cs) = if g.trans_b {
        (1, g.k as isize)
    } else {
        (g.n as isize, 1)
    };
    let one = |z: usize, dst: &mut [f32], par: gemm::Parallelism| {
        let dst = &mut dst[..g.m * g.n];
        if g.k == 0 {
            if !g.accumulate {
                dst.fill(0.0);
            }
            return;
        }
        let (a, b) = (&a[z * g.a_stride..], &b[z * g.b_stride..]);
        assert!(a.len() >= g.m * g.k && b.len() >= g.k * g.n);
        // SAFETY: with these strides the product reads m x k values of A and k x n of B, and
        // writes the m x n values of `dst` row-major: all inside the slices it is given.
        unsafe {
            gemm::gemm(
                g.m,
                g.n,
                g.k,
                dst.as_mut_ptr(),
                1,
                g.n as isize,
                g.accumulate,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
    };
    if g.batch == 1 {
        one(0, c, gemm::Parallelism::Rayon(0));
    } else {
        c.par_chunks_mut(g.c_stride)
            .take(g.batch)
            .enumerate()
            .for_each(|(z, dst)| one(z, dst, gemm::Parallelism::None));
    }
}
