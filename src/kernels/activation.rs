//! Pointwise activations, forward and backward: WGSL launch (shaders/activation.wgsl) and the
//! CPU reference.

use crate::buffer::{check_disjoint, View};
use crate::device::Device;
use crate::error::Result;
use crate::gpu::grid_1d;

const SHADER: &str = include_str!("../../shaders/activation.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Identity,
    Relu,
    Tanh,
    Silu,
    Sigmoid,
}

impl Activation {
    pub const ALL: [Activation; 5] = [
        Activation::Identity,
        Activation::Relu,
        Activation::Tanh,
        Activation::Silu,
        Activation::Sigmoid,
    ];

    fn code(self) -> u32 {
        self as u32
    }
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Silu => "silu",
            Activation::Sigmoid => "sigmoid",
        }
    }
    /// Parses the names PyTorch users write (`nn.ReLU` -> "relu", "ReLU", "SiLU", "swish"...).
    pub fn parse(s: &str) -> Option<Activation> {
        match s.trim().to_ascii_lowercase().as_str() {
            "identity" | "linear" | "none" => Some(Activation::Identity),
            "relu" => Some(Activation::Relu),
            "tanh" => Some(Activation::Tanh),
            "silu" | "swish" => Some(Activation::Silu),
            "sigmoid" => Some(Activation::Sigmoid),
            _ => None,
        }
    }
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Tanh => v.tanh(),
            Activation::Silu => v * sigmoid(v),
            Activation::Sigmoid => sigmoid(v),
        }
    }
    pub fn grad(self, v: f32) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => (v > 0.0) as u32 as f32,
            // sech^2 without the cancellation of 1 - tanh^2 at large |x|.
            Activation::Tanh => {
                let e = (-2.0 * v.abs()).exp();
                4.0 * e / ((1.0 + e) * (1.0 + e))
            }
            Activation::Silu => {
                let s = sigmoid(v);
                s * (1.0 + v * (1.0 - s))
            }
            Activation::Sigmoid => {
                let s = sigmoid(v);
                s * (1.0 - s)
            }
        }
    }
}

pub fn sigmoid(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    kind: u32,
    x_off: u32,
    y_off: u32,
    dy_off: u32,
    dx_off: u32,
    _pad: [u32; 2],
}

/// y = act(x), elementwise over `x.len` values.
pub fn activation_forward(dev: &Device, act: Activation, x: View, y: View) -> Result<()> {
    assert_eq!(x.len, y.len, "activation_forward: x and y differ in length");
    check_disjoint(&[y], &[x]);
    match dev {
        Device::Cpu(_) => {
            let (xv, yv) = unsafe { (x.cpu(), y.cpu_mut()) };
            use rayon::prelude::*;
            yv.par_iter_mut()
                .zip(xv.par_iter())
                .with_min_len(4096)
                .for_each(|(o, &v)| *o = act.apply(v));
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: x.len as u32,
                kind: act.code(),
                x_off: x.off(),
                y_off: y.off(),
                dy_off: 0,
                dx_off: 0,
                _pad: [0; 2],
            };
            let grid = grid_1d(x.len, 256, g.limits.max_compute_workgroups_per_dimension);
            g.launch(
                "activation",
                SHADER,
                "activation_forward",
                &p,
                &[x.buf, y.buf],
                grid,
            )
        }
    }
}

/// dx = dy * act'(x), with x the pre-activation. `dy` and `dx` must be in the same buffer
/// (the gradient buffer); `dx` may not overlap `dy`.
pub fn activation_backward(
    dev: &Device,
    act: Activation,
    x: View,
    dy: View,
    dx: View,
) -> Result<()> {
    assert!(
        x.len == dy.len && dy.len == dx.len,
        "activation_backward: lengths differ"
    );
    assert_eq!(
        dy.buf.id, dx.buf.id,
        "activation_backward: dy and dx must share a buffer"
    );
    check_disjoint(&[dx], &[x, dy]);
    match dev {
        Device::Cpu(_) => {
            let (xv, dyv, dxv) = unsafe { (x.cpu(), dy.cpu(), dx.cpu_mut()) };
            use rayon::prelude::*;
            dxv.par_iter_mut()
                .enumerate()
                .with_min_len(4096)
                .for_each(|(i, d)| *d = dyv[i] * act.grad(xv[i]));
            Ok(())
        }
        Device::Gpu(g) => {
            let p = Params {
                n: x.len as u32,
                kind: act.code(),
                x_off: x.off(),
                y_off: 0,
                dy_off: dy.off(),
                dx_off: dx.off(),
                _pad: [0; 2],
            };
            let grid = grid_1d(x.len, 256, g.limits.max_compute_workgroups_per_dimension);
            g.launch(
                "activation",
                SHADER,
                "activation_backward",
                &p,
                &[x.buf, dy.buf],
                grid,
            )
        }
    }
}
