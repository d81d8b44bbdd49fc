// Segment reductions over CSR ranges: out[s, :] (+)= k_s * sum_{j in offsets[s]..offsets[s+1]}
// values[row(j), :], with row(j) = perm[j] (or j without a permutation) and k_s = 1 (sum) or
// 1/count (mean; 0 for an empty segment). With a window, only rows lo..hi count and `values`
// holds just those rows; the mean still divides by the whole count, so the windows of a
// partition accumulate to the mean over all rows. One invocation per output value walks its range: a
// deterministic gather, never a scatter (WGSL has no float atomics).
// Uses: mean aggregation of edge messages by destination (edges are sorted by destination) and
// by source (through the source permutation); every scatter-add backward (edge gradients summed
// to nodes, node gradients summed per model, embedding gradients summed per positional id).

struct Params {
    n_seg: u32, cols: u32, val_off: u32, perm_off: u32,
    off_off: u32, out_off: u32, use_perm: u32, mean: u32,
    accumulate: u32, use_window: u32, lo: u32, hi: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> perm: array<u32>;
@group(0) @binding(3) var<storage, read_write> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn segment_reduce(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = global_index(wid, nwg, lid);
    if (i >= p.n_seg * p.cols) { return; }
    let s = i / p.cols;
    let c = i % p.cols;
    let start = offsets[p.off_off + s];
    let end = offsets[p.off_off + s + 1u];
    // Without a permutation the window is a range: clip to it (lo = 0, hi = max otherwise).
    var a = start;
    var b = end;
    if (p.use_perm == 0u) { a = max(a, p.lo); b = min(b, p.hi); }
    var acc = 0.0;
    for (var j = a; j < b; j++) {
        var row = j;
        if (p.use_perm != 0u) { row = perm[p.perm_off + j]; }
        if (row < p.lo || row >= p.hi) { continue; }
        acc += values[p.val_off + (row - p.lo) * p.cols + c];
    }
    if (p.mean != 0u) {
        acc = select(0.0, acc / f32(end - start), end > start);
    }
    if (p.accumulate != 0u) {
        acc += out[p.out_off + i];
    }
    out[p.out_off + i] = acc;
}
