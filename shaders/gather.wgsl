// Row gather: out[r, :] = src[idx[r], :] for r < n, rows of `cols` values. Row indices are stored
// as exact f32 (below 2^24). It lets every model of a batch draw its own minibatch from one copy of
// the data on the device: only the indices travel per step.

struct Params {
    n: u32, cols: u32, src_off: u32, idx_off: u32,
    out_off: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> idx: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn gather_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    let row = u32(idx[p.idx_off + r]);
    out[p.out_off + i] = src[p.src_off + row * p.cols + c];
}
