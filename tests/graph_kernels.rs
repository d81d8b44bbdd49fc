//! The metanetwork's own kernel families (segment reductions, LayerNorm, FiLM) on the GPU backend
//! against the CPU reference, and their backward passes against finite differences.

mod common;
use common::*;
use rand::Rng;
use regop::engine::kernels::film::{film_backward, film_forward, RowModels};
use regop::engine::kernels::layernorm::{layernorm_backward, layernorm_forward};
use regop::engine::kernels::segment::{segment_reduce, SegmentOpts};
use regop::Device;

fn bits(v: &[u32]) -> Vec<f32> {
    v.iter().map(|&x| f32::from_bits(x)).collect()
}

/// Random CSR offsets for `segs` segments over `rows` rows (some segments empty).
fn offsets(rng: &mut impl Rng, segs: usize, rows: usize) -> Vec<u32> {
    let mut cuts: Vec<u32> = (0..segs - 1)
        .map(|_| rng.random_range(0..=rows as u32))
        .collect();
    cuts.sort();
    let mut o = vec![0];
    o.extend(cuts);
    o.push(rows as u32);
    o
}

#[test]
fn segment_reduce_matches_cpu() {
    let gpu = gpu();
    let mut rng = fresh_rng("segment");
    for &(rows, cols, segs) in &[(1, 1, 1), (7, 33, 3), (257, 7, 40), (300, 16, 257)] {
        for (use_perm, mean, accumulate) in [
            (false, false, false),
            (true, true, false),
            (false, true, true),
            (true, false, true),
        ] {
            let mut p = Packer::new();
            let v = p.put(random(&mut rng, rows * cols));
            let mut perm: Vec<u32> = (0..rows as u32).collect();
            perm.reverse();
            perm.rotate_left(rng.random_range(0..rows));
            let pr = p.put(bits(&perm));
            let off = p.put(bits(&offsets(&mut rng, segs, rows)));
            let o = if accumulate {
                p.put(random(&mut rng, segs * cols))
            } else {
                p.poison(segs * cols)
            };
            let init = p.finish();
            let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                let opts = SegmentOpts {
                    perm: use_perm.then(|| buf.view(pr.start, rows)),
                    mean,
                    accumulate,
                    window: None,
                };
                segment_reduce(
                    dev,
                    cols,
                    buf.view(v.start, v.len()),
                    buf.view(off.start, off.len()),
                    buf.view(o.start, o.len()),
                    opts,
                )
            });
            compare(&format!("segment {rows}x{cols} segs={segs} perm={use_perm} mean={mean} acc={accumulate}"), &cpu, &g, std::slice::from_ref(&o));
        }
    }
}

/// Rows cut into windows (as the editor cuts edges too many for one buffer): each window's
/// rows in a buffer of their own, reduced with `window` and accumulated. On both backends the
/// result is the reduction over all rows at once.
#[test]
fn segment_windows_of_a_partition_add_up_to_the_whole() {
    let gpu = gpu();
    let mut rng = fresh_rng("segment windows");
    for &(rows, cols, segs, windows) in &[(1, 1, 1, 1), (40, 3, 7, 3), (300, 16, 57, 5)] {
        for (use_perm, mean) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut cuts: Vec<usize> = (0..windows - 1)
                .map(|_| rng.random_range(0..=rows))
                .collect();
            cuts.sort();
            let bounds: Vec<usize> = [vec![0], cuts, vec![rows]].concat();
            let mut p = Packer::new();
            let v = p.put(random(&mut rng, rows * cols));
            let mut perm: Vec<u32> = (0..rows as u32).collect();
            perm.rotate_left(rng.random_range(0..rows));
            perm.swap(0, rows - 1);
            let pr = p.put(bits(&perm));
            let off = p.put(bits(&offsets(&mut rng, segs, rows)));
            let whole = p.poison(segs * cols);
            let parts = p.poison(segs * cols);
            let init = p.finish();
            let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                let opts = SegmentOpts {
                    perm: use_perm.then(|| buf.view(pr.start, rows)),
                    mean,
                    ..Default::default()
                };
                let offs = buf.view(off.start, off.len());
                let out = |r: &std::ops::Range<usize>| buf.view(r.start, r.len());
                segment_reduce(
                    dev,
                    cols,
                    buf.view(v.start, v.len()),
                    offs,
                    out(&whole),
                    opts,
                )?;
                // Each window's rows copied to a buffer of their own, as the editor holds them.
                let all = dev.read(buf, v.start, v.len())?;
                for (k, w) in bounds.windows(2).enumerate() {
                    let own = dev.upload(&all[w[0] * cols..w[1] * cols])?;
                    let windowed = SegmentOpts {
                        window: Some((w[0], w[1])),
                        accumulate: k > 0,
                        ..opts
                    };
                    segment_reduce(dev, cols, own.all(), offs, out(&parts), windowed)?;
                }
                Ok(())
            });
            let what = format!("windows {rows}x{cols} segs={segs} perm={use_perm} mean={mean}");
            compare(&what, &cpu, &g, &[whole.clone(), parts.clone()]);
            let worst = cpu[whole]
                .iter()
                .zip(&cpu[parts])
                .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{what}: windows sum to something else ({worst})"
            );
        }
    }
}

