"""regop against the PyTorch + PyTorch Geometric peer, in one run on one device.

    python3 tools/peer/side_by_side.py --regop target/release/regop --editor E --zoo Z \
        [--data PATH] [--device cpu|gpu] [--batches 1,4,16] [--iters 20] [--out DIR]

1. `regop bench --editor E --zoo Z --check-out DIR --json` times regop and writes check files.
2. `peer.py check DIR` compares the peer's edits and training gradient with regop's; a
   relative difference of 1e-4 or more stops the run before any peer timing.
3. `peer.py bench` times the peer on the same inputs (CUDA where regop ran on the GPU).
4. A markdown table of both, with the ratio peer time / regop time, goes to stdout and to
   DIR/side_by_side.md; the raw JSON of both sides to DIR.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, out_file=None):
    print("$ " + " ".join(cmd), file=sys.stderr)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout)
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}")
    if out_file:
        with open(out_file, "w") as f:
            f.write(r.stdout)
    return r.stdout


def fmt_time(s):
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--regop", default="target/release/regop")
    ap.add_argument("--editor", required=True)
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--data")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--batches", default="1,4,16,64,256")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", default="side-by-side")
    ap.add_argument("--extra", default="", help="more regop bench flags, e.g. '--sparsity 0.9'")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    check = os.path.join(a.out, "check")
    cmd = [a.regop, "--device", a.device, "--json", "bench", "--editor", a.editor, "--zoo", a.zoo,
           "--batches", a.batches, "--iters", str(a.iters), "--check-out", check]
    if a.data:
        cmd += ["--data", a.data]
    cmd += a.extra.split()
    ours = json.loads(run(cmd, os.path.join(a.out, "regop.json")))
    torch_device = "cuda" if a.device == "gpu" else "cpu"
    peer = [sys.executable, "-W", "ignore", os.path.join(HERE, "peer.py")]
    print(run(peer + ["check", check, "--device", torch_device]), file=sys.stderr)
    theirs = json.loads(run(peer + ["bench", "--check-dir", check, "--zoo", a.zoo, "--device", torch_device,
                                    "--batches", a.batches, "--iters", str(a.iters)],
                            os.path.join(a.out, "peer.json")))
    lines = [f"regop: {ours['device']}; peer: {theirs['device']}", "",
             "| benchmark | shape | regop | peer | regop rate | peer rate | peer time / regop time |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r, p in zip(ours["results"], theirs["results"]):
        assert (r["name"], r["shape"]) == (p["name"], p["shape"]), (r, p)
        unit = r["unit"]
        lines.append(f"| {r['name']} | {r['shape']} | {fmt_time(r['seconds_per_iter'])} | "
                     f"{fmt_time(p['seconds_per_iter'])} | {r['rate']:.1f} {unit} | {p['rate']:.1f} {unit} | "
                     f"**{p['seconds_per_iter'] / r['seconds_per_iter']:.2f}x** |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "side_by_side.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
