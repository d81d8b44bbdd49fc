// Applying an edit: the editor's head outputs turned into edited MLP parameters, and back.
// Per parameter p (packed model-major, W then b per layer), with head row h = map[p] holding
// (delta, mask logit) for the edge or node that p is:
//   v = orig[p] + gamma * delta
//   kind 0 (bias): out = v;  kind 2 (weight of a removed input column): out = 0 exactly;
//   kind 1 (weight): score s = prior[p] + logit, out = v if s >= thr[model] else 0
//   (prior is a data-free importance of the original weight computed on the host, e.g. its
//   log-magnitude, so deltas never flip the mask: only logits move it)
// thr is the score of the model's k-th largest weight when pruning to a sparsity, -inf else.
// Backward treats the hard mask as sigmoid((s - thr) / tau) (straight-through): per head row h,
// p = inv[h] (NONE for input nodes, whose rows get zero):
//   dv = dout * m,  dlogit = dout * v * sig'((s - thr) / tau) / tau
//   ddelta = gamma * dv
// tau <= 0 keeps the mask fixed (no logit gradient). kind holds model << 2 | kind.

const NONE: u32 = 0xffffffffu;

struct Params {
    n: u32, orig_off: u32, head_off: u32, map_off: u32,
    kind_off: u32, thr_off: u32, out_off: u32, dout_off: u32,
    gamma: f32, tau: f32, prior_off: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;  // orig [P], prior [P], thr [models]
@group(0) @binding(2) var<storage, read_write> head: array<f32>;  // [rows, 2]
@group(0) @binding(3) var<storage, read_write> idx: array<u32>;   // map [P] or inv [rows]; kind [P]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // edited [P] or dhead [rows, 2]

fn dsig(x: f32) -> f32 {
    let e = exp(-abs(x));
    return e / ((1.0 + e) * (1.0 + e));
}

@compute @workgroup_size(WG)
fn apply_edit_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let h = idx[p.map_off + i];
    let km = idx[p.kind_off + i];
    let kind = km & 3u;
    let v = data[p.orig_off + i] + p.gamma * head[p.head_off + 2u * h];
    var o = v;
    if (kind == 2u) {
        o = 0.0;
    } else if (kind == 1u) {
        let s = data[p.prior_off + i] + head[p.head_off + 2u * h + 1u];
        if (s < data[p.thr_off + (km >> 2u)]) { o = 0.0; }
    }
    out[p.out_off + i] = o;
}

// Backward: n is the number of head rows and map_off is inv's offset.
@group(0) @binding(5) var<storage, read_write> dout: array<f32>;  // gradient of edited [P]

@compute @workgroup_size(WG)
fn apply_edit_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let h = global_index(wid, nwg, lid);
    if (h >= p.n) { return; }
    let i = idx[p.map_off + h];
    var dd = 0.0;
    var dl = 0.0;
    if (i != NONE) {
        let km = idx[p.kind_off + i];
        let kind = km & 3u;
        let g = dout[p.dout_off + i];
        let v = data[p.orig_off + i] + p.gamma * head[p.head_off + 2u * h];
        if (kind == 0u) {
            dd = p.gamma * g;
        } else if (kind == 1u) {
            let s = data[p.prior_off + i] + head[p.head_off + 2u * h + 1u];
            let t = data[p.thr_off + (km >> 2u)];
            let m = select(0.0, 1.0, s >= t);
            dd = p.gamma * g * m;
            if (p.tau > 0.0) { dl = g * v * dsig((s - t) / p.tau) / p.tau; }
        }
    }
    out[p.out_off + 2u * h] = dd;
    out[p.out_off + 2u * h + 1u] = dl;
}

// Holding the mask's count while training a learned mask (tau > 0). The mask keeps k weights of
// each model whatever the logits: as a soft mask whose threshold moves to keep its sum at k, a
// score's gradient is its straight-through gradient dl less its surrogate weight
// w = sig'((s - thr) / tau) / tau times (sum of dl) / (sum of w) over the model's weights.
// Both entries run per parameter p (n = P), a weight of model km >> 2 with head row map[p]:
//   mask_count_terms: out[2p] = dhead[2 map[p] + 1], out[2p + 1] = w (both 0 off weights);
//     the dout binding is dhead. `reduce` then sums them per model.
//   mask_count_hold: dhead[2 map[p] + 1] -= w * sums[2z] / sums[2z + 1] where the latter is
//     above 0; the out binding is dhead, dout is sums [models, 2].

fn surrogate_weight(i: u32, h: u32, km: u32) -> f32 {
    let s = data[p.prior_off + i] + head[p.head_off + 2u * h + 1u];
    let t = data[p.thr_off + (km >> 2u)];
    return dsig((s - t) / p.tau) / p.tau;
}

@compute @workgroup_size(WG)
fn mask_count_terms(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let h = idx[p.map_off + i];
    let km = idx[p.kind_off + i];
    var dl = 0.0;
    var w = 0.0;
    if ((km & 3u) == 1u) {
        dl = dout[p.dout_off + 2u * h + 1u];
        w = surrogate_weight(i, h, km);
    }
    out[p.out_off + 2u * i] = dl;
    out[p.out_off + 2u * i + 1u] = w;
}

@compute @workgroup_size(WG)
fn mask_count_hold(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let h = idx[p.map_off + i];
    let km = idx[p.kind_off + i];
    let z = km >> 2u;
    let total = dout[p.dout_off + 2u * z + 1u];
    if ((km & 3u) != 1u || total <= 0.0) { return; }
    let mean = dout[p.dout_off + 2u * z] / total;
    out[p.out_off + 2u * h + 1u] -= surrogate_weight(i, h, km) * mean;
}
