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
/// time on two cores. A pooled buffer is zeroed by one parallel fill instead.
///
/// Only buffers of at least `min` values are kept. A pooled buffer serves any request up to
/// POOL_SPAN times smaller: a step's tapes change size with the architecture it draws
/// (four-fold on mnist_5k's zoo), and a pool that kept only near sizes missed most steps. The
/// pool holds at most what the live buffers are short of their peak (`live`, `peak`: values
/// of whole allocations), the oldest given up first: the live buffers and the pool together
/// never hold more than the process once held live.
struct Pool {
    free: Vec<Box<[UnsafeCell<f32>]>>,
    /// Values in `free`.
    held: usize,
    min: usize,
    live: usize,
    peak: usize,
}

const POOL_MIN: usize = 1 << 18;
const POOL_SPAN: usize = 8;

static POOL: std::sync::Mutex<Pool> = std::sync::Mutex::new(Pool::new(POOL_MIN));

impl Pool {
    const fn new(min: usize) -> Pool {
        Pool {
            free: Vec::new(),
            held: 0,
            min,
            live: 0,
            peak: 0,
        }
    }

    /// The smallest pooled buffer that holds `len` values and at most POOL_SPAN times that,
    /// counted live, its contents as they were left.
    fn take(&mut self, len: usize) -> Option<Box<[UnsafeCell<f32>]>> {
        if len < self.min {
            return None;
        }
        let best = (0..self.free.len())
            .filter(|&i| (len..=POOL_SPAN * len).contains(&self.free[i].len()))
            .min_by_key(|&i| self.free[i].len())?;
        let cells = self.free.remove(best);
        self.held -= cells.len();
        self.note_live(cells.len());
        Some(cells)
    }

    /// Count a fresh allocation of `len` values as live, giving up pooled buffers so that the
    /// pool and the live buffers still hold no more than the peak.
    fn note_live(&mut self, len: usize) {
        self.live += len;
        self.peak = self.peak.max(self.live);
        self.make_room(0);
    }

    /// A buffer freed: kept if it is large enough and fits under the peak.
    fn give(&mut self, cells: Box<[UnsafeCell<f32>]>) {
        self.live -= cells.len();
        if cells.len() >= self.min && self.make_room(cells.len()) {
            self.held += cells.len();
            self.free.push(cells);
        }
    }

    /// Give up the oldest pooled buffers until `extra` more values fit with the pool and the
    /// live buffers under the peak; false (nothing given up) if `extra` alone does not fit.
    fn make_room(&mut self, extra: usize) -> bool {
        let room = self.peak - self.live;
        if extra > room {
            return false;
        }
        while self.held + extra > room {
            self.held -= self.free.remove(0).len();
        }
        true
    }
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn pool_give(cells: Box<[UnsafeCell<f32>]>) {
    pool().give(cells);
}

/// Count a fresh CPU allocation of `len` values as live (`Pool`).
pub(crate) fn note_live(len: usize) {
    pool().note_live(len);
}

/// A pooled buffer that holds `len` values (`Pool::take`), counted live, its first `len`
/// values zero-filled.
pub(crate) fn pool_take(len: usize) -> Option<Box<[UnsafeCell<f32>]>> {
    let cells = pool().take(len)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(pool: &mut Pool, len: usize) -> Box<[UnsafeCell<f32>]> {
        pool.take(len).unwrap_or_else(|| {
            pool.note_live(len);
            (0..len).map(|_| UnsafeCell::new(0.0)).collect()
        })
    }

    #[test]
    fn steps_of_other_sizes_reuse_the_last_steps_buffers() {
        let mut pool = Pool::new(16);
        // A step of the largest architecture first, then steps whose buffers are up to four
        // times smaller: each is served from the pool, with no fresh allocation.
        let first: Vec<_> = [400, 1600, 1600]
            .iter()
            .map(|&n| fresh(&mut pool, n))
            .collect();
        first.into_iter().for_each(|c| pool.give(c));
        for sizes in [[100, 400, 400], [300, 1200, 1200], [150, 500, 700]] {
            let peak = pool.peak;
            let step: Vec<_> = sizes.iter().map(|&n| pool.take(n)).collect();
            assert!(
                step.iter().all(|c| c.is_some()),
                "{sizes:?} missed the pool"
            );
            assert_eq!(pool.peak, peak, "a served step raised the peak");
            step.into_iter().flatten().for_each(|c| pool.give(c));
        }
        // Too small to keep; and a buffer serves requests down to POOL_SPAN times smaller.
        assert!(pool.take(8).is_none());
        let mut pool = Pool::new(16);
        let big = fresh(&mut pool, 1600);
        pool.give(big);
        assert!(pool.take(1600 / POOL_SPAN - 1).is_none());
        assert!(pool.take(1600 / POOL_SPAN).is_some());
    }

    #[test]
    fn the_pool_and_the_live_buffers_never_hold_more_than_the_peak() {
        let mut pool = Pool::new(16);
        let mut state = 12345u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let mut live: Vec<Box<[UnsafeCell<f32>]>> = Vec::new();
        for _ in 0..2000 {
            if live.is_empty() || next(3) > 0 {
                let len = 1 + next(5000) as usize;
                live.push(fresh(&mut pool, len));
            } else {
                let i = next(live.len() as u64) as usize;
                pool.give(live.swap_remove(i));
            }
            let in_use: usize = live.iter().map(|c| c.len()).sum();
            assert_eq!(pool.live, in_use);
            let held: usize = pool.free.iter().map(|c| c.len()).sum();
            assert_eq!(pool.held, held);
            assert!(pool.held + pool.live <= pool.peak);
        }
    }
}
