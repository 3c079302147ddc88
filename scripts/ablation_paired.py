"""Seed-paired comparison of two rows of an `sfd ablate` grid at its final checkpoint, per
guidance scale (docs/ABLATION.md, "The paper's orderings, here", item 3):

    python scripts/ablation_paired.py [--grid runs/ablate] [--rows sfd,semvae-sync]
        [--metric fd_fmnist] [--sampler heun-10] [--json experiments/ablation/paired.json]

The paired statistics are the grid's own (``sfd.experiments.ablate_nfe.paired``: differences
first minus second, their 95% interval, the paired t-test, the Wilcoxon signed-rank test, the
seeds where the first row is lower); this adds each row's mean ± std and Welch's test, which
ignores the pairing, for comparison. Evaluations without a sampler record count as the grid's
own sampler (``--sampler``, the default grid's ``heun-10``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from sfd.experiments.ablate_grid import AblationSettings
from sfd.experiments.ablate_nfe import by_seed, grid_sampler, paired


def compare(results: list[dict], first: str, second: str, metric: str, sampler: str) -> dict:
    """``cfg <scale>`` -> the paired comparison of ``first`` and ``second`` at their last step."""
    results = [r if "sampler" in r else {**r, "sampler": sampler} for r in results]
    results = [r for r in results if r["sampler"] == sampler]
    step = max(r["step"] for r in results if r["row"] in (first, second))
    scales = sorted({float(r["cfg_scale"]) for r in results if r["step"] == step})
    out = {}
    for scale in scales:
        a = by_seed(results, first, metric, step, cfg_scale=scale)
        b = by_seed(results, second, metric, step, cfg_scale=scale)
        if not set(a) & set(b):
            continue
        pair = paired(a, b)
        x, y = (np.array([v[s] for s in pair["seeds"]]) for v in (a, b))
        out[f"cfg {scale:g}"] = pair | {
            "step": step,
            first: [round(float(x.mean()), 2), round(float(x.std(ddof=1)), 2)],
            second: [round(float(y.mean()), 2), round(float(y.std(ddof=1)), 2)],
            "welch_p": float(stats.ttest_ind(x, y, equal_var=False).pvalue),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=Path, default=Path("runs/ablate"))
    ap.add_argument("--rows", default="sfd,semvae-sync")
    ap.add_argument("--metric", default="fd_fmnist")
    ap.add_argument("--sampler", default=grid_sampler(AblationSettings()))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    first, second = args.rows.split(",")
    results = json.loads((args.grid / "results.json").read_text())["results"]
    got = compare(results, first, second, args.metric, args.sampler)
    for scale, e in got.items():
        print(
            f"{scale}: {first} {e[first][0]} ± {e[first][1]}, {second} {e[second][0]} ± "
            f"{e[second][1]} (n = {e['n']}); {first} lower in {e['first_lower_in']} of "
            f"{e['n']}; difference {e['mean_difference']:+.2f} [{e['ci95'][0]:+.2f}, "
            f"{e['ci95'][1]:+.2f}]; paired t p = {e['paired_t_p']:.3f}, Wilcoxon p = "
            f"{e['wilcoxon_p']:.3f}, Welch p = {e['welch_p']:.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(got, indent=2) + "\n")


if __name__ == "__main__":
    main()
