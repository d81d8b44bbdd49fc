//! Packed buffers: one allocation per role (parameters, activations, gradients...), addressed by
//! element offsets. A `View` is a window into one; kernels take views and pass offsets as uniforms.
//! Holds: the buffer handle for both backends and the CPU-side aliasing rules. Not kernels.

use std::cell::UnsafeCell;

/// A buffer of f32 values on one backend. Integer data (class labels) is stored as exact f32.
pub struct Buf {
    pub(crate) id: u64,
    pub(crate) len: usize,
    pub(crate) inner: BufInner,
}

pub(crate) enum BufInner {
    /// `UnsafeCell` per element: kernels write one region while reading another of the same
    /// buffer, which is sound only because `check_disjoint` proves the regions do not overlap.
    Cpu(Box<[UnsafeCell<f32>]>),
    Gpu(wgpu::Buffer),
}

impl Buf {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The whole buffer as a view.
    pub fn all(&self) -> View<'_> {
        View {
            buf: self,
            offset: 0,
            len: self.len,
        }
    }
    /// `len` values starting at `offset`. Panics if the window leaves the buffer: that is a bug
    /// in the caller's offset table, never a user error.
    pub fn view(&self, offset: usize, len: usize) -> View<'_> {
        assert!(
            offset + len <= self.len,
            "view {offset}+{len} outside buffer of {}",
            self.len
        );
        View {
            buf: self,
            offset,
            len,
        }
    }
    pub(crate) fn cpu_ptr(&self) -> *mut f32 {
        match &self.inner {
            BufInner::Cpu(cells) => UnsafeCell::raw_get(cells.as_ptr()),
            BufInner::Gpu(_) => panic!("CPU kernel given a GPU buffer"),
        }
    }
    pub(crate) fn gpu(&self) -> &wgpu::Buffer {
        match &self.inner {
            BufInner::Gpu(b) => b,
            BufInner::Cpu(_) => panic!("GPU kernel given a CPU buffer"),
        }
    }
}

/// A window of `len` f32 values at element `offset` of a packed buffer.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub buf: &'a Buf,
    pub offset: usize,
    pub len: usize,
}

impl<'a> View<'a> {
    /// A sub-window, relative to this one.
    pub fn sub(&self, offset: usize, len: usize) -> View<'a> {
        assert!(
            offset + len <= self.len,
            "sub-view {offset}+{len} outside view of {}",
            self.len
        );
        View {
            buf: self.buf,
            offset: self.offset + offset,
            len,
        }
    }
    pub(crate) fn off(&self) -> u32 {
        u32::try_from(self.offset).expect("buffer offset beyond u32")
    }
    fn overlaps(&self, other: &View) -> bool {
        self.buf.id == other.buf.id
            && self.len > 0
            && other.len > 0
            && self.offset < other.offset + other.len
            && other.offset < self.offset + self.len
    }
}

