"""The sampling-steps axis of the ablation grid and seed-paired comparisons (docs/ABLATION.md).

A schedule that leads with semantics may matter most when the sampler takes few steps (learned
per-subspace schedules were reported to move converged FID little but few-step FID a lot), so
every seed of the rows in ``AblationSettings.nfe_rows`` is also sampled at its final checkpoint
with each sampler of ``nfe_samplers`` (Euler 4 ... 32, Heun 10, dopri5 with the exact boundary
rule), without retraining. Each evaluation records the velocity evaluations per image it took
(``nfe``: dopri5 adapts its own).

Two rows trained with the same seed share their batches, noise and time draws, so their
difference per seed is the cleaner measurement: :func:`paired` gives the mean difference, its
95% interval (Student t over seeds), the paired t-test, the Wilcoxon signed-rank test and the
count of seeds where the first row is lower (better, for a distance). :func:`best_of_scales`
pairs two rows each at its own best guidance scale per seed, so that a guided gain which is only
a shift of the best scale does not count.
"""

from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from sfd.data.tensor_files import atomic_write_bytes
from sfd.experiments.ablate_rows import on_nfe_axis, paired_with

# (first, second): semantic-first against synchronous, on the SemVAE and the control latent;
# a learned schedule against both of the SemVAE latent's fixed ones, and against the PCA
# latent's offset
PAIRS = (
    ("sfd", "semvae-sync"),
    ("random-sf", "random-sync"),
    ("learned", "sfd"),
    ("learned", "semvae-sync"),
    ("redi-learned", "redi-sf"),
)


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """Seed-paired comparison of two rows' values (seed -> value); first minus second."""
    # lazy: scipy.stats takes ~1.5 s to import; only the report's significance tests use it
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    out = {"n": len(seeds), "seeds": seeds, "differences": [round(float(v), 3) for v in d]}
    if len(seeds) < 2:
        return out | {"mean_difference": float(d.mean()) if len(d) else None}
    mean, sem = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    half = float(stats.t.ppf(0.975, len(d) - 1) * sem)
    nonzero = bool(np.any(d != 0))
    return out | {
        "mean_difference": mean,
        "ci95": [mean - half, mean + half],
        "paired_t_p": float(stats.ttest_1samp(d, 0.0).pvalue) if nonzero else 1.0,
        "wilcoxon_p": float(stats.wilcoxon(d).pvalue) if nonzero else 1.0,
        "first_lower_in": int((d < 0).sum()),
    }


def best_of_scales(records: dict[tuple[str, int, float], float], first: str, second: str) -> dict:
    """Two rows at their best scales: (row, seed, scale) -> FD in, the paired comparison out.

    Each seed's best is the lowest FD over the scales that seed has for both rows; ``scales``
    lists which scale won, per seed, for each row.
    """
    best: dict[str, dict[int, float]] = {first: {}, second: {}}
    won: dict[str, dict[int, float]] = {first: {}, second: {}}

    def scales_of(row: str, seed: int) -> set[float]:
        return {c for (r, s, c) in records if r == row and s == seed}

    seeds = sorted(
        {s for (r, s, _) in records if r == first} & {s for (r, s, _) in records if r == second}
    )
    for seed in seeds:
        common = sorted(scales_of(first, seed) & scales_of(second, seed))
        if not common:
            continue
        for row in (first, second):
            values = {c: records[(row, seed, c)] for c in common}
            won[row][seed] = min(values, key=values.get)
            best[row][seed] = values[won[row][seed]]
    return paired(best[first], best[second]) | {
        "best": {row: {str(s): v for s, v in b.items()} for row, b in best.items()},
        "scales": {row: {str(s): c for s, c in w.items()} for row, w in won.items()},
    }


def by_seed(results: list[dict], row: str, metric: str, step: int, **match) -> dict[int, float]:
    """seed -> value of ``metric`` for ``row`` at ``step`` among results matching ``match``."""
    return {
        int(r["seed"]): float(r[metric])
        for r in results
        if r["row"] == row
        and r["step"] == step
        and metric in r
        and all(r.get(k) == v for k, v in match.items())
    }


def grid_sampler(settings) -> str:
    return f"{settings.method}-{settings.num_steps}"


def split_results(results: list[dict], settings) -> tuple[list[dict], list[dict]]:
    """(the grid's own evaluations, the NFE axis's): an evaluation without a ``sampler`` record
    was made with the grid's sampler."""
    own = grid_sampler(settings)
    grid = [r for r in results if r.get("sampler", own) == own]
    axis = [r for r in results if r.get("sampler", own) != own]
    return grid, axis


