"""The regop editor written the PyTorch + PyTorch Geometric way, for benchmarks only.

It loads regop's editor checkpoints and model files and computes the same function: the
parameter graph of each model (neurons are nodes, weights are edges) batched with
torch_geometric's Batch, the graph metanetwork (edge update, mean aggregation both ways with
torch_geometric.utils.scatter, node update, LayerNorm, FiLM on the conditioning vector), the
heads, and the exact edit (removed columns zero, top-k pruning). The training step is the same
loss (Jensen-Shannon divergence between original and edited predictions, plus lambda times the
soft fairness gap) through autograd and torch.optim.Adam.

    python3 tools/peer/peer.py check CHECK_DIR [--device cpu|cuda]
    python3 tools/peer/peer.py bench --editor E --zoo Z [--device cuda] [--batches 1,16,256]

`check` compares the peer with the files `regop bench --check-out CHECK_DIR` wrote (edited
models and one training step's gradient) and fails unless every relative difference is < 1e-4.
`bench` prints the same timings as `regop bench --editor E --zoo Z` as JSON.
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

HEAD_OUT = 2
EPS_SCORE = 1e-8
LN_EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# Files


class EditorCheckpoint:
    """An editor file: its tensors (on `device`), architecture, edit constants and schema."""

    def __init__(self, path, device):
        with safe_open(path, "pt") as f:
            meta = f.metadata()
            self.p = {
                k: f.get_tensor(k).to(device)
                for k in f.keys()
                if not k.startswith("optimizer.")
            }
        if meta.get("format") != "regop-editor/1":
            raise SystemExit(f"{path}: not a regop editor")
        self.cfg = json.loads(meta["config"])
        self.spec = json.loads(meta["edit"])
        self.schema = json.loads(meta["schema"])
        self.means = json.loads(meta.get("column_means", "[]"))
        self.device = device
        if self.spec.get("tau", 0.0) > 0.0:
            raise SystemExit(f"{path}: the peer does not learn pruning masks (tau > 0)")
        if self.spec.get("signals", False):
            raise SystemExit(f"{path}: the peer does not compute calibration signals")
        # Inputs past (bias, removed, sensitive) and past the weight are data signals: zero here.
        self.node_features = self.p["node_in.w"].shape[1]
        self.edge_features = self.p["edge_in.w"].shape[1]
        n_cols = sum(f["width"] for f in self.schema["features"])
        self.sensitive = [False] * n_cols
        for f in self.schema["features"]:
            if f["name"] == self.schema.get("sensitive"):
                for c in range(f["start"], f["start"] + f["width"]):
                    self.sensitive[c] = True
        self.n_cols = n_cols

    def parameters(self):
        return list(self.p.values())


def _natural_key(s):
    return [(t, int(n) if n else -1) for t, n in re.findall(r"(\D*)(\d*)", s) if t or n]


class MlpFile:
    """A model file: Linear layers in PyTorch naming, ordered as regop orders them."""

    def __init__(self, path):
        with safe_open(path, "pt") as f:
            self.meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
        names = sorted({k.rsplit(".", 1)[0] for k in tensors}, key=_natural_key)
        self.layers = [(n, tensors[n + ".weight"], tensors[n + ".bias"]) for n in names]
        self.dims = [self.layers[0][1].shape[1]] + [w.shape[0] for _, w, _ in self.layers]
        self.activation = self.meta.get("activation", "relu")
        self.path = path

    def flat(self):
        return torch.cat([t.reshape(-1) for _, w, b in self.layers for t in (w, b)])

    def save(self, path, flat):
        out, i = {}, 0
        for name, w, b in self.layers:
            out[name + ".weight"] = flat[i : i + w.numel()].reshape(w.shape).contiguous()
            i += w.numel()
            out[name + ".bias"] = flat[i : i + b.numel()].contiguous()
            i += b.numel()
        save_file({k: v.cpu() for k, v in out.items()}, path, metadata=self.meta)


# ---------------------------------------------------------------------------------------------
# The ask and the parameter graph


class Ask:
    def __init__(self, n_cols, sparsity=0.0, lam=1.0, removed=()):
        self.removed = [False] * n_cols
        for c in removed:
            self.removed[c] = True
        self.sparsity = sparsity
        self.lam = lam

    def cond(self, requirement):
        frac = sum(self.removed) / max(len(self.removed), 1)
        if requirement == "minimise":
            return [1.0, 0.0, 0.0, frac]
        if requirement == "fairness":
            return [1.0, math.log10(max(self.lam, 1e-6)) / 3.0, 0.0, 0.0]
        return [1.0, 0.0, self.sparsity, 0.0]


def base_params(ed, mlp, ask, flat):
    """The values an edit starts from: the model's own, or with the removed columns' training
    means folded into the first layer's biases (minimise)."""
    if ed.spec["requirement"] != "minimise" or not ed.means or not any(ask.removed):
        return flat.clone()
    fi, fo = mlp.dims[0], mlp.dims[1]
    w = flat[: fi * fo].reshape(fo, fi)
    mask = torch.tensor(ask.removed, dtype=flat.dtype, device=flat.device)
    means = torch.tensor(ed.means, dtype=flat.dtype, device=flat.device)
    out = flat.clone()
    out[fi * fo : fi * fo + fo] += w @ (mask * means)
    return out


