//! Every WGSL file must parse and validate with naga: runs without any adapter, so a broken
//! shader fails `cargo test` on any machine.

#[test]
fn every_shader_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "wgsl"));
    files.sort();
    assert!(!files.is_empty(), "no shaders found in {}", dir.display());
    // Every file on disk is also embedded in the library, so none is dead: the prelude in
    // every shader, each other file as a shader of its own.
    for f in &files {
        let name = f.file_stem().unwrap().to_str().unwrap();
        let src = std::fs::read_to_string(f).unwrap();
        if name == "prelude" {
            assert!(regop::engine::gpu::shader_source("").ends_with(&src));
            continue;
        }
        assert!(
            regop::engine::kernels::SHADERS
                .iter()
                .any(|(n, s)| *n == name && *s == src),
            "{name}.wgsl is not in kernels::SHADERS"
        );
        if let Err(e) = regop::engine::kernels::validate_wgsl(&src) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn a_broken_shader_is_rejected() {
    let bad = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    assert!(regop::engine::kernels::validate_wgsl(bad).is_err());
    let unbound = "@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n@compute @workgroup_size(1) fn main() { a[0] = b; }";
    assert!(regop::engine::kernels::validate_wgsl(unbound).is_err());
}
