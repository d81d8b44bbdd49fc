//! Jensen-Shannon divergence between a fixed model's and an edited model's predictions (the
//! utility loss of an edit: no labels needed), with the gradient for the edited logits:
//! WGSL launch (shaders/jsd.wgsl) and the CPU reference.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/jsd.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    classes: u32,
    p_off: u32,
    q_off: u32,
    loss_off: u32,
    dq_off: u32,
    scale: f32,
    _pad: u32,
}

fn logaddexp(a: f32, b: f32) -> f32 {
    a.max(b) + (1.0 + (-(a - b).abs()).exp()).ln()
}

/// One row of the CPU reference: (loss, gradient per logit) for logits `p` (fixed) and `q`.
fn row(p: &[f32], q: &[f32], dq: &mut [f32], scale: f32) -> f32 {
    let classes = p.len();
    let k_n = classes.max(2);
    let logit = |v: &[f32], k: usize| -> f32 {
        if classes == 1 {
            if k == 0 {
                0.0
            } else {
                v[0]
            }
        } else {
            v[k]
        }
    };
    let (mut lse_p, mut lse_q) = (logit(p, 0), logit(q, 0));
    for k in 1..k_n {
        lse_p = logaddexp(lse_p, logit(p, k));
        lse_q = logaddexp(lse_q, logit(q, k));
    }
    let terms = |k: usize| {
        let lp = logit(p, k) - lse_p;
        let lq = logit(q, k) - lse_q;
        (lp, lq, logaddexp(lp, lq) - 2f32.ln())
    };
    let (mut total, mut qg) = (0.0f32, 0.0f32);
    for k in 0..k_n {
        let (lp, lq, lm) = terms(k);
        total += 0.5 * (lp.exp() * (lp - lm) + lq.exp() * (lq - lm));
        qg += lq.exp() * 0.5 * (lq - lm);
    }
    for k in 0..k_n {
        if classes == 1 && k == 0 {
            continue;
        }
        let (_, lq, lm) = terms(k);
        let d = scale * lq.exp() * (0.5 * (lq - lm) - qg);
        dq[if classes == 1 { 0 } else { k }] = d;
    }
    total.max(0.0) // rounding can leave -1e-8 where P = Q
}

/// Mean JSD(P || Q) over the rows of logits `p` and `q` [rows, classes], on the host: for
/// choices that compare a few candidate models on a calibration batch.
pub fn mean_jsd_host(classes: usize, p: &[f32], q: &[f32]) -> f64 {
    assert!(p.len() == q.len() && classes >= 1, "mean_jsd_host: shapes");
    let rows = p.len() / classes;
    let mut dq = vec![0.0f32; classes];
    let total: f64 = (0..rows)
        .map(|r| {
            let s = r * classes..(r + 1) * classes;
            row(&p[s.clone()], &q[s], &mut dq, 0.0) as f64
        })
        .sum();
    total / rows.max(1) as f64
}

/// For `loss.len()` rows of `classes` logits: per-row JSD(P || Q) into `loss` and `scale` times
/// its gradient with respect to the logits `q` into `dq` (overwritten).
pub fn jsd(
    dev: &Device,
    classes: usize,
    scale: f32,
    p: View,
    q: View,
    loss: View,
    dq: View,
) -> Result<()> {
    let rows = loss.len;
    assert!(
        p.len == rows * classes && q.len == p.len && dq.len == p.len && classes >= 1,
        "jsd: shapes"
    );
    let ops = check_disjoint([loss, dq], [p, q]);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("jsd");
            let ([lv, dv], [pv, qv]) = ops.cpu();
            for (r, l) in lv.iter_mut().enumerate() {
                let s = r * classes..(r + 1) * classes;
                *l = row(&pv[s.clone()], &qv[s.clone()], &mut dv[s], scale);
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let prm = Params {
                rows: rows as u32,
                classes: classes as u32,
                p_off: p.off(),
                q_off: q.off(),
                loss_off: loss.off(),
                dq_off: dq.off(),
                scale,
                _pad: 0,
            };
            let grid = g.grid(rows);
            g.launch(
                "jsd",
                SHADER,
                "jsd",
                &prm,
                &[p.buf, q.buf, loss.buf, dq.buf],
                grid,
            )
        }
    }
}
