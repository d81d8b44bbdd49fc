#!/usr/bin/env python3
"""Bring your own model: train an MLP in PyTorch on regop's exported data, edit it with
`regop edit`, and load the edited weights back into the same PyTorch module.

    regop --seed 0 data --data ../shared/datasets/adult --export export-adult
    python3 tools/byom_torch.py --export export-adult --editor EDITOR.safetensors \\
        --data ../shared/datasets/adult --out byom -- --sparsity 0.9

Everything after `--` is passed to `regop edit` (the requirement: --sparsity, --drop or
--max-eo-gap). Needs torch and safetensors. The export's split seed must be the data seed of
the zoo the editor was trained on (`regop data --seed`).
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file


class Net(torch.nn.Module):
    """An MLP under a name of its own (`net.0`, `net.2`...): regop reads any Linear names."""

    def __init__(self, inputs, hidden, depth, outputs):
        super().__init__()
        layers, width = [], inputs
        for _ in range(depth):
            layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, outputs))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def accuracy(model, x, y, outputs):
    with torch.no_grad():
        logits = model(x)
    pred = (logits[:, 0] > 0).float() if outputs == 1 else logits.argmax(1).float()
    return (pred == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", required=True, help="directory written by regop data --export")
    ap.add_argument("--editor", required=True, help="editor.safetensors from regop train")
    ap.add_argument("--data", help="the dataset files, passed to regop edit")
    ap.add_argument("--regop", default="target/release/regop")
    ap.add_argument("--out", default="byom")
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args, edit_args = ap.parse_known_args()
    edit_args = [a for a in edit_args if a != "--"]
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    schema = json.load(open(os.path.join(args.export, "schema.json")))
    train = load_file(os.path.join(args.export, "train.safetensors"))
    test = load_file(os.path.join(args.export, "test.safetensors"))
    outputs = schema["outputs"]
    model = Net(len(schema["columns"]), args.hidden, args.depth, outputs)

    # Plain PyTorch training on exactly regop's inputs.
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = train["x"], train["y"]
    for epoch in range(args.epochs):
        for idx in torch.randperm(len(y)).split(256):
            logits = model(x[idx])
            if outputs == 1:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y[idx])
            else:
                loss = torch.nn.functional.cross_entropy(logits, y[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    before = accuracy(model, test["x"], test["y"], outputs)

    # safetensors with the activation named, so regop need not assume it.
    original = os.path.join(args.out, "model.safetensors")
    save_file(model.state_dict(), original, metadata={"activation": "relu"})
    edited = os.path.join(args.out, "model-edited.safetensors")
    cmd = [args.regop, "edit", "--editor", args.editor, "--model", original, "--out", edited,
           "--force"] + (["--data", args.data] if args.data else []) + edit_args
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd)
    if done.returncode != 0 or not os.path.exists(edited):
        sys.exit(f"regop edit exited {done.returncode}; nothing to load")

    # The edited weights load into the same module: same names, same shapes.
    model.load_state_dict(load_file(edited), strict=True)
    after = accuracy(model, test["x"], test["y"], outputs)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    zeros = sum((w == 0).sum().item() for w in weights) / sum(w.numel() for w in weights)
    print(f"PyTorch model {model.net}")
    print(f"test accuracy {before:.4f} -> {after:.4f}, weight sparsity {zeros:.4f} "
          f"(edited weights loaded with load_state_dict(strict=True))")


if __name__ == "__main__":
    main()
