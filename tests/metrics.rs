//! Metrics against hand-computed cases and against Fairlearn / scikit-learn on the same
//! predictions (tests/fixtures/metric_cases.json, made by tools/make_metric_fixture.py).

use regop::requirement::metrics::*;

#[test]
fn hand_computed_cases() {
    // Group 0: y = [1, 1, 0, 0], pred = [1, 0, 1, 0]: selection 0.5, TPR 0.5, FPR 0.5.
    // Group 1: y = [1, 0, 0, 0], pred = [1, 1, 1, 0]: selection 0.75, TPR 1.0, FPR 2/3.
    let y = [1., 1., 0., 0., 1., 0., 0., 0.];
    let pred = [1., 0., 1., 0., 1., 1., 1., 0.];
    let g = [0, 0, 0, 0, 1, 1, 1, 1];
    assert_eq!(accuracy(&y, &pred), 4.0 / 8.0);
    assert!((demographic_parity_difference(&pred, &g) - 0.25).abs() < 1e-12);
    assert!((equalized_odds_difference(&y, &pred, &g) - 0.5).abs() < 1e-12);
    // TPR = 2/3, TNR = 2/5.
    assert!((balanced_accuracy(&y, &pred) - (2.0 / 3.0 + 2.0 / 5.0) / 2.0).abs() < 1e-12);
    // AUC: perfect ranking, reversed ranking, all ties.
    assert_eq!(roc_auc(&[0., 0., 1., 1.], &[0.1, 0.2, 0.3, 0.4]), Some(1.0));
    assert_eq!(roc_auc(&[0., 0., 1., 1.], &[0.4, 0.3, 0.2, 0.1]), Some(0.0));
    assert_eq!(roc_auc(&[0., 1., 0., 1.], &[0.5; 4]), Some(0.5));
    assert_eq!(roc_auc(&[1., 1.], &[0.1, 0.2]), None);
    assert_eq!(majority_accuracy(&[1., 0., 0., 0.]), 0.75);
    assert_eq!(sparsity(&[0.0, 1.0, 0.0, 2.0]), 0.5);
    assert_eq!(decisions(&[-0.1, 0.0, 0.1]), [0.0, 0.0, 1.0]);
}

#[test]
fn agree_with_fairlearn_and_sklearn() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metric_cases.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 10);
    let f = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    for (i, c) in cases.iter().enumerate() {
        let (y, pred, score) = (f(&c["y"]), f(&c["pred"]), f(&c["score"]));
        let g: Vec<u32> = c["group"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let close = |a: f64, key: &str| {
            let want = c[key].as_f64().unwrap();
            assert!(
                (a - want).abs() < 1e-9,
                "case {i} {key}: regop {a} vs reference {want}"
            );
        };
        close(accuracy(&y, &pred), "accuracy");
        close(balanced_accuracy(&y, &pred), "balanced_accuracy");
        close(roc_auc(&y, &score).unwrap(), "roc_auc");
        close(demographic_parity_difference(&pred, &g), "dp_difference");
        close(equalized_odds_difference(&y, &pred, &g), "eo_difference");
    }
}
