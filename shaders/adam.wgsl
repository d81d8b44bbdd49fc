// AdamW step over a range of parameters, with bias correction and decoupled weight decay, in the
// order PyTorch's torch.optim.AdamW applies them:
//   p <- p * (1 - lr * wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr * (m / bc1) / (sqrt(v / bc2) + eps),   bc = 1 - beta^t (computed on the host)
// p and g are usually the parameter and gradient buffers, m and v halves of one state buffer.
// adam_step_per_model: the same step for a batch of models packed back to back, each with its own
// learning rate and weight decay read from `hyper` ([lr, wd] per model): a population trains with
// varied hyper-parameters in one dispatch, and lr 0 freezes a model that has finished its epochs.

struct Params {
    n: u32, p_off: u32, g_off: u32, m_off: u32,
    v_off: u32, h_off: u32, model_stride: u32, _pad2: u32,
    lr: f32, beta1: f32, beta2: f32, eps: f32,
    weight_decay: f32, bc1: f32, bc2: f32, _pad3: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> hyper: array<f32>;

fn update(i: u32, lr: f32, wd: f32) {
    let g = grads[u.g_off + i];
    let m = u.beta1 * state[u.m_off + i] + (1.0 - u.beta1) * g;
    let v = u.beta2 * state[u.v_off + i] + (1.0 - u.beta2) * g * g;
    state[u.m_off + i] = m;
    state[u.v_off + i] = v;
    let p = params[u.p_off + i] * (1.0 - lr * wd);
    params[u.p_off + i] = p - lr * (m / u.bc1) / (sqrt(v / u.bc2) + u.eps);
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= u.n) { return; }
    update(i, u.lr, u.weight_decay);
}

@compute @workgroup_size(WG)
fn adam_step_per_model(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= u.n) { return; }
    let z = i / u.model_stride;
    update(i, hyper[u.h_off + 2u * z], hyper[u.h_off + 2u * z + 1u]);
}
