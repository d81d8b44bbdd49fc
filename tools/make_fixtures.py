"""Writes the model fixtures in tests/fixtures/ the way a PyTorch user's export produces them:
safetensors.numpy.save_file of a state_dict, with string metadata. Also writes expected.json with
every value as the reader must return it (f16 values already rounded), for the Rust tests.

    python3 tools/make_fixtures.py          # needs: pip install safetensors numpy
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
rng = np.random.default_rng(20261124)
expected = {}


def linear(out_dim, in_dim):
    bound = 1.0 / np.sqrt(in_dim)
    w = rng.uniform(-bound, bound, size=(out_dim, in_dim)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(out_dim,)).astype(np.float32)
    return w, b


def record(name, layers, activation, features):
    expected[name] = {
        "activation": activation,
        "features": features,
        "layers": [
            {"name": n, "out": int(w.shape[0]), "in": int(w.shape[1]),
             "weight": [float(v) for v in w.astype(np.float32).ravel()],
             "bias": None if b is None else [float(v) for v in b.astype(np.float32).ravel()]}
            for n, w, b in layers
        ],
    }


# 1. nn.Sequential(Linear(6,8), ReLU(), Linear(8,4), ReLU(), Linear(4,1)): keys 0, 2, 4.
#    Input column 5 ("noise") is all zeros: a data-minimisation audit must see norm 0 there.
features = ["age", "sex", "race", "income", "hours", "noise"]
w0, b0 = linear(8, 6)
w0[:, 5] = 0.0
w0[0, :3] = 0.0
w2, b2 = linear(4, 8)
w4, b4 = linear(1, 4)
save_file({"0.weight": w0, "0.bias": b0, "2.weight": w2, "2.bias": b2, "4.weight": w4, "4.bias": b4},
          os.path.join(OUT, "sequential_f32.safetensors"),
          metadata={"format": "pt", "activation": "relu", "features": json.dumps(features), "dataset": "synthetic"})
record("sequential_f32.safetensors", [("0", w0, b0), ("2", w2, b2), ("4", w4, b4)], "relu", features)

# 2. Named modules fc1, fc2, out stored as float16, tanh, no feature names, last layer without bias.
w1, b1 = linear(5, 3)
w2, b2 = linear(5, 5)
w3, _ = linear(2, 5)
t = {"fc1.weight": w1.astype(np.float16), "fc1.bias": b1.astype(np.float16),
     "fc2.weight": w2.astype(np.float16), "fc2.bias": b2.astype(np.float16),
     "out.weight": w3.astype(np.float16)}
save_file(t, os.path.join(OUT, "named_f16.safetensors"), metadata={"format": "pt", "activation": "Tanh"})
record("named_f16.safetensors", [("fc1", t["fc1.weight"], t["fc1.bias"]), ("fc2", t["fc2.weight"], t["fc2.bias"]),
                                 ("out", t["out.weight"], None)], "tanh", None)

# 3. Names whose sorted order does not chain (body, head, stem): the order must come from shapes.
ws, bs = linear(5, 3)
wb, bb = linear(7, 5)
wh, bh = linear(2, 7)
save_file({"head.weight": wh, "head.bias": bh, "body.weight": wb, "body.bias": bb, "stem.weight": ws, "stem.bias": bs},
          os.path.join(OUT, "shape_ordered.safetensors"), metadata={"format": "pt", "activation": "silu"})
record("shape_ordered.safetensors", [("stem", ws, bs), ("body", wb, bb), ("head", wh, bh)], "silu", None)

# 4. Un-finalised torch.nn.utils.prune: weight_orig + weight_mask instead of weight.
wo, b0 = linear(4, 3)
mask = (rng.uniform(size=wo.shape) > 0.5).astype(np.float32)
w2, b2 = linear(1, 4)
save_file({"net.0.weight_orig": wo, "net.0.weight_mask": mask, "net.0.bias": b0, "net.2.weight": w2, "net.2.bias": b2},
          os.path.join(OUT, "pruned_f32.safetensors"), metadata={"format": "pt"})
record("pruned_f32.safetensors", [("net.0", wo * mask, b0), ("net.2", w2, b2)], None, None)

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", sorted(expected))
