//! regop: edit trained neural networks for requirement compliance, on any GPU through wgpu/WGSL or
//! on the CPU. The data path reads straight through: model file -> parameter graph -> editor ->
//! edited weights -> edited model file -> report.
//!
//! The crate is built in layers, each using only the layers below it (`tests/layers.rs` checks):
//!
//!   app           the `regop` binary: command line, report files and plots, benchmarks
//!   workflows     what users run: edit, train an editor, build a zoo, fit, baselines, compare
//!   requirement   what is asked of a model and how it is checked: asks, specs, metrics, verify
//!   io            files: model files (safetensors), datasets, atomic output
//!   networks      the networks the engine runs: batched MLPs, parameter graphs, the editor
//!   engine        the two backends and their kernels: device, GPU recorder, buffers, kernels
//!
//! `error` is shared by all of them.

pub mod error;

pub mod app;
pub mod engine;
pub mod io;
pub mod networks;
pub mod requirement;
pub mod workflows;

pub use engine::buffer::{Buf, View};
pub use engine::device::{Device, DeviceChoice};
pub use error::{Error, Result};
