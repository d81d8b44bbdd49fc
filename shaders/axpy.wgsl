// Elementwise arithmetic on windows of one buffer or of two.
// axpy: y = alpha * x + beta * y (beta = 0 copies, never reading y: it may hold NaN); residual
//       connections and gradient copies.
// mul:  y = y * x; masks (pruned or removed weights held at zero, and their gradients).

struct Params {
    n: u32, x_off: u32, y_off: u32, _pad0: u32,
    alpha: f32, beta: f32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn axpy(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    var v = p.alpha * x[p.x_off + i];
    if (p.beta != 0.0) {
        v += p.beta * y[p.y_off + i];
    }
    y[p.y_off + i] = v;
}

@compute @workgroup_size(WG)
fn mul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    y[p.y_off + i] = y[p.y_off + i] * x[p.x_off + i];
}
