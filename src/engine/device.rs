//! Device selection and the two backends behind one handle. `--device auto` takes a hardware GPU
//! adapter when one exists and otherwise the CPU backend; a software rasteriser adapter
//! (`DeviceType::Cpu`, e.g. lavapipe) is never taken by `auto` and never called "the GPU".

use crate::engine::buffer::{check_disjoint, Buf, BufInner};
use crate::engine::gpu::GpuDevice;
use crate::error::{Error, Result};
use std::cell::UnsafeCell;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A hardware GPU if there is one, else the CPU backend.
    Auto,
    /// The best wgpu adapter, even a software one (lavapipe) where there is no GPU.
    Gpu,
    /// The CPU backend (plain Rust, GEMM crate + rayon).
    Cpu,
}

pub enum Device {
    Cpu(CpuDevice),
    Gpu(Box<GpuDevice>),
}

pub struct CpuDevice {
    pub threads: usize,
}

/// What `regop info` reports: every adapter seen, and the choice with its reason.
#[derive(Debug, serde::Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub hardware: bool,
}

/// The backends we use: Vulkan, Metal, DX12. Not GL: its shader compiler took seconds per kernel
/// on lavapipe, and every machine with GL-only support is better served by the CPU backend.
fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    }
    wgpu::Instance::new(desc)
}

