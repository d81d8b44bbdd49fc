//! Applying an edit: the editor's per-edge and per-node head outputs (delta, mask logit) turned
//! into edited MLP parameters (hard zeros for removed input columns, a hard top-k mask when
//! pruning), and the gradient back to the head outputs (straight-through sigmoid for the mask).
//! A weight's pruning score is its prior (a data-free importance computed on the host, see
//! `requirement::PruneScore`) plus its mask logit. WGSL launch (shaders/apply_edit.wgsl) and the CPU
//! reference; the formulas are in the shader.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/apply_edit.wgsl");
/// Floor under magnitudes and scores before their log: a zero weight gets a finite prior.
pub const PRIOR_EPS: f32 = 1e-8;
/// `inv` entry of a head row that no parameter reads (input-column nodes).
pub const NONE: u32 = u32::MAX;
/// Parameter kinds (low two bits of `kind`; the model index is above them).
pub const BIAS: u32 = 0;
pub const WEIGHT: u32 = 1;
pub const REMOVED: u32 = 2;
/// A threshold that keeps every weight (no pruning).
pub const KEEP_ALL: f32 = -3.0e38;

#[derive(Clone, Copy, Debug)]
pub struct ApplyOpts {
    /// Scale of the editor's deltas.
    pub gamma: f32,
    /// Temperature of the straight-through mask surrogate; 0 keeps the mask fixed.
    pub tau: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    orig_off: u32,
    head_off: u32,
    map_off: u32,
    kind_off: u32,
    thr_off: u32,
    out_off: u32,
    dout_off: u32,
    gamma: f32,
    tau: f32,
    prior_off: u32,
    _pad: u32,
}

/// Score of a weight for pruning: its prior plus the mask logit.
pub fn score(prior: f32, logit: f32) -> f32 {
    prior + logit
}

/// The derivative of the logistic sigmoid at `x`.
fn dsig(x: f32) -> f32 {
    let e = (-x.abs()).exp();
    e / ((1.0 + e) * (1.0 + e))
}

/// One edited parameter (CPU reference and host-side edits): `pl` is (prior, mask logit).
pub fn edited_value(
    o: &ApplyOpts,
    orig: f32,
    delta: f32,
    pl: (f32, f32),
    kind: u32,
    thr: f32,
) -> f32 {
    let v = orig + o.gamma * delta;
    match kind {
        REMOVED => 0.0,
        WEIGHT if score(pl.0, pl.1) < thr => 0.0,
        _ => v,
    }
}

/// Gradients (delta, logit) of one edited parameter given `g`, the gradient of its value.
fn edit_grad(
    o: &ApplyOpts,
    orig: f32,
    delta: f32,
    pl: (f32, f32),
    kind: u32,
    thr: f32,
    g: f32,
) -> [f32; 2] {
    let v = orig + o.gamma * delta;
    match kind {
        BIAS => [o.gamma * g, 0.0],
        WEIGHT => {
            let s = score(pl.0, pl.1);
            let m = if s >= thr { 1.0 } else { 0.0 };
            let dl = if o.tau > 0.0 {
                g * v * dsig((s - thr) / o.tau) / o.tau
            } else {
                0.0
            };
            [o.gamma * g * m, dl]
        }
        _ => [0.0, 0.0],
    }
}

/// edited[p] from orig[p], prior[p] and head row map[p]; `kind` = model << 2 | kind, `thr` per
/// model.
#[allow(clippy::too_many_arguments)]
pub fn apply_edit_forward(
    dev: &Device,
    o: &ApplyOpts,
    orig: View,
    prior: View,
    head: View,
    map: View,
    kind: View,
    thr: View,
    edited: View,
) -> Result<()> {
    let n = orig.len;
    assert!(
        map.len == n
            && kind.len == n
            && prior.len == n
            && edited.len == n
            && head.len.is_multiple_of(2),
        "apply_edit_forward: shapes"
    );
    assert!(
        orig.buf.id == thr.buf.id && orig.buf.id == prior.buf.id,
        "apply_edit_forward: orig, prior and thr share a buffer"
    );
    assert_eq!(
        map.buf.id, kind.buf.id,
        "apply_edit_forward: map and kind share a buffer"
    );
    let ops = check_disjoint([edited], [orig, prior, head, map, kind, thr]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("apply_edit_forward");
            let ([out], [ov, pv, hv, mv, kv, tv]) = ops.cpu();
            for i in 0..n {
                let h = mv[i].to_bits() as usize;
                let k = kv[i].to_bits();
                out[i] = edited_value(
                    o,
                    ov[i],
                    hv[2 * h],
                    (pv[i], hv[2 * h + 1]),
                    k & 3,
                    tv[(k >> 2) as usize],
                );
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: n as u32,
                orig_off: orig.off(),
                head_off: head.off(),
                map_off: map.off(),
                kind_off: kind.off(),
                thr_off: thr.off(),
                out_off: edited.off(),
                dout_off: 0,
                gamma: o.gamma,
                tau: o.tau,
                prior_off: prior.off(),
                _pad: 0,
            };
            let grid = g.grid(n);
            g.launch(
                "apply_edit",
                SHADER,
                "apply_edit_forward",
                &p,
                &[orig.buf, head.buf, map.buf, edited.buf],
                grid,
            )
        }
    }
}

