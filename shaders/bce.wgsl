// Binary cross-entropy with logits, batched over models: logits [batch, n], targets [batch, n]
// (t_stride 0 = one target vector shared by every model).
// forward:  out[z, i] = max(s, 0) - s * t + log(1 + exp(-|s|))          (per-sample loss)
// backward: out[z, i] = scale * (sigmoid(s) - t)                          (d loss / d logit)

struct Params {
    batch: u32, n: u32, s_off: u32, s_stride: u32,
    t_off: u32, t_stride: u32, out_off: u32, out_stride: u32,
    scale: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

@compute @workgroup_size(WG)
fn bce_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(wid, nwg, lid);
    if (idx >= p.batch * p.n) { return; }
    let z = idx / p.n;
    let i = idx % p.n;
    let s = logits[p.s_off + z * p.s_stride + i];
    let t = targets[p.t_off + z * p.t_stride + i];
    out[p.out_off + z * p.out_stride + i] = max(s, 0.0) - s * t + log(1.0 + exp(-abs(s)));
}

@compute @workgroup_size(WG)
fn bce_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(wid, nwg, lid);
    if (idx >= p.batch * p.n) { return; }
    let z = idx / p.n;
    let i = idx % p.n;
    let s = logits[p.s_off + z * p.s_stride + i];
    let t = targets[p.t_off + z * p.t_stride + i];
    out[p.out_off + z * p.out_stride + i] = p.scale * (sigmoid(s) - t);
}