pub fn is_hardware(t: wgpu::DeviceType) -> bool {
    matches!(
        t,
        wgpu::DeviceType::DiscreteGpu
            | wgpu::DeviceType::IntegratedGpu
            | wgpu::DeviceType::VirtualGpu
    )
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn adapters() -> Vec<wgpu::Adapter> {
    let inst = instance();
    let mut list = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
    list.sort_by_key(|a| rank(a.get_info().device_type));
    list
}

pub fn report(a: &wgpu::AdapterInfo) -> AdapterReport {
    AdapterReport {
        name: a.name.clone(),
        backend: format!("{:?}", a.backend),
        device_type: format!("{:?}", a.device_type),
        driver: format!("{} {}", a.driver, a.driver_info).trim().to_string(),
        hardware: is_hardware(a.device_type),
    }
}

/// Every adapter wgpu can see, best first.
pub fn list_adapters() -> Vec<AdapterReport> {
    adapters().iter().map(|a| report(&a.get_info())).collect()
}

impl Device {
    /// Open the device `choice` asks for; also returns why it was chosen.
    pub fn open(choice: DeviceChoice) -> Result<(Device, String)> {
        match choice {
            DeviceChoice::Cpu => Ok((Device::cpu(), "--device cpu".into())),
            DeviceChoice::Gpu => {
                let list = adapters();
                let a = list.first().ok_or_else(|| {
                    Error::Device(
                        "no wgpu adapter found (install a GPU driver, or mesa-vulkan-drivers for lavapipe)".into(),
                    )
                })?;
                let why = if is_hardware(a.get_info().device_type) {
                    "--device gpu: best adapter".to_string()
                } else {
                    "--device gpu: no hardware GPU, using the software adapter (correct, slow)"
                        .to_string()
                };
                Ok((Device::Gpu(Box::new(GpuDevice::new(a)?)), why))
            }
            DeviceChoice::Auto => {
                let list = adapters();
                match list.iter().find(|a| is_hardware(a.get_info().device_type)) {
                    Some(a) => match GpuDevice::new(a) {
                        Ok(g) => Ok((
                            Device::Gpu(Box::new(g)),
                            "--device auto: hardware GPU found".into(),
                        )),
                        Err(e) => Ok((
                            Device::cpu(),
                            format!("--device auto: GPU failed to start ({e}); CPU backend"),
                        )),
                    },
                    None => Ok((
                        Device::cpu(),
                        "--device auto: no hardware GPU adapter; CPU backend".into(),
                    )),
                }
            }
        }
    }

    pub fn cpu() -> Device {
        Device::Cpu(CpuDevice {
            threads: rayon::current_num_threads(),
        })
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// One line naming the backend and hardware, as printed in benchmarks.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu(c) => format!("cpu ({} threads)", c.threads),
            Device::Gpu(g) => format!(
                "gpu: {} ({:?}, {:?}{})",
                g.info.name,
                g.info.backend,
                g.info.device_type,
                if is_hardware(g.info.device_type) {
                    ""
                } else {
                    ", software"
                }
            ),
        }
    }

    /// The largest buffer a kernel can bind, in bytes (the CPU backend has no such limit).
    pub fn max_buffer_bytes(&self) -> u64 {
        match self {
            Device::Cpu(_) => u64::MAX,
            Device::Gpu(g) => g
                .limits
                .max_buffer_size
                .min(g.limits.max_storage_buffer_binding_size),
        }
    }

    /// A zero-filled buffer of `len` f32 values.
    pub fn alloc(&self, len: usize) -> Result<Buf> {
        match self {
            Device::Cpu(_) => {
                let cells = match crate::engine::buffer::pool_take(len) {
                    Some(cells) => cells,
                    None => {
                        crate::engine::buffer::note_live(len);
                        // A zeroed allocation (calloc): the pages are zeroed lazily by the OS
                        // instead of by a pass over the buffer.
                        let zeros: Box<[f32]> = vec![0.0f32; len].into_boxed_slice();
                        // SAFETY: UnsafeCell<f32> has the layout of f32 (repr(transparent)).
                        unsafe { Box::from_raw(Box::into_raw(zeros) as *mut [UnsafeCell<f32>]) }
                    }
                };
                Ok(Buf {
                    id: crate::engine::buffer::next_cpu_id(),
                    len,
                    inner: BufInner::Cpu(cells),
                })
            }
            Device::Gpu(g) => g.alloc(len),
        }
    }

    pub fn upload(&self, data: &[f32]) -> Result<Buf> {
        let buf = self.alloc(data.len())?;
        self.write(&buf, 0, data)?;
        Ok(buf)
    }

    /// A buffer of u32 values (indices, offsets), stored as their bit patterns: kernels read them
    /// as `array<u32>` on the GPU and with `f32::to_bits` on the CPU, exact at any size.
    pub fn upload_u32(&self, data: &[u32]) -> Result<Buf> {
        let bits: Vec<f32> = data.iter().map(|&v| f32::from_bits(v)).collect();
        self.upload(&bits)
    }

    pub fn write_u32(&self, buf: &Buf, offset: usize, data: &[u32]) -> Result<()> {
        let bits: Vec<f32> = data.iter().map(|&v| f32::from_bits(v)).collect();
        self.write(buf, offset, &bits)
    }

    /// Overwrite `data.len()` values of `buf` from `offset`, after all work recorded so far.
    pub fn write(&self, buf: &Buf, offset: usize, data: &[f32]) -> Result<()> {
        assert!(offset + data.len() <= buf.len, "write outside buffer");
        match self {
            Device::Cpu(_) => {
                let ([dst], []) = check_disjoint([buf.view(offset, data.len())], []).cpu();
                dst.copy_from_slice(data);
                Ok(())
            }
            Device::Gpu(g) => g.write(buf, offset, data),
        }
    }

    /// Copy `len` values from `offset` back to the host, waiting for recorded work.
    pub fn read(&self, buf: &Buf, offset: usize, len: usize) -> Result<Vec<f32>> {
        assert!(offset + len <= buf.len, "read outside buffer");
        match self {
            Device::Cpu(_) => {
                let ([], [src]) = check_disjoint([], [buf.view(offset, len)]).cpu();
                Ok(src.to_vec())
            }
            Device::Gpu(g) => g.read(buf, offset, len),
        }
    }

    pub fn read_all(&self, buf: &Buf) -> Result<Vec<f32>> {
        self.read(buf, 0, buf.len)
    }

    /// Wait until all recorded work has finished (a no-op on the CPU, which runs eagerly).
    pub fn sync(&self) -> Result<()> {
        match self {
            Device::Cpu(_) => Ok(()),
            Device::Gpu(g) => g.sync(),
        }
    }
}