def model_graph(ed, mlp, ask, flat):
    """One model's parameter graph as a torch_geometric Data: nodes are the input columns then
    each layer's neurons; edges are W[l][j, i] in row-major order."""
    pos_cfg = ed.cfg["pos"]
    dev = flat.device
    dims = mlp.dims
    n_in, layers = dims[0], len(dims) - 1
    feats, pos, starts = [], [], [0]
    feats.append(
        torch.stack(
            [
                torch.zeros(n_in, device=dev),
                torch.tensor(ask.removed, dtype=torch.float32, device=dev),
                torch.tensor(ed.sensitive, dtype=torch.float32, device=dev),
            ],
            1,
        )
    )
    pos.append(torch.arange(n_in, device=dev))
    src, dst, w_all = [], [], []
    off, node = 0, n_in
    for l in range(layers):
        fi, fo = dims[l], dims[l + 1]
        w = flat[off : off + fi * fo]
        b = flat[off + fi * fo : off + fi * fo + fo]
        off += fi * fo + fo
        starts.append(node)
        feats.append(torch.stack([b, torch.zeros_like(b), torch.zeros_like(b)], 1))
        if l + 1 == layers:
            ids = pos_cfg["max_inputs"] + pos_cfg["max_hidden_layers"] + torch.arange(fo, device=dev)
        else:
            ids = torch.full((fo,), pos_cfg["max_inputs"] + l, device=dev)
        pos.append(ids)
        src.append(starts[l] + torch.arange(fi, device=dev).repeat(fo))
        dst.append(node + torch.arange(fo, device=dev).repeat_interleave(fi))
        w_all.append(w)
        node += fo
    x = torch.cat(feats)
    x = F.pad(x, (0, ed.node_features - x.shape[1]))
    edge_attr = torch.cat(w_all)[:, None]
    edge_attr = F.pad(edge_attr, (0, ed.edge_features - 1))
    return Data(
        x=x,
        pos_id=torch.cat(pos),
        edge_index=torch.stack([torch.cat(src), torch.cat(dst)]),
        edge_attr=edge_attr,
        cond=torch.tensor([ask.cond(ed.spec["requirement"])], device=dev),
        num_nodes=node,
    )


# ---------------------------------------------------------------------------------------------
# The editor


def editor_forward(ed, g):
    """Head outputs per edge [E, 2] and per node [N, 2] for a batched graph `g`."""
    p, h = ed.p, ed.cfg["hidden"]
    src, dst = g.edge_index
    n = g.num_nodes
    x = p["embed"][g.pos_id] + F.linear(g.x, p["node_in.w"], p["node_in.b"])
    e = F.linear(g.edge_attr, p["edge_in.w"], p["edge_in.b"])
    node_graph = g.batch
    for i in range(ed.cfg["layers"]):
        q = lambda k: p[f"layer{i}.{k}"]
        z = F.linear(x, q("src_w"))[src] + F.linear(x, q("dst_w"))[dst]
        z = z + F.linear(e, q("edge_w"), q("edge_b"))
        e = e + F.linear(F.silu(z), q("msg_w"), q("msg_b"))
        fwd = scatter(e, dst, dim=0, dim_size=n, reduce="mean")
        bwd = scatter(e, src, dim=0, dim_size=n, reduce="mean")
        u = F.linear(x, q("node_x")) + F.linear(fwd, q("node_f")) + F.linear(bwd, q("node_r"))
        xres = x + F.linear(F.silu(u + q("node_b")), q("out_w"), q("out_b"))
        ln = F.layer_norm(xres, (h,), q("ln")[:h], q("ln")[h:], LN_EPS)
        gb = F.linear(g.cond, q("film_w"), q("film_b"))[node_graph]
        x = ln * (1 + gb[:, :h]) + gb[:, h:]

    def head(name, v):
        return F.linear(F.silu(F.linear(v, p[name + ".w1"], p[name + ".b1"])), p[name + ".w2"], p[name + ".b2"])

    return head("edge_head", e), head("node_head", x)


