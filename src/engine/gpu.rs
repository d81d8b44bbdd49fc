//! The wgpu backend: adapter, device, queue, compiled kernels, and the recorder that puts a whole
//! step into one command encoder and one compute pass. Holds no kernel maths (see `kernels/`).
//!
//! Per-dispatch uniforms go into one arena buffer, each in its own aligned slot bound with a
//! dynamic offset: `queue.write_buffer` runs before the commands it is submitted with, so a single
//! uniform buffer rewritten between dispatches would give every dispatch the last value.

use crate::engine::buffer::{Buf, BufInner};
use crate::error::{Error, Result};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Threads per workgroup of every 1-D kernel (all but the GEMMs, whose tiles set their own).
/// Shaders see it as `WG` (see `shader_source`).
pub const WORKGROUP: usize = 256;
/// Bytes reserved for one dispatch's uniforms. Every kernel's params struct fits in it.
pub const PARAM_SLOT: u64 = 256;
/// Uniform arena size: dispatches per submit before the recorder flushes on its own.
const ARENA_SLOTS: u64 = 4096;
/// Longest we wait for the GPU before calling the device hung (lavapipe is slow, not that slow).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(300);

pub struct GpuDevice {
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    kernels: RefCell<HashMap<(&'static str, &'static str), Rc<Kernel>>>,
    bind_groups: RefCell<HashMap<(&'static str, Vec<u64>), wgpu::BindGroup>>,
    rec: RefCell<Recorder>,
    arena: wgpu::Buffer,
    slot: u64,
    next_buf_id: Cell<u64>,
    /// First asynchronous error reported by wgpu (validation, out of memory).
    fault: Arc<Mutex<Option<String>>>,
    /// Set once the device is lost (driver reset, GPU removed, destroyed); every later call
    /// fails with it, since nothing on a lost device can succeed.
    lost: Arc<Mutex<Option<String>>>,
    /// Fault injection for the tests: destroy the device at this submit
    /// (`REGOP_FAULT_LOSE_DEVICE_AT`), as a driver reset mid-job would.
    lose_at: Option<u64>,
    submits: Cell<u64>,
    /// Fault injection for the tests: allocations above this many bytes fail as out of memory
    /// (`REGOP_FAULT_OOM_ABOVE`), as on a device with little memory free.
    oom_above: Option<u64>,
}

/// A compiled entry point and its explicit bind group layout: binding 0 is the uniform slot,
/// bindings 1..=n are storage buffers, all read_write so one packed buffer may be bound twice.
struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    n_storage: usize,
}

#[derive(Default)]
struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    params: Vec<u8>,
    /// Timestamp query set of an open timed region (see `GpuDevice::time`).
    timing: Option<wgpu::QuerySet>,
    /// An open profile: its query set and the entry point of every dispatch so far (see
    /// `GpuDevice::profile`).
    profile: Option<(wgpu::QuerySet, Vec<&'static str>)>,
}

/// Most dispatches one profiled region can time (two queries each, 4096 queries per set).
const PROFILE_MAX: usize = 2048;

impl GpuDevice {
    pub(crate) fn new(adapter: &wgpu::Adapter) -> Result<GpuDevice> {
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        // REGOP_GPU_MAX_BUFFER=BYTES asks for a smaller largest buffer than the adapter has,
        // to see how regop runs on adapters with small limits; wgpu then enforces it.
        if let Some(cap) = std::env::var("REGOP_GPU_MAX_BUFFER")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        // Only optional features we gate on; anything else would make us unportable.
        let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16;
        let features = adapter.features() & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("regop"),
            required_features: features,
            // The adapter's own limits: the defaults cap storage bindings at 128 MiB.
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Device(format!("cannot open {}: {e}", info.name)))?;

