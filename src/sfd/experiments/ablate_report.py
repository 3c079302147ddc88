"""The summary of an ablation grid (:mod:`sfd.experiments.ablate`): table, curves, Δt plot,
speed-ups, tests.

Built only from the cached per-evaluation JSON files under ``results/``, so it can be rebuilt at
any time from a partial grid. Statistics:

- mean ± sample standard deviation over training seeds (n given; ± 0 when n = 1);
- convergence speed-up (Pan et al. 2026 report ~33x over LightningDiT): the training steps a
  row needs to reach ``sfd``'s final metric, by linear interpolation between its checkpoints
  (:func:`steps_to_reach`), per seed against the same seed's ``sfd`` target; a row that never
  reaches it within the run is reported as a lower bound;
- Welch's unequal-variance t-test (scipy) between two rows' final metrics over seeds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from sfd.data.tensor_files import atomic_write_bytes
from sfd.experiments.ablate_nfe import (
    leads_markdown,
    learned_leads,
    nfe_markdown,
    nfe_summary,
    plot_nfe,
    save_figure,
    split_results,
)
from sfd.experiments.ablate_rows import PAIRED_ROWS, is_paired, row_delta_t
from sfd.experiments.ablate_store import store_tests

# metric -> (label, lower is better)
METRICS = {
    "fd_fmnist": ("FD_FMNIST (classifier features)", True),
    "acc": ("class accuracy of samples", False),
    "fd_effnet": ("FD EfficientNet-Lite0 (64 px)", True),
}


def metric_label(metric: str, protocol: dict) -> str:
    """A metric's column name; the in-domain distance is named after the grid's dataset (the
    composites' classifier is stored under the same key as Fashion-MNIST's)."""
    if metric == "fd_fmnist" and protocol.get("dataset") == "composites":
        return "FD_COMP (composites classifier features)"
    return METRICS[metric][0]


def short_label(summary: dict) -> str:
    """The primary metric's name without its note (``FD_COMP``, ``FD_FMNIST``, ...)."""
    return metric_label(summary["primary_metric"], summary["protocol"]).split(" (")[0]


def load_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "results").rglob("*.json"))]


def steps_to_reach(
    steps: list[float], values: list[float], target: float, lower_is_better: bool = True
) -> tuple[float, str]:
    """Training steps at which a curve first reaches ``target``, linearly interpolated.

    Returns ``(steps, kind)``: kind ``"="`` (interpolated between two checkpoints), ``"<="``
    (already reached at the first checkpoint: an upper bound) or ``">"`` (never reached: the
    last checkpoint is a lower bound).
    """
    sign = 1.0 if lower_is_better else -1.0
    v = [sign * x for x in values]
    t = sign * target
    for k, (s, x) in enumerate(zip(steps, v, strict=True)):
        if x <= t:
            if k == 0:
                return float(s), "<="
            s0, x0 = steps[k - 1], v[k - 1]
            frac = (x0 - t) / (x0 - x) if x0 != x else 1.0
            return float(s0 + frac * (s - s0)), "="
    return float(steps[-1]), ">"


def welch_t_test(a: list[float], b: list[float]) -> dict:
    """Welch's t-test of two samples (two-sided): t, degrees of freedom, p."""
    # lazy: scipy.stats takes ~1.5 s to import; only the report's significance tests use it
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return {"t": None, "p": None, "n": [len(a), len(b)]}
    res = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(res.statistic), "p": float(res.pvalue), "n": [len(a), len(b)]}


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return float(arr.mean()), std, len(arr)