#[test]
fn layernorm_matches_cpu_forward_and_backward() {
    let gpu = gpu();
    let mut rng = fresh_rng("layernorm");
    for &(rows, cols) in &[(1, 2), (7, 33), (257, 16), (33, 128)] {
        for accumulate in [false, true] {
            let mut p = Packer::new();
            let x = p.put(
                random(&mut rng, rows * cols)
                    .iter()
                    .map(|v| v * 3.0 + 1.0)
                    .collect(),
            );
            let y = p.poison(rows * cols);
            let w = p.put(random(&mut rng, 2 * cols));
            let st = p.poison(2 * rows);
            let dy = p.put(random(&mut rng, rows * cols));
            let dx = if accumulate {
                p.put(random(&mut rng, rows * cols))
            } else {
                p.poison(rows * cols)
            };
            let dw = if accumulate {
                p.put(random(&mut rng, 2 * cols))
            } else {
                p.poison(2 * cols)
            };
            let init = p.finish();
            let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                let v = |r: &std::ops::Range<usize>| buf.view(r.start, r.len());
                layernorm_forward(dev, cols, v(&x), v(&w), v(&y), v(&st))?;
                layernorm_backward(
                    dev,
                    cols,
                    v(&x),
                    v(&w),
                    v(&st),
                    v(&dy),
                    v(&dx),
                    v(&dw),
                    accumulate,
                )
            });
            compare(
                &format!("layernorm {rows}x{cols} acc={accumulate}"),
                &cpu,
                &g,
                &[y.clone(), st.clone(), dx.clone(), dw.clone()],
            );
        }
    }
}

#[test]
fn film_matches_cpu_forward_and_backward() {
    let gpu = gpu();
    let mut rng = fresh_rng("film");
    for &(rows, cols, models) in &[(1, 1, 1), (33, 7, 3), (257, 16, 5), (40, 33, 40)] {
        for accumulate in [false, true] {
            let mut p = Packer::new();
            let x = p.put(random(&mut rng, rows * cols));
            let y = p.poison(rows * cols);
            let gb = p.put(random(&mut rng, models * 2 * cols));
            let offs = offsets(&mut rng, models, rows);
            let row_model: Vec<u32> = (0..rows)
                .map(|n| {
                    (0..models)
                        .find(|&m| (offs[m] as usize..offs[m + 1] as usize).contains(&n))
                        .unwrap() as u32
                })
                .collect();
            let rmr = p.put(bits(&row_model));
            let orr = p.put(bits(&offs));
            let dy = p.put(random(&mut rng, rows * cols));
            let dx = if accumulate {
                p.put(random(&mut rng, rows * cols))
            } else {
                p.poison(rows * cols)
            };
            let dgb = if accumulate {
                p.put(random(&mut rng, models * 2 * cols))
            } else {
                p.poison(models * 2 * cols)
            };
            let init = p.finish();
            let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                let v = |r: &std::ops::Range<usize>| buf.view(r.start, r.len());
                let rm = RowModels {
                    row_model: v(&rmr),
                    row_offsets: v(&orr),
                };
                film_forward(dev, cols, rm, v(&x), v(&gb), v(&y))?;
                film_backward(
                    dev,
                    cols,
                    rm,
                    v(&x),
                    v(&gb),
                    v(&dy),
                    v(&dx),
                    v(&dgb),
                    accumulate,
                )
            });
            compare(
                &format!("film {rows}x{cols} models={models} acc={accumulate}"),
                &cpu,
                &g,
                &[y.clone(), dx.clone(), dgb.clone()],
            );
        }
    }
}

