"""How far one optimiser step from a rule's edit can go: the bound on what an editor that
reads one gradient can add in one inference.

Every model of EDITS (written by `regop edit --step 0 ...`, the rule an editor starts from) is
moved once along the labels' cross-entropy gradient on the first ROWS training rows, by plain
gradient descent, by its sign (Adam's first step) and by the gradient over the root of each
weight's mean squared per-row gradient (a diagonal Fisher step), at several step sizes. Then,
for reference, several steps of full-batch Adam. Each is scored on the test split against the
rule's own accuracy (median and mean lift per model, wins). The removed columns are those
whose first-layer weights are exactly zero in the edit; they stay zero.

    regop data --data D --export export
    regop edit --editor E --batch sealed --drop ... --data D --step 0 --write-missed --out edits
    python3 tools/one_step_bound.py export edits [ROWS]
"""

import os
import sys

import numpy as np
from safetensors.numpy import load_file


def forward(params, x):
    """Every layer's output, the input first: ReLU between layers, logits last."""
    outs, h = [x], x
    layers = len(params) // 2
    for l in range(layers):
        z = h @ params[2 * l].T + params[2 * l + 1]
        h = np.maximum(z, 0) if l + 1 < layers else z
        outs.append(h)
    return outs


def gradients(params, x, y, removed):
    """The mean cross-entropy's gradient and each weight's mean squared per-row gradient."""
    outs = forward(params, x)
    z = outs[-1] - outs[-1].max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    if p.shape[1] == 1:  # one sigmoid output
        p = 1 / (1 + np.exp(-outs[-1]))
        d = p - y[:, None]
    else:
        d = p
        d[np.arange(len(y)), y] -= 1
    d /= len(y)
    n = len(y)
    grad, square = [None] * len(params), [None] * len(params)
    for l in reversed(range(len(params) // 2)):
        grad[2 * l], grad[2 * l + 1] = d.T @ outs[l], d.sum(0)
        square[2 * l] = (d**2).T @ (outs[l] ** 2) * n
        square[2 * l + 1] = (d**2).sum(0) * n
        if l > 0:
            d = (d @ params[2 * l]) * (outs[l] > 0)
    grad[0][:, removed] = 0
    square[0][:, removed] = 0
    return grad, square


def accuracy(params, x, y):
    logits = forward(params, x)[-1]
    guess = logits.argmax(1) if logits.shape[1] > 1 else (logits[:, 0] > 0).astype(int)
    return (guess == y).mean()


def load(path):
    m = load_file(path)
    layers = sorted(int(k.split(".")[0]) for k in m if k.endswith(".weight"))
    return [m[f"{i}.{t}"].astype(np.float64) for i in layers for t in ("weight", "bias")]


STEPS = {
    "gradient": [0.03, 0.1, 0.3],
    "sign": [3e-4, 1e-3, 3e-3],
    "diagonal Fisher": [3e-3, 1e-2, 3e-2],
}
ADAM_LR, ADAM_STEPS = 1e-3, (1, 5, 10, 20, 50)


def main():
    export, edits = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 2048
    train, test = load_file(f"{export}/train.safetensors"), load_file(f"{export}/test.safetensors")
    x, y = train["x"][:rows].astype(np.float64), train["y"][:rows].astype(int)
    xt, yt = test["x"], test["y"].astype(int)
    lifts, rule = {}, []
    for name in sorted(f for f in os.listdir(edits) if f.endswith(".safetensors")):
        start = load(f"{edits}/{name}")
        removed = np.all(start[0] == 0, axis=0)
        base = accuracy(start, xt, yt)
        rule.append(base)
        grad, square = gradients(start, x, y, removed)
        for kind, sizes in STEPS.items():
            for size in sizes:
                moved = []
                for p, g, s in zip(start, grad, square):
                    if kind == "gradient":
                        step = g
                    elif kind == "sign":
                        step = np.sign(g)
                    else:
                        step = g / (np.sqrt(s) + 1e-12)
                    moved.append(p - size * step)
                lifts.setdefault((kind, size), []).append(accuracy(moved, xt, yt) - base)
        # Full-batch Adam on the same rows, for how many steps the gap takes.
        params = [p.copy() for p in start]
        m1 = [np.zeros_like(p) for p in params]
        m2 = [np.zeros_like(p) for p in params]
        for t in range(1, max(ADAM_STEPS) + 1):
            grad_t = grad if t == 1 else gradients(params, x, y, removed)[0]
            for i, g in enumerate(grad_t):
                m1[i] = 0.9 * m1[i] + 0.1 * g
                m2[i] = 0.999 * m2[i] + 0.001 * g**2
                hat = (m1[i] / (1 - 0.9**t)) / (np.sqrt(m2[i] / (1 - 0.999**t)) + 1e-8)
                params[i] -= ADAM_LR * hat
            if t in ADAM_STEPS:
                lifts.setdefault((f"Adam, {t} steps", ADAM_LR), []).append(
                    accuracy(params, xt, yt) - base
                )
    print(f"{len(rule)} models, the rule's median test accuracy {np.median(rule):.4f}, {rows} rows")
    print("| update | step size | median lift (points) | mean lift | better than the rule |")
    print("|---|---:|---:|---:|---:|")
    one_step = []
    for (kind, size), d in lifts.items():
        d = np.array(d)
        if not kind.startswith("Adam"):
            one_step.append(d)
        print(f"| {kind} | {size:g} | {100 * np.median(d):+.2f} | {100 * d.mean():+.2f} | "
              f"{(d > 0).sum()}/{len(d)} |")
    best = np.max(one_step, axis=0)
    print(f"| each model's best one step (chosen on the test split) | - | "
          f"{100 * np.median(best):+.2f} | {100 * best.mean():+.2f} | {(best > 0).sum()}/{len(best)} |")


if __name__ == "__main__":
    main()