        let fault = Arc::new(Mutex::new(None::<String>));
        let sink = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut f = sink.lock().unwrap();
            if f.is_none() {
                // wgpu's messages span lines (error, then its causes); ours are one line.
                let text = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                *f = Some(text.chars().take(500).collect());
            }
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let sink = lost.clone();
        let name = info.name.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let why = match reason {
                wgpu::DeviceLostReason::Destroyed => "destroyed".to_string(),
                _ => msg.split_whitespace().collect::<Vec<_>>().join(" "),
            };
            sink.lock().unwrap().get_or_insert(format!(
                "GPU device lost ({name}: {why}); rerun, or use --device cpu"
            ));
        });

        let slot = PARAM_SLOT.max(limits.min_uniform_buffer_offset_alignment as u64);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: slot * ARENA_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuDevice {
            info,
            limits,
            features,
            device,
            queue,
            kernels: RefCell::default(),
            bind_groups: RefCell::default(),
            rec: RefCell::default(),
            arena,
            slot,
            next_buf_id: Cell::new(1),
            fault,
            lost,
            lose_at: std::env::var("REGOP_FAULT_LOSE_DEVICE_AT")
                .ok()
                .and_then(|v| v.parse().ok()),
            submits: Cell::new(0),
            oom_above: std::env::var("REGOP_FAULT_OOM_ABOVE")
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }

    /// Destroy the device, as a driver reset or a removed GPU does: later calls fail with
    /// "device lost". Fault tests use it; nothing else should.
    pub fn destroy(&self) {
        self.device.destroy();
    }

    /// The grid of a 1-D kernel over `n` invocations (`WORKGROUP` threads per group).
    pub(crate) fn grid(&self, n: usize) -> [u32; 3] {
        grid_1d(
            n,
            WORKGROUP,
            self.limits.max_compute_workgroups_per_dimension,
        )
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    fn check_fault(&self) -> Result<()> {
        if self.fault.lock().unwrap().is_some() {
            // Errors on a lost device can come before wgpu has told us of the loss, which it
            // does once the work submitted before it is done: wait for that, so that the loss
            // is what we report.
            let _ = self.device.poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(Duration::from_secs(10)),
            });
        }
        // A lost device explains any validation error that followed it: report the loss.
        if let Some(msg) = self.lost.lock().unwrap().clone() {
            self.fault.lock().unwrap().take();
            return Err(Error::Device(msg));
        }
        match self.fault.lock().unwrap().take() {
            Some(msg) => Err(Error::Device(msg)),
            None => Ok(()),
        }
    }

    pub(crate) fn alloc(&self, len: usize) -> Result<Buf> {
        if let Some(msg) = self.lost.lock().unwrap().clone() {
            return Err(Error::Device(msg));
        }
        let bytes = (len.max(1) * 4) as u64;
        let max = self
            .limits
            .max_buffer_size
            .min(self.limits.max_storage_buffer_binding_size);
        if bytes > max {
            return Err(Error::no_room(format!(
                "buffer of {bytes} bytes exceeds the adapter's limit of {max} bytes"
            )));
        }
        let oom = || {
            Error::no_room(format!(
                "out of memory on {} allocating {:.1} MB",
                self.info.name,
                bytes as f64 / 1e6
            ))
        };
        if self.oom_above.is_some_and(|max| bytes > max) {
            return Err(oom());
        }
        // Caught here, not at the next sync, so that the caller can retry in smaller pieces.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if pollster::block_on(scope.pop()).is_some() {
            return Err(oom());
        }
        let id = self.next_buf_id.get();
        self.next_buf_id.set(id + 1);
        Ok(Buf {
            id,
            len,
            inner: BufInner::Gpu(buffer),
        })
    }

    pub(crate) fn write(&self, buf: &Buf, offset: usize, data: &[f32]) -> Result<()> {
        // Recorded work must run before this write, and write_buffer jumps the queue: flush first.
        self.flush()?;
        if !data.is_empty() {
            self.queue
                .write_buffer(buf.gpu(), (offset * 4) as u64, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    pub(crate) fn read(&self, buf: &Buf, offset: usize, len: usize) -> Result<Vec<f32>> {
        self.flush()?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = (len * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf.gpu(), (offset * 4) as u64, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let bytes = self.map_read(&staging)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    fn map_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let slice = staging.slice(..);
        let done = Arc::new(Mutex::new(None));
        let sink = done.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            *sink.lock().unwrap() = Some(r)
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(WAIT_TIMEOUT),
            })
            .map_err(|e| Error::Device(format!("waiting for the GPU: {e}")))?;
        self.check_fault()?;
        match done.lock().unwrap().take() {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Device(format!("reading back a buffer: {e}"))),
            None => return Err(Error::Device("GPU did not finish in time".into())),
        }
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::Device(format!("reading back a buffer: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }

    /// Submit everything recorded so far. Does not wait.
    pub fn flush(&self) -> Result<()> {
        let mut rec = self.rec.borrow_mut();
        rec.pass = None; // ends the pass
        if let Some(enc) = rec.encoder.take() {
            if !rec.params.is_empty() {
                self.queue.write_buffer(&self.arena, 0, &rec.params);
                rec.params.clear();
            }
            self.queue.submit([enc.finish()]);
            self.submits.set(self.submits.get() + 1);
            if self.lose_at == Some(self.submits.get()) {
                self.device.destroy();
            }
        }
        drop(rec);
        self.check_fault()
    }

    /// Submit and wait until the GPU is idle.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(WAIT_TIMEOUT),
            })
            .map_err(|e| Error::Device(format!("waiting for the GPU: {e}")))?;
        self.check_fault()
    }

    fn kernel(
        &self,
        shader: &'static str,
        source: &'static str,
        entry: &'static str,
        n_storage: usize,
    ) -> Rc<Kernel> {
        if let Some(k) = self.kernels.borrow().get(&(shader, entry)) {
            return k.clone();
        }
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader),
                source: wgpu::ShaderSource::Wgsl(shader_source(source).into()),
            });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(PARAM_SLOT),
            },
            count: None,
        }];
        for i in 0..n_storage {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: 1 + i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(shader),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(shader),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        let k = Rc::new(Kernel {
            pipeline,
            layout,
            n_storage,
        });
        self.kernels.borrow_mut().insert((shader, entry), k.clone());
        k
    }

    /// Record one dispatch of `shader::entry` with `params` in its uniform slot and `bufs` bound
    /// to bindings 1..=n. `groups` is the workgroup count in x, y, z.
    pub(crate) fn launch<P: bytemuck::Pod>(
        &self,
        shader: &'static str,
        source: &'static str,
        entry: &'static str,
        params: &P,
        bufs: &[&Buf],
        groups: [u32; 3],
    ) -> Result<()> {
        let bytes = bytemuck::bytes_of(params);
        assert!(
            bytes.len() as u64 <= PARAM_SLOT,
            "{shader}: params larger than a slot"
        );
        if groups.contains(&0) {
            return Ok(());
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        assert!(
            groups.iter().all(|&g| g <= max),
            "{shader}::{entry}: grid {groups:?} over the limit {max}"
        );
        let kernel = self.kernel(shader, source, entry, bufs.len());
        assert_eq!(kernel.n_storage, bufs.len());

        if self.rec.borrow().params.len() as u64 + self.slot > self.slot * ARENA_SLOTS {
            self.flush()?;
        }
        let key = (shader, bufs.iter().map(|b| b.id).collect::<Vec<_>>());
        if !self.bind_groups.borrow().contains_key(&key) {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.arena,
                    offset: 0,
                    size: wgpu::BufferSize::new(PARAM_SLOT),
                }),
            }];
            for (i, b) in bufs.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: 1 + i as u32,
                    resource: b.gpu().as_entire_binding(),
                });
            }
            let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &kernel.layout,
                entries: &entries,
            });
            self.bind_groups.borrow_mut().insert(key.clone(), bg);
        }
        let bind_groups = self.bind_groups.borrow();
        let bg = &bind_groups[&key];

        let mut rec = self.rec.borrow_mut();
        let offset = rec.params.len() as u32;
        rec.params.extend_from_slice(bytes);
        rec.params.resize(offset as usize + self.slot as usize, 0);
        if rec.encoder.is_none() {
            rec.encoder = Some(self.device.create_command_encoder(&Default::default()));
        }
        let profiled = rec.profile.as_ref().map(|(_, e)| e.len());
        if profiled == Some(PROFILE_MAX) {
            return Err(Error::Device(format!(
                "a profiled region may hold at most {PROFILE_MAX} dispatches"
            )));
        }
        if profiled.is_some() {
            rec.pass = None; // every profiled dispatch in a pass of its own
        }
        if rec.pass.is_none() {
            let rec = &mut *rec;
            let timestamp_writes = match (&rec.timing, &rec.profile) {
                (_, Some((qs, entries))) => Some(wgpu::ComputePassTimestampWrites {
                    query_set: qs,
                    beginning_of_pass_write_index: Some(2 * entries.len() as u32),
                    end_of_pass_write_index: Some(2 * entries.len() as u32 + 1),
                }),
                (Some(qs), None) => Some(wgpu::ComputePassTimestampWrites {
                    query_set: qs,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
                (None, None) => None,
            };
            let pass = rec
                .encoder
                .as_mut()
                .unwrap()
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes,
                })
                .forget_lifetime();
            rec.pass = Some(pass);
        }
        let pass = rec.pass.as_mut().unwrap();
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, bg, &[offset]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        if let Some((_, entries)) = rec.profile.as_mut() {
            entries.push(entry);
            rec.pass = None;
        }
        Ok(())
    }

    /// GPU seconds of every dispatch that `record` records, by entry point, from timestamp
    /// queries around each (every dispatch gets a compute pass of its own, so the figures
    /// include no overlap between kernels). Fails where the adapter has no timestamp queries.
    pub(crate) fn profile(
        &self,
        record: impl FnOnce() -> Result<()>,
    ) -> Result<Vec<(&'static str, f64)>> {
        if !self.has_timestamps() {
            return Err(Error::Device(format!(
                "{} has no timestamp queries: no per-kernel GPU times",
                self.info.name
            )));
        }
        self.flush()?;
        let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * PROFILE_MAX as u32,
        });
        self.rec.borrow_mut().profile = Some((qs.clone(), Vec::new()));
        let recorded = record();
        let entries = self
            .rec
            .borrow_mut()
            .profile
            .take()
            .map(|p| p.1)
            .unwrap_or_default();
        recorded?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = 16 * entries.len() as u64;
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.flush()?;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.resolve_query_set(&qs, 0..2 * entries.len() as u32, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let raw = self.map_read(&staging)?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let period = self.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(entries
            .iter()
            .enumerate()
            .map(|(i, &e)| {
                (
                    e,
                    ticks[2 * i + 1].wrapping_sub(ticks[2 * i]) as f64 * period,
                )
            })
            .collect())
    }

    /// GPU seconds spent by the work `record` records, from timestamp queries written at the start
    /// and end of its compute pass. `None` when the adapter has no timestamp queries. `record`
    /// must stay under the arena size (4096 dispatches) so that it stays in one pass.
    pub fn time(&self, record: impl FnOnce() -> Result<()>) -> Result<Option<f64>> {
        if !self.has_timestamps() {
            record()?;
            self.sync()?;
            return Ok(None);
        }
        self.flush()?;
        let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("timing"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        self.rec.borrow_mut().timing = Some(qs.clone());
        let recorded = record();
        self.rec.borrow_mut().timing = None;
        recorded?;
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps readback"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut rec = self.rec.borrow_mut();
            rec.pass = None;
            let enc = rec
                .encoder
                .as_mut()
                .expect("timed region recorded no dispatch");
            enc.resolve_query_set(&qs, 0..2, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
        }
        self.flush()?;
        let bytes = self.map_read(&staging)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let ns = ticks[1].wrapping_sub(ticks[0]) as f64 * self.queue.get_timestamp_period() as f64;
        Ok(Some(ns * 1e-9))
    }
}

