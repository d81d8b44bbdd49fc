//! Every kernel on the GPU backend (lavapipe where there is no GPU) against the CPU reference, on
//! fresh random inputs, outputs poisoned with NaN first, at awkward sizes (1, 7, 33, 257 and
//! other non-multiples of the tile). Operands sit at odd offsets inside one packed buffer, with
//! poisoned gaps around them, so offsets, strides and out-of-range writes are all exercised.

mod common;
use common::*;
use rand::Rng;
use regop::engine::kernels::activation::{activation_backward, activation_forward, Activation};
use regop::engine::kernels::adam::{adam_step, Adam};
use regop::engine::kernels::bce::{bce_backward, bce_forward, Bce};
use regop::engine::kernels::bias::{bias_add, BiasAdd};
use regop::engine::kernels::cross_entropy::{
    cross_entropy_backward, cross_entropy_forward, CrossEntropy,
};
use regop::engine::kernels::gemm::{gemm_with, Gemm, GemmKernel};
use regop::engine::kernels::reduce::{reduce, Axis, Reduce};

fn span(stride: usize, batch: usize, size: usize) -> usize {
    stride * (batch - 1) + size
}

#[test]
fn gemm_matches_cpu_at_awkward_sizes() {
    let gpu = gpu();
    let mut rng = fresh_rng("gemm");
    // (batch, m, n, k): ones, primes, one-past-a-tile, a tile and a half, a 257 edge.
    let shapes = [
        (1, 1, 1, 1),
        (1, 7, 33, 1),
        (2, 33, 7, 257),
        (1, 257, 33, 7),
        (3, 65, 130, 17),
        (1, 64, 64, 16),
        (2, 1, 257, 33),
        (1, 100, 70, 90),
        // The editor's products: many rows, 32 wide (one row past a 128-row tile).
        (1, 129, 32, 32),
    ];
    let mut cases = 0;
    for &(batch, m, n, k) in &shapes {
        for kernel in [GemmKernel::Naive, GemmKernel::Tiled, GemmKernel::Narrow] {
            for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
                for accumulate in [false, true] {
                    // Batch strides with a gap after every item; a shared A (stride 0) when batch > 1
                    // and k is odd, as the MLP uses for one data batch across many models.
                    let a_stride = if batch > 1 && k % 2 == 1 {
                        0
                    } else {
                        m * k + 5
                    };
                    let g = Gemm {
                        batch,
                        m,
                        n,
                        k,
                        trans_a,
                        trans_b,
                        a_stride,
                        b_stride: k * n + 2,
                        c_stride: m * n + 3,
                        accumulate,
                    };
                    let mut p = Packer::new();
                    let a = p.put(random(&mut rng, span(g.a_stride, batch, m * k)));
                    let b = p.put(random(&mut rng, span(g.b_stride, batch, k * n)));
                    let c = if accumulate {
                        p.put(random(&mut rng, span(g.c_stride, batch, m * n)))
                    } else {
                        p.poison(span(g.c_stride, batch, m * n))
                    };
                    // Gaps between C items stay NaN: mark them in the initial data.
                    let mut init = p.finish();
                    for z in 0..batch.saturating_sub(1) {
                        for i in 0..3 {
                            init[c.start + z * g.c_stride + m * n + i] = f32::NAN;
                        }
                    }
                    let (cpu, gpu_out) = on_both(&gpu, &init, |dev, buf| {
                        gemm_with(
                            dev,
                            kernel,
                            &g,
                            buf.view(a.start, a.len()),
                            buf.view(b.start, b.len()),
                            buf.view(c.start, c.len()),
                        )
                    });
                    let what = format!("gemm {kernel:?} b{batch} {m}x{n}x{k} ta={trans_a} tb={trans_b} acc={accumulate}");
                    let outs: Vec<_> = (0..batch)
                        .map(|z| c.start + z * g.c_stride..c.start + z * g.c_stride + m * n)
                        .collect();
                    compare(&what, &cpu, &gpu_out, &outs);
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, shapes.len() * 24);
}

#[test]
fn bias_add_matches_cpu() {
    let gpu = gpu();
    let mut rng = fresh_rng("bias");
    for &(batch, rows, cols) in &[(1, 1, 1), (3, 7, 33), (2, 257, 5), (5, 33, 1)] {
        let (ys, bs) = (rows * cols + 4, cols + 1);
        let mut p = Packer::new();
        let y = p.put(random(&mut rng, span(ys, batch, rows * cols)));
        let b = p.put(random(&mut rng, span(bs, batch, cols)));
        let mut init = p.finish();
        for z in 0..batch - 1 {
            init[y.start + z * ys + rows * cols..y.start + (z + 1) * ys].fill(f32::NAN);
        }
        let shape = BiasAdd {
            batch,
            rows,
            cols,
            y_stride: ys,
            b_stride: bs,
        };
        let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
            bias_add(
                dev,
                &shape,
                buf.view(y.start, y.len()),
                buf.view(b.start, b.len()),
            )
        });
        let outs: Vec<_> = (0..batch)
            .map(|z| y.start + z * ys..y.start + z * ys + rows * cols)
            .collect();
        compare("bias_add", &cpu, &g, &outs);
    }
}

