// Bias add, batched: Y[z, r, j] += bias[z, j] for a batch of row-major [rows, cols] matrices.
// Its backward (the bias gradient) is a column sum: see reduce.wgsl.

struct Params {
    rows: u32, cols: u32, batch: u32, total: u32,
    y_off: u32, y_stride: u32, b_off: u32, b_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> bias: array<f32>;

@compute @workgroup_size(WG)
fn bias_add(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(wid, nwg, lid);
    if (idx >= p.total) {
        return;
    }
    let per = p.rows * p.cols;
    let z = idx / per;
    let rem = idx % per;
    let j = rem % p.cols;
    let yi = p.y_off + z * p.y_stride + rem;
    y[yi] = y[yi] + bias[p.b_off + z * p.b_stride + j];
}
