// Differentiable fairness penalties, one invocation per model over its rows (a minibatch of at
// most a few thousand), with soft decisions p = sigmoid(a * logit), a = sharpness:
//   DP: sum over groups k of (rate_k - rate)^2, rate_k = mean of p over group k's rows
//   EO: the same within positive rows (soft TPR) plus within negative rows (soft FPR)
// backward: dlogit[r] += lambda[z] * dL/dp_r * a p_r (1 - p_r), with for row r of group k in cell c
//   dL/dp_r = 2 (rate_k - rate) / n_k - (2 / n) * sum_j (rate_j - rate)      (sums within c)
// Groups are at most MAX_GROUPS; the loss of model z goes to loss[z].

const MAX_GROUPS: u32 = 8u;

struct Params {
    models: u32, rows: u32, groups: u32, eo: u32,
    s_off: u32, y_off: u32, g_off: u32, lam_off: u32,
    loss_off: u32, ds_off: u32, sharpness: f32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;   // [models, rows]
@group(0) @binding(2) var<storage, read_write> data: array<f32>;     // labels [models, rows], lambda [models]
@group(0) @binding(3) var<storage, read_write> groups: array<u32>;   // group of each row [models, rows]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;      // dlogits [models, rows]
@group(0) @binding(5) var<storage, read_write> loss_out: array<f32>; // loss [models]

fn sig(v: f32) -> f32 {
    if (v >= 0.0) { return 1.0 / (1.0 + exp(-v)); }
    let e = exp(v);
    return e / (1.0 + e);
}

@compute @workgroup_size(WG)
fn fairness_penalty(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let z = global_index(wid, nwg, lid);
    if (z >= p.models) { return; }
    let base = z * p.rows;
    // Cells: (label class c, group k); c is 0 for DP (one class), 0/1 for EO.
    var n: array<f32, 16>;
    var s: array<f32, 16>;
    for (var r = 0u; r < p.rows; r++) {
        let c = select(0u, u32(data[p.y_off + base + r] > 0.5), p.eo != 0u);
        let k = c * MAX_GROUPS + groups[p.g_off + base + r];
        n[k] += 1.0;
        s[k] += sig(p.sharpness * logits[p.s_off + base + r]);
    }
    var loss = 0.0;
    // Per cell: total count and rate, and the sum of group deviations.
    var rate_all: array<f32, 2>;
    var n_all: array<f32, 2>;
    var dev_sum: array<f32, 2>;
    let classes = select(1u, 2u, p.eo != 0u);
    for (var c = 0u; c < classes; c++) {
        var tn = 0.0;
        var ts = 0.0;
        for (var k = 0u; k < p.groups; k++) { tn += n[c * MAX_GROUPS + k]; ts += s[c * MAX_GROUPS + k]; }
        n_all[c] = tn;
        rate_all[c] = select(0.0, ts / tn, tn > 0.0);
        var ds = 0.0;
        for (var k = 0u; k < p.groups; k++) {
            let nk = n[c * MAX_GROUPS + k];
            if (nk > 0.0) {
                let d = s[c * MAX_GROUPS + k] / nk - rate_all[c];
                loss += d * d;
                ds += d;
            }
        }
        dev_sum[c] = ds;
    }
    let lam = data[p.lam_off + z];
    loss_out[p.loss_off + z] = loss;
    for (var r = 0u; r < p.rows; r++) {
        let c = select(0u, u32(data[p.y_off + base + r] > 0.5), p.eo != 0u);
        let k = c * MAX_GROUPS + groups[p.g_off + base + r];
        let pr = sig(p.sharpness * logits[p.s_off + base + r]);
        let d = 2.0 * (s[k] / n[k] - rate_all[c]) / n[k] - 2.0 / n_all[c] * dev_sum[c];
        let i = p.ds_off + base + r;
        out[i] = out[i] + lam * d * p.sharpness * pr * (1.0 - pr);
    }
}
