//! `regop bench`: GEMM GFLOP/s and batched-MLP training throughput on the chosen device.

use super::{Global, Printer};
use crate::bench::{run_all, table, BenchOptions};
use crate::device::Device;
use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Small shapes, two repetitions: for software adapters (lavapipe) and smoke tests.
    #[arg(long)]
    pub quick: bool,
}

#[derive(serde::Serialize)]
struct Report {
    device: String,
    hardware_gpu: bool,
    results: Vec<crate::bench::BenchResult>,
}

pub fn run(g: &Global, p: &Printer, a: Args) -> Result<i32> {
    let (dev, why) = Device::open(g.device)?;
    p.status(&format!("benchmarking on {} ({why})", dev.name()));
    let hardware_gpu =
        matches!(&dev, Device::Gpu(gpu) if crate::device::is_hardware(gpu.info.device_type));
    if dev.is_gpu() && !hardware_gpu && !a.quick {
        p.status("note: this adapter is a software rasteriser; its figures say nothing about GPU speed (try --quick)");
    }
    let results = run_all(
        &dev,
        &BenchOptions {
            quick: a.quick,
            seed: g.seed,
        },
    )?;
    if p.json {
        p.json(&Report {
            device: dev.name(),
            hardware_gpu,
            results,
        });
    } else {
        print!("{}", table(&dev.name(), &results));
    }
    Ok(0)
}