#[test]
fn activations_match_cpu_forward_and_backward() {
    let gpu = gpu();
    let mut rng = fresh_rng("activation");
    for act in Activation::ALL {
        for n in [1, 7, 33, 257, 1031] {
            // Wide inputs, including large |x| where naive tanh/sigmoid overflow.
            let mut x: Vec<f32> = (0..n).map(|_| rng.random_range(-12.0f32..12.0)).collect();
            x[0] = 80.0 * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let mut p = Packer::new();
            let xr = p.put(x);
            let yr = p.poison(n);
            let dyr = p.put(random(&mut rng, n));
            let dxr = p.poison(n);
            let init = p.finish();
            let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                activation_forward(dev, act, buf.view(xr.start, n), buf.view(yr.start, n))?;
                activation_backward(
                    dev,
                    act,
                    buf.view(xr.start, n),
                    buf.view(dyr.start, n),
                    buf.view(dxr.start, n),
                )
            });
            compare(
                &format!("{act:?} forward+backward n={n}"),
                &cpu,
                &g,
                &[yr.clone(), dxr.clone()],
            );
        }
    }
}

#[test]
fn reductions_match_cpu() {
    let gpu = gpu();
    let mut rng = fresh_rng("reduce");
    for &(batch, rows, cols) in &[(1, 1, 1), (2, 7, 33), (3, 257, 7), (1, 33, 257)] {
        for axis in [Axis::Rows, Axis::Cols] {
            for accumulate in [false, true] {
                let out_len = if axis == Axis::Rows { rows } else { cols };
                let r = Reduce {
                    axis,
                    batch,
                    rows,
                    cols,
                    x_stride: rows * cols + 2,
                    out_stride: out_len + 1,
                    scale: 0.37,
                    accumulate,
                };
                let mut p = Packer::new();
                let x = p.put(random(&mut rng, span(r.x_stride, batch, rows * cols)));
                let n_out = span(r.out_stride, batch, out_len);
                let o = if accumulate {
                    p.put(random(&mut rng, n_out))
                } else {
                    p.poison(n_out)
                };
                let mut init = p.finish();
                for z in 0..batch - 1 {
                    init[o.start + z * r.out_stride + out_len] = f32::NAN;
                }
                let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                    reduce(
                        dev,
                        &r,
                        buf.view(x.start, x.len()),
                        buf.view(o.start, o.len()),
                    )
                });
                let outs: Vec<_> = (0..batch)
                    .map(|z| o.start + z * r.out_stride..o.start + z * r.out_stride + out_len)
                    .collect();
                compare(
                    &format!("reduce {axis:?} {batch}x{rows}x{cols} acc={accumulate}"),
                    &cpu,
                    &g,
                    &outs,
                );
            }
        }
    }
}

#[test]
fn bce_matches_cpu() {
    let gpu = gpu();
    let mut rng = fresh_rng("bce");
    for &(batch, n) in &[(1, 1), (3, 7), (2, 257), (4, 33)] {
        for shared in [true, false] {
            let b = Bce {
                batch,
                n,
                s_stride: n + 1,
                t_stride: if shared { 0 } else { n },
                out_stride: n + 2,
            };
            let mut p = Packer::new();
            let s: Vec<f32> = (0..span(b.s_stride, batch, n))
                .map(|_| rng.random_range(-6.0f32..6.0))
                .collect();
            let sr = p.put(s);
            let t: Vec<f32> = (0..if shared { n } else { batch * n })
                .map(|_| rng.random_range(0.0f32..1.0))
                .collect();
            let tr = p.put(t);
            let lr = p.poison(span(b.out_stride, batch, n));
            let gr = p.poison(span(b.out_stride, batch, n));
            let mut init = p.finish();
            for z in 0..batch - 1 {
                init[lr.start + z * b.out_stride + n..lr.start + (z + 1) * b.out_stride]
                    .fill(f32::NAN);
                init[gr.start + z * b.out_stride + n..gr.start + (z + 1) * b.out_stride]
                    .fill(f32::NAN);
            }
            let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                let (s, t) = (buf.view(sr.start, sr.len()), buf.view(tr.start, tr.len()));
                bce_forward(dev, &b, s, t, buf.view(lr.start, lr.len()))?;
                bce_backward(dev, &b, 0.25, s, t, buf.view(gr.start, gr.len()))
            });
            let mut outs: Vec<_> = (0..batch)
                .map(|z| lr.start + z * b.out_stride..lr.start + z * b.out_stride + n)
                .collect();
            outs.extend(
                (0..batch).map(|z| gr.start + z * b.out_stride..gr.start + z * b.out_stride + n),
            );
            compare(
                &format!("bce b{batch} n{n} shared={shared}"),
                &cpu,
                &g,
                &outs,
            );
        }
    }
}