/// Central differences of sum(r * f(inputs)) against the analytic gradient.
fn fd_check(what: &str, x0: &[f32], analytic: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    let h = 1e-2f32;
    let mut x = x0.to_vec();
    let mut numeric = Vec::new();
    for i in 0..x.len() {
        let d = derivative(
            |v| {
                x[i] = v;
                loss(&x)
            },
            x0[i],
            h,
        );
        x[i] = x0[i];
        numeric.push(d);
    }
    let num: f64 = analytic
        .iter()
        .zip(&numeric)
        .map(|(a, n)| (*a as f64 - n).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
    // Extrapolated differences on f32 losses stay below 0.1% (f32 rounding over 257 rows); one
    // term of LayerNorm's backward 2% off gives 0.8-1.3%, a wrong term 10%+.
    eprintln!("{what}: relative error {:e}", num / den);
    assert!(
        den > 1e-6 && num / den < 5e-3,
        "{what}: gradient relative error {:e}",
        num / den
    );
}

#[test]
fn layernorm_and_film_backward_match_finite_differences() {
    let dev = Device::cpu();
    let mut rng = fresh_rng("grad layernorm film");
    let (rows, cols, models) = (6, 5, 2);
    let x = random(&mut rng, rows * cols);
    let w = random(&mut rng, 2 * cols);
    let r = random(&mut rng, rows * cols);
    // LayerNorm: loss = sum(r * LN(x; w)), gradients w.r.t. x and w.
    let ln = |xs: &[f32], ws: &[f32]| -> Vec<f32> {
        let b = dev
            .upload(&[xs, ws, &vec![0.0; rows * cols + 2 * rows][..]].concat())
            .unwrap();
        let n = rows * cols;
        layernorm_forward(
            &dev,
            cols,
            b.view(0, n),
            b.view(n, 2 * cols),
            b.view(n + 2 * cols, n),
            b.view(2 * n + 2 * cols, 2 * rows),
        )
        .unwrap();
        dev.read(&b, n + 2 * cols, n).unwrap()
    };
    let dot = |a: &[f32]| {
        a.iter()
            .zip(&r)
            .map(|(u, v)| (*u as f64) * (*v as f64))
            .sum::<f64>()
    };
    let n = rows * cols;
    let acts = dev
        .upload(&[&x[..], &vec![0.0; n][..], &r[..], &vec![0.0; n][..]].concat())
        .unwrap();
    let params = dev.upload(&w).unwrap();
    let stats = dev.alloc(2 * rows).unwrap();
    let dw = dev.alloc(2 * cols).unwrap();
    layernorm_forward(
        &dev,
        cols,
        acts.view(0, n),
        params.all(),
        acts.view(n, n),
        stats.all(),
    )
    .unwrap();
    layernorm_backward(
        &dev,
        cols,
        acts.view(0, n),
        params.all(),
        stats.all(),
        acts.view(2 * n, n),
        acts.view(3 * n, n),
        dw.all(),
        false,
    )
    .unwrap();
    let dx = dev.read(&acts, 3 * n, n).unwrap();
    fd_check("layernorm dx", &x, &dx, |xs| dot(&ln(xs, &w)));
    fd_check("layernorm dw", &w, &dev.read_all(&dw).unwrap(), |ws| {
        dot(&ln(&x, ws))
    });

    // FiLM: loss = sum(r * film(x; gb)), gradients w.r.t. x and gb.
    let row_model: Vec<u32> = (0..rows).map(|i| (i >= 2) as u32).collect();
    let graph = dev
        .upload_u32(&[&row_model[..], &[0, 2, rows as u32][..]].concat())
        .unwrap();
    let rm = RowModels {
        row_model: graph.view(0, rows),
        row_offsets: graph.view(rows, models + 1),
    };
    let gb = random(&mut rng, models * 2 * cols);
    let film = |xs: &[f32], gbs: &[f32]| -> Vec<f32> {
        let b = dev.upload(&[xs, &vec![0.0; n][..]].concat()).unwrap();
        let g = dev.upload(gbs).unwrap();
        film_forward(&dev, cols, rm, b.view(0, n), g.all(), b.view(n, n)).unwrap();
        dev.read(&b, n, n).unwrap()
    };
    let gbb = dev.upload(&gb).unwrap();
    let dgb = dev.alloc(gb.len()).unwrap();
    film_backward(
        &dev,
        cols,
        rm,
        acts.view(0, n),
        gbb.all(),
        acts.view(2 * n, n),
        acts.view(3 * n, n),
        dgb.all(),
        false,
    )
    .unwrap();
    fd_check("film dx", &x, &dev.read(&acts, 3 * n, n).unwrap(), |xs| {
        dot(&film(xs, &gb))
    });
    fd_check("film dgb", &gb, &dev.read_all(&dgb).unwrap(), |g| {
        dot(&film(&x, g))
    });
}

#[test]
fn axpy_matches_cpu() {
    use regop::engine::kernels::axpy::axpy;
    let gpu = gpu();
    let mut rng = fresh_rng("axpy");
    for n in [1, 7, 257, 1000] {
        for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
            let mut p = Packer::new();
            let x = p.put(random(&mut rng, n));
            let y = if beta == 0.0 {
                p.poison(n)
            } else {
                p.put(random(&mut rng, n))
            };
            let init = p.finish();
            let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
                axpy(dev, alpha, buf.view(x.start, n), beta, buf.view(y.start, n))
            });
            compare(
                &format!("axpy n={n} a={alpha} b={beta}"),
                &cpu,
                &g,
                std::slice::from_ref(&y),
            );
        }
    }
}

