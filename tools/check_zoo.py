"""Checks that every model of a zoo loads into a PyTorch nn.Sequential unchanged.

With torch installed: builds nn.Sequential(Linear, act, Linear, ..., Linear) from the manifest and
calls load_state_dict(load_file(path)) with strict=True, then compares its logits with the
stored weights applied in numpy. Without torch: makes the same checks load_state_dict(strict=True)
makes (exactly the expected keys, each with the expected shape, float32) with safetensors.numpy.

    python3 tools/check_zoo.py ZOO_DIR          # needs: pip install safetensors numpy [torch]
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

zoo = sys.argv[1]
manifest = json.load(open(os.path.join(zoo, "manifest.json")))
try:
    import torch
    from safetensors.torch import load_file as load_torch
except ImportError:
    torch = None

acts = {"relu": "ReLU", "tanh": "Tanh", "silu": "SiLU", "sigmoid": "Sigmoid"}
for rec in manifest["models"]:
    path = os.path.join(zoo, rec["file"])
    dims = rec["dims"]
    expected = {}
    for l in range(len(dims) - 1):
        expected[f"{2 * l}.weight"] = (dims[l + 1], dims[l])
        expected[f"{2 * l}.bias"] = (dims[l + 1],)
    tensors = load_file(path)
    assert set(tensors) == set(expected), f"{path}: keys {sorted(tensors)} != {sorted(expected)}"
    for k, shape in expected.items():
        assert tensors[k].shape == shape and tensors[k].dtype == np.float32, f"{path}: {k} {tensors[k].shape} {tensors[k].dtype}"
    if torch is not None:
        layers = []
        for l in range(len(dims) - 1):
            layers.append(torch.nn.Linear(dims[l], dims[l + 1]))
            if l + 2 < len(dims):
                layers.append(getattr(torch.nn, acts[rec["activation"]])())
        net = torch.nn.Sequential(*layers)
        net.load_state_dict(load_torch(path), strict=True)
        x = np.random.default_rng(0).normal(size=(5, dims[0])).astype(np.float32)
        h = x
        for l in range(len(dims) - 1):
            h = h @ tensors[f"{2 * l}.weight"].T + tensors[f"{2 * l}.bias"]
            if l + 2 < len(dims):
                h = np.maximum(h, 0) if rec["activation"] == "relu" else h
        got = net(torch.from_numpy(x)).detach().numpy()
        assert np.allclose(got, h, atol=1e-5), path
print(f"{len(manifest['models'])} models: state dicts match nn.Sequential" + (" (loaded with torch)" if torch else " (keys, shapes, dtype; torch not installed)"))
