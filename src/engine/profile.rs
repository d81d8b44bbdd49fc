//! Per-kernel time for `regop bench --profile`. On the CPU backend, the wall time of every kernel
//! call (each kernel's CPU branch opens a `cpu_scope`); on a GPU, timestamp queries written at
//! the start and end of every dispatch, each in a compute pass of its own while profiling (see
//! `GpuDevice::profile`). Outside a profile nothing is recorded.

use crate::engine::device::Device;
use crate::error::Result;
use std::cell::RefCell;
use std::time::Instant;

thread_local! {
    static CPU_CALLS: RefCell<Option<Vec<(&'static str, f64)>>> = const { RefCell::new(None) };
}

/// Records its lifetime under `name` when a CPU profile is running.
pub struct CpuScope {
    name: &'static str,
    start: Instant,
}

pub fn cpu_scope(name: &'static str) -> Option<CpuScope> {
    CPU_CALLS.with(|c| c.borrow().is_some()).then(|| CpuScope {
        name,
        start: Instant::now(),
    })
}

impl Drop for CpuScope {
    fn drop(&mut self) {
        let s = self.start.elapsed().as_secs_f64();
        CPU_CALLS.with(|c| {
            if let Some(calls) = c.borrow_mut().as_mut() {
                calls.push((self.name, s));
            }
        });
    }
}

/// Time of one kernel (entry point) over a profiled region.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub calls: usize,
    pub seconds: f64,
    /// Of the summed kernel time of the region.
    pub share: f64,
}

/// Run `record` and return the time of every kernel it launched, largest first.
pub fn profile(dev: &Device, record: impl FnOnce() -> Result<()>) -> Result<Vec<KernelTime>> {
    let calls = match dev {
        Device::Cpu(_) => {
            CPU_CALLS.with(|c| *c.borrow_mut() = Some(Vec::new()));
            let r = record();
            let calls = CPU_CALLS
                .with(|c| c.borrow_mut().take())
                .unwrap_or_default();
            r?;
            calls
        }
        Device::Gpu(g) => g.profile(record)?,
    };
    Ok(summarise(&calls))
}

fn summarise(calls: &[(&'static str, f64)]) -> Vec<KernelTime> {
    let total: f64 = calls.iter().map(|c| c.1).sum();
    let mut by: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for &(k, s) in calls {
        let e = by.entry(k).or_default();
        e.0 += 1;
        e.1 += s;
    }
    let mut out: Vec<KernelTime> = by
        .into_iter()
        .map(|(k, (n, s))| KernelTime {
            kernel: k.to_string(),
            calls: n,
            seconds: s,
            share: if total > 0.0 { s / total } else { 0.0 },
        })
        .collect();
    out.sort_by(|a, b| {
        b.seconds
            .total_cmp(&a.seconds)
            .then(a.kernel.cmp(&b.kernel))
    });
    out
}

/// A text table of a profile.
pub fn table(title: &str, times: &[KernelTime]) -> String {
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    let mut s = format!("{title}: {:.3} ms in kernels\n", total * 1e3);
    s += &format!(
        "{:<28} {:>6} {:>12} {:>7}\n",
        "kernel", "calls", "time", "share"
    );
    for t in times {
        s += &format!(
            "{:<28} {:>6} {:>9.3} ms {:>6.1}%\n",
            t.kernel,
            t.calls,
            t.seconds * 1e3,
            t.share * 100.0
        );
    }
    s
}