#[test]
fn cross_entropy_matches_cpu() {
    let gpu = gpu();
    let mut rng = fresh_rng("cross_entropy");
    for &(batch, rows, classes) in &[(1, 1, 1), (2, 7, 3), (3, 33, 10), (1, 257, 7)] {
        let s_stride = rows * classes + 1;
        let mut p = Packer::new();
        let sr = p.put(
            random(&mut rng, span(s_stride, batch, rows * classes))
                .iter()
                .map(|v| v * 4.0)
                .collect(),
        );
        let labels: Vec<f32> = (0..rows)
            .map(|_| rng.random_range(0..classes) as f32)
            .collect();
        let lab = p.put(labels);
        let fw = CrossEntropy {
            batch,
            rows,
            classes,
            s_stride,
            l_stride: 0,
            out_stride: rows,
        };
        let bw = CrossEntropy {
            out_stride: rows * classes,
            ..fw
        };
        let lr = p.poison(batch * rows);
        let gr = p.poison(batch * rows * classes);
        let init = p.finish();
        let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
            let (s, l) = (buf.view(sr.start, sr.len()), buf.view(lab.start, lab.len()));
            cross_entropy_forward(dev, &fw, s, l, buf.view(lr.start, lr.len()))?;
            cross_entropy_backward(dev, &bw, 0.5, s, l, buf.view(gr.start, gr.len()))
        });
        compare(
            &format!("cross_entropy {batch}x{rows}x{classes}"),
            &cpu,
            &g,
            &[lr.clone(), gr.clone()],
        );
    }
}

#[test]
fn adam_matches_cpu_over_several_steps() {
    let gpu = gpu();
    let mut rng = fresh_rng("adam");
    let opt = Adam {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.05,
    };
    for n in [1, 7, 33, 257, 1000] {
        let mut p = Packer::new();
        let pr = p.put(random(&mut rng, n));
        let gr = p.put(random(&mut rng, n));
        let mr = p.put(random(&mut rng, n).iter().map(|v| v * 0.1).collect());
        let vr = p.put(random(&mut rng, n).iter().map(|v| v.abs() * 0.1).collect());
        let init = p.finish();
        let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
            for t in 1..=3 {
                adam_step(
                    dev,
                    &opt,
                    t,
                    buf.view(pr.start, n),
                    buf.view(gr.start, n),
                    buf.view(mr.start, n),
                    buf.view(vr.start, n),
                )?;
            }
            Ok(())
        });
        compare(
            &format!("adam n={n}"),
            &cpu,
            &g,
            &[pr.clone(), mr.clone(), vr.clone()],
        );
    }
}

#[test]
fn gather_rows_matches_cpu() {
    use regop::engine::kernels::gather::{gather_rows_with, GatherOpts};
    let gpu = gpu();
    let mut rng = fresh_rng("gather");
    for &(src_rows, cols, n) in &[(1, 1, 1), (7, 33, 13), (257, 7, 300), (40, 100, 257)] {
        for (accumulate, scaled) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut p = Packer::new();
            let s = p.put(random(&mut rng, src_rows * cols));
            // Indices as u32 bit patterns, as Device::upload_u32 stores them.
            let idx: Vec<f32> = (0..n)
                .map(|_| f32::from_bits(rng.random_range(0..src_rows as u32)))
                .collect();
            let ir = p.put(idx);
            let sc = p.put(random(&mut rng, src_rows));
            let o = if accumulate {
                p.put(random(&mut rng, n * cols))
            } else {
                p.poison(n * cols)
            };
            let init = p.finish();
            let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                let opts = GatherOpts {
                    accumulate,
                    scale: scaled.then(|| buf.view(sc.start, sc.len())),
                };
                gather_rows_with(
                    dev,
                    cols,
                    buf.view(s.start, s.len()),
                    buf.view(ir.start, n),
                    buf.view(o.start, o.len()),
                    opts,
                )
            });
            compare(
                &format!("gather {src_rows}x{cols} -> {n} acc={accumulate} scaled={scaled}"),
                &cpu,
                &g,
                std::slice::from_ref(&o),
            );
        }
    }
}

