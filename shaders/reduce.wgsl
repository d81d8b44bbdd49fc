// Row and column sums of a batch of row-major [rows, cols] matrices, scaled, optionally added to
// the output. One invocation per output value gathers its whole row or column: deterministic,
// no atomics (WGSL has no float atomics). col_sum is also the bias gradient.

struct Params {
    rows: u32, cols: u32, batch: u32, accumulate: u32,
    x_off: u32, x_stride: u32, out_off: u32, out_stride: u32,
    scale: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn put(oi: u32, v: f32) {
    if (p.accumulate != 0u) {
        out[oi] = out[oi] + v;
    } else {
        out[oi] = v;
    }
}

// out[z, r] = scale * sum_j x[z, r, j]
@compute @workgroup_size(WG)
fn row_sum(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(wid, nwg, lid);
    if (idx >= p.batch * p.rows) { return; }
    let z = idx / p.rows;
    let r = idx % p.rows;
    let base = p.x_off + z * p.x_stride + r * p.cols;
    var acc = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        acc += x[base + j];
    }
    put(p.out_off + z * p.out_stride + r, p.scale * acc);
}

// out[z, j] = scale * sum_r x[z, r, j]
@compute @workgroup_size(WG)
fn col_sum(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(wid, nwg, lid);
    if (idx >= p.batch * p.cols) { return; }
    let z = idx / p.cols;
    let j = idx % p.cols;
    let base = p.x_off + z * p.x_stride + j;
    var acc = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        acc += x[base + r * p.cols];
    }
    put(p.out_off + z * p.out_stride + j, p.scale * acc);
}
