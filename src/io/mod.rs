//! Files: model files (safetensors in PyTorch naming), datasets read from their standard raw
//! files, and atomic output.

pub mod data;
pub mod files;
pub mod model;

pub use files::{read, write_atomic};
