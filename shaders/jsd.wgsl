// Jensen-Shannon divergence between two models' predictive distributions, per row, and its
// gradient with respect to the second model's logits (the first is held fixed). One logit per
// row means a Bernoulli output, read as two classes with logits (0, a). With M = (P + Q) / 2:
//   JSD   = 1/2 sum_k P_k log(P_k / M_k) + 1/2 sum_k Q_k log(Q_k / M_k)
//   dJSD/dQ_k = 1/2 log(Q_k / M_k) =: g_k,   dJSD/dq_j = Q_j (g_j - sum_k Q_k g_k)
// Everything is in log space, so saturated logits give no NaN.

struct Params {
    rows: u32, classes: u32, p_off: u32, q_off: u32,
    loss_off: u32, dq_off: u32, scale: f32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> pl: array<f32>;   // fixed logits [rows, classes]
@group(0) @binding(2) var<storage, read_write> ql: array<f32>;   // edited logits [rows, classes]
@group(0) @binding(3) var<storage, read_write> loss: array<f32>; // [rows]
@group(0) @binding(4) var<storage, read_write> dq: array<f32>;   // [rows, classes]

// Logit k of a row (two virtual classes when there is one logit).
fn logit(is_p: bool, r: u32, k: u32) -> f32 {
    if (p.classes == 1u) {
        if (k == 0u) { return 0.0; }
        if (is_p) { return pl[p.p_off + r]; }
        return ql[p.q_off + r];
    }
    if (is_p) { return pl[p.p_off + r * p.classes + k]; }
    return ql[p.q_off + r * p.classes + k];
}

fn logaddexp(a: f32, b: f32) -> f32 {
    let m = max(a, b);
    return m + log(1.0 + exp(-abs(a - b)));
}

@compute @workgroup_size(WG)
fn jsd(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = global_index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let k_n = max(p.classes, 2u);
    var lse_p = logit(true, r, 0u);
    var lse_q = logit(false, r, 0u);
    for (var k = 1u; k < k_n; k++) {
        lse_p = logaddexp(lse_p, logit(true, r, k));
        lse_q = logaddexp(lse_q, logit(false, r, k));
    }
    var total = 0.0;
    var qg = 0.0;
    for (var k = 0u; k < k_n; k++) {
        let lp = logit(true, r, k) - lse_p;
        let lq = logit(false, r, k) - lse_q;
        let lm = logaddexp(lp, lq) - log(2.0);
        total += 0.5 * (exp(lp) * (lp - lm) + exp(lq) * (lq - lm));
        qg += exp(lq) * 0.5 * (lq - lm);
    }
    loss[p.loss_off + r] = max(total, 0.0); // rounding can leave -1e-8 where P = Q
    for (var k = 0u; k < k_n; k++) {
        if (p.classes == 1u && k == 0u) { continue; }
        let lp = logit(true, r, k) - lse_p;
        let lq = logit(false, r, k) - lse_q;
        let lm = logaddexp(lp, lq) - log(2.0);
        let d = p.scale * exp(lq) * (0.5 * (lq - lm) - qg);
        if (p.classes == 1u) {
            dq[p.dq_off + r] = d;
        } else {
            dq[p.dq_off + r * p.classes + k] = d;
        }
    }
}
