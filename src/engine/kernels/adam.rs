//! AdamW (bias correction, decoupled weight decay): WGSL launch (shaders/adam.wgsl) and the CPU
//! reference.

use crate::engine::buffer::{check_disjoint, View};
use crate::engine::device::Device;
use crate::error::Result;

const SHADER: &str = include_str!("../../../shaders/adam.wgsl");

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// One AdamW update of one parameter, in the order the shader applies it.
#[allow(clippy::too_many_arguments)]
fn update(
    opt: &Adam,
    bc1: f32,
    bc2: f32,
    lr: f32,
    wd: f32,
    g: f32,
    p: &mut f32,
    m: &mut f32,
    v: &mut f32,
) {
    *m = opt.beta1 * *m + (1.0 - opt.beta1) * g;
    *v = opt.beta2 * *v + (1.0 - opt.beta2) * g * g;
    *p = *p * (1.0 - lr * wd) - lr * (*m / bc1) / ((*v / bc2).sqrt() + opt.eps);
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    p_off: u32,
    g_off: u32,
    m_off: u32,
    v_off: u32,
    h_off: u32,
    model_stride: u32,
    _pad0: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
    _pad1: f32,
}

/// Step `t` (1-based) of AdamW on `params` with gradients `grads`; `m` and `v` are the first and
/// second moments and must live in one buffer (the optimiser state).
pub fn adam_step(
    dev: &Device,
    opt: &Adam,
    t: u32,
    params: View,
    grads: View,
    m: View,
    v: View,
) -> Result<()> {
    let n = params.len;
    assert!(
        grads.len == n && m.len == n && v.len == n,
        "adam_step: lengths differ"
    );
    assert!(t >= 1, "adam_step: steps count from 1");
    assert_eq!(
        m.buf.id, v.buf.id,
        "adam_step: m and v must share the state buffer"
    );
    let ops = check_disjoint([params, m, v], [grads]);
    let bc1 = 1.0 - opt.beta1.powi(t as i32);
    let bc2 = 1.0 - opt.beta2.powi(t as i32);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("adam_step");
            let ([pv, mv, vv], [gv]) = ops.cpu();
            for i in 0..n {
                update(
                    opt,
                    bc1,
                    bc2,
                    opt.lr,
                    opt.weight_decay,
                    gv[i],
                    &mut pv[i],
                    &mut mv[i],
                    &mut vv[i],
                );
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: n as u32,
                p_off: params.off(),
                g_off: grads.off(),
                m_off: m.off(),
                v_off: v.off(),
                h_off: 0,
                model_stride: 1,
                _pad0: 0,
                lr: opt.lr,
                beta1: opt.beta1,
                beta2: opt.beta2,
                eps: opt.eps,
                weight_decay: opt.weight_decay,
                bc1,
                bc2,
                _pad1: 0.0,
            };
            let grid = g.grid(n);
            g.launch(
                "adam",
                SHADER,
                "adam_step",
                &p,
                &[params.buf, grads.buf, m.buf],
                grid,
            )
        }
    }
}

/// AdamW step `t` for `params.len() / model_stride` models packed back to back, model z using
/// learning rate `hyper[2z]` and weight decay `hyper[2z + 1]` (the rest of `opt` is shared).
#[allow(clippy::too_many_arguments)]
pub fn adam_step_per_model(
    dev: &Device,
    opt: &Adam,
    t: u32,
    model_stride: usize,
    hyper: View,
    params: View,
    grads: View,
    m: View,
    v: View,
) -> Result<()> {
    let n = params.len;
    assert!(
        grads.len == n && m.len == n && v.len == n,
        "adam_step_per_model: lengths differ"
    );
    assert!(
        model_stride > 0 && n.is_multiple_of(model_stride),
        "adam_step_per_model: not whole models"
    );
    assert!(
        hyper.len >= 2 * (n / model_stride),
        "adam_step_per_model: hyper view too short"
    );
    assert!(t >= 1, "adam_step_per_model: steps count from 1");
    assert_eq!(
        m.buf.id, v.buf.id,
        "adam_step_per_model: m and v must share the state buffer"
    );
    let ops = check_disjoint([params, m, v], [grads, hyper]);
    let bc1 = 1.0 - opt.beta1.powi(t as i32);
    let bc2 = 1.0 - opt.beta2.powi(t as i32);
    match dev {
        Device::Cpu(_) => {
            let _time = crate::engine::profile::cpu_scope("adam_step_per_model");
            let ([pv, mv, vv], [gv, hv]) = ops.cpu();
            for i in 0..n {
                let z = i / model_stride;
                update(
                    opt,
                    bc1,
                    bc2,
                    hv[2 * z],
                    hv[2 * z + 1],
                    gv[i],
                    &mut pv[i],
                    &mut mv[i],
                    &mut vv[i],
                );
            }
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: n as u32,
                p_off: params.off(),
                g_off: grads.off(),
                m_off: m.off(),
                v_off: v.off(),
                h_off: hyper.off(),
                model_stride: model_stride as u32,
                _pad0: 0,
                lr: 0.0,
                beta1: opt.beta1,
                beta2: opt.beta2,
                eps: opt.eps,
                weight_decay: 0.0,
                bc1,
                bc2,
                _pad1: 0.0,
            };
            let grid = g.grid(n);
            g.launch(
                "adam",
                SHADER,
                "adam_step_per_model",
                &p,
                &[params.buf, grads.buf, m.buf, hyper.buf],
                grid,
            )
        }
    }
}
