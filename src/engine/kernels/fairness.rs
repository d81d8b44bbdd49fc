//! Differentiable demographic-parity and equalised-odds penalties (soft group-rate gaps), loss
//! and logit gradients in one pass: WGSL launch (shaders/fairness.wgsl) and the CPU reference.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::engine::kernels::activation::sigmoid;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/fairness.wgsl");
pub const MAX_GROUPS: usize = 8;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Gap {
    /// Demographic parity: selection rates equal across groups.
    Dp,
    /// Equalised odds: true- and false-positive rates equal across groups.
    Eo,
}

impl Gap {
    /// "DP" or "EO", as reports write it.
    pub fn short_name(self) -> &'static str {
        match self {
            Gap::Dp => "DP",
            Gap::Eo => "EO",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    models: u32,
    rows: u32,
    groups: u32,
    eo: u32,
    s_off: u32,
    y_off: u32,
    g_off: u32,
    lam_off: u32,
    loss_off: u32,
    ds_off: u32,
    sharpness: f32,
    _pad: u32,
}

/// For `models` x `rows`: logits, labels (0/1) and group ids (u32 view, < `groups`) per row, a
/// lambda per model. Writes each model's penalty to `loss` [models] and adds lambda times its
/// gradient to `dlogits` [models, rows]. Labels and lambdas must share a buffer. A row's soft
/// decision is sigmoid(`sharpness` * logit): above 1 the soft rates come closer to the rates
/// of hard decisions, which are what a fairness bound is checked on.
#[allow(clippy::too_many_arguments)]
pub fn fairness_penalty(
    dev: &Device,
    gap: Gap,
    groups: usize,
    sharpness: f32,
    logits: View,
    labels: View,
    group: View,
    lambda: View,
    loss: View,
    dlogits: View,
) -> Result<()> {
    let models = lambda.len;
    let rows = logits.len / models.max(1);
    assert!(
        groups <= MAX_GROUPS,
        "fairness_penalty: at most {MAX_GROUPS} groups"
    );
    assert!(
        logits.len == models * rows
            && labels.len == logits.len
            && group.len == logits.len
            && loss.len == models
            && dlogits.len == logits.len,
        "fairness_penalty: shapes"
    );
    assert_eq!(
        labels.buf.id, lambda.buf.id,
        "fairness_penalty: labels and lambdas share a buffer"
    );
    let ops = check_disjoint([loss, dlogits], [logits, labels, group, lambda]);
    if models == 0 || rows == 0 {
        return Ok(());
    }
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("fairness_penalty");
            let ([lo, dv], [sv, yv, gv, lv]) = ops.cpu();
            let classes = if gap == Gap::Eo { 2 } else { 1 };
            for z in 0..models {
                let b = z * rows;
                let cell = |r: usize| {
                    let c = if gap == Gap::Eo {
                        (yv[b + r] > 0.5) as usize
                    } else {
                        0
                    };
                    (c, c * MAX_GROUPS + gv[b + r].to_bits() as usize)
                };
                let (mut n, mut s) = ([0.0f32; 16], [0.0f32; 16]);
                for r in 0..rows {
                    let (_, k) = cell(r);
                    n[k] += 1.0;
                    s[k] += sigmoid(sharpness * sv[b + r]);
                }
                let (mut rate, mut n_all, mut dev_sum, mut total) =
                    ([0.0f32; 2], [0.0f32; 2], [0.0f32; 2], 0.0f32);
                for c in 0..classes {
                    let (tn, ts): (f32, f32) = (0..groups).fold((0.0, 0.0), |(a, b2), k| {
                        (a + n[c * MAX_GROUPS + k], b2 + s[c * MAX_GROUPS + k])
                    });
                    n_all[c] = tn;
                    rate[c] = if tn > 0.0 { ts / tn } else { 0.0 };
                    for k in 0..groups {
                        let nk = n[c * MAX_GROUPS + k];
                        if nk > 0.0 {
                            let d = s[c * MAX_GROUPS + k] / nk - rate[c];
                            total += d * d;
                            dev_sum[c] += d;
                        }
                    }
                }
                lo[z] = total;
                for r in 0..rows {
                    let (c, k) = cell(r);
                    let pr = sigmoid(sharpness * sv[b + r]);
                    let d = 2.0 * (s[k] / n[k] - rate[c]) / n[k] - 2.0 / n_all[c] * dev_sum[c];
                    dv[b + r] += lv[z] * d * sharpness * pr * (1.0 - pr);
                }
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                models: models as u32,
                rows: rows as u32,
                groups: groups as u32,
                eo: (gap == Gap::Eo) as u32,
                s_off: logits.off(),
                y_off: labels.off(),
                g_off: group.off(),
                lam_off: lambda.off(),
                loss_off: loss.off(),
                ds_off: dlogits.off(),
                sharpness,
                _pad: 0,
            };
            g.launch(
                "fairness",
                SHADER,
                "fairness_penalty",
                &p,
                &[logits.buf, labels.buf, group.buf, dlogits.buf, loss.buf],
                g.grid(models),
            )
        }
    }
}
