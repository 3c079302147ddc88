"""The ablation grid's storage rows (``store-SPEC``, :mod:`sfd.experiments.ablate_grid`): the
latent sets they train on and their tests against ``sfd``.

``store-SPEC`` is the ``sfd`` row (SemVAE latent, Δt 0.3, REPA) trained on the SemVAE latent
set re-encoded with the storage SPEC (docs/FORMATS.md, "Storage options"), with the same
training seeds as ``sfd``; the report compares each with ``sfd`` by a paired t-test over seeds
on every metric at the final checkpoint. ``store-f32`` is the set as extracted (a control).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sfd.data.latent_storage import Storage
from sfd.latents.pca import fit_pca, load_pca, save_pca
from sfd.latents.repa_targets import reencode_latent_set


def store_sets(out: Path, latents: Path, features, meta: dict, rows) -> dict:
    """The latent set of each ``store-SPEC`` row, re-encoded from ``latents`` into
    ``out/latents/store-SPEC`` (cached); PCA codes use a PCA of ``features``, ``semvae``
    targets the SemVAE that made ``latents``."""
    sets = {}
    for spec in sorted({r.store for r in rows if r.store is not None}):
        storage, key = Storage.parse(spec), f"store-{spec}"
        if storage.legacy:  # the set as extracted: the `sfd` row's own data
            sets[key] = latents
            continue
        kw: dict = {}
        if storage.repa == "pca":
            kw["pca"] = _repa_pca(out, features, storage.pca_components, key)
        if storage.repa == "semvae":
            kw["semvae_dir"] = _semvae_dir(latents, meta, key)
        reencode_latent_set(latents, out / "latents" / key, storage, **kw)
        sets[key] = out / "latents" / key
    return sets


def _repa_pca(out: Path, features, k: int, row: str):
    if features is None:
        raise ValueError(f"row {row} needs encoder features to fit its PCA on: pass --features")
    pca_dir = out / f"repa_pca{k}"
    if not (pca_dir / "pca.json").exists():
        save_pca(fit_pca(features, k), pca_dir)
    return load_pca(pca_dir)


def _semvae_dir(latents: Path, meta: dict, row: str) -> Path:
    """The SemVAE beside the set (the embedded default's) or the one its extraction names."""
    for candidate in (latents.parent / "semvae", meta.get("extraction", {}).get("semvae_path")):
        if candidate and (Path(candidate) / "semvae.json").exists():
            return Path(candidate)
    raise ValueError(f"row {row} needs the SemVAE that made {latents}; none found beside it")


def paired_t_test(a: dict, b: dict) -> dict:
    """Paired t-test (two-sided) of ``a`` vs ``b`` over their common keys (training seeds):
    t, p, n and the mean difference a - b."""
    # lazy: scipy.stats takes ~1.5 s to import; only the report's significance tests use it
    from scipy import stats

    seeds = sorted(a.keys() & b.keys())
    diff = [a[s] - b[s] for s in seeds]
    out = {"n": len(seeds), "mean_diff": float(np.mean(diff)) if diff else None}
    if len(seeds) < 2 or not np.std(diff) > 0:
        return {"t": None, "p": None, **out}
    res = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    return {"t": float(res.statistic), "p": float(res.pvalue), **out}


def store_tests(cur: dict, final: int, metrics) -> dict:
    """``store-SPEC vs sfd``, paired by seed, on every metric at the final checkpoint
    (``cur``: :func:`sfd.experiments.ablate_report.curves`)."""

    def at_final(row: str, m: str) -> dict:
        seeds = cur.get(row, {}).get(m, {})
        return {s: v for s, pts in seeds.items() for k, v in pts if k == final}

    tests = {}
    for row in sorted(r for r in cur if r.startswith("store-")):
        for m in metrics:
            a, b = at_final(row, m), at_final("sfd", m)
            if a and b:
                tests[f"{row} vs sfd, {m}, paired by seed"] = paired_t_test(a, b)
    return tests
