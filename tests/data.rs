//! Loaders on the shared copies of the real datasets (row counts as documented), preprocessing
//! rules, the synthetic generator, and broken CSV files.

use regop::io::data::loaders::{load, DataOptions, DatasetName};
use regop::io::data::FeatureKind;
use std::path::{Path, PathBuf};

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets")
        .join(rel)
}

fn opts() -> DataOptions {
    DataOptions {
        rows: 6000,
        ..Default::default()
    }
}

#[test]
fn adult_raw_rows_and_official_test_split() {
    let d = load(DatasetName::Adult, Some(&shared("adult")), &opts(), 0).unwrap();
    // 32,561 training rows + 16,281 test rows (the '|1x3' line skipped), before dropping '?' rows.
    assert_eq!(d.raw_rows, 32_561 + 16_281);
    assert_eq!(
        d.train.rows() + d.val.rows() + d.test.rows() + d.dropped_missing,
        d.raw_rows
    );
    // The official test file stays the test split: 15,060 complete rows of its 16,281.
    assert_eq!(d.test.rows(), 15_060);
    assert_eq!(d.train.rows() + d.val.rows(), 30_162);
    // Labels with the test file's trailing '.' are read too: ~24% positive in both.
    assert!(
        (d.test.positive_rate() - 0.246).abs() < 0.01,
        "{}",
        d.test.positive_rate()
    );
    assert!((d.train.positive_rate() - 0.249).abs() < 0.01);
    assert_eq!(d.schema.sensitive.as_deref(), Some("sex"));
    assert_eq!(d.schema.groups, ["Female", "Male"]);
    let sex = d.schema.feature("sex").unwrap();
    assert_eq!(sex.width, 2);
    assert!(d.schema.feature("fnlwgt").is_none());
    assert_eq!(d.schema.column_names().len(), d.schema.n_columns());
    assert_eq!(d.train.x.len(), d.train.rows() * d.schema.n_columns());
}

#[test]
fn other_datasets_row_counts() {
    let cases = [
        (DatasetName::Compas, "compas", 6_172),
        (DatasetName::German, "german/german.data", 1_000),
        (DatasetName::Bank, "bank/bank-full_lequy.csv", 40_004),
        (DatasetName::Dutch, "dutch", 60_420),
        (DatasetName::LawSchool, "law_school", 20_798),
        (DatasetName::CreditCard, "credit_card", 30_000),
    ];
    for (name, path, rows) in cases {
        let d =
            load(name, Some(&shared(path)), &opts(), 1).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let total = d.train.rows() + d.val.rows() + d.test.rows();
        assert_eq!(total, rows, "{name:?}");
        assert!(
            d.schema.groups.len() >= 2,
            "{name:?}: sensitive groups {:?}",
            d.schema.groups
        );
        let p = d.train.positive_rate();
        assert!(p > 0.05 && p < 0.95, "{name:?}: positive rate {p}");
        // 70/15/15 split.
        assert!(
            (d.train.rows() as f64 / rows as f64 - 0.7).abs() < 0.01,
            "{name:?}"
        );
    }
    let c = load(DatasetName::Compas, Some(&shared("compas")), &opts(), 1).unwrap();
    assert!(c.schema.groups.contains(&"African-American".to_string()));
    let g = load(DatasetName::German, Some(&shared("german")), &opts(), 1).unwrap();
    assert_eq!(g.schema.groups, ["female", "male"]);
    let b = load(
        DatasetName::Bank,
        Some(&shared("bank/bank-full_lequy.csv")),
        &opts(),
        1,
    )
    .unwrap();
    assert_eq!(b.schema.groups, ["age<25", "age>=25"]);
}

#[test]
fn numerics_are_standardised_on_the_training_split_only() {
    let d = load(DatasetName::German, Some(&shared("german")), &opts(), 3).unwrap();
    let age = d.schema.feature("age").unwrap();
    assert!(matches!(age.kind, FeatureKind::Numeric { .. }));
    let w = d.schema.n_columns();
    let col: Vec<f64> = (0..d.train.rows())
        .map(|r| d.train.x[r * w + age.start] as f64)
        .collect();
    let mean = col.iter().sum::<f64>() / col.len() as f64;
    let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
    assert!(
        mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
        "train mean {mean}, var {var}"
    );
    let test_mean = (0..d.test.rows())
        .map(|r| d.test.x[r * w + age.start] as f64)
        .sum::<f64>()
        / d.test.rows() as f64;
    assert!(
        test_mean.abs() > 1e-6,
        "test split must not be re-standardised"
    );
    // One-hot rows: exactly one 1 per categorical feature for categories seen in training.
    let purpose = d.schema.feature("purpose").unwrap();
    for r in 0..d.train.rows() {
        let s: f32 = d.train.x[r * w + purpose.start..r * w + purpose.start + purpose.width]
            .iter()
            .sum();
        assert_eq!(s, 1.0);
    }
}