def prune_prior(ed, w):
    """A layer's weights' pruning-score priors: log |w|, or the log of their LAMP scores
    (w^2 over the sum of squares of the layer's weights at least as large, ties by position)."""
    if ed.spec.get("prune_score", "magnitude") == "magnitude":
        return torch.log(w.abs() + EPS_SCORE)
    sq = w.double() ** 2
    order = torch.argsort(w.abs(), stable=True)
    s = sq[order]
    tail = torch.flip(torch.cumsum(torch.flip(s, [0]), 0), [0])
    score = torch.empty_like(sq)
    score[order] = torch.where(tail > 0, s / tail, torch.zeros_like(s))
    return torch.log(score.clamp_min(1e-30)).float()


def edited_values(ed, mlp, ask, base, edge_out, node_out, e0, n0):
    """One model's edited parameters from its slice of the head outputs: base + gamma * delta,
    removed columns zero, and (pruning) exactly the top-k scores kept. The mask is a constant
    (regop's tau = 0), so the values stay differentiable in the deltas (the training step)."""
    gamma = ed.spec["gamma"]
    dims = mlp.dims
    vals, scores, is_w, removed = [], [], [], []
    e, nd = e0, n0 + dims[0]
    rem = torch.tensor(ask.removed, device=base.device)
    off = 0
    for l in range(len(dims) - 1):
        fi, fo = dims[l], dims[l + 1]
        eo = edge_out[e : e + fi * fo]
        no = node_out[nd : nd + fo]
        wb = base[off : off + fi * fo]
        vals += [wb + gamma * eo[:, 0], base[off + fi * fo : off + fi * fo + fo] + gamma * no[:, 0]]
        scores += [prune_prior(ed, wb.detach()) + eo[:, 1], torch.full((fo,), -math.inf, device=base.device)]
        r = rem.repeat(fo) if l == 0 else torch.zeros(fi * fo, dtype=torch.bool, device=base.device)
        removed += [r, torch.zeros(fo, dtype=torch.bool, device=base.device)]
        is_w += [torch.ones(fi * fo, dtype=torch.bool, device=base.device), torch.zeros(fo, dtype=torch.bool, device=base.device)]
        e += fi * fo
        nd += fo
        off += fi * fo + fo
    v, s, w, r = torch.cat(vals), torch.cat(scores), torch.cat(is_w), torch.cat(removed)
    keep = torch.ones_like(v)
    if ed.spec["requirement"] == "prune":
        cand = w & ~r
        n_w = int(cand.sum())
        k = n_w - min(int(round(ask.sparsity * n_w)), n_w)
        idx = torch.nonzero(cand).squeeze(1)
        order = torch.argsort(s[idx].detach(), descending=True, stable=True)
        keep = torch.zeros_like(v)
        keep[idx[order[:k]]] = 1.0
        keep[~w] = 1.0
    keep = keep * (~r).to(v.dtype)
    return v * keep


def edit(ed, mlps, asks, flats):
    """Edit a batch of models in one editor inference; returns the edited flat parameters."""
    datas = [model_graph(ed, m, a, f) for m, a, f in zip(mlps, asks, flats)]
    g = Batch.from_data_list(datas)
    with torch.no_grad():
        edge_out, node_out = editor_forward(ed, g)
        out = []
        e0 = n0 = 0
        for m, a, f, d in zip(mlps, asks, flats, datas):
            base = base_params(ed, m, a, f)
            out.append(edited_values(ed, m, a, base, edge_out, node_out, e0, n0))
            e0 += d.edge_index.shape[1]
            n0 += d.num_nodes
    return out


# ---------------------------------------------------------------------------------------------
# The training step


ACTS = {"relu": F.relu, "tanh": torch.tanh, "silu": F.silu, "sigmoid": torch.sigmoid, "identity": lambda v: v}


def mlp_forward(dims, act, params, x):
    """Logits [M, rows, outputs] of M models of one architecture; params [M, P]."""
    m = params.shape[0]
    h = x.expand(m, -1, -1)
    off = 0
    for l in range(len(dims) - 1):
        fi, fo = dims[l], dims[l + 1]
        w = params[:, off : off + fi * fo].reshape(m, fo, fi)
        b = params[:, off + fi * fo : off + fi * fo + fo]
        off += fi * fo + fo
        h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
        if l + 2 < len(dims):
            h = ACTS[act](h)
    return h


