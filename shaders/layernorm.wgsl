// LayerNorm over the last axis of [rows, cols], with learned gain and bias:
//   y = (x - mean) * rstd * gamma + beta,  rstd = 1 / sqrt(var + eps)
// forward saves (mean, rstd) per row in `stats` for the backward.
// backward_input:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma (per row)
// backward_params: dgamma[c] (+)= sum_r dy * xhat, dbeta[c] (+)= sum_r dy    (per column)

struct Params {
    rows: u32, cols: u32, x_off: u32, y_off: u32,
    w_off: u32, stats_off: u32, dy_off: u32, dx_off: u32,
    dw_off: u32, accumulate: u32, eps: f32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;      // input x (and y / dy / dx)
@group(0) @binding(2) var<storage, read_write> w: array<f32>;      // gamma then beta (and their grads)
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;  // mean, rstd per row
@group(0) @binding(4) var<storage, read_write> g: array<f32>;      // activation gradients: dy, dx
@group(0) @binding(5) var<storage, read_write> gw: array<f32>;     // dgamma then dbeta


@compute @workgroup_size(WG)
fn layernorm_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = global_index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let base = p.x_off + r * p.cols;
    var mean = 0.0;
    for (var c = 0u; c < p.cols; c++) { mean += x[base + c]; }
    mean = mean / f32(p.cols);
    var v = 0.0;
    for (var c = 0u; c < p.cols; c++) { let d = x[base + c] - mean; v += d * d; }
    let rstd = 1.0 / sqrt(v / f32(p.cols) + p.eps);
    stats[p.stats_off + 2u * r] = mean;
    stats[p.stats_off + 2u * r + 1u] = rstd;
    for (var c = 0u; c < p.cols; c++) {
        x[p.y_off + r * p.cols + c] = (x[base + c] - mean) * rstd * w[p.w_off + c] + w[p.w_off + p.cols + c];
    }
}

@compute @workgroup_size(WG)
fn layernorm_backward_input(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = global_index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let mean = stats[p.stats_off + 2u * r];
    let rstd = stats[p.stats_off + 2u * r + 1u];
    var mg = 0.0;
    var mgx = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let gc = g[p.dy_off + r * p.cols + c] * w[p.w_off + c];
        let xhat = (x[p.x_off + r * p.cols + c] - mean) * rstd;
        mg += gc;
        mgx += gc * xhat;
    }
    mg = mg / f32(p.cols);
    mgx = mgx / f32(p.cols);
    for (var c = 0u; c < p.cols; c++) {
        let gc = g[p.dy_off + r * p.cols + c] * w[p.w_off + c];
        let xhat = (x[p.x_off + r * p.cols + c] - mean) * rstd;
        var d = rstd * (gc - mg - xhat * mgx);
        if (p.accumulate != 0u) { d += g[p.dx_off + r * p.cols + c]; }
        g[p.dx_off + r * p.cols + c] = d;
    }
}

@compute @workgroup_size(WG)
fn layernorm_backward_params(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = global_index(wid, nwg, lid);
    if (c >= p.cols) { return; }
    var dgamma = 0.0;
    var dbeta = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        let dy = g[p.dy_off + r * p.cols + c];
        let xhat = (x[p.x_off + r * p.cols + c] - stats[p.stats_off + 2u * r]) * stats[p.stats_off + 2u * r + 1u];
        dgamma += dy * xhat;
        dbeta += dy;
    }
    if (p.accumulate != 0u) {
        dgamma += gw[p.dw_off + c];
        dbeta += gw[p.dw_off + p.cols + c];
    }
    gw[p.dw_off + c] = dgamma;
    gw[p.dw_off + p.cols + c] = dbeta;
}
