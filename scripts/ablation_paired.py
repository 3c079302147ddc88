"""Seed-paired comparison of two rows of an `sfd ablate` grid at its final checkpoint.

Two rows trained with the same seed share their batches, noise draws and time draws, so their
difference per seed is the cleaner measurement; this prints it next to the Welch test the
grid's own report gives (docs/ABLATION.md, "The paper's orderings, here", item 3):

    python scripts/ablation_paired.py [--grid runs/ablate] [--rows sfd,semvae-sync]
        [--metric fd_fmnist] [--json experiments/ablation/paired.json]

For every guidance scale evaluated at the final step: each row's mean ± std, the per-seed
differences (first minus second), how many seeds favour the first row (lower is better), the
paired t-test (scipy ``ttest_rel``), the Wilcoxon signed-rank test (exact for small n) and
Welch's test, all two-sided.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats


def final_values(results: list[dict], row: str, metric: str, step: int) -> dict:
    """cfg scale -> seed -> value of ``row`` at ``step``."""
    out: dict = {}
    for r in results:
        if r["row"] == row and r["step"] == step and metric in r:
            out.setdefault(float(r["cfg_scale"]), {})[int(r["seed"])] = float(r[metric])
    return out


def compare(results: list[dict], first: str, second: str, metric: str) -> dict:
    step = max(r["step"] for r in results if r["row"] in (first, second))
    a, b = final_values(results, first, metric, step), final_values(results, second, metric, step)
    out = {}
    for scale in sorted(set(a) & set(b)):
        seeds = sorted(set(a[scale]) & set(b[scale]))
        x = np.array([a[scale][s] for s in seeds])
        y = np.array([b[scale][s] for s in seeds])
        d = x - y
        entry = {
            "step": step,
            "seeds": seeds,
            first: [round(float(x.mean()), 2), round(float(x.std(ddof=1)), 2)],
            second: [round(float(y.mean()), 2), round(float(y.std(ddof=1)), 2)],
            "differences": [round(float(v), 2) for v in d],
            "first_lower_in": int((d < 0).sum()),
            "paired_t_p": float(stats.ttest_rel(x, y).pvalue),
            "wilcoxon_p": float(stats.wilcoxon(x, y).pvalue),
            "welch_p": float(stats.ttest_ind(x, y, equal_var=False).pvalue),
        }
        out[f"cfg {scale:g}"] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=Path, default=Path("runs/ablate"))
    ap.add_argument("--rows", default="sfd,semvae-sync")
    ap.add_argument("--metric", default="fd_fmnist")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    first, second = args.rows.split(",")
    results = json.loads((args.grid / "results.json").read_text())["results"]
    got = compare(results, first, second, args.metric)
    for scale, e in got.items():
        n = len(e["seeds"])
        print(
            f"{scale}: {first} {e[first][0]} ± {e[first][1]}, {second} {e[second][0]} ± "
            f"{e[second][1]} (n = {n}); {first} lower in {e['first_lower_in']} of {n}; "
            f"paired t p = {e['paired_t_p']:.3f}, Wilcoxon p = {e['wilcoxon_p']:.3f}, "
            f"Welch p = {e['welch_p']:.3f}; differences {e['differences']}"
        )
    if args.json:
        args.json.write_text(json.dumps(got, indent=2) + "\n")


if __name__ == "__main__":
    main()