def jsd_rows(p_logits, q_logits):
    """JSD(P || Q) per row (natural log); binary logits become two classes [0, z]."""
    if p_logits.shape[-1] == 1:
        p_logits = torch.cat([torch.zeros_like(p_logits), p_logits], -1)
        q_logits = torch.cat([torch.zeros_like(q_logits), q_logits], -1)
    lp, lq = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    return 0.5 * ((lp.exp() * (lp - lm)).sum(-1) + (lq.exp() * (lq - lm)).sum(-1))


def fairness_penalty(logits, y, group, n_groups, eo):
    """Per model: sum over label classes (EO) and groups of (group rate - class rate)^2, rates of
    sigmoid(logit)."""
    s = torch.sigmoid(logits[..., 0])
    total = torch.zeros(s.shape[0], device=s.device)
    classes = [y > 0.5, y <= 0.5] if eo else [torch.ones_like(y, dtype=torch.bool)]
    for c in classes:
        if not c.any():
            continue
        rate = s[:, c].mean(1)
        for k in range(n_groups):
            sel = c & (group == k)
            if sel.any():
                total = total + (s[:, sel].mean(1) - rate) ** 2
    return total


def train_loss(ed, mlps, asks, flats, x, y, group):
    """Sum over models of (mean JSD over rows + lambda * fairness penalty), the loss regop's
    training step differentiates; returns (loss, jsd per model, penalty per model)."""
    datas = [model_graph(ed, m, a, f) for m, a, f in zip(mlps, asks, flats)]
    g = Batch.from_data_list(datas)
    edge_out, node_out = editor_forward(ed, g)
    edited, e0, n0 = [], 0, 0
    for m, a, f, d in zip(mlps, asks, flats, datas):
        base = base_params(ed, m, a, f)
        edited.append(edited_values(ed, m, a, base, edge_out, node_out, e0, n0))
        e0 += d.edge_index.shape[1]
        n0 += d.num_nodes
    dims, act = mlps[0].dims, mlps[0].activation
    orig = mlp_forward(dims, act, torch.stack(flats), x).detach()
    new = mlp_forward(dims, act, torch.stack(edited), x)
    jsd = jsd_rows(orig, new).mean(1)
    loss = jsd.sum()
    pen = torch.zeros_like(jsd)
    if ed.spec["requirement"] == "fairness":
        n_groups = max(int(group.max()) + 1, 2)
        pen = fairness_penalty(new, y, group, n_groups, ed.spec["gap"] == "eo")
        lam = torch.tensor([a.lam for a in asks], device=x.device)
        loss = loss + (lam * pen).sum()
    return loss, jsd, pen


# ---------------------------------------------------------------------------------------------
# Commands


def rel(a, b):
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def load_check(check_dir):
    with open(os.path.join(check_dir, "check.json")) as f:
        return json.load(f)


def ask_of(ed, spec):
    return Ask(ed.n_cols, spec["sparsity"], spec["lambda"], spec["removed_columns"])


def packed_names(ed):
    """Tensor names in the order of regop's packed parameter buffer (and of its gradient)."""
    names = ["embed", "node_in.w", "node_in.b", "edge_in.w", "edge_in.b"]
    per_layer = ["src_w", "dst_w", "edge_w", "edge_b", "msg_w", "msg_b", "node_x", "node_f",
                 "node_r", "node_b", "out_w", "out_b", "ln", "film_w", "film_b"]
    for i in range(ed.cfg["layers"]):
        names += [f"layer{i}.{n}" for n in per_layer]
    for hd in ["edge_head", "node_head"]:
        names += [f"{hd}.w1", f"{hd}.b1", f"{hd}.w2", f"{hd}.b2"]
    return names


def load_train_batch(check, dev):
    t = check["train"]
    with safe_open(t["batch"], "pt") as f:
        x, y, group = (f.get_tensor(k).to(dev) for k in ("x", "y", "group"))
        want = {k: f.get_tensor(k).to(dev) for k in ("jsd", "penalty", "grads")}
    return [MlpFile(p) for p in t["models"]], x, y, group.long(), want


