//! Segment sums and means over CSR ranges, optionally through a permutation: WGSL launch
//! (shaders/segment.wgsl) and the CPU reference (same summation order).

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/segment.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_seg: u32,
    cols: u32,
    val_off: u32,
    perm_off: u32,
    off_off: u32,
    out_off: u32,
    use_perm: u32,
    mean: u32,
    accumulate: u32,
    use_window: u32,
    lo: u32,
    hi: u32,
}

#[derive(Clone, Copy, Default)]
pub struct SegmentOpts<'a> {
    /// Row j of the range is `values[perm[j]]` (u32 view) instead of `values[j]`.
    pub perm: Option<View<'a>>,
    /// Divide by the segment's length (0 for an empty segment).
    pub mean: bool,
    /// Add into `out` instead of overwriting it.
    pub accumulate: bool,
    /// Only rows `lo..hi` count, and `values` holds just those rows (row r at r - lo). A mean
    /// still divides by the whole segment's length, so accumulating the windows of a
    /// partition gives the mean over all rows: how edges too many for one buffer are reduced.
    pub window: Option<(usize, usize)>,
}

/// out[s, :] = sum (or mean) of the rows of `values` ([rows, cols]) in segment s, whose range is
/// `offsets[s]..offsets[s + 1]` (u32 view of n_seg + 1 values).
pub fn segment_reduce(
    dev: &Device,
    cols: usize,
    values: View,
    offsets: View,
    out: View,
    o: SegmentOpts,
) -> Result<()> {
    let n_seg = offsets.len.saturating_sub(1);
    assert!(
        out.len >= n_seg * cols,
        "segment_reduce: out view too short"
    );
    // Without a permutation, `offsets` stands in for it (unread), so the operands have one shape.
    let perm = o.perm.unwrap_or(offsets);
    let ops = check_disjoint([out], [values, offsets, perm]);
    if n_seg == 0 || cols == 0 {
        return Ok(());
    }
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("segment_reduce");
            use rayon::prelude::*;
            let ([dst], [v, off, perm]) = ops.cpu();
            let perm = o.perm.map(|_| perm);
            let (lo, hi) = o.window.unwrap_or((0, usize::MAX));
            // Whole rows at a time, segments in parallel; each value still sums its range in order.
            dst[..n_seg * cols]
                .par_chunks_mut(cols)
                .enumerate()
                .for_each(|(s, row_out)| {
                    let (a, b) = (off[s].to_bits() as usize, off[s + 1].to_bits() as usize);
                    let len = b - a;
                    // Without a permutation the window is a range: clip to it.
                    let (a, b) = match perm {
                        Some(_) => (a, b),
                        None => (a.max(lo), b.min(hi)),
                    };
                    let mut acc = vec![0.0f32; cols];
                    for j in a..b {
                        let row = perm.map_or(j, |p| p[j].to_bits() as usize);
                        if row < lo || row >= hi {
                            continue;
                        }
                        let r = row - lo;
                        acc.iter_mut()
                            .zip(&v[r * cols..(r + 1) * cols])
                            .for_each(|(t, x)| *t += x);
                    }
                    for (d, sum) in row_out.iter_mut().zip(&acc) {
                        let val = match (o.mean, len) {
                            (false, _) => *sum,
                            (true, 0) => 0.0,
                            (true, len) => sum / len as f32,
                        };
                        *d = if o.accumulate { *d + val } else { val };
                    }
                });
            Ok(())
        }
        Device::Gpu(g) => {
            let perm = o.perm.unwrap_or(offsets);
            let (lo, hi) = o.window.unwrap_or((0, u32::MAX as usize));
            let p = Params {
                n_seg: n_seg as u32,
                cols: cols as u32,
                val_off: values.off(),
                perm_off: perm.off(),
                off_off: offsets.off(),
                out_off: out.off(),
                use_perm: o.perm.is_some() as u32,
                mean: o.mean as u32,
                accumulate: o.accumulate as u32,
                use_window: o.window.is_some() as u32,
                lo: u32::try_from(lo).expect("window beyond u32"),
                hi: u32::try_from(hi).expect("window beyond u32"),
            };
            let grid = g.grid(n_seg * cols);
            g.launch(
                "segment",
                SHADER,
                "segment_reduce",
                &p,
                &[values.buf, perm.buf, offsets.buf, out.buf],
                grid,
            )
        }
    }
}
