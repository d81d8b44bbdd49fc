// Batched GEMM: C[z] = op(A[z]) @ op(B[z]) (+ C[z] when accumulate), row-major, z = workgroup z.
// op(A) is m x k: stored m x k, or k x m when trans_a. op(B) is k x n: stored k x n, or n x k when
// trans_b. Batch strides of 0 share an operand across the batch (one data batch, many models).
// Versions: gemm_naive  - one invocation per output, the reference and the small-shape kernel.
//           gemm_tiled  - 64x64 output tile per workgroup through workgroup memory, 4x4 outputs
//                         per invocation held in registers; loads coalesced for either layout.
//           gemm_narrow - the same for outputs at most 32 wide (the editor's [edges, hidden]
//                         products): 128x32 tiles, 8x2 outputs per invocation, so no half-empty
//                         64-wide tiles.

struct Params {
    m: u32, n: u32, k: u32, accumulate: u32,
    a_off: u32, b_off: u32, c_off: u32, trans_a: u32,
    a_stride: u32, b_stride: u32, c_stride: u32, trans_b: u32,
    _pad0: u32, _pad1: u32, _pad2: u32, _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// op(A)[i, kk] of batch item z
fn load_a(z: u32, i: u32, kk: u32) -> f32 {
    let base = p.a_off + z * p.a_stride;
    if (p.trans_a != 0u) {
        return a[base + kk * p.m + i];
    }
    return a[base + i * p.k + kk];
}

// op(B)[kk, j] of batch item z
fn load_b(z: u32, kk: u32, j: u32) -> f32 {
    let base = p.b_off + z * p.b_stride;
    if (p.trans_b != 0u) {
        return b[base + j * p.k + kk];
    }
    return b[base + kk * p.n + j];
}

fn store_c(z: u32, i: u32, j: u32, v: f32) {
    let ci = p.c_off + z * p.c_stride + i * p.n + j;
    if (p.accumulate != 0u) {
        c[ci] = c[ci] + v;
    } else {
        c[ci] = v;
    }
}

@compute @workgroup_size(16, 16, 1)
fn gemm_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let i = gid.y;
    let z = gid.z;
    if (i >= p.m || j >= p.n) {
        return;
    }
    var acc = 0.0;
    for (var kk = 0u; kk < p.k; kk++) {
        acc += load_a(z, i, kk) * load_b(z, kk, j);
    }
    store_c(z, i, j, acc);
}

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>; // [TK][TM]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TN]

@compute @workgroup_size(16, 16, 1)
fn gemm_tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 16u + tx;
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let z = wid.z;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 1024 values of each tile, 4 per invocation; consecutive invocations read consecutive
        // addresses of whichever layout the operand is stored in.
        for (var q = 0u; q < 4u; q++) {
            let l = tid + q * 256u;
            var kk: u32;
            var mm: u32;
            if (p.trans_a != 0u) { kk = l / TM; mm = l % TM; } else { mm = l / TK; kk = l % TK; }
            var va = 0.0;
            if (row0 + mm < p.m && k0 + kk < p.k) { va = load_a(z, row0 + mm, k0 + kk); }
            tile_a[kk * TM + mm] = va;
            var nn: u32;
            if (p.trans_b != 0u) { nn = l / TK; kk = l % TK; } else { kk = l / TN; nn = l % TN; }
            var vb = 0.0;
            if (col0 + nn < p.n && k0 + kk < p.k) { vb = load_b(z, k0 + kk, col0 + nn); }
            tile_b[kk * TN + nn] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var ar: array<f32, 4>;
            var br: array<f32, 4>;
            for (var r = 0u; r < 4u; r++) { ar[r] = tile_a[kk * TM + ty + 16u * r]; }
            for (var s = 0u; s < 4u; s++) { br[s] = tile_b[kk * TN + tx + 16u * s]; }
            for (var r = 0u; r < 4u; r++) {
                for (var s = 0u; s < 4u; s++) {
                    acc[r * 4u + s] += ar[r] * br[s];
                }
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        for (var s = 0u; s < 4u; s++) {
            let i = row0 + ty + 16u * r;
            let j = col0 + tx + 16u * s;
            if (i < p.m && j < p.n) {
                store_c(z, i, j, acc[r * 4u + s]);
            }
        }
    }
}

const NM: u32 = 128u;
const NN: u32 = 32u;
var<workgroup> narrow_a: array<f32, 2048>; // [TK][NM]
var<workgroup> narrow_b: array<f32, 512>; // [TK][NN]

@compute @workgroup_size(16, 16, 1)
fn gemm_narrow(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 16u + tx;
    let row0 = wid.y * NM;
    let col0 = wid.x * NN;
    let z = wid.z;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 2048 values of the A tile (8 per invocation) and 512 of the B tile (2 per
        // invocation), consecutive invocations at consecutive addresses of either layout.
        for (var q = 0u; q < 8u; q++) {
            let l = tid + q * 256u;
            var kk: u32;
            var mm: u32;
            if (p.trans_a != 0u) { kk = l / NM; mm = l % NM; } else { mm = l / TK; kk = l % TK; }
            var va = 0.0;
            if (row0 + mm < p.m && k0 + kk < p.k) { va = load_a(z, row0 + mm, k0 + kk); }
            narrow_a[kk * NM + mm] = va;
        }
        for (var q = 0u; q < 2u; q++) {
            let l = tid + q * 256u;
            var kk: u32;
            var nn: u32;
            if (p.trans_b != 0u) { nn = l / TK; kk = l % TK; } else { kk = l / NN; nn = l % NN; }
            var vb = 0.0;
            if (col0 + nn < p.n && k0 + kk < p.k) { vb = load_b(z, k0 + kk, col0 + nn); }
            narrow_b[kk * NN + nn] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var ar: array<f32, 8>;
            let b0 = narrow_b[kk * NN + tx];
            let b1 = narrow_b[kk * NN + tx + 16u];
            for (var r = 0u; r < 8u; r++) { ar[r] = narrow_a[kk * NM + ty + 16u * r]; }
            for (var r = 0u; r < 8u; r++) {
                acc[2u * r] += ar[r] * b0;
                acc[2u * r + 1u] += ar[r] * b1;
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 8u; r++) {
        for (var s = 0u; s < 2u; s++) {
            let i = row0 + ty + 16u * r;
            let j = col0 + tx + 16u * s;
            if (i < p.m && j < p.n) {
                store_c(z, i, j, acc[2u * r + s]);
            }
        }
    }
}
