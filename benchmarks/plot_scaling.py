"""PNG of scaling runs written by bench.py (``--scaling steps|batch|remat``).

  python benchmarks/plot_scaling.py results/steps.json [more.json ...] --out scaling.png
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", default="scaling.png")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = defaultdict(list)  # (kind, base setting, framework) -> [(x, ms, mem)]
    for path in args.inputs:
        with open(path) as f:
            rows = json.load(f)["rows"]
        for r in rows:
            m = re.search(r"(steps|batch)=(\d+)$", r["setting"])
            if not m:
                continue
            base = r["setting"][: m.start()].strip()
            mem = r.get("peak_bytes") or r.get("rss_delta_bytes") or 0
            series[(m.group(1), base, r["framework"])].append(
                (int(m.group(2)), r["step_ms_median"], mem / 2**20))
    if not series:
        raise SystemExit("no scaling rows (setting names ending in steps=N or batch=N)")
    kinds = sorted({k[0] for k in series})
    fig, axes = plt.subplots(2, len(kinds), figsize=(6 * len(kinds), 8), squeeze=False)
    for j, kind in enumerate(kinds):
        for (k, base, fw), pts in sorted(series.items()):
            if k != kind:
                continue
            pts.sort()
            xs = [p[0] for p in pts]
            axes[0][j].plot(xs, [p[1] for p in pts], "o-", label=f"{fw} ({base})")
            axes[1][j].plot(xs, [p[2] for p in pts], "o-", label=f"{fw} ({base})")
        xlabel = "inner steps" if kind == "steps" else "meta-batch (tasks)"
        axes[0][j].set(xlabel=xlabel, ylabel="ms per meta-step (median)", yscale="log")
        axes[1][j].set(xlabel=xlabel, ylabel="peak memory (MiB; device or host RSS delta)")
        axes[0][j].legend(fontsize=7)
        axes[0][j].grid(alpha=0.3)
        axes[1][j].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
