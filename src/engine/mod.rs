//! The engine: one handle over two backends (wgpu and the CPU) and the kernels both run.
//! Holds no networks and no files.

pub mod buffer;
pub mod device;
pub mod gpu;
pub mod kernels;
pub mod profile;
