// Row gather: out[r, :] (+)= src[idx[r], :] * (scale[idx[r]] when use_scale), rows of `cols`.
// Index buffers hold u32 values (bit patterns in the f32 buffers on the host side), exact at any
// size. Uses: every model of a batch drawing its own minibatch from one copy of the data; edge
// inputs gathered from their source and destination nodes; the backward of a mean aggregation
// (node gradient gathered to each edge, scaled by 1/degree).

struct Params {
    n: u32, cols: u32, src_off: u32, idx_off: u32,
    out_off: u32, accumulate: u32, use_scale: u32, scale_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> scale: array<f32>;

@compute @workgroup_size(WG)
fn gather_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    let row = idx[p.idx_off + r];
    var v = src[p.src_off + row * p.cols + c];
    if (p.use_scale != 0u) {
        v = v * scale[p.scale_off + row];
    }
    if (p.accumulate != 0u) {
        v = v + out[p.out_off + i];
    }
    out[p.out_off + i] = v;
}