/// dhead (overwritten, [rows, 2]) from the gradient of the edited parameters; `inv[h]` is the
/// parameter that head row h produces, or `NONE`.
#[allow(clippy::too_many_arguments)]
pub fn apply_edit_backward(
    dev: &Device,
    o: &ApplyOpts,
    orig: View,
    prior: View,
    head: View,
    inv: View,
    kind: View,
    thr: View,
    dedited: View,
    dhead: View,
) -> Result<()> {
    let rows = inv.len;
    assert!(
        head.len == 2 * rows
            && dhead.len == head.len
            && kind.len == orig.len
            && prior.len == orig.len
            && dedited.len == orig.len,
        "apply_edit_backward: shapes"
    );
    assert!(
        orig.buf.id == thr.buf.id && orig.buf.id == prior.buf.id,
        "apply_edit_backward: orig, prior and thr share a buffer"
    );
    assert_eq!(
        inv.buf.id, kind.buf.id,
        "apply_edit_backward: inv and kind share a buffer"
    );
    let ops = check_disjoint([dhead], [orig, prior, head, inv, kind, thr, dedited]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("apply_edit_backward");
            let ([out], [ov, pv, hv, iv, kv, tv, gv]) = ops.cpu();
            for h in 0..rows {
                let i = iv[h].to_bits();
                let d = if i == NONE {
                    [0.0, 0.0]
                } else {
                    let i = i as usize;
                    let k = kv[i].to_bits();
                    edit_grad(
                        o,
                        ov[i],
                        hv[2 * h],
                        (pv[i], hv[2 * h + 1]),
                        k & 3,
                        tv[(k >> 2) as usize],
                        gv[i],
                    )
                };
                out[2 * h..2 * h + 2].copy_from_slice(&d);
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: rows as u32,
                orig_off: orig.off(),
                head_off: head.off(),
                map_off: inv.off(),
                kind_off: kind.off(),
                thr_off: thr.off(),
                out_off: dhead.off(),
                dout_off: dedited.off(),
                gamma: o.gamma,
                tau: o.tau,
                prior_off: prior.off(),
                _pad: 0,
            };
            let grid = g.grid(rows);
            g.launch(
                "apply_edit",
                SHADER,
                "apply_edit_backward",
                &p,
                &[orig.buf, head.buf, inv.buf, dhead.buf, dedited.buf],
                grid,
            )
        }
    }
}

/// A weight's surrogate mask weight sig'((s - thr) / tau) / tau (tau > 0).
fn surrogate_weight(o: &ApplyOpts, pl: (f32, f32), thr: f32) -> f32 {
    dsig((score(pl.0, pl.1) - thr) / o.tau) / o.tau
}

/// What both halves of holding a learned mask's count read: each parameter's prior and each
/// model's threshold (one buffer), the head outputs, and each parameter's head row and kind
/// (one buffer).
#[derive(Clone, Copy)]
pub struct MaskScores<'a> {
    pub prior: View<'a>,
    pub thr: View<'a>,
    pub head: View<'a>,
    pub map: View<'a>,
    pub kind: View<'a>,
}