#[test]
fn mul_matches_cpu() {
    use regop::engine::kernels::axpy::mul;
    let gpu = gpu();
    let mut rng = fresh_rng("mul");
    for n in [1, 7, 257, 1000] {
        let mut p = Packer::new();
        let m = p.put((0..n).map(|_| rng.random_range(0..2) as f32).collect());
        let y = p.put(random(&mut rng, n));
        let init = p.finish();
        let (cpu, g) = on_both(&gpu, &init, |dev, buf| {
            mul(dev, buf.view(m.start, n), buf.view(y.start, n))
        });
        compare(&format!("mul n={n}"), &cpu, &g, std::slice::from_ref(&y));
        assert!(
            (0..n).all(|i| init[m.start + i] != 0.0 || cpu[y.start + i] == 0.0),
            "masked values must be zero"
        );
    }
}

#[test]
fn fairness_penalty_matches_cpu_and_finite_differences() {
    use regop::engine::kernels::fairness::{fairness_penalty, Gap};
    let gpu = gpu();
    let mut rng = fresh_rng("fairness");
    for gap in [Gap::Dp, Gap::Eo] {
        // Sharpness 1 is the plain sigmoid; the others scale the logits and the gradient.
        for &(models, rows, groups, sharpness) in
            &[(1, 7, 2, 1.0), (3, 64, 3, 4.0), (5, 257, 8, 2.5)]
        {
            let mut p = Packer::new();
            let s = p.put(
                random(&mut rng, models * rows)
                    .iter()
                    .map(|v| v * 2.0)
                    .collect(),
            );
            // The first rows of each model cover every (label, group) cell, so no draw leaves
            // a penalty that is zero by construction (one group per cell).
            let mut yl: Vec<f32> = (0..models * rows)
                .map(|i| match i % rows {
                    r if r < 2 * groups => (r % 2) as f32,
                    _ => rng.random_range(0..2) as f32,
                })
                .collect();
            yl.extend((0..models).map(|_| rng.random_range(0.1f32..3.0)));
            let ylr = p.put(yl);
            let gr = p.put(bits(
                &(0..models * rows)
                    .map(|i| match i % rows {
                        r if r < 2 * groups => (r / 2) as u32,
                        _ => rng.random_range(0..groups as u32),
                    })
                    .collect::<Vec<_>>(),
            ));
            let lossr = p.poison(models);
            let dr = p.put(random(&mut rng, models * rows));
            let init = p.finish();
            let run = |dev: &Device, buf: &regop::Buf| {
                let ylv = buf.view(ylr.start, ylr.len());
                fairness_penalty(
                    dev,
                    gap,
                    groups,
                    sharpness,
                    buf.view(s.start, s.len()),
                    ylv.sub(0, models * rows),
                    buf.view(gr.start, gr.len()),
                    ylv.sub(models * rows, models),
                    buf.view(lossr.start, models),
                    buf.view(dr.start, dr.len()),
                )
            };
            let (cpu, g) = on_both(&gpu, &init, run);
            // The penalty sums squares of differences between group rates and the overall
            // rate (both near 0.5): the GPU's exp, a few ulps off, is amplified by the
            // cancellation, and a penalty near zero has no relative precision at all. The
            // loss is compared relative to the scale of its terms (norm floored at 1e-2).
            compare_with(
                &format!("fairness {gap:?} {models}x{rows} groups={groups} sharpness={sharpness}"),
                &cpu,
                &g,
                &[(lossr.clone(), 1e-4, 1e-2), (dr.clone(), 1e-5, 0.0)],
            );

            // Finite differences on the CPU: d(sum_z lambda_z * loss_z) / d logit.
            let dev = Device::cpu();
            let total = |logits: &[f32]| -> f64 {
                let mut b = init.clone();
                b[s.clone()].copy_from_slice(logits);
                let buf = dev.upload(&b).unwrap();
                run(&dev, &buf).unwrap();
                let out = dev.read_all(&buf).unwrap();
                (0..models)
                    .map(|z| {
                        out[lossr.start + z] as f64 * init[ylr.start + models * rows + z] as f64
                    })
                    .sum()
            };
            let x0 = init[s.clone()].to_vec();
            let analytic: Vec<f32> = (0..x0.len())
                .map(|i| cpu[dr.start + i] - init[dr.start + i])
                .collect();
            fd_check(
                &format!("fairness {gap:?} {models}x{rows} sharpness={sharpness}"),
                &x0,
                &analytic,
                total,
            );
        }
    }
}
