#!/usr/bin/env python3
"""Models trained outside regop, for measuring how well its editors carry over: PyTorch MLPs on
regop's exported data with optimisers, initialisations, epochs and widths regop's zoos do not use.

    regop --seed 0 data --data ../shared/datasets/adult --export export-adult
    python3 tools/byom_population.py --export export-adult --out external-adult --count 20
    regop zoo import --like ZOO --data ../shared/datasets/adult --out external-zoo external-adult
    regop compare --zoo ZOO --test-zoo external-zoo --data ../shared/datasets/adult ...

Each file records its recipe (metadata 'recipe') and its activation (ReLU, as the zoos'). Needs
torch and safetensors.
"""
import argparse
import json
import os
import random

import torch
from safetensors.torch import load_file, save_file

OPTIMISERS = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=2e-3),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=1e-2),
}
INITS = {
    "default": None,
    "xavier-uniform": torch.nn.init.xavier_uniform_,
    "kaiming-normal": lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": torch.nn.init.orthogonal_,
}
# Widths the zoos never draw (they use 16, 32, 64, 128).
WIDTHS = [24, 48, 96, 200]


def build(inputs, outputs, width, depth, init):
    layers, w = [], inputs
    for _ in range(depth):
        layers += [torch.nn.Linear(w, width), torch.nn.ReLU()]
        w = width
    layers.append(torch.nn.Linear(w, outputs))
    model = torch.nn.Sequential(*layers)
    if INITS[init] is not None:
        for m in model:
            if isinstance(m, torch.nn.Linear):
                INITS[init](m.weight)
                torch.nn.init.zeros_(m.bias)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    schema = json.load(open(os.path.join(args.export, "schema.json")))
    train = load_file(os.path.join(args.export, "train.safetensors"))
    test = load_file(os.path.join(args.export, "test.safetensors"))
    outputs, inputs = schema["outputs"], len(schema["columns"])
    x, y = train["x"], train["y"]
    for i in range(args.count):
        recipe = {
            "optimiser": rng.choice(list(OPTIMISERS)),
            "init": rng.choice(list(INITS)),
            "width": rng.choice(WIDTHS),
            "depth": rng.randint(1, 3),
            "epochs": rng.randint(2, 15),
            "batch": rng.choice([64, 128, 512]),
        }
        model = build(inputs, outputs, recipe["width"], recipe["depth"], recipe["init"])
        opt = OPTIMISERS[recipe["optimiser"]](model.parameters())
        for _ in range(recipe["epochs"]):
            for idx in torch.randperm(len(y)).split(recipe["batch"]):
                logits = model(x[idx])
                if outputs == 1:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        logits[:, 0], y[idx])
                else:
                    loss = torch.nn.functional.cross_entropy(logits, y[idx].long())
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            logits = model(test["x"])
        pred = (logits[:, 0] > 0).float() if outputs == 1 else logits.argmax(1).float()
        acc = (pred == test["y"]).float().mean().item()
        path = os.path.join(args.out, f"external-{i:02}.safetensors")
        save_file(model.state_dict(), path,
                  metadata={"activation": "relu", "recipe": json.dumps(recipe)})
        print(f"{path}: {recipe}, test accuracy {acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
