//! `regop info`: every adapter wgpu sees, the device `--device` picks and why, and its limits and
//! optional features.

use super::{Global, Printer};
use crate::engine::device::{list_adapters, Device};
use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

#[derive(serde::Serialize)]
struct Info {
    adapters: Vec<crate::engine::device::AdapterReport>,
    chosen: String,
    reason: String,
    limits: Option<Limits>,
    features: Option<Features>,
}

#[derive(serde::Serialize)]
struct Limits {
    max_buffer_size: u64,
    max_storage_buffer_binding_size: u64,
    max_storage_buffers_per_shader_stage: u32,
    max_compute_workgroup_storage_size: u32,
    max_compute_invocations_per_workgroup: u32,
    max_compute_workgroups_per_dimension: u32,
}

#[derive(serde::Serialize)]
struct Features {
    timestamp_query: bool,
    shader_f16: bool,
}

pub fn run(g: &Global, p: &Printer, _a: Args) -> Result<i32> {
    let adapters = list_adapters();
    let (dev, reason) = Device::open(g.device)?;
    let (limits, features) = match &dev {
        Device::Gpu(gpu) => (
            Some(Limits {
                max_buffer_size: gpu.limits.max_buffer_size,
                max_storage_buffer_binding_size: gpu.limits.max_storage_buffer_binding_size,
                max_storage_buffers_per_shader_stage: gpu
                    .limits
                    .max_storage_buffers_per_shader_stage,
                max_compute_workgroup_storage_size: gpu.limits.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: gpu
                    .limits
                    .max_compute_invocations_per_workgroup,
                max_compute_workgroups_per_dimension: gpu
                    .limits
                    .max_compute_workgroups_per_dimension,
            }),
            Some(Features {
                timestamp_query: gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY),
                shader_f16: gpu.features.contains(wgpu::Features::SHADER_F16),
            }),
        ),
        Device::Cpu(_) => (None, None),
    };
    let info = Info {
        adapters,
        chosen: dev.name(),
        reason,
        limits,
        features,
    };
    if p.json {
        p.json(&info);
        return Ok(0);
    }
    println!("adapters seen:");
    if info.adapters.is_empty() {
        println!("  (none: no Vulkan/Metal/DX12 driver; install one, or mesa-vulkan-drivers for lavapipe)");
    }
    for a in &info.adapters {
        let kind = if a.hardware {
            "hardware"
        } else {
            "software: never picked by --device auto"
        };
        println!(
            "  {} [{} {}] {} ({kind})",
            a.name, a.backend, a.device_type, a.driver
        );
    }
    println!("chosen: {}", info.chosen);
    println!("why:    {}", info.reason);
    if let (Some(l), Some(f)) = (&info.limits, &info.features) {
        println!("limits:");
        println!(
            "  max buffer size                 {:>14} bytes",
            l.max_buffer_size
        );
        println!(
            "  max storage binding             {:>14} bytes",
            l.max_storage_buffer_binding_size
        );
        println!(
            "  storage buffers per stage       {:>14}",
            l.max_storage_buffers_per_shader_stage
        );
        println!(
            "  workgroup memory                {:>14} bytes",
            l.max_compute_workgroup_storage_size
        );
        println!(
            "  invocations per workgroup       {:>14}",
            l.max_compute_invocations_per_workgroup
        );
        println!(
            "  workgroups per dimension        {:>14}",
            l.max_compute_workgroups_per_dimension
        );
        println!("features:");
        println!(
            "  timestamp queries               {:>14}",
            if f.timestamp_query { "yes" } else { "no" }
        );
        println!(
            "  f16 in shaders                  {:>14}",
            if f.shader_f16 { "yes" } else { "no" }
        );
    }
    Ok(0)
}
