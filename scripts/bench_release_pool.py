"""Pool the runs of scripts/bench_release_campaign.sh: per setting and timed function, the median
of the runs' ratios (release ms / sfd ms; > 1 means this tree is faster), their range, and the
bound ``release / matmuls alone`` where the runs timed it.

    python scripts/bench_release_pool.py experiments/perf/release [--json pooled.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path


def pool(folder: Path) -> dict[str, dict[str, dict]]:
    """{setting: {function: {"ratios": [...], "median": m, "bound": b or None, ...}}}."""
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("pooled"):
            continue
        setting = path.stem.rsplit("_", 1)[0]
        runs[setting].append(json.loads(path.read_text()))
    table: dict[str, dict[str, dict]] = {}
    for setting, results in runs.items():
        table[setting] = {}
        for fn in results[0]["rows"]:
            rows = [r["rows"][fn] for r in results]
            ratios = [row["ratio"] for row in rows]
            bounds = [row["bound"] for row in rows if "bound" in row]
            table[setting][fn] = {
                "runs": len(rows),
                "ratios": [round(r, 3) for r in ratios],
                "median": round(statistics.median(ratios), 3),
                "sfd_ms": round(statistics.median(row["sfd_ms"] for row in rows), 1),
                "release_ms": round(statistics.median(row["release_ms"] for row in rows), 1),
                "bound": round(statistics.median(bounds), 3) if bounds else None,
            }
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    table = pool(args.folder)
    print("| setting | timed | runs | ratio (median) | range | sfd ms | release ms | bound |")
    print("|---|---|---|---|---|---|---|---|")
    for setting, fns in table.items():
        for fn, r in fns.items():
            bound = f"{r['bound']:.2f}" if r["bound"] else "-"
            print(
                f"| {setting} | {fn} | {r['runs']} | {r['median']:.3f} | "
                f"{min(r['ratios']):.3f}-{max(r['ratios']):.3f} | {r['sfd_ms']} | "
                f"{r['release_ms']} | {bound} |"
            )
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
