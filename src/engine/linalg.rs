//! Small dense linear algebra for the rules that re-solve weights: Gram matrices, Cholesky
//! factors, solves and inverses of symmetric positive definite matrices, row-major f64. Sizes
//! are a layer's fan-in (at most a few hundred, 784 for MNIST pixels), so plain loops do; the
//! products over the calibration rows (the largest part) and large solves run on all cores,
//! each entry summed in the same order as on one thread.

use rayon::prelude::*;

/// Below this many multiply-adds a product stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 20;

/// X^T Y of `x` [rows, dx] (f32) and `y` [rows, dy] (f32 or f64; row-major): [dx, dy], the
/// right-hand side of a least-squares fit of `y` from `x`. Rows of X that are zero in a column
/// add nothing to that column's row of the product and are skipped. Threads own disjoint
/// rows of the product and each sums over the data rows in order, so the result is the same,
/// bit for bit, on any number of cores.
pub fn cross<Y: Copy + Into<f64> + Sync>(
    x: &[f32],
    y: &[Y],
    rows: usize,
    dx: usize,
    dy: usize,
) -> Vec<f64> {
    let mut c = vec![0.0f64; dx * dy];
    if dx * dy == 0 {
        return c;
    }
    // Product rows [first, first + block.len() / dy).
    let fill = |first: usize, block: &mut [f64]| {
        let last = first + block.len() / dy;
        for r in 0..rows {
            let yr = &y[r * dy..(r + 1) * dy];
            for (a, &xa) in x[r * dx..(r + 1) * dx][first..last].iter().enumerate() {
                if xa == 0.0 {
                    continue;
                }
                for (ca, &yo) in block[a * dy..(a + 1) * dy].iter_mut().zip(yr) {
                    *ca += xa as f64 * yo.into();
                }
            }
        }
    };
    if rows * dx * dy < PARALLEL_WORK {
        fill(0, &mut c);
        return c;
    }
    // A few blocks per thread: each block reads all of X and Y once.
    let per_block = dx.div_ceil(4 * rayon::current_num_threads()).max(1);
    c.par_chunks_mut(per_block * dy)
        .enumerate()
        .for_each(|(i, block)| fill(i * per_block, block));
    c
}

/// X^T X of `x` [rows, d] (f32, row-major): [d, d].
pub fn gram(x: &[f32], rows: usize, d: usize) -> Vec<f64> {
    cross(x, x, rows, d, d)
}

/// Add `damp` times the mean of the diagonal to the diagonal, and 1 where a diagonal entry is
/// zero (an input never active in the data): what keeps a Gram matrix invertible.
pub fn dampen(g: &mut [f64], d: usize, damp: f64) {
    let mean = (0..d).map(|i| g[i * d + i]).sum::<f64>() / d.max(1) as f64;
    for i in 0..d {
        if g[i * d + i] == 0.0 {
            g[i * d + i] = 1.0;
        }
        g[i * d + i] += damp * mean.max(1e-12);
    }
}

/// The lower Cholesky factor L of SPD `a` [d, d] (a = L L^T); None when `a` is not positive
/// definite to working precision.
pub fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Solve L L^T x = b in place for every column of `b` [d, n] (row-major), given L. Columns
/// are independent: large solves split them into blocks that run side by side, each entry
/// summing its terms in the same order as a column-by-column solve would.
pub fn cholesky_solve(l: &[f64], d: usize, b: &mut [f64], n: usize) {
    if d * d * n < PARALLEL_WORK || n < 2 {
        return solve_columns(l, d, b, n);
    }
    let width = n.div_ceil(4 * rayon::current_num_threads()).max(1);
    let solved: Vec<(usize, usize, Vec<f64>)> = (0..n)
        .step_by(width)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first| {
            let w = width.min(n - first);
            let mut block: Vec<f64> = (0..d)
                .flat_map(|i| b[i * n + first..][..w].iter().copied())
                .collect();
            solve_columns(l, d, &mut block, w);
            (first, w, block)
        })
        .collect();
    for (first, w, block) in solved {
        for i in 0..d {
            b[i * n + first..][..w].copy_from_slice(&block[i * w..(i + 1) * w]);
        }
    }
}

