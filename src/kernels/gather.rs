//! Row gather by index: WGSL launch (shaders/gather.wgsl) and the CPU reference.

use crate::buffer::{check_disjoint, View};
use crate::device::Device;
use crate::error::Result;
use crate::gpu::grid_1d;

const SHADER: &str = include_str!("../../shaders/gather.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cols: u32,
    src_off: u32,
    idx_off: u32,
    out_off: u32,
    _pad: [u32; 3],
}

/// out[r, :] = src[idx[r], :] for every r in `idx`; rows have `cols` values. Indices must be
/// in range: they come from our own samplers, never from user data.
pub fn gather_rows(dev: &Device, cols: usize, src: View, idx: View, out: View) -> Result<()> {
    let n = idx.len;
    assert!(out.len >= n * cols, "gather_rows: out view too short");
    check_disjoint(&[out], &[src, idx]);
    match dev {
        Device::Cpu(_) => {
            let (s, ix, o) = unsafe { (src.cpu(), idx.cpu(), out.cpu_mut()) };
            for r in 0..n {
                let row = ix[r] as usize;
                assert!(
                    (row + 1) * cols <= s.len(),
                    "gather_rows: index {row} out of range"
                );
                o[r * cols..(r + 1) * cols].copy_from_slice(&s[row * cols..(row + 1) * cols]);
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: n as u32,
                cols: cols as u32,
                src_off: src.off(),
                idx_off: idx.off(),
                out_off: out.off(),
                _pad: [0; 3],
            };
            let grid = grid_1d(n * cols, 256, g.limits.max_compute_workgroups_per_dimension);
            g.launch(
                "gather",
                SHADER,
                "gather_rows",
                &p,
                &[src.buf, idx.buf, out.buf],
                grid,
            )
        }
    }
}
