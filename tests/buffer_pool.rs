//! The CPU backend's pool of freed buffers: a reused buffer must come back zero-filled however
//! it was left, whatever size within the pool's span asks for it. One test per binary: the
//! pool is process-wide.

mod common;
use common::*;
use rand::Rng;
use regop::engine::device::Device;

#[test]
fn reused_buffers_come_back_zeroed() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("buffer pool");
    // Steps of three buffers whose sizes change up to four-fold from step to step, as a
    // training step's tapes do with the architecture it draws. Each is poisoned before it is
    // freed, so a stale value in a reused buffer shows as NaN.
    for _ in 0..40 {
        let sizes: Vec<usize> = (0..3)
            .map(|_| rng.random_range((1usize << 19)..(1 << 21)))
            .collect();
        let bufs: Vec<_> = sizes.iter().map(|&n| dev.alloc(n).unwrap()).collect();
        for (b, &n) in bufs.iter().zip(&sizes) {
            assert_eq!(b.len(), n);
            let values = dev.read_all(b).unwrap();
            let stale = values.iter().filter(|v| **v != 0.0).count();
            assert_eq!(
                stale, 0,
                "a buffer of {n} values came with {stale} non-zero"
            );
            dev.write(b, 0, &vec![f32::NAN; n]).unwrap();
        }
    }
}