/// `cholesky_solve` on one thread: all columns move together, row by row, so that the inner
/// loops run along contiguous rows.
fn solve_columns(l: &[f64], d: usize, b: &mut [f64], n: usize) {
    let mut s = vec![0.0f64; n];
    // L y = b
    for i in 0..d {
        s.fill(-0.0);
        for k in 0..i {
            let lik = l[i * d + k];
            for (sc, &bk) in s.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                *sc += lik * bk;
            }
        }
        for (bi, &sc) in b[i * n..(i + 1) * n].iter_mut().zip(&s) {
            *bi = (*bi - sc) / l[i * d + i];
        }
    }
    // L^T x = y
    for i in (0..d).rev() {
        s.fill(-0.0);
        for k in i + 1..d {
            let lki = l[k * d + i];
            for (sc, &bk) in s.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                *sc += lki * bk;
            }
        }
        for (bi, &sc) in b[i * n..(i + 1) * n].iter_mut().zip(&s) {
            *bi = (*bi - sc) / l[i * d + i];
        }
    }
}

/// The inverse of SPD `a` [d, d]; None when it is not positive definite.
pub fn spd_inverse(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, d)?;
    let mut inv = vec![0.0f64; d * d];
    for i in 0..d {
        inv[i * d + i] = 1.0;
    }
    cholesky_solve(&l, d, &mut inv, d);
    Some(inv)
}

/// Ridges `held_out_ridge` chooses from, as shares of a Gram matrix's mean diagonal; the first
/// is the least that keeps collinear columns (one-hot groups) solvable.
pub const RIDGE_GRID: [f64; 10] = [1e-6, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0];

/// The ridge of `RIDGE_GRID` under which the least-squares predictions of each column from all
/// the others, fitted on rows whose centred Gram matrix is `fit` [d, d], err least on held-out
/// rows whose second moments about the fitted mean are `held` [d, d] (`held_out_error`); ties
/// go to the smaller ridge.
pub fn held_out_ridge(fit: &[f64], held: &[f64], d: usize) -> f64 {
    let mut best = (RIDGE_GRID[0], held_out_error(fit, held, d, RIDGE_GRID[0]));
    for &r in &RIDGE_GRID[1..] {
        let e = held_out_error(fit, held, d, r);
        if e < best.1 {
            best = (r, e);
        }
    }
    best.0
}