/// What every shader is compiled from: the line defining `WG` as `WORKGROUP`, the shared prelude
/// (shaders/prelude.wgsl: `global_index`), then the shader's own source.
pub fn shader_source(source: &str) -> String {
    format!(
        "const WG: u32 = {WORKGROUP}u;\n{}{source}",
        include_str!("../../shaders/prelude.wgsl")
    )
}

/// Workgroup grid for `n` invocations of a 1-D kernel with `wg` threads per group, folded into
/// two dimensions when it exceeds the per-dimension limit. Kernels rebuild the linear index as
/// `(wid.y * num_workgroups.x + wid.x) * wg + lid.x` and bound-check it against `n`.
pub(crate) fn grid_1d(n: usize, wg: usize, max: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg) as u64;
    let max = max as u64;
    if groups <= max {
        return [groups as u32, 1, 1];
    }
    let y = groups.div_ceil(max);
    [groups.div_ceil(y) as u32, y as u32, 1]
}

#[cfg(test)]
mod tests {
    use super::grid_1d;

    #[test]
    fn grid_folds_past_the_dimension_limit_and_covers_every_invocation() {
        assert_eq!(grid_1d(1, 256, 65535), [1, 1, 1]);
        assert_eq!(grid_1d(257, 256, 65535), [2, 1, 1]);
        for n in [65535 * 256, 65535 * 256 + 1, 3_000_000_000usize / 7] {
            let [x, y, z] = grid_1d(n, 256, 65535);
            assert!(x <= 65535 && y <= 65535 && z == 1, "{n}: {x}x{y}");
            assert!(x as usize * y as usize * 256 >= n, "{n}: grid too small");
            // At most one row of groups wasted.
            assert!(
                (x as usize * (y as usize - 1)) * 256 < n,
                "{n}: grid has a spare row"
            );
        }
    }
}