/// The operands of one kernel call, checked not to alias: no output overlaps another output or
/// an input (inputs may overlap each other). Packed buffers make aliasing easy to get wrong, so
/// every launch on both backends checks; a CPU kernel then takes its slices from here.
pub(crate) struct Operands<'a, const O: usize, const I: usize> {
    outputs: [View<'a>; O],
    inputs: [View<'a>; I],
}

/// Check `outputs` against each other and against `inputs` (panics on an overlap: that is a
/// bug in the caller's offset table, never a user error).
pub(crate) fn check_disjoint<'a, const O: usize, const I: usize>(
    outputs: [View<'a>; O],
    inputs: [View<'a>; I],
) -> Operands<'a, O, I> {
    for (i, o) in outputs.iter().enumerate() {
        for other in outputs[i + 1..].iter().chain(&inputs) {
            assert!(
                !o.overlaps(other),
                "kernel output [{}, +{}) overlaps another operand [{}, +{}) of the same buffer",
                o.offset,
                o.len,
                other.offset,
                other.len
            );
        }
    }
    Operands { outputs, inputs }
}

impl<'a, const O: usize, const I: usize> Operands<'a, O, I> {
    /// The CPU slices of the operands: outputs writable, inputs read-only. Panics on a GPU
    /// buffer. Taken once per kernel call, and dropped before the call returns.
    pub(crate) fn cpu(self) -> ([&'a mut [f32]; O], [&'a [f32]; I]) {
        // SAFETY: CPU buffers are cells (`UnsafeCell<f32>`), so shared and exclusive slices of
        // one buffer may coexist as long as they do not overlap, which `check_disjoint` proved
        // for every output against every other operand. No other slice into these buffers is
        // alive: slices come only from here and from `Device::read`/`write`, which copy and
        // return, and CPU kernels run synchronously on the caller's thread (`Buf` is not Sync)
        // and drop their slices before they return.
        let outputs = self.outputs.map(|v| unsafe {
            std::slice::from_raw_parts_mut(v.buf.cpu_ptr().add(v.offset), v.len)
        });
        let inputs = self.inputs.map(|v| unsafe {
            std::slice::from_raw_parts(v.buf.cpu_ptr().add(v.offset) as *const f32, v.len)
        });
        (outputs, inputs)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let BufInner::Cpu(cells) = &mut self.inner {
            pool_give(std::mem::take(cells));
        }
    }
}

/// Freed CPU buffers kept for reuse. A training step allocates the same large tapes every step;
/// fresh pages cost the OS a page fault and a zeroing pass each, which took half of a step's
/// time on two cores. A pooled buffer is zeroed by one parallel fill instead. Only buffers of
/// at least POOL_MIN values are kept, POOL_MAX values in all (512 MiB), the oldest given up
/// first: the bound on the memory a process holds beyond what it uses.
const POOL_MIN: usize = 1 << 18;
const POOL_MAX: usize = 1 << 27;
static POOL: std::sync::Mutex<Vec<Box<[UnsafeCell<f32>]>>> = std::sync::Mutex::new(Vec::new());

fn pool_give(cells: Box<[UnsafeCell<f32>]>) {
    if cells.len() < POOL_MIN {
        return;
    }
    if cells.len() > POOL_MAX {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut held: usize = pool.iter().map(|c| c.len()).sum();
    while held + cells.len() > POOL_MAX {
        held -= pool.remove(0).len();
    }
    pool.push(cells);
}

/// The smallest pooled buffer that holds `len` values (at most twice that), zero-filled.
pub(crate) fn pool_take(len: usize) -> Option<Box<[UnsafeCell<f32>]>> {
    if len < POOL_MIN {
        return None;
    }
    let cells = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let best = (0..pool.len())
            .filter(|&i| (len..=2 * len).contains(&pool[i].len()))
            .min_by_key(|&i| pool[i].len())?;
        pool.remove(best)
    };
    use rayon::prelude::*;
    let p = SendPtr(UnsafeCell::raw_get(cells.as_ptr()));
    (0..len.div_ceil(1 << 16)).into_par_iter().for_each(|c| {
        let start = c << 16;
        let n = (len - start).min(1 << 16);
        // SAFETY: the chunks are disjoint ranges of one buffer that nothing else holds yet.
        unsafe { std::slice::from_raw_parts_mut({ p }.0.add(start), n).fill(0.0) };
    });
    Some(cells)
}

/// Send a raw pointer into rayon workers; each worker touches a disjoint range.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: a SendPtr is only made where every worker writes its own disjoint range of the
// buffer it points into (the zero fill above, the CPU GEMM's batch items).
unsafe impl Send for SendPtr {}
// SAFETY: as for Send.
unsafe impl Sync for SendPtr {}

static NEXT_CPU_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);

/// CPU buffer ids live in their own range so they never collide with GPU ones.
pub(crate) fn next_cpu_id() -> u64 {
    NEXT_CPU_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
