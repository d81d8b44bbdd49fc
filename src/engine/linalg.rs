//! Small dense linear algebra for the rules that re-solve weights: Gram matrices, Cholesky
//! factors, solves and inverses of symmetric positive definite matrices, row-major f64. Sizes
//! are a layer's fan-in (at most a few hundred, 784 for MNIST pixels), so plain loops do.

/// X^T X of `x` [rows, d] (f32, row-major): [d, d].
pub fn gram(x: &[f32], rows: usize, d: usize) -> Vec<f64> {
    let mut g = vec![0.0f64; d * d];
    for r in 0..rows {
        let row = &x[r * d..(r + 1) * d];
        for (i, &a) in row.iter().enumerate() {
            if a == 0.0 {
                continue;
            }
            let gi = &mut g[i * d..(i + 1) * d];
            for (j, &b) in row.iter().enumerate() {
                gi[j] += a as f64 * b as f64;
            }
        }
    }
    g
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

/// Solve L L^T x = b in place for every column of `b` [d, n] (row-major), given L. All columns
/// move together, row by row, so that the inner loops run along contiguous rows; each entry
/// sums its terms in the same order as a column-by-column solve would.
pub fn cholesky_solve(l: &[f64], d: usize, b: &mut [f64], n: usize) {
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
}
