// Softmax cross-entropy, batched over models: logits [batch, rows, classes], labels [batch, rows]
// holding class indices as exact f32 (l_stride 0 = labels shared by every model).
// forward:  out[z, r] = logsumexp(s[z, r, :]) - s[z, r, label]
// backward: out[z, r, c] = scale * (softmax(s[z, r, :])[c] - [c == label])
// One invocation per row; classes are few, so the row is walked sequentially.

struct Params {
    batch: u32, rows: u32, classes: u32, _pad0: u32,
    s_off: u32, s_stride: u32, l_off: u32, l_stride: u32,
    out_off: u32, out_stride: u32, scale: f32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> labels: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// (max, sum of exp(logit - max)) of the row of logits starting at `base`.
fn row_stats(base: u32) -> vec2<f32> {
    var mx = logits[base];
    for (var c = 1u; c < p.classes; c++) { mx = max(mx, logits[base + c]); }
    var sum = 0.0;
    for (var c = 0u; c < p.classes; c++) { sum += exp(logits[base + c] - mx); }
    return vec2<f32>(mx, sum);
}


@compute @workgroup_size(WG)
fn cross_entropy_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(wid, nwg, lid);
    if (idx >= p.batch * p.rows) { return; }
    let z = idx / p.rows;
    let r = idx % p.rows;
    let base = p.s_off + z * p.s_stride + r * p.classes;
    let st = row_stats(base);
    let label = u32(labels[p.l_off + z * p.l_stride + r]);
    out[p.out_off + z * p.out_stride + r] = st.x + log(st.y) - logits[base + label];
}

@compute @workgroup_size(WG)
fn cross_entropy_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(wid, nwg, lid);
    if (idx >= p.batch * p.rows) { return; }
    let z = idx / p.rows;
    let r = idx % p.rows;
    let base = p.s_off + z * p.s_stride + r * p.classes;
    let st = row_stats(base);
    let mx = st.x;
    let sum = st.y;
    let label = u32(labels[p.l_off + z * p.l_stride + r]);
    let obase = p.out_off + z * p.out_stride + r * p.classes;
    for (var c = 0u; c < p.classes; c++) {
        let prob = exp(logits[base + c] - mx) / sum;
        out[obase + c] = p.scale * (prob - select(0.0, 1.0, c == label));
    }
}
