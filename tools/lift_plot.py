#!/usr/bin/env python3
"""Plot an editor's lift over the best one-shot rule against what it was trained on.

    tools/lift_plot.py OUT.svg "TITLE" LABEL:X:COMPARE_DIR [LABEL:X:COMPARE_DIR ...]

Each COMPARE_DIR holds a `regop compare` results.json; its findings give, per setting, the
median of editor minus rule on the test models and its bootstrap 95% interval. Points of one
LABEL (a series: "zoo size", "steps") are joined; X is the series' value (models, steps), on
a log axis, named by the first LABEL up to a comma ("steps, 179 models" and "steps, 717
models" share the axis "steps"). One line per series and setting (sparsity 0.9, ...).
Standard library only.
"""
import json
import math
import sys

W, H, PAD = 640, 380, 60
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def load(spec):
    label, x, path = spec.split(":", 2)
    with open(f"{path}/results.json") as f:
        r = json.load(f)
    out = []
    for finding in r["findings"]:
        s = finding["setting"] or {}
        setting = " ".join(f"{k} {v}" for k, v in s.items()) or "-"
        v = finding["versus_rule"]
        out.append((label, setting, float(x), v["median_difference"], v["ci95"][0], v["ci95"][1]))
    return out


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, title, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    points = [p for s in specs for p in load(s)]
    series = sorted({(p[0], p[1]) for p in points})
    if not series:
        sys.exit("no findings: were the comparisons run with --editor?")
    xs = [p[2] for p in points]
    ys = [v for p in points for v in p[3:]] + [0.0]
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y0, y1 = min(ys), max(ys)
    y0, y1 = y0 - 0.1 * (y1 - y0 + 1e-9), y1 + 0.1 * (y1 - y0 + 1e-9)

    def px(x):
        return PAD + (math.log10(x) - x0) / (x1 - x0) * (W - 2 * PAD)

    def py(y):
        return H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{PAD}" y1="{py(0)}" x2="{W - PAD}" y2="{py(0)}" stroke="#888" stroke-dasharray="4 3"/>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<text x="{W / 2}" y="{H - 15}" text-anchor="middle">{series[0][0].split(",")[0]} (log scale)</text>',
        f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">editor - rule, test accuracy (median, 95% CI)</text>',
    ]
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        svg.append(f'<text x="{PAD - 5}" y="{py(y) + 4}" text-anchor="end">{y:+.3f}</text>')
    for x in sorted(set(xs)):
        svg.append(f'<text x="{px(x)}" y="{H - PAD + 15}" text-anchor="middle">{x:g}</text>')
    for i, (label, setting) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        pts = sorted((p for p in points if (p[0], p[1]) == (label, setting)), key=lambda p: p[2])
        path = " ".join(f"{px(p[2]):.1f},{py(p[3]):.1f}" for p in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for p in pts:
            svg.append(f'<line x1="{px(p[2]):.1f}" y1="{py(p[4]):.1f}" x2="{px(p[2]):.1f}" y2="{py(p[5]):.1f}" stroke="{c}"/>')
            svg.append(f'<circle cx="{px(p[2]):.1f}" cy="{py(p[3]):.1f}" r="4" fill="{c}"/>')
        svg.append(f'<text x="{W - PAD - 5}" y="{PAD + 16 * i}" text-anchor="end" fill="{c}">{label}, {setting}</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