impl MaskScores<'_> {
    fn check(&self, o: &ApplyOpts, what: &str) {
        let n = self.prior.len;
        assert!(o.tau > 0.0, "{what}: a learned mask (tau > 0)");
        assert!(self.map.len == n && self.kind.len == n, "{what}: shapes");
        assert_eq!(
            self.prior.buf.id, self.thr.buf.id,
            "{what}: prior and thr share a buffer"
        );
        assert_eq!(
            self.map.buf.id, self.kind.buf.id,
            "{what}: map and kind share a buffer"
        );
    }

    /// Each weight of the CPU views: (parameter, head row, model, surrogate weight).
    fn weights<'v>(
        o: &'v ApplyOpts,
        [pv, tv, hv, mv, kv]: [&'v [f32]; 5],
    ) -> impl Iterator<Item = (usize, usize, usize, f32)> + 'v {
        (0..pv.len()).filter_map(move |i| {
            let (h, k) = (mv[i].to_bits() as usize, kv[i].to_bits());
            let z = (k >> 2) as usize;
            (k & 3 == WEIGHT).then(|| (i, h, z, surrogate_weight(o, (pv[i], hv[2 * h + 1]), tv[z])))
        })
    }

    /// Launch `entry` per parameter, `out` and `dout` bound as the shader says.
    fn launch(
        &self,
        g: &crate::engine::gpu::GpuDevice,
        o: &ApplyOpts,
        entry: &'static str,
        out: View,
        dout: View,
    ) -> Result<()> {
        let p = Params {
            n: self.prior.len as u32,
            orig_off: 0,
            head_off: self.head.off(),
            map_off: self.map.off(),
            kind_off: self.kind.off(),
            thr_off: self.thr.off(),
            out_off: out.off(),
            dout_off: dout.off(),
            gamma: o.gamma,
            tau: o.tau,
            prior_off: self.prior.off(),
            _pad: 0,
        };
        let bufs = [
            self.prior.buf,
            self.head.buf,
            self.map.buf,
            out.buf,
            dout.buf,
        ];
        g.launch(
            "apply_edit",
            SHADER,
            entry,
            &p,
            &bufs,
            g.grid(self.prior.len),
        )
    }
}

/// First half of holding a learned mask's count (`mask_count_hold`): per parameter, `terms`
/// [P, 2] (overwritten) gets its mask logit's gradient from `dhead` and its surrogate weight,
/// both 0 off weights. Summed per model (`reduce`), they make `mask_count_hold`'s `sums`.
pub fn mask_count_terms(
    dev: &Device,
    o: &ApplyOpts,
    m: MaskScores,
    dhead: View,
    terms: View,
) -> Result<()> {
    m.check(o, "mask_count_terms");
    assert!(
        terms.len == 2 * m.prior.len && dhead.len == m.head.len,
        "mask_count_terms: shapes"
    );
    let ops = check_disjoint([terms], [m.prior, m.thr, m.head, m.map, m.kind, dhead]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("mask_count_terms");
            let ([out], [pv, tv, hv, mv, kv, dv]) = ops.cpu();
            out.fill(0.0);
            for (i, h, _, w) in MaskScores::weights(o, [pv, tv, hv, mv, kv]) {
                out[2 * i] = dv[2 * h + 1];
                out[2 * i + 1] = w;
            }
            Ok(())
        }
        Device::Gpu(g) => m.launch(g, o, "mask_count_terms", terms, dhead),
    }
}

/// Hold a learned mask's count in `dhead` (in place): the mask keeps k weights of each model
/// whatever the logits, so as a soft mask whose threshold moves to keep its sum at k, every
/// weight's mask-logit gradient loses its surrogate weight times its model's `sums` [M, 2]
/// ratio (sum of those gradients over sum of surrogate weights, from `mask_count_terms`).
/// Without it, logits that raise every score alike look like a gain and grow step after step.
pub fn mask_count_hold(
    dev: &Device,
    o: &ApplyOpts,
    m: MaskScores,
    sums: View,
    dhead: View,
) -> Result<()> {
    m.check(o, "mask_count_hold");
    assert!(
        sums.len == 2 * m.thr.len && dhead.len == m.head.len,
        "mask_count_hold: shapes"
    );
    let ops = check_disjoint([dhead], [m.prior, m.thr, m.head, m.map, m.kind, sums]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("mask_count_hold");
            let ([out], [pv, tv, hv, mv, kv, sv]) = ops.cpu();
            for (_, h, z, w) in MaskScores::weights(o, [pv, tv, hv, mv, kv]) {
                if sv[2 * z + 1] > 0.0 {
                    out[2 * h + 1] -= w * (sv[2 * z] / sv[2 * z + 1]);
                }
            }
            Ok(())
        }
        Device::Gpu(g) => m.launch(g, o, "mask_count_hold", dhead, sums),
    }
}