def cmd_check(a):
    dev = torch.device(a.device)
    c = load_check(a.check_dir)
    ed = EditorCheckpoint(c["editor"], dev)
    ask = ask_of(ed, c["ask"])
    worst = 0.0
    for item in c["edits"]:
        m = MlpFile(item["model"])
        want = MlpFile(item["edited"]).flat().to(dev)
        got = edit(ed, [m], [ask], [m.flat().to(dev)])[0]
        r = rel(got, want)
        masks = int(((got == 0) != (want == 0)).sum())
        print(f"edit of {os.path.basename(item['model'])}: relative difference {r:.2e}, "
              f"{masks} pruning-mask differences")
        worst = max(worst, r)
    mlps, x, y, group, want = load_train_batch(c, dev)
    for v in ed.parameters():
        v.requires_grad_(True)
    flats = [m.flat().to(dev) for m in mlps]
    loss, jsd, pen = train_loss(ed, mlps, [ask] * len(mlps), flats, x, y, group)
    loss.backward()
    grad = torch.cat([ed.p[n].grad.reshape(-1) for n in packed_names(ed)])
    rj, rg = rel(jsd.detach(), want["jsd"]), rel(grad, want["grads"])
    print(f"training step on {len(mlps)} models x {x.shape[0]} rows: JSD relative difference "
          f"{rj:.2e}, editor gradient relative difference {rg:.2e}")
    worst = max(worst, rj, rg)
    if ed.spec["requirement"] == "fairness":
        rp = rel(pen.detach(), want["penalty"])
        print(f"fairness penalty relative difference {rp:.2e}")
        worst = max(worst, rp)
    ok = worst < 1e-4
    print(f"{'OK' if ok else 'MISMATCH'}: worst relative difference {worst:.2e} (bound 1e-4)")
    return 0 if ok else 1


def median_time(fn, iters, sync):
    fn()
    sync()
    times = []
    for _ in range(max(iters, 1)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def cmd_bench(a):
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    c = load_check(a.check_dir)
    ed = EditorCheckpoint(c["editor"], dev)
    ask = ask_of(ed, c["ask"])
    with open(os.path.join(a.zoo, "manifest.json")) as f:
        manifest = json.load(f)
    tests = [MlpFile(os.path.join(a.zoo, r["file"])) for r in manifest["models"] if r["split"] == "test"]
    flats = [m.flat().to(dev) for m in tests]
    label = f"H={ed.cfg['hidden']} L={ed.cfg['layers']}"
    results = []

    def add(name, shape, s, n, unit):
        results.append({"name": name, "shape": shape, "seconds_per_iter": s, "rate": n / s, "unit": unit})

    first = tests[0]
    out = os.path.join(tempfile.mkdtemp(), "edited.safetensors")

    def file_to_file():
        m = MlpFile(first.path)
        e = edit(ed, [m], [ask], [m.flat().to(dev)])[0]
        m.save(out, e)

    add("edit, file to file", f"{first.dims} {label}", median_time(file_to_file, a.iters, sync), 1, "edits/s")
    g = Batch.from_data_list([model_graph(ed, first, ask, flats[0])])
    base = base_params(ed, first, ask, flats[0])

    def on_device():
        with torch.no_grad():
            eo, no = editor_forward(ed, g)
            edited_values(ed, first, ask, base, eo, no, 0, 0).cpu()

    add("edit, graph on device", f"{first.dims} {label}", median_time(on_device, a.iters, sync), 1, "edits/s")
    for b in a.batches:
        ms = [tests[i % len(tests)] for i in range(b)]
        fs = [flats[i % len(tests)] for i in range(b)]
        iters = min(max(a.iters * 8 // b, 2), max(a.iters, 2))
        s = median_time(lambda: [e.cpu() for e in edit(ed, ms, [ask] * b, fs)], iters, sync)
        add("edits, batched", f"B={b} {label}", s, b, "edits/s")
    mlps, x, y, group, _ = load_train_batch(c, dev)
    tflats = [m.flat().to(dev) for m in mlps]
    for v in ed.parameters():
        v.requires_grad_(True)
    opt = torch.optim.Adam(ed.parameters(), lr=c["train"]["adam"]["lr"], betas=(0.9, 0.999), eps=1e-8)

    def step():
        opt.zero_grad(set_to_none=False)
        loss, _, _ = train_loss(ed, mlps, [ask] * len(mlps), tflats, x, y, group)
        loss.backward()
        opt.step()
        float(loss)

    s = median_time(step, a.iters, sync)
    add("train step", f"B={len(mlps)} rows={x.shape[0]} {mlps[0].dims} {label}", s, len(mlps), "model-steps/s")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(json.dumps({"device": f"PyTorch {torch.__version__} on {name}", "results": results}, indent=1))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare with the check files regop bench --check-out wrote")
    c.add_argument("check_dir")
    c.add_argument("--device", default="cpu")
    b = sub.add_parser("bench", help="time the peer as regop bench times regop (JSON)")
    b.add_argument("--check-dir", required=True, help="what regop bench --check-out wrote")
    b.add_argument("--zoo", required=True)
    b.add_argument("--device", default="cpu")
    b.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 16, 64, 256, 1024])
    b.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    torch.manual_seed(0)
    return cmd_check(a) if a.cmd == "check" else cmd_bench(a)


if __name__ == "__main__":
    sys.exit(main())