#[test]
fn adam_per_model_matches_cpu_and_freezes_models_with_zero_lr() {
    use regop::engine::kernels::adam::adam_step_per_model;
    let gpu = gpu();
    let mut rng = fresh_rng("adam per model");
    let opt = Adam::default();
    for &(models, stride) in &[(1, 7), (3, 33), (5, 257)] {
        let n = models * stride;
        let mut p = Packer::new();
        let pr = p.put(random(&mut rng, n));
        let gr = p.put(random(&mut rng, n));
        let mr = p.put(vec![0.0; n]);
        let vr = p.put(vec![0.0; n]);
        // Model 0 frozen (lr 0); the others with their own lr and weight decay.
        let hyper: Vec<f32> = (0..models)
            .flat_map(|z| {
                [
                    if z == 0 {
                        0.0
                    } else {
                        rng.random_range(1e-3f32..3e-2)
                    },
                    rng.random_range(0.0f32..0.1),
                ]
            })
            .collect();
        let hr = p.put(hyper);
        let init = p.finish();
        let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
            for t in 1..=2 {
                adam_step_per_model(
                    dev,
                    &opt,
                    t,
                    stride,
                    buf.view(hr.start, hr.len()),
                    buf.view(pr.start, n),
                    buf.view(gr.start, n),
                    buf.view(mr.start, n),
                    buf.view(vr.start, n),
                )?;
            }
            Ok(())
        });
        compare(
            &format!("adam per model {models}x{stride}"),
            &cpu,
            &g,
            &[pr.clone(), mr.clone(), vr.clone()],
        );
        assert_eq!(
            &cpu[pr.start..pr.start + stride],
            &init[pr.start..pr.start + stride],
            "lr 0 must leave the model unchanged"
        );
        if models > 1 {
            assert_ne!(
                &cpu[pr.start + stride..pr.end],
                &init[pr.start + stride..pr.end]
            );
        }
    }
}

/// `profile` names every kernel a region ran, with its call count, on both backends; nothing is
/// recorded outside a profile; shares add up to 1.
#[test]
fn profiles_count_every_kernel_call_on_both_backends() {
    use regop::engine::profile::profile;
    for dev in [regop::Device::cpu(), gpu()] {
        let a = dev.upload(&vec![0.5f32; 64 * 64]).unwrap();
        let b = dev.upload(&vec![0.25f32; 64 * 64]).unwrap();
        let c = dev.alloc(64 * 64).unwrap();
        let h = dev.alloc(64 * 64).unwrap();
        let g = Gemm::single(64, 64, 64);
        let run = || -> regop::Result<()> {
            for _ in 0..3 {
                gemm_with(&dev, GemmKernel::Auto, &g, a.all(), b.all(), c.all())?;
            }
            activation_forward(&dev, Activation::Silu, c.all(), h.all())?;
            dev.sync()
        };
        run().unwrap(); // outside a profile: nothing recorded, nothing breaks
        let Ok(times) = profile(&dev, run) else {
            assert!(dev.is_gpu(), "the CPU backend always profiles");
            continue; // an adapter without timestamp queries
        };
        let calls = |k: &str| {
            times
                .iter()
                .filter(|t| t.kernel.starts_with(k))
                .map(|t| t.calls)
                .sum::<usize>()
        };
        assert_eq!(calls("gemm"), 3, "{} {times:?}", dev.name());
        assert_eq!(calls("activation_forward"), 1, "{times:?}");
        assert_eq!(times.iter().map(|t| t.calls).sum::<usize>(), 4, "{times:?}");
        let share: f64 = times.iter().map(|t| t.share).sum();
        assert!((share - 1.0).abs() < 1e-9, "{share}");
        assert!(times
            .iter()
            .all(|t| t.seconds >= 0.0 && t.seconds.is_finite()));
        assert!(times.windows(2).all(|w| w[0].seconds >= w[1].seconds));
        // The result of the profiled work is the same as unprofiled.
        let out = dev.read_all(&h).unwrap();
        assert!(out.iter().all(|v| (v - out[0]).abs() < 1e-6 && *v > 0.0));
    }
}
