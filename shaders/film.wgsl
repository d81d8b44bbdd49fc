// FiLM conditioning: y[n, :] = x[n, :] * (1 + gamma[m, :]) + beta[m, :], m = model of row n.
// gb holds [gamma | beta] per model ([models, 2 * cols]), computed from the conditioning vector.
// forward and backward_input: one invocation per value. backward_params: one invocation per
// (model, column), walking the model's contiguous row range offsets[m]..offsets[m+1]:
//   dgamma[m, c] = sum dy * x,  dbeta[m, c] = sum dy.

struct Params {
    rows: u32, cols: u32, models: u32, x_off: u32,
    gb_off: u32, y_off: u32, model_off: u32, off_off: u32,
    dy_off: u32, dx_off: u32, dgb_off: u32, accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;        // activations (x, y)
@group(0) @binding(2) var<storage, read_write> gb: array<f32>;       // gamma | beta per model
@group(0) @binding(3) var<storage, read_write> graph: array<u32>;    // model of each row; row offsets per model
@group(0) @binding(4) var<storage, read_write> g: array<f32>;        // activation gradients (dy, dx)
@group(0) @binding(5) var<storage, read_write> dgb: array<f32>;      // d gamma | d beta per model


@compute @workgroup_size(WG)
fn film_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.rows * p.cols) { return; }
    let n = i / p.cols;
    let c = i % p.cols;
    let m = graph[p.model_off + n];
    let base = p.gb_off + m * 2u * p.cols;
    x[p.y_off + i] = x[p.x_off + i] * (1.0 + gb[base + c]) + gb[base + p.cols + c];
}

@compute @workgroup_size(WG)
fn film_backward_input(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.rows * p.cols) { return; }
    let n = i / p.cols;
    let c = i % p.cols;
    let m = graph[p.model_off + n];
    var d = g[p.dy_off + i] * (1.0 + gb[p.gb_off + m * 2u * p.cols + c]);
    if (p.accumulate != 0u) { d += g[p.dx_off + i]; }
    g[p.dx_off + i] = d;
}

@compute @workgroup_size(WG)
fn film_backward_params(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.models * p.cols) { return; }
    let m = i / p.cols;
    let c = i % p.cols;
    var dgamma = 0.0;
    var dbeta = 0.0;
    for (var n = graph[p.off_off + m]; n < graph[p.off_off + m + 1u]; n++) {
        let dy = g[p.dy_off + n * p.cols + c];
        dgamma += dy * x[p.x_off + n * p.cols + c];
        dbeta += dy;
    }
    let o = p.dgb_off + m * 2u * p.cols;
    if (p.accumulate != 0u) {
        dgamma += dgb[o + c];
        dbeta += dgb[o + p.cols + c];
    }
    dgb[o + c] = dgamma;
    dgb[o + p.cols + c] = dbeta;
}