def curves(results: list[dict], cfg_scale: float) -> dict:
    """row -> metric -> seed -> (steps, values) at the curves' guidance scale."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if r["cfg_scale"] != cfg_scale:
            continue
        for m in METRICS:
            if m in r:
                out[r["row"]][m].setdefault(r["seed"], []).append((r["step"], r[m]))
    return {
        row: {m: {s: sorted(p) for s, p in seeds.items()} for m, seeds in ms.items()}
        for row, ms in out.items()
    }


def _welch_tests(table: dict, sweep: dict, metric: str) -> dict:
    """Welch's t-tests of ``metric`` between the rows the paper compares, at the final
    checkpoint and at every guidance scale of the sweep."""
    tests = {}
    for other in ("semvae-sync", "redi", "repa", "baseline"):
        a = table.get("sfd", {}).get(metric, {}).get("values", [])
        b = table.get(other, {}).get(metric, {}).get("values", [])
        if a and b:
            tests[f"sfd vs {other}"] = welch_t_test(a, b)
    for first, second in (("redi-sf", "redi"), ("random-sf", "random-sync")):
        a = table.get(first, {}).get(metric, {}).get("values", [])
        b = table.get(second, {}).get(metric, {}).get("values", [])
        if a and b:
            tests[f"{first} vs {second}"] = welch_t_test(a, b)
    for w in sorted({w for ws in sweep.values() for w in ws}, key=float):
        for first, second in (
            ("sfd", "semvae-sync"),
            ("redi-sf", "redi"),
            ("random-sf", "random-sync"),
        ):
            a = sweep.get(first, {}).get(w, {}).get(metric, [])
            b = sweep.get(second, {}).get(w, {}).get(metric, [])
            if a and b:
                tests[f"{first} vs {second}, CFG {w}"] = welch_t_test(a, b)
    return tests


def summarise(results: list[dict], settings, reference: dict | None) -> dict:
    """Final-checkpoint table, CFG sweep, speed-ups and the t-test as one JSON-able dict."""
    final = settings.steps
    cur = curves(results, settings.cfg_scale)
    rows_order = [r for r in settings.rows if r in cur] + sorted(
        r for r in cur if r not in settings.rows
    )
    table = {}
    for row in rows_order:
        entry = {}
        for m in METRICS:
            vals = [v for s, pts in cur[row].get(m, {}).items() for k, v in pts if k == final]
            if vals:
                mean, std, n = _mean_std(vals)
                entry[m] = {"mean": mean, "std": std, "n": n, "values": vals}
        table[row] = entry
    sweep: dict = defaultdict(dict)
    for r in results:
        if r["step"] == final and r["cfg_scale"] != settings.cfg_scale:
            for m in METRICS:
                if m in r:
                    sweep[r["row"]].setdefault(f"{r['cfg_scale']:g}", {}).setdefault(m, []).append(
                        r[m]
                    )
    cfg_table = {
        row: {
            w: {
                m: dict(zip(("mean", "std", "n"), _mean_std(v), strict=True)) for m, v in ms.items()
            }
            for w, ms in sorted(ws.items(), key=lambda kv: float(kv[0]))
        }
        for row, ws in sweep.items()
    }
    metric = "fd_fmnist" if any("fd_fmnist" in r for r in results) else "fd_effnet"
    speedup = _speedups(cur, metric, final)
    tests = _welch_tests(table, sweep, metric) | store_tests(cur, final, METRICS)
    return {
        "protocol": settings.protocol(),
        "primary_metric": metric,
        "final_step": final,
        "reference": reference,
        "final": table,
        "cfg_sweep": cfg_table,
        "speedup": speedup,
        "welch": tests,
    }


def _speedups(cur: dict, metric: str, final: int) -> dict:
    lower = METRICS[metric][1]
    if "sfd" not in cur or metric not in cur["sfd"]:
        return {}
    targets = {s: dict(pts)[final] for s, pts in cur["sfd"][metric].items() if dict(pts).get(final)}
    out = {}
    for row in ("semvae-sync", "redi", "repa", "baseline"):
        seeds = cur.get(row, {}).get(metric, {})
        per_seed = []
        for s, pts in sorted(seeds.items()):
            if s not in targets or dict(pts).get(final) is None:
                continue
            steps, values = zip(*pts, strict=True)
            reached, kind = steps_to_reach(list(steps), list(values), targets[s], lower)
            per_seed.append({"seed": s, "steps": reached, "kind": kind, "ratio": reached / final})
        if per_seed:
            ratios = [p["ratio"] for p in per_seed]
            mean, std, n = _mean_std(ratios)
            out[row] = {
                "per_seed": per_seed,
                "ratio_mean": mean,
                "ratio_std": std,
                "n": n,
                "lower_bound": any(p["kind"] == ">" for p in per_seed),
            }
    return out


def _fmt(entry: dict | None, digits: int) -> str:
    if not entry:
        return "–"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f} (n={entry['n']})"


def markdown(summary: dict) -> str:
    metrics = [m for m in METRICS if any(m in e for e in summary["final"].values())]
    digits = {"fd_fmnist": 2, "acc": 3, "fd_effnet": 1}
    lines = [
        f"Final checkpoint (step {summary['final_step']}), "
        f"{summary['protocol']['num_samples']} samples, {summary['protocol']['sampler']}, "
        f"CFG {summary['protocol']['cfg_scale']:g}; mean ± std over training seeds.",
        "",
        "| row | " + " | ".join(metric_label(m, summary["protocol"]) for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for row, entry in summary["final"].items():
        cells = [_fmt(entry.get(m), digits[m]) for m in metrics]
        lines.append(f"| `{row}` | " + " | ".join(cells) + " |")
    ref = summary.get("reference") or {}
    for name in ("floor", "ceiling"):
        if name in ref:
            what = "real vs real (floor)" if name == "floor" else "texture-VAE reconstructions"
            cells = [f"{ref[name][m]:.{digits[m]}f}" if m in ref[name] else "–" for m in metrics]
            lines.append(f"| {what} | " + " | ".join(cells) + " |")
    if summary["speedup"]:
        lines += [
            "",
            f"Steps to reach `sfd`'s final {short_label(summary)}, as a multiple of "
            f"`sfd`'s {summary['final_step']} steps (per seed; '>' = not reached in the run):",
            "",
            "| row | ratio (mean ± std) | per seed |",
            "|---|---|---|",
        ]
        for row, sp in summary["speedup"].items():
            seeds = ", ".join(f"{p['kind']}{p['ratio']:.2f}" for p in sp["per_seed"])
            bound = " (lower bound)" if sp["lower_bound"] else ""
            lines.append(
                f"| `{row}` | {sp['ratio_mean']:.2f} ± {sp['ratio_std']:.2f}{bound} | {seeds} |"
            )
    if summary["welch"]:
        lines += ["", "Welch t-tests on the final " + short_label(summary) + ":", ""]
        for name, t in summary["welch"].items():
            if t["p"] is None:
                lines.append(f"- {name}: too few seeds (n = {t['n']})")
            else:
                diff = f", mean diff {t['mean_diff']:+.3f}" if "mean_diff" in t else ""
                lines.append(f"- {name}: t = {t['t']:.2f}, p = {t['p']:.3f} (n = {t['n']}{diff})")
    if summary["cfg_sweep"]:
        lines += ["", "Guidance sweep at the final checkpoint (main rows):", ""]
        labels = [metric_label(m, summary["protocol"]) for m in metrics]
        lines += ["| row | CFG | " + " | ".join(labels) + " |"]
        lines += ["|---|---|" + "---|" * len(metrics)]
        for row, ws in summary["cfg_sweep"].items():
            for w, ms in ws.items():
                cells = [_fmt(ms.get(m), digits[m]) for m in metrics]
                lines.append(f"| `{row}` | {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(results: list[dict], settings, path: Path) -> None:
    # lazy: pyplot only after the Agg backend is chosen (no display needed)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cur = curves(results, settings.cfg_scale)
    metrics = [m for m in METRICS if any(m in c for c in cur.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)

    for ax, m in zip(axes[0], metrics, strict=True):
        for row in [r for r in PAIRED_ROWS if r in cur] + sorted(
            r for r in cur if r not in PAIRED_ROWS and is_paired(r)
        ):
            seeds = cur[row].get(m, {})
            if not seeds:
                continue
            steps = sorted({k for pts in seeds.values() for k, _ in pts})
            vals = np.array(
                [[dict(pts).get(k, np.nan) for k in steps] for pts in seeds.values()], float
            )
            mean = np.nanmean(vals, 0)
            (line,) = ax.plot(steps, mean, marker="o", label=f"{row} (n={len(seeds)})")
            if len(seeds) > 1:
                counts = np.isfinite(vals).sum(0)  # a run still in progress has fewer points
                std = np.zeros_like(mean)
                many = counts > 1
                std[many] = np.nanstd(vals[:, many], 0, ddof=1)
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=line.get_color())
        ax.set_xlabel("training steps")
        ax.set_ylabel(metric_label(m, settings.protocol()))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("mean ± std over training seeds")
    fig.tight_layout()
    save_figure(fig, path)


def plot_delta_t(results: list[dict], settings, path: Path) -> None:
    # lazy: pyplot only after the Agg backend is chosen (no display needed)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = [
        r for r in results if r["step"] == settings.steps and r["cfg_scale"] == settings.cfg_scale
    ]
    metrics = [m for m in METRICS if any(m in r for r in final)]
    fig, axes = plt.subplots(
        1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 4), squeeze=False
    )
    for ax, m in zip(axes[0], metrics, strict=False):
        by_dt: dict = defaultdict(list)
        for r in final:
            dt = row_delta_t(r["row"])
            if dt is not None and m in r:
                by_dt[dt].append(r[m])
        if by_dt:
            xs = sorted(by_dt)
            stats = [_mean_std(by_dt[x]) for x in xs]
            ax.errorbar(
                xs, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3
            )
            for x, s in zip(xs, stats, strict=True):
                ax.annotate(
                    f"n={s[2]}", (x, s[0]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        ax.set_xlabel("Δt (semantic lead)")
        ax.set_ylabel(metric_label(m, settings.protocol()))
        ax.grid(alpha=0.3)
    fig.suptitle(f"final checkpoint (step {settings.steps}), SemVAE latent")
    fig.tight_layout()
    save_figure(fig, path)


def write_report(out: Path, settings, reference: dict | None, info: dict) -> dict:
    """Rebuild results.json, table.md, ablation.png and delta_t.png from the cached results.

    Files whose content would not change are not rewritten.
    """
    out = Path(out)
    every = load_results(out)
    results, _ = split_results(every, settings)  # the NFE axis has its own table
    summary = summarise(results, settings, reference)
    summary["nfe"] = nfe_summary(every, settings, summary["primary_metric"])
    summary["data"] = info
    if leads := learned_leads(out):
        summary["learned_leads"] = leads
    payload = {"summary": summary, "results": every}
    path = out / "results.json"
    text = json.dumps(payload, indent=1, sort_keys=True, default=_jsonable)
    if not path.exists() or path.read_text() != text or not (out / "table.md").exists():
        atomic_write_bytes(path, text.encode())
        label = short_label(summary)
        table = markdown(summary) + "\n" + nfe_markdown(summary["nfe"], label)
        table += "\n" + leads_markdown(summary.get("learned_leads", {}))
        atomic_write_bytes(out / "table.md", table.encode())
        if results:
            plot_curves(results, settings, out / "ablation.png")
            plot_delta_t(results, settings, out / "delta_t.png")
        if summary["nfe"]:
            plot_nfe(summary["nfe"], label, out / "nfe.png")
    return summary


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