/// The summed held-out squared error of predicting each column from all the others by least
/// squares on `fit` dampened by `ridge` (`dampen`). With P the inverse of the dampened `fit`,
/// column j's residual is X p_j / P_jj, so its error is p_j^T held p_j / P_jj^2: one inverse
/// gives every column's. Columns constant in the fitted rows are left out.
pub fn held_out_error(fit: &[f64], held: &[f64], d: usize, ridge: f64) -> f64 {
    let mut g = fit.to_vec();
    dampen(&mut g, d, ridge);
    let p = spd_inverse(&g, d).expect("dampened Gram matrix is positive definite");
    // held P, row by row (P is symmetric: its column k is its row k).
    let mut hp = vec![0.0f64; d * d];
    for (hi, out) in held.chunks_exact(d).zip(hp.chunks_exact_mut(d)) {
        for (&h, pk) in hi.iter().zip(p.chunks_exact(d)) {
            if h != 0.0 {
                out.iter_mut().zip(pk).for_each(|(o, &v)| *o += h * v);
            }
        }
    }
    (0..d)
        .filter(|&j| fit[j * d + j] > 0.0)
        .map(|j| {
            let quad: f64 = (0..d).map(|i| p[i * d + j] * hp[i * d + j]).sum();
            quad / p[j * d + j].powi(2)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A random SPD matrix solved and inverted: A x = b and A A^-1 = I to 1e-9.
    #[test]
    fn solves_and_inverts_spd_matrices() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        for d in [1, 2, 7, 40] {
            let rows = d + 5;
            let x: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut a = gram(&x, rows, d);
            dampen(&mut a, d, 0.01);
            let inv = spd_inverse(&a, d).expect("SPD");
            for i in 0..d {
                for j in 0..d {
                    let v: f64 = (0..d).map(|k| a[i * d + k] * inv[k * d + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 1e-9, "d {d}: ({i},{j}) = {v}");
                }
            }
            let b: Vec<f64> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut x = b.clone();
            cholesky_solve(&cholesky(&a, d).unwrap(), d, &mut x, 1);
            for i in 0..d {
                let v: f64 = (0..d).map(|k| a[i * d + k] * x[k]).sum();
                assert!((v - b[i]).abs() < 1e-9);
            }
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none(), "indefinite");
    }

    /// X^T Y is X's columns dotted with Y's, and X^T X is `gram`.
    #[test]
    fn cross_products_are_column_dot_products() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        let (rows, dx, dy) = (9, 4, 3);
        let x: Vec<f32> = (0..rows * dx)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let y: Vec<f32> = (0..rows * dy)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let c = cross(&x, &y, rows, dx, dy);
        for a in 0..dx {
            for o in 0..dy {
                let want: f64 = (0..rows)
                    .map(|r| x[r * dx + a] as f64 * y[r * dy + o] as f64)
                    .sum();
                assert!((c[a * dy + o] - want).abs() < 1e-12, "({a},{o})");
            }
        }
        let g = gram(&x, rows, dx);
        for (p, q) in cross(&x, &x, rows, dx, dx).iter().zip(&g) {
            assert!((p - q).abs() < 1e-12);
        }
    }

    /// Past the size where threads share the product, each entry is still the sum over the
    /// rows in order, bit for bit, with zeros in X and Y of either precision.
    #[test]
    fn large_cross_products_match_the_ordered_sum_exactly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        let (rows, dx, dy) = (300, 61, 70);
        assert!(
            rows * dx * dy >= PARALLEL_WORK,
            "the test must reach the threaded path"
        );
        let x: Vec<f32> = (0..rows * dx)
            .map(|_| match rng.random_range(0..3) {
                0 => 0.0,
                _ => rng.random_range(-1.0..1.0),
            })
            .collect();
        let y: Vec<f64> = (0..rows * dy)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let c = cross(&x, &y, rows, dx, dy);
        for a in 0..dx {
            for o in 0..dy {
                let mut want = 0.0f64;
                for r in 0..rows {
                    want += x[r * dx + a] as f64 * y[r * dy + o];
                }
                assert_eq!(c[a * dy + o].to_bits(), want.to_bits(), "({a},{o})");
            }
        }
        let g = gram(&x, rows, dx);
        for i in 0..dx {
            for j in 0..dx {
                let mut want = 0.0f64;
                for r in 0..rows {
                    want += x[r * dx + i] as f64 * x[r * dx + j] as f64;
                }
                assert_eq!(g[i * dx + j].to_bits(), want.to_bits(), "gram ({i},{j})");
            }
        }
    }

    /// Past the size where column blocks run side by side, every column is what solving it
    /// alone gives, bit for bit.
    #[test]
    fn large_solves_match_each_column_solved_alone_exactly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        let (d, n) = (40, 700);
        assert!(
            d * d * n >= PARALLEL_WORK,
            "the test must reach the threaded path"
        );
        let x: Vec<f32> = (0..(d + 5) * d)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut a = gram(&x, d + 5, d);
        dampen(&mut a, d, 0.01);
        let l = cholesky(&a, d).expect("SPD");
        let b: Vec<f64> = (0..d * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut all = b.clone();
        cholesky_solve(&l, d, &mut all, n);
        for c in 0..n {
            let mut one: Vec<f64> = (0..d).map(|i| b[i * n + c]).collect();
            solve_columns(&l, d, &mut one, 1);
            for i in 0..d {
                assert_eq!(all[i * n + c].to_bits(), one[i].to_bits(), "({i},{c})");
            }
        }
    }

    /// Column j's held-out error from the inverse is the error of regressing column j on the
    /// others with the same dampened Gram matrix, solved directly.
    #[test]
    fn held_out_error_is_each_columns_regression_on_the_others() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        let (d, rows) = (6, 30);
        let draw = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            (0..rows)
                .flat_map(|_| {
                    let z: f32 = rng.random_range(-1.0..1.0);
                    (0..d)
                        .map(|c| z * c as f32 + rng.random_range(-0.5..0.5))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let (fit, held) = (
            gram(&draw(&mut rng), rows, d),
            gram(&draw(&mut rng), rows, d),
        );
        let ridge = 0.1;
        let mut g = fit.clone();
        dampen(&mut g, d, ridge);
        let mut want = 0.0;
        for j in 0..d {
            let o: Vec<usize> = (0..d).filter(|&i| i != j).collect();
            let sub: Vec<f64> = o
                .iter()
                .flat_map(|&a| o.iter().map(|&b| g[a * d + b]).collect::<Vec<_>>())
                .collect();
            let mut a: Vec<f64> = o.iter().map(|&i| g[i * d + j]).collect();
            let l = cholesky(&sub, d - 1).expect("SPD");
            cholesky_solve(&l, d - 1, &mut a, 1);
            // Residual weights v: 1 on column j, -a on the others; error v^T held v.
            let mut v = vec![0.0f64; d];
            v[j] = 1.0;
            o.iter().zip(&a).for_each(|(&i, &c)| v[i] = -c);
            want += (0..d)
                .map(|x| (0..d).map(|y| v[x] * held[x * d + y] * v[y]).sum::<f64>())
                .sum::<f64>();
        }
        let got = held_out_error(&fit, &held, d, ridge);
        assert!((got - want).abs() < 1e-9 * want.max(1.0), "{got} vs {want}");
    }

    /// Many columns on few rows: a plain solve fits the noise, so the chosen ridge is larger
    /// and predicts rows it never saw better. Many rows of an exact relation: the smallest.
    #[test]
    fn the_ridge_grows_where_a_plain_solve_would_fit_noise() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::random());
        let (d, rows) = (40, 50);
        let mut draw = |rows: usize| -> Vec<f32> {
            (0..rows)
                .flat_map(|_| {
                    let z: f32 = rng.random_range(-1.0..1.0);
                    (0..d)
                        .map(|_| z + rng.random_range(-1.0..1.0))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let (fit, held, fresh) = (
            gram(&draw(rows), rows, d),
            gram(&draw(rows), rows, d),
            gram(&draw(10 * rows), 10 * rows, d),
        );
        let chosen = held_out_ridge(&fit, &held, d);
        assert!(chosen >= 0.03, "chose {chosen}");
        let plain = held_out_error(&fit, &fresh, d, RIDGE_GRID[0]);
        assert!(held_out_error(&fit, &fresh, d, chosen) < 0.9 * plain);

        let exact: Vec<f32> = (0..2000)
            .flat_map(|_| {
                let a: f32 = rng.random_range(-1.0..1.0);
                let b: f32 = rng.random_range(-1.0..1.0);
                [a, b, 2.0 * a - b]
            })
            .collect();
        let (fit, held) = (gram(&exact[..3000], 1000, 3), gram(&exact[3000..], 1000, 3));
        assert_eq!(held_out_ridge(&fit, &held, 3), RIDGE_GRID[0]);
    }
}