#[test]
fn splits_are_deterministic_by_seed() {
    let a = load(DatasetName::German, Some(&shared("german")), &opts(), 7).unwrap();
    let b = load(DatasetName::German, Some(&shared("german")), &opts(), 7).unwrap();
    let c = load(DatasetName::German, Some(&shared("german")), &opts(), 8).unwrap();
    assert_eq!(a.train, b.train);
    assert_ne!(a.train.y, c.train.y);
}

#[test]
fn synthetic_has_a_biased_label_proxies_and_noise() {
    let d = load(DatasetName::Synthetic, None, &opts(), 0).unwrap();
    assert_eq!(d.train.rows() + d.val.rows() + d.test.rows(), 6000);
    assert_eq!(d.schema.groups, ["a", "b"]);
    // The label depends on the group: positive rates differ by a wide margin.
    let rate = |g: u32| {
        let idx: Vec<usize> = (0..d.train.rows())
            .filter(|&r| d.train.group[r] == g)
            .collect();
        idx.iter().map(|&r| d.train.y[r] as f64).sum::<f64>() / idx.len() as f64
    };
    assert!(rate(1) - rate(0) > 0.1, "{} vs {}", rate(1), rate(0));
    for f in [
        "proxy_num",
        "proxy_cat",
        "x1",
        "x1_proxy",
        "x4",
        "noise1",
        "noise3",
    ] {
        assert!(d.schema.feature(f).is_some(), "{f}");
    }
    // x1_proxy measures x1: their correlation over the training rows is high.
    let (w, n) = (d.schema.n_columns(), d.train.rows());
    let col = |name: &str| -> Vec<f64> {
        let c = d.schema.feature(name).unwrap().start;
        (0..n).map(|r| d.train.x[r * w + c] as f64).collect()
    };
    let (a, b) = (col("x1"), col("x1_proxy"));
    let dot: f64 = a.iter().zip(&b).map(|(a, b)| a * b).sum::<f64>() / n as f64;
    assert!(dot > 0.9, "standardised x1 and x1_proxy correlate at {dot}");
    // The default size leaves 10,000 test rows: enough to resolve a 0.05 fairness gap.
    let full = load(DatasetName::Synthetic, None, &DataOptions::defaults(), 0).unwrap();
    assert_eq!(full.test.rows(), 10_000);
    let rows = DataOptions {
        rows: 500,
        ..Default::default()
    };
    let small = load(DatasetName::Synthetic, None, &rows, 5).unwrap();
    assert_eq!(
        small.train.rows() + small.val.rows() + small.test.rows(),
        500
    );
}

fn csv_error(contents: &[u8], extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.csv");
    std::fs::write(&p, contents).unwrap();
    let mut o = DataOptions {
        target: Some("y".into()),
        ..Default::default()
    };
    if extra.contains(&"cat") {
        o.categorical = vec!["c".into()];
    }
    let e = load(DatasetName::Csv, Some(&p), &o, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&p.display().to_string()),
        "does not name the file: {e}"
    );
    assert!(!e.contains('\n'));
    e
}

#[test]
fn broken_csv_files_get_clear_errors() {
    assert!(csv_error(b"", &[]).contains("empty"));
    assert!(csv_error(b"a,y\n", &[]).contains("no rows"));
    assert!(csv_error(b"a,y\n1,0\n2,1,5\n", &[]).contains("line 3: 3 fields, expected 2"));
    let e = csv_error(
        b"a,y\n1,0\nabc,1\n3,1\n4,0\n5,1\n6,0\n7,1\n8,0\n9,1\n10,0\n",
        &[],
    );
    assert!(
        e.contains("'abc' is not a number") && e.contains("--categorical"),
        "{e}"
    );
    assert!(csv_error(b"a,y\n1,0\n\xff\xfe,1\n", &[]).contains("not valid UTF-8"));
    assert!(csv_error(b"a,z\n1,0\n", &[]).contains("no column named 'y'"));
    assert!(csv_error(b"a,y\n1,0\n2,0\n", &[]).contains("single class"));
}

#[test]
fn generic_csv_loads_with_categoricals_and_a_sensitive_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("people.csv");
    let mut s = String::from("age,colour,score,y\n");
    for i in 0..200 {
        s += &format!(
            "{},{},{},{}\n",
            18 + i % 50,
            ["red", "green", "blue"][i % 3],
            i as f64 * 0.1,
            (i % 4 == 0) as u32
        );
    }
    std::fs::write(&p, s).unwrap();
    let o = DataOptions {
        target: Some("y".into()),
        categorical: vec!["colour".into()],
        sensitive: Some("age<30".into()),
        ..Default::default()
    };
    let d = load(DatasetName::Csv, Some(&p), &o, 0).unwrap();
    assert_eq!(d.schema.n_columns(), 1 + 3 + 1);
    assert_eq!(d.schema.groups, ["age<30", "age>=30"]);
    assert_eq!(d.train.rows() + d.val.rows() + d.test.rows(), 200);
}
