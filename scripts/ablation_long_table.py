"""The final-checkpoint table of an `sfd ablate` grid across samplers and guidance, with every
row paired by seed against one baseline row (docs/ABLATION.md, the 4x-training tables):

    python scripts/ablation_long_table.py experiments/ablation/long-4000
    python scripts/ablation_long_table.py experiments/regime/composites-t1500-long \\
        --rows sfd,semvae-sync,learned,redi-learned --baseline semvae-sync --metric fd_effnet

It reads the grid's (or a snapshot's) ``results/ROW/seedS/*.json`` at the grid's final step
(``protocol.json``), so it can follow a grid while it runs. Each cell is the mean ± std over the
seeds the row has (class accuracy, ``--metric acc``, in percent); each difference is row minus
baseline over the seeds both have, with its 95% interval and, below 0.1, the paired t-test's p
(``sfd.experiments.ablate_nfe.paired``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sfd.experiments.ablate_nfe import by_seed, paired
from sfd.experiments.ablate_report import load_results

SAMPLERS = ("euler-4", "euler-8", "euler-16", "euler-32", "heun-10", "dopri5")


def load(grid: Path) -> tuple[list[dict], dict]:
    """Every evaluation JSON of the grid (the grid's sampler filled in) and its protocol."""
    proto = json.loads((grid / "protocol.json").read_text())
    own = proto.get("sampler", "heun 10").replace(" ", "-")
    return [{**r, "sampler": r.get("sampler", own)} for r in load_results(grid)], proto


def signed(x: float) -> str:
    return f"{x:+.1f}".replace("-", "\u2212")


def cell(values: dict[int, float]) -> str:
    if not values:
        return "-"
    v = np.array(list(values.values()))
    std = f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else ""
    return f"{v.mean():.1f}{std}"


def difference(a: dict[int, float], b: dict[int, float]) -> str:
    e = paired(a, b)
    if e["n"] < 2:
        return "-"
    lo, hi = e["ci95"]
    p = e["paired_t_p"]
    tail = ", p < 0.001" if p < 0.001 else f", p = {p:.1g}" if p < 0.1 else ""
    return f"{signed(e['mean_difference'])} [{signed(lo)}, {signed(hi)}]{tail}"


def table(results: list[dict], step: int, rows: list[str], baseline: str, metric: str) -> str:
    conditions = [(s, 1.0, s) for s in SAMPLERS]
    scales = sorted({float(r["cfg_scale"]) for r in results if r["step"] == step} - {1.0})
    conditions += [("heun-10", w, f"Heun 10, CFG {w:g}") for w in scales]
    others = [r for r in rows if r != baseline]
    short = baseline.removeprefix("semvae-")

    unit = 100.0 if metric == "acc" else 1.0  # class accuracy in percent

    def values(row: str, sampler: str, scale: float) -> dict[int, float]:
        got = by_seed(results, row, metric, step, sampler=sampler, cfg_scale=scale)
        return {seed: unit * v for seed, v in got.items()}

    counts = {
        r: len({x["seed"] for x in results if x["row"] == r and x["step"] == step}) for r in rows
    }
    pairs = {
        r: len(set(values(r, "heun-10", 1.0)) & set(values(baseline, "heun-10", 1.0)))
        for r in others
    }
    head = [f"`{r}` ({counts[r]})" for r in rows] + [f"{r} − {short} ({pairs[r]})" for r in others]
    lines = ["| sampler | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for sampler, scale, name in conditions:
        cells = [cell(values(r, sampler, scale)) for r in rows]
        base = values(baseline, sampler, scale)
        cells += [difference(values(r, sampler, scale), base) for r in others]
        if any(c != "-" for c in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("grid", type=Path)
    ap.add_argument("--rows", default="sfd,semvae-sync,learned,redi-learned")
    ap.add_argument("--baseline", default="semvae-sync")
    ap.add_argument("--metric", default="fd_fmnist")
    ap.add_argument(
        "--also",
        type=Path,
        default=None,
        help="A second grid of the same protocol (another build of its data stages): each of\n"
        "its (row, seed) runs replaces the first grid's, so pairs stay within one build.",
    )
    ap.add_argument(
        "--builds",
        action="store_true",
        help="With --also: each row of the second grid against the same row and seeds of the\n"
        "first (what the rebuild of the data stages alone changes).",
    )
    args = ap.parse_args()
    results, proto = load(args.grid)
    if args.also is not None:
        more, other = load(args.also)
        if other != proto:
            raise SystemExit(f"{args.also}: another protocol than {args.grid}; not merged")
        if args.builds:
            asked = args.rows.split(",")
            for row in [r for r in asked if any(x["row"] == r for x in more)]:
                again = [{**r, "row": f"{row} (--also)"} for r in more if r["row"] == row]
                print(
                    table(
                        results + again,
                        int(proto["steps"]),
                        [f"{row} (--also)", row],
                        row,
                        args.metric,
                    )
                )
            return
        runs = {(r["row"], r["seed"]) for r in more}
        results = [r for r in results if (r["row"], r["seed"]) not in runs] + more
    rows = [r for r in args.rows.split(",") if any(x["row"] == r for x in results)]
    print(table(results, int(proto["steps"]), rows, args.baseline, args.metric))


if __name__ == "__main__":
    main()
