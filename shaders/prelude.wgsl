// Prepended by the engine to every shader (see `shader_source` in src/engine/gpu.rs), after the
// line that defines WG, the workgroup size of the 1-D kernels (`gpu::WORKGROUP`).

// The linear index of an invocation of a 1-D kernel whose grid `grid_1d` folded into two
// dimensions when it was larger than the per-dimension limit. Kernels bound-check it.
fn global_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

