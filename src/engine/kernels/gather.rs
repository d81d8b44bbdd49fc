//! Row gather by index: WGSL launch (shaders/gather.wgsl) and the CPU reference.
//! Index views hold u32 values (see `Device::upload_u32`).

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/gather.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cols: u32,
    src_off: u32,
    idx_off: u32,
    out_off: u32,
    accumulate: u32,
    use_scale: u32,
    scale_off: u32,
}

/// Options of a gather: add into `out` instead of overwriting it; multiply each gathered row by
/// `scale[idx[r]]` (one value per source row).
#[derive(Clone, Copy, Default)]
pub struct GatherOpts<'a> {
    pub accumulate: bool,
    pub scale: Option<View<'a>>,
}

/// out[r, :] = src[idx[r], :] for every r in `idx`; rows have `cols` values. Indices must be
/// in range: they come from our own samplers and graph builders, never from user data.
pub fn gather_rows(dev: &Device, cols: usize, src: View, idx: View, out: View) -> Result<()> {
    gather_rows_with(dev, cols, src, idx, out, GatherOpts::default())
}

pub fn gather_rows_with(
    dev: &Device,
    cols: usize,
    src: View,
    idx: View,
    out: View,
    o: GatherOpts,
) -> Result<()> {
    let n = idx.len;
    assert!(out.len >= n * cols, "gather_rows: out view too short");
    // Without a scale, `idx` stands in for it (unread), so the operands have one shape.
    let scale = o.scale.unwrap_or(idx);
    let ops = check_disjoint([out], [src, idx, scale]);
    if n == 0 || cols == 0 {
        return Ok(());
    }
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("gather_rows");
            let ([dst], [s, ix, sc]) = ops.cpu();
            let sc = o.scale.map(|_| sc);
            use rayon::prelude::*;
            dst[..n * cols]
                .par_chunks_mut(cols)
                .with_min_len((16_384 / cols).max(1))
                .enumerate()
                .for_each(|(r, to)| {
                    let row = ix[r].to_bits() as usize;
                    assert!(
                        (row + 1) * cols <= s.len(),
                        "gather_rows: index {row} out of range"
                    );
                    let k = sc.map_or(1.0, |sc| sc[row]);
                    for (t, &f) in to.iter_mut().zip(&s[row * cols..(row + 1) * cols]) {
                        *t = if o.accumulate { *t + f * k } else { f * k };
                    }
                });
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: n as u32,
                cols: cols as u32,
                src_off: src.off(),
                idx_off: idx.off(),
                out_off: out.off(),
                accumulate: o.accumulate as u32,
                use_scale: o.scale.is_some() as u32,
                scale_off: scale.off(),
            };
            let grid = g.grid(n * cols);
            g.launch(
                "gather",
                SHADER,
                "gather_rows",
                &p,
                &[src.buf, idx.buf, out.buf, scale.buf],
                grid,
            )
        }
    }
}