def nfe_summary(results: list[dict], settings, metric: str) -> dict:
    """sampler -> {"nfe": mean NFE per image, "rows": row -> mean/std/n, "paired": pair -> ...}
    at the final checkpoint and the curves' guidance, the grid's own sampler included."""
    own, final, w = grid_sampler(settings), settings.steps, settings.cfg_scale
    results = [r if "sampler" in r else {**r, "sampler": own} for r in results]  # older records
    out: dict = {}
    axis = settings.nfe_rows
    extra = sorted({r["row"] for r in results if on_nfe_axis(r["row"], axis)} - set(axis))
    pairs_wanted = [*PAIRS, *[(r, other) for r in extra for other in paired_with(r)]]
    for sampler in dict.fromkeys([*settings.nfe_samplers, own]):
        rows, nfes = {}, []
        for row in [*settings.nfe_rows, *extra]:
            vals = by_seed(results, row, metric, final, cfg_scale=w, sampler=sampler)
            if vals:
                v = np.array(list(vals.values()))
                rows[row] = {
                    "mean": float(v.mean()),
                    "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                    "n": len(v),
                    "values": vals,
                }
            nfes += [
                r["nfe"]
                for r in results
                if r["row"] == row and r["sampler"] == sampler and "nfe" in r
            ]
        if not rows:
            continue
        pairs = {
            f"{a} - {b}": paired(rows[a]["values"], rows[b]["values"])
            for a, b in pairs_wanted
            if a in rows and b in rows
        }
        out[sampler] = {
            "nfe": float(np.mean(nfes)) if nfes else None,
            "rows": rows,
            "paired": pairs,
        }
    return out


def nfe_markdown(summary: dict, metric: str) -> str:
    """The NFE table: per sampler, each row's mean ± std and the paired differences."""
    if not summary:
        return ""
    lines = [
        f"Sampling-steps axis at the final checkpoint ({metric}; mean ± std over seeds; paired "
        "difference first minus second with its 95% interval, paired t p):",
        "",
        "| sampler | NFE | row | value | paired |",
        "|---|---|---|---|---|",
    ]
    for sampler, e in summary.items():
        nfe = "–" if e["nfe"] is None else f"{e['nfe']:.0f}"
        for row, v in e["rows"].items():
            lines.append(
                f"| {sampler} | {nfe} | `{row}` | {v['mean']:.2f} ± {v['std']:.2f} (n={v['n']}) | |"
            )
        for name, p in e["paired"].items():
            if p.get("ci95"):
                lo, hi = p["ci95"]
                lines.append(
                    f"| {sampler} | {nfe} | {name} | {p['mean_difference']:+.2f} "
                    f"[{lo:+.2f}, {hi:+.2f}] | p = {p['paired_t_p']:.3f} (n={p['n']}) |"
                )
    return "\n".join(lines) + "\n"


def plot_nfe(summary: dict, metric: str, path: Path) -> None:
    """Each NFE row's metric against the velocity evaluations per image, with seed bands."""
    # lazy: pyplot only after the Agg backend is chosen (no display needed)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict = defaultdict(list)
    for sampler, e in summary.items():
        if e["nfe"] is None:
            continue
        for row, v in e["rows"].items():
            series[(row, sampler.split("-")[0])].append((e["nfe"], v["mean"], v["std"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for (row, method), pts in sorted(series.items()):
        x, m, s = (np.array(a) for a in zip(*sorted(pts), strict=True))
        (line,) = ax.plot(x, m, marker="o", label=f"{row} ({method})")
        ax.fill_between(x, m - s, m + s, alpha=0.15, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("velocity evaluations per image (NFE)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("final checkpoint, mean ± std over training seeds")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure to ``path`` as PNG, written atomically; the figure is closed."""
    # lazy: as in the plots: pyplot after the backend is chosen
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def learned_leads(out: Path) -> dict:
    """The lead at the middle of each learned schedule the grid's probes made
    (``OUT/schedules/<latent>-seed<k>.json``): latent -> {"seeds": seed -> lead, mean, std}."""
    found: dict = defaultdict(dict)
    for path in sorted((Path(out) / "schedules").glob("*-seed*.json")):
        m = re.fullmatch(r"(.+)-seed(\d+)\.json", path.name)
        lead = json.loads(path.read_text()).get("lead_at_middle") if m else None
        if lead is not None:
            found[m.group(1)][int(m.group(2))] = float(lead)
    return {
        latent: {
            "seeds": dict(sorted(seeds.items())),
            "mean": float(np.mean(list(seeds.values()))),
            "std": float(np.std(list(seeds.values()), ddof=1)) if len(seeds) > 1 else 0.0,
        }
        for latent, seeds in sorted(found.items())
    }


def leads_markdown(leads: dict) -> str:
    """The learned schedules' Δt-equivalents, one line per latent."""
    if not leads:
        return ""
    head = (
        "Learned schedules: the lead u_sem - u_tex where the path crosses the middle "
        "(SFD's offset gives its Δt; > 0: semantics first), per probe seed:"
    )
    lines = [head, ""]
    for latent, e in leads.items():
        per = ", ".join(f"{v:+.3f}" for v in e["seeds"].values())
        lines.append(f"- {latent}: {e['mean']:+.3f} ± {e['std']:.3f} (n={len(e['seeds'])}): {per}")
    return "\n".join(lines) + "\n"
