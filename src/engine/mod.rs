//! The engine: one handle over two backends (wgpu and the CPU) and the kernels both run.
//! Holds no networks and no files. `linalg` is the small dense host algebra (Gram matrices,
//! Cholesky solves) of the rules that re-solve weights and of the data's column moments.

pub mod buffer;
pub mod device;
pub mod gpu;
pub mod kernels;
pub mod linalg;
pub mod profile;
