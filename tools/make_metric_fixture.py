"""Writes tests/fixtures/metric_cases.json: random predictions with the values Fairlearn and
scikit-learn give for them, so regop's metrics are checked against the reference definitions.

    python3 tools/make_metric_fixture.py     # needs: pip install fairlearn scikit-learn numpy
"""
import json
import os
import warnings

import numpy as np
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

warnings.filterwarnings("ignore")
rng = np.random.default_rng(7)
cases = []
for i in range(12):
    n = int(rng.integers(8, 400))
    groups = int(rng.integers(2, 5))
    g = rng.integers(0, groups, size=n)
    y = (rng.uniform(size=n) < rng.uniform(0.2, 0.8)).astype(int)
    if i == 0:
        y[g == 1] = 0  # a group without positives: its TPR is undefined
    score = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), 1)  # rounding makes ties
    pred = (score > 0.3).astype(int)
    cases.append({
        "y": y.tolist(), "pred": pred.tolist(), "score": score.tolist(), "group": g.tolist(),
        "accuracy": accuracy_score(y, pred),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "roc_auc": roc_auc_score(y, score),
        "dp_difference": demographic_parity_difference(y, pred, sensitive_features=g),
        "eo_difference": equalized_odds_difference(y, pred, sensitive_features=g),
    })
out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "metric_cases.json")
with open(out, "w") as f:
    json.dump(cases, f)
print("wrote", len(cases), "cases;", "case 0 EO:", cases[0]["eo_difference"])
