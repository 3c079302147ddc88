"""The map: semantic-first's gain over synchronous denoising against the measured semantic gap,
one point per (setting, sampler) (docs/ABLATION.md, "The map").

A setting is an `sfd ablate` grid directory (its ``results.json``), the two rows to compare (the
semantic-first row and its synchronous twin, trained with the same seeds) and the probe of the
latents they train on (``scripts/probe_testbed.py``'s JSON, and which of its entries is the
semantic latent). The gain is the seed-paired difference synchronous minus semantic-first of the
in-domain Fréchet distance at the final checkpoint (positive: the semantic lead helps), with its
95% interval over seeds and the paired t-test; for each sampler the grid evaluated (the curves'
Heun 10, and the sampling-steps axis). The gap is the semantic latent's linear-probe accuracy
minus the texture latent's, and its spatial agreement with the encoder minus the texture's.

    python scripts/regime_map.py --out experiments/regime/map \\
        --setting "Fashion-MNIST|runs/ablate-fmnist|experiments/regime/probe_fmnist.json" \\
        --setting "composites|runs/ablate-composites|experiments/regime/probe_composites.json" \\
        --setting "random encoder|runs/ablate-composites|$PROBE|random-sf,random-sync|$ENTRY"

($PROBE: the composites probe JSON, $ENTRY: "random-encoder SemVAE latent").

Each --setting is ``LABEL|GRID|PROBE[|FIRST,SECOND[|SEMANTIC ENTRY]]`` (default rows
``sfd,semvae-sync``, default entry ``SemVAE latent``); GRID may also be a saved grid folder
holding ``results.json`` or ``results/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sfd.experiments.ablate_nfe import paired
from sfd.experiments.ablate_report import load_results

METRIC = "fd_fmnist"  # the in-domain classifier's Fréchet distance (both testbeds)


def grid_results(grid: Path) -> list[dict]:
    if (grid / "results").is_dir():
        return load_results(grid)
    return json.loads((grid / "results.json").read_text())["results"]


def gains(results: list[dict], first: str, second: str) -> dict:
    """sampler -> paired comparison (second minus first: positive when ``first`` is lower)."""
    final = max(r["step"] for r in results if r["row"] in (first, second))
    by: dict = {}
    for r in results:
        if r["row"] in (first, second) and r["step"] == final and r["cfg_scale"] == 1.0:
            sampler = r.get("sampler", "heun-10")
            by.setdefault(sampler, {}).setdefault(r["row"], {})[int(r["seed"])] = r[METRIC]
            if "nfe" in r:
                by[sampler].setdefault("nfe", []).append(r["nfe"])
    out = {}
    for sampler, rows in by.items():
        if first in rows and second in rows:
            nfe = rows.get("nfe")
            out[sampler] = paired(rows[second], rows[first]) | {
                "nfe": sum(nfe) / len(nfe) if nfe else (20.0 if sampler == "heun-10" else None)
            }
    return out


def point(spec: str) -> dict:
    parts = spec.split("|")
    label, grid, probe = parts[0], Path(parts[1]), json.loads(Path(parts[2]).read_text())
    first, second = (parts[3] if len(parts) > 3 else "sfd,semvae-sync").split(",")
    entry = parts[4] if len(parts) > 4 else "SemVAE latent"
    sem, tex = probe[entry], probe["texture latent"]
    return {
        "label": label,
        "rows": [first, second],
        "probe_gap": sem["probe"] - tex["probe"],
        "spatial_gap": sem["spatial"] - tex["spatial"],
        "probe": {"semantic": sem["probe"], "texture": tex["probe"]},
        "gains": gains(grid_results(grid), first, second),
    }


def markdown(points: list[dict]) -> str:
    lines = [
        "| setting | probe: semantic − texture | spatial: semantic − texture | sampler | NFE "
        "| gain (sync − semantic-first FD) [95% CI] | paired t p | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        for sampler, g in sorted(p["gains"].items(), key=lambda kv: kv[1].get("nfe") or 0):
            ci = g.get("ci95")
            cell = "–" if not ci else f"{g['mean_difference']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
            pv = "–" if "paired_t_p" not in g else f"{g['paired_t_p']:.3f}"
            nfe = "–" if g.get("nfe") is None else f"{g['nfe']:.0f}"
            lines.append(
                f"| {p['label']} | {p['probe_gap']:+.3f} | {p['spatial_gap']:+.3f} | {sampler} "
                f"| {nfe} | {cell} | {pv} | {g['n']} |"
            )
    return "\n".join(lines) + "\n"


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in (
        (axes[0], "probe_gap", "linear probe: semantic latent − texture latent"),
        (axes[1], "spatial_gap", "spatial agreement with the encoder: semantic − texture"),
    ):
        for k, p in enumerate(points):
            items = sorted(p["gains"].items(), key=lambda kv: kv[1].get("nfe") or 0)
            for j, (sampler, g) in enumerate(items):
                if not g.get("ci95"):
                    continue
                x = p[key] + 0.004 * (j - len(items) / 2)  # spread the samplers apart
                lo, hi = g["ci95"]
                m = g["mean_difference"]
                ax.errorbar(
                    x,
                    m,
                    yerr=[[m - lo], [hi - m]],
                    fmt="o",
                    color=f"C{k}",
                    ms=4,
                    capsize=2,
                    alpha=0.5 + 0.5 * (j + 1) / len(items),
                )
                ax.annotate(sampler, (x, m), fontsize=6, xytext=(3, 0), textcoords="offset points")
            ax.plot([], [], "o", color=f"C{k}", label=p["label"])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("gain: FD(sync) − FD(semantic-first), paired, 95% CI")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--setting", action="append", required=True)
    ap.add_argument("--out", type=Path, required=True, help="Writes OUT.json, OUT.md, OUT.png.")
    args = ap.parse_args()
    points = [point(s) for s in args.setting]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(points, indent=1) + "\n")
    text = markdown(points)
    args.out.with_suffix(".md").write_text(text)
    plot(points, args.out.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
