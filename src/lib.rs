//! regop: edit trained neural networks for requirement compliance, on any GPU through wgpu/WGSL or
//! on the CPU. The data path reads straight through: model file -> parameter graph -> editor ->
//! edited weights -> edited model file -> report; this crate grows one module per step.

pub mod baselines;
pub mod bench;
pub mod bench_edit;
pub mod buffer;
pub mod cli;
pub mod data;
pub mod device;
pub mod edit;
pub mod editor;
pub mod error;
pub mod fit;
pub mod gpu;
pub mod graph;
pub mod io;
pub mod kernels;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod postprocess;
pub mod profile;
pub mod report;
pub mod train;
pub mod zoo;

pub use buffer::{Buf, View};
pub use device::{Device, DeviceChoice};
pub use error::{Error, Result};
