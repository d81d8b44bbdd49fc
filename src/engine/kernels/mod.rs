//! Kernel families. Each file holds one family: its WGSL launch and its CPU reference, side by
//! side, with the shader of the same name in `shaders/`.

pub mod activation;
pub mod adam;
pub mod apply_edit;
pub mod axpy;
pub mod bce;
pub mod bias;
pub mod cross_entropy;
pub mod fairness;
pub mod film;
pub mod gather;
pub mod gemm;
pub mod jsd;
pub mod layernorm;
pub mod reduce;
pub mod segment;

/// Every shader, by name, for validation and for `regop info`.
pub const SHADERS: &[(&str, &str)] = &[
    (
        "activation",
        include_str!("../../../shaders/activation.wgsl"),
    ),
    ("adam", include_str!("../../../shaders/adam.wgsl")),
    ("axpy", include_str!("../../../shaders/axpy.wgsl")),
    ("bce", include_str!("../../../shaders/bce.wgsl")),
    ("bias", include_str!("../../../shaders/bias.wgsl")),
    (
        "cross_entropy",
        include_str!("../../../shaders/cross_entropy.wgsl"),
    ),
    (
        "apply_edit",
        include_str!("../../../shaders/apply_edit.wgsl"),
    ),
    ("fairness", include_str!("../../../shaders/fairness.wgsl")),
    ("film", include_str!("../../../shaders/film.wgsl")),
    ("gather", include_str!("../../../shaders/gather.wgsl")),
    ("gemm", include_str!("../../../shaders/gemm.wgsl")),
    ("jsd", include_str!("../../../shaders/jsd.wgsl")),
    ("layernorm", include_str!("../../../shaders/layernorm.wgsl")),
    ("reduce", include_str!("../../../shaders/reduce.wgsl")),
    ("segment", include_str!("../../../shaders/segment.wgsl")),
];

/// Parse and validate a shader's WGSL with naga, as wgpu would before compiling it (with the
/// prelude every shader gets, see `gpu::shader_source`). Needs no adapter.
pub fn validate_wgsl(shader: &str) -> Result<(), String> {
    let source = crate::engine::gpu::shader_source(shader);
    let source = source.as_str();
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(source))?;
    Ok(())
}
