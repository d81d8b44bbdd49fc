//! `cargo bench`: the engine benchmarks (GEMM, batched-MLP training) on the CPU backend and, when
//! one exists, on the hardware GPU, printed as tables. Same code as `regop bench`.
//! Set REGOP_BENCH_QUICK=1 for small shapes.

use regop::app::bench::{run_all, table, BenchOptions};
use regop::engine::device::{Device, DeviceChoice};

fn main() {
    let opts = BenchOptions {
        quick: std::env::var_os("REGOP_BENCH_QUICK").is_some(),
        seed: 0,
    };
    let cpu = Device::cpu();
    print!(
        "{}",
        table(&cpu.name(), &run_all(&cpu, &opts).expect("cpu benchmarks"))
    );
    match Device::open(DeviceChoice::Auto) {
        Ok((dev, _)) if dev.is_gpu() => {
            println!();
            print!("{}", table(&dev.name(), &run_all(&dev, &opts).expect("gpu benchmarks")));
        }
        _ => println!("\n(no hardware GPU adapter: GPU benchmarks skipped; `regop bench --device gpu --quick` runs them on a software adapter)"),
    }
}
