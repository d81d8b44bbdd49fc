//! The built-in synthetic tabular dataset: no files needed, size and seed configurable.
//! A binary sensitive attribute `group`; `proxy_num` and `proxy_cat`, correlated with it;
//! informative `x1`..`x4`, with `x1_proxy` a noisy measurement of `x1` (so that a model retrained
//! without `x1` can recover much of it, and zeroing it cannot); pure-noise `noise1`..`noise3`;
//! a label that depends on the informative features and on the group (so a model is biased
//! unless edited), with 10% label noise.

use super::RawTable;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub const CATEGORICAL: [&str; 2] = ["group", "proxy_cat"];

pub fn table(rows: usize, seed: u64) -> RawTable {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5717_e71c);
    let normal = Normal::new(0.0f64, 1.0).unwrap();
    let columns = [
        "group",
        "proxy_num",
        "proxy_cat",
        "x1",
        "x1_proxy",
        "x2",
        "x3",
        "x4",
        "noise1",
        "noise2",
        "noise3",
        "label",
    ];
    let mut out = Vec::with_capacity(rows);
    for _ in 0..rows {
        let g = rng.random_bool(0.5) as u32;
        let proxy_num = g as f64 * 1.5 + normal.sample(&mut rng) * 0.7;
        let proxy_cat = if rng.random_bool(0.8) {
            ["u", "v"][g as usize]
        } else {
            "w"
        };
        let x: Vec<f64> = (0..4).map(|_| normal.sample(&mut rng)).collect();
        let noise: Vec<f64> = (0..3).map(|_| normal.sample(&mut rng)).collect();
        let logit =
            2.0 * x[0] - 1.2 * x[1] + 0.8 * x[2] * x[3] + 0.9 * x[3].abs() + 1.1 * g as f64 - 1.2;
        let mut y = (logit > 0.0) as u32;
        if rng.random_bool(0.1) {
            y = 1 - y;
        }
        let mut row = vec![
            ["a", "b"][g as usize].to_string(),
            format!("{proxy_num:.5}"),
            proxy_cat.to_string(),
        ];
        // A noisy measurement of x1: what retraining without x1 falls back on.
        let x1_proxy = x[0] + 0.3 * normal.sample(&mut rng);
        row.extend(
            std::iter::once(&x[0])
                .chain(std::iter::once(&x1_proxy))
                .chain(&x[1..])
                .chain(&noise)
                .map(|v| format!("{v:.5}")),
        );
        row.push(y.to_string());
        out.push(row);
    }
    RawTable {
        source: "synthetic".into(),
        columns: columns.iter().map(|s| s.to_string()).collect(),
        lines: (1..=rows).collect(),
        rows: out,
    }
}
