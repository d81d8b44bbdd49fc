//! The `regop` binary's parts: the command line, report files and plots, benchmarks.

pub mod bench;
pub mod bench_edit;
pub mod cli;
pub mod report;
