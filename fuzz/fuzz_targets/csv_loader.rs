//! Any bytes given as a generic CSV file with label column `y`: the loader returns a dataset or
//! an error, never panics; a dataset it returns has consistent sizes and finite features.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regop::io::data::loaders::{load_csv_bytes, DataOptions};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let opts = DataOptions {
        target: Some("y".into()),
        sensitive: data.first().filter(|b| *b & 1 == 1).map(|_| "s".to_string()),
        ..DataOptions::default()
    };
    if let Ok(d) = load_csv_bytes(Path::new("fuzz.csv"), data, &opts, 0) {
        let cols = d.schema.n_columns();
        for split in [&d.train, &d.val, &d.test] {
            assert_eq!(split.x.len(), split.rows() * cols);
            assert_eq!(split.y.len(), split.rows());
            assert!(split.x.iter().all(|v| v.is_finite()));
        }
    }
});
