// Pointwise activations and their backward. kind: 0 identity, 1 ReLU, 2 tanh, 3 SiLU, 4 sigmoid.
// Backward takes the pre-activation x (not the output) so every kind uses the same signature.
// tanh and sigmoid are written in overflow-free forms: the builtins may return NaN for large |x|
// on some drivers. tanh' is sech^2 = 4e / (1 + e)^2 with e = exp(-2|x|): 1 - tanh^2 cancels;
// likewise sigmoid' is e / (1 + e)^2 with e = exp(-|x|), not s (1 - s).

struct Params {
    n: u32, kind: u32, x_off: u32, y_off: u32,
    dy_off: u32, dx_off: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

fn tanh_stable(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

fn act(v: f32) -> f32 {
    switch p.kind {
        case 1u: { return max(v, 0.0); }
        case 2u: { return tanh_stable(v); }
        case 3u: { return v * sigmoid(v); }
        case 4u: { return sigmoid(v); }
        default: { return v; }
    }
}

fn act_grad(v: f32) -> f32 {
    switch p.kind {
        case 1u: { return select(0.0, 1.0, v > 0.0); }
        case 2u: { let e = exp(-2.0 * abs(v)); return 4.0 * e / ((1.0 + e) * (1.0 + e)); }
        case 3u: { let s = sigmoid(v); return s * (1.0 + v * (1.0 - s)); }
        case 4u: { let e = exp(-abs(v)); return e / ((1.0 + e) * (1.0 + e)); }
        default: { return 1.0; }
    }
}


// y[i] = act(x[i]); binding 1 = x, binding 2 = y (may be the same buffer).
@compute @workgroup_size(WG)
fn activation_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    y[p.y_off + i] = act(x[p.x_off + i]);
}

// dx[i] = dy[i] * act'(x[i]); binding 1 = x, binding 2 = gradients (dy and dx both live there).
@compute @workgroup_size(WG)
fn activation_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    y[p.dx_off + i] = y[p.dy_off + i] * act_grad(x[p.x_off + i]);
}
