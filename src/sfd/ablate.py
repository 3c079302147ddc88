"""``sfd ablate``: the paper's ablation grid as one resumable command, with seeds and curves.

Pan et al. 2026 (Semantics Lead the Way, CVPR 2026), Table 3 and Fig. 5 (METHOD.md §7): on
ImageNet 256, LightningDiT-XL baseline 8.17 -> +REPA 7.08 -> +SemVAE latent, synchronous
5.24 -> semantic-first (Δt = 0.3) 3.03 FID; a PCA semantic latent (ReDi, Kouzelis et al. 2025)
4.06 with Δt = 0.3 (5.33 at Δt = 0); the Δt curve has its optimum at 0.3. This module runs
that grid on any latent set (by default the demo's Fashion-MNIST pipeline):

===============  ================================  =====  =====
row              semantic latent                   Δt     REPA
===============  ================================  =====  =====
``baseline``     none (texture only)               --     no
``repa``         none (texture only)               --     yes
``semvae-sync``  Semantic VAE                      0      yes
``sfd``          Semantic VAE                      0.3    yes
``redi``         PCA of the same encoder features  0      yes
``redi-sf``      PCA of the same encoder features  0.3    yes
``dt-X``         Semantic VAE                      X      yes
===============  ================================  =====  =====

Every (row, training seed) is one training run; its checkpoints are evaluated with identical
sampler settings and the same per-image sampling seeds, so each row is a convergence curve with
a seed band. Every evaluation is cached as one JSON file: a rerun or a crash resumes, nothing
is recomputed or overwritten; ``shard=(i, n)`` gives a process every n-th job. The summary
(:mod:`sfd.ablate_report`) is rebuilt from whatever results exist.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sfd.config import Config, apply_overrides, preset
from sfd.data.shards import atomic_write_json
from sfd.demo import DEMO_MODEL
from sfd.demo_eval import pooled_features, reconstruct
from sfd.eval.fashion_classifier import class_accuracy
from sfd.eval.stats import FeatureStats
from sfd.locks import DirLock as _JobLock

log = logging.getLogger("sfd.ablate")

# --------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class Row:
    """One configuration of the grid."""

    name: str
    semantic: str  # "semvae", "pca" or "none" (texture-only diffusion)
    delta_t: float
    repa: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.delta_t <= 1.0:
            raise ValueError(f"row {self.name!r}: Δt must be in [0, 1]; got {self.delta_t}")


MAIN_ROWS = ("baseline", "repa", "semvae-sync", "sfd", "redi", "redi-sf")
SWEEP = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # the paper's Δt sweep (Fig. 5)
_NAMED = {
    "baseline": Row("baseline", "none", 0.0, repa=False),
    "repa": Row("repa", "none", 0.0),
    "semvae-sync": Row("semvae-sync", "semvae", 0.0),
    "sfd": Row("sfd", "semvae", 0.3),
    "redi": Row("redi", "pca", 0.0),
    "redi-sf": Row("redi-sf", "pca", 0.3),
}


GRID_MODEL = DEMO_MODEL  # the demo's backbone (sfd.demo)


def sweep_rows() -> tuple[str, ...]:
    """The Δt sweep's rows that are not main rows (0 is ``semvae-sync``, 0.3 is ``sfd``)."""
    return tuple(f"dt-{d:g}" for d in SWEEP if d not in (0.0, 0.3))


def parse_row(name: str) -> Row:
    """A named row, or ``dt-X``: the SemVAE latent at Δt = X (X in [0, 1])."""
    if name in _NAMED:
        return _NAMED[name]
    m = re.fullmatch(r"dt-([0-9]*\.?[0-9]+)", name)
    if m is None:
        raise ValueError(
            f"unknown ablation row {name!r}; expected one of {', '.join(MAIN_ROWS)} or dt-X "
            f"with X in [0, 1] (e.g. dt-0.5)"
        )
    value = float(m.group(1))
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"row {name!r}: Δt must be in [0, 1]; got {value}")
    return Row(name, "semvae", value)


def row_delta_t(name: str) -> float | None:
    """Δt of a row on the SemVAE latent (the Δt curve), else None."""
    row = parse_row(name)
    return row.delta_t if row.semantic == "semvae" else None


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class AblationSettings:
    """The grid: rows, seeds, training length, checkpoints and the evaluation protocol."""

    rows: tuple[str, ...] = MAIN_ROWS + sweep_rows()
    main_seeds: int = 3  # training seeds of the main rows
    sweep_seeds: int = 1  # training seeds of every other row
    steps: int = 1000
    checkpoints: int = 5  # evaluated checkpoints, evenly spaced; the last is `steps`
    num_samples: int = 1000  # per evaluation, balanced classes
    sample_seed: int = 0  # per-image sampling seeds: identical for every row and checkpoint
    method: str = "heun"
    num_steps: int = 10
    cfg_scale: float = 1.0  # the curves: the paper's ablation is without guidance
    cfg_sweep: tuple[float, ...] = (2.0, 4.0)  # final checkpoint of the main rows
    # `--set` on the SFD config (the `demo` preset fitted to the data) of every row: the demo's
    # backbone (sfd.demo.DEMO_MODEL, 1.3M parameters, ~6x cheaper per step than the preset's), so
    # the default grid fits in ~3 hours on 2 CPU cores.
    overrides: tuple[str, ...] = GRID_MODEL
    quick: bool = False
    # semantic channels of the embedded default's SemVAE (None: the demo's 4); a different count
    # trains its own SemVAE and latents in OUT/base, so it needs its own grid directory
    sem_channels: int | None = None

    def __post_init__(self) -> None:
        for name in self.rows:
            parse_row(name)
        if not self.rows:
            raise ValueError("no ablation rows given")
        if self.steps < 1 or self.checkpoints < 1 or self.checkpoints > self.steps:
            raise ValueError(
                f"steps={self.steps} and checkpoints={self.checkpoints} must satisfy "
                f"1 <= checkpoints <= steps"
            )
        if self.main_seeds < 1 or self.sweep_seeds < 1:
            raise ValueError("main_seeds and sweep_seeds must be >= 1")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2; got {self.num_samples}")
        if self.sem_channels is not None and self.sem_channels < 1:
            raise ValueError(f"sem_channels must be >= 1; got {self.sem_channels}")

    @classmethod
    def quick_settings(cls, **kw) -> AblationSettings:
        """Toy sizes for the test suite: 2 rows x 2 seeds x 2 checkpoints."""
        base = dict(
            rows=("baseline", "sfd"),
            main_seeds=2,
            sweep_seeds=1,
            steps=8,
            checkpoints=2,
            num_samples=40,
            num_steps=3,
            method="euler",
            cfg_sweep=(2.0,),
            overrides=(
                "model.depth=2",
                "model.width=64",
                "model.num_heads=2",
                "model.repa_projector_dim=64",
                "model.repa_depth=1",
                "train.global_batch_size=16",
            ),
            quick=True,
        )
        base.update(kw)
        return cls(**base)

    def checkpoint_steps(self) -> list[int]:
        k = self.checkpoints
        return sorted({round(self.steps * (i + 1) / k) for i in range(k)})

    def seeds_of(self, row: str) -> int:
        return self.main_seeds if row in MAIN_ROWS else self.sweep_seeds

    def jobs(self) -> list[tuple[str, int]]:
        """Every (row, seed), seeds first so a partial grid has whole seeds of every row."""
        most = max(self.seeds_of(r) for r in self.rows)
        return [(r, s) for s in range(most) for r in self.rows if s < self.seeds_of(r)]

    def protocol(self) -> dict:
        return {
            "steps": self.steps,
            "checkpoints": self.checkpoint_steps(),
            "num_samples": self.num_samples,
            "sample_seed": self.sample_seed,
            "sampler": f"{self.method} {self.num_steps}",
            "cfg_scale": self.cfg_scale,
            "cfg_sweep": list(self.cfg_sweep),
            "overrides": list(self.overrides),
        } | ({} if self.sem_channels is None else {"sem_channels": self.sem_channels})


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if m is None or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4); got {text!r}")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------------------------
# Configs of the rows


def base_config(meta: dict, overrides: tuple[str, ...] = (), name: str = "demo") -> Config:
    """The ``demo`` preset fitted to a latent set (channels, grid, classes, REPA dim)."""
    cfg = preset(name)
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(
            cfg.model, num_classes=int(meta["num_classes"]), repa_dim=int(meta["repa_dim"])
        ),
        latent=dataclasses.replace(
            cfg.latent,
            tex_channels=int(meta["tex_channels"]),
            sem_channels=int(meta["sem_channels"]),
            size=int(meta["size"]),
        ),
    )
    return apply_overrides(cfg, list(overrides))


def row_config(base: Config, row: Row, sem_channels: int, seed: int, steps: int) -> Config:
    """The SFD config of one row and training seed."""
    model, latent, flow = base.model, base.latent, base.flow
    if row.semantic == "none":
        latent = dataclasses.replace(latent, sem_channels=0)
        model = dataclasses.replace(model, dual_timestep=False)
    else:
        latent = dataclasses.replace(latent, sem_channels=sem_channels)
    if not row.repa:
        model = dataclasses.replace(model, repa_dim=0)
        flow = dataclasses.replace(flow, repa_weight=0.0)
    flow = dataclasses.replace(flow, delta_t=row.delta_t)
    train = dataclasses.replace(base.train, total_steps=steps, seed=seed, keep_last=0)
    return dataclasses.replace(base, model=model, latent=latent, flow=flow, train=train)


def sample_config(cfg: Config, s: AblationSettings, cfg_scale: float) -> Config:
    sample = dataclasses.replace(
        cfg.sample,
        method=s.method,
        num_steps=s.num_steps,
        cfg_scale_tex=cfg_scale,
        cfg_scale_sem=cfg_scale,
        cfg_interval_tex=(0.0, 1.0),
        cfg_interval_sem=(0.0, 1.0),
        guide="cfg",
        timestep_shift=0.0,
        compute_batch=max(cfg.sample.compute_batch, 50),
    )
    return dataclasses.replace(cfg, sample=sample)


# --------------------------------------------------------------------------------------------
# Data: the latent sets each row trains on


@dataclass
class AblationData:
    """Where the grid's inputs live (all cached; see :func:`prepare_data`)."""

    latents: dict[str, Path]  # "semvae" / "pca" / "none" -> latent set
    decoder: Path  # texture autoencoder directory
    reference: Path  # real images (.npz, arr_0 uint8 NHWC, arr_1 labels), >= 2 x num_samples
    meta: dict  # the SemVAE latent set's meta.json
    classifier: Path | None  # the in-domain Fashion-MNIST classifier, when the data is that
    info: dict = field(default_factory=dict)


def prepare_data(
    out: Path,
    settings: AblationSettings,
    *,
    latents: Path | None = None,
    features: Path | None = None,
    decoder: Path | None = None,
    reference: Path | None = None,
    demo_settings=None,
    device: str = "cpu",
) -> AblationData:
    """The SemVAE latent set (the demo's, built and cached, or ``latents``) and the derived
    sets the requested rows need; errors before any training if an input is missing."""
    from sfd.data.latents import LatentDataset

    rows = [parse_row(r) for r in settings.rows]
    need = {r.semantic for r in rows}
    info: dict = {}
    if latents is None:  # the embedded default: the demo's data stages, cached in out/base
        from sfd.demo import DemoSettings, prepare_base

        ds = demo_settings or (DemoSettings.quick() if settings.quick else DemoSettings())
        if settings.sem_channels is not None:
            ds = dataclasses.replace(ds, sem_channels=settings.sem_channels)
        base = prepare_base(out / "base", ds, device=device)
        latents, features, decoder = base.latents, base.features, base.texture_vae
        reference = reference or _demo_reference(out, base.test_set, settings.num_samples)
        info = {"texture_vae": base.texture, "semvae": base.semvae}
        classifier = _fashion_classifier(out / "classifier", settings.quick, device)
    else:
        if settings.sem_channels is not None:
            raise ValueError(
                f"sem_channels={settings.sem_channels} changes the embedded default's SemVAE; "
                f"with --data {latents} the channels are the latent set's own"
            )
        classifier = None
    ds = LatentDataset(latents)
    meta = ds.meta
    if decoder is None:
        named = meta.get("texture_autoencoder")
        decoder = (Path(latents) / named) if named else None
    if decoder is None or not Path(decoder).exists():
        raise ValueError(
            f"no texture decoder for {latents}: pass --decoder (a texture autoencoder directory)"
        )
    if reference is None or not Path(reference).exists():
        raise ValueError("no real reference images: pass --ref REAL.npz (arr_0 uint8 NHWC)")
    if any(r.repa for r in rows) and not ds.has_repa:
        bad = [r.name for r in rows if r.repa]
        raise ValueError(
            f"rows {bad} need REPA targets but {latents} holds none (extract with an encoder "
            f"that writes REPA targets, or ask only for rows without REPA: baseline)"
        )
    if "pca" in need and features is None:
        raise ValueError(
            f"rows redi/redi-sf need the encoder features the PCA is fitted on: pass --features "
            f"(a `sfd extract-features` directory of training images) for {latents}"
        )
    sets = {"semvae": Path(latents)}
    if "none" in need:
        from sfd.latents.derive import derive_latent_set

        derive_latent_set(latents, out / "latents" / "none", "none")
        sets["none"] = out / "latents" / "none"
    if "pca" in need:
        from sfd.latents.derive import derive_latent_set
        from sfd.latents.pca import fit_pca, load_pca, save_pca

        pca_dir = out / "pca"
        if not (pca_dir / "pca.json").exists():
            save_pca(fit_pca(features, int(meta["sem_channels"])), pca_dir)
        pca = load_pca(pca_dir)
        derive_latent_set(latents, out / "latents" / "pca", "pca", pca=pca)
        sets["pca"] = out / "latents" / "pca"
        info["pca_explained_variance_ratio"] = float(pca.explained_variance_ratio.sum())
    return AblationData(sets, Path(decoder), Path(reference), meta, classifier, info)


def _fashion_classifier(path: Path, quick: bool, device: str) -> Path:
    """The in-domain classifier of the metrics: the packaged one (the same metric everywhere);
    trained once into ``path`` only where the package lacks it."""
    from sfd.eval.fashion_classifier import META_FILE, PACKAGED_CLASSIFIER, train_fashion_classifier

    if (PACKAGED_CLASSIFIER / META_FILE).exists():
        return PACKAGED_CLASSIFIER
    if quick:  # toy budget: the test suite checks the plumbing, not the metric's quality
        train_fashion_classifier(path, steps=60, train_images=2000, device=device)
    else:
        train_fashion_classifier(path, device=device)
    return path


def _demo_reference(out: Path, test_set, num: int) -> Path:
    """2 x ``num`` real test images (uint8 NHWC + labels) for the floor and the distances."""
    from torch.utils.data import DataLoader, Subset

    from sfd.generate import to_uint8

    path = out / f"real_test_{num}.npz"
    if path.exists():
        return path
    need = 2 * num
    dataset = test_set.dataset if len(test_set) < need else test_set
    if len(dataset) < need:
        raise ValueError(f"{need} real test images needed for {num} samples; {len(dataset)} exist")
    xs, ys = zip(*DataLoader(Subset(dataset, range(need)), batch_size=1000), strict=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, arr_0=to_uint8(torch.cat(xs)).numpy(), arr_1=torch.cat(ys).numpy())
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# Metrics


class Evaluator:
    """Metrics of a set of uint8 images against real ones, with the floor and the ceiling.

    - ``fd_fmnist`` / ``acc``: Fréchet distance in the penultimate features of the in-domain
      Fashion-MNIST classifier and its accuracy w.r.t. the class asked for (Fashion-MNIST only);
    - ``fd_effnet``: Fréchet distance in EfficientNet-Lite0 pooled features (64 px), any data.

    The reference holds 2N real images: the first N are what samples are compared with, the
    other N give the real-vs-real floor; the texture decoder's reconstructions of the first N
    give the ceiling a generator can reach through this decoder.
    """

    def __init__(self, out: Path, data: AblationData, num: int, device: str) -> None:
        from sfd.latents.encoders import EfficientNetLite0Encoder

        self.device, self.num = device, num
        self.effnet = EfficientNetLite0Encoder(grid=8).to(device).eval()
        self.classifier = None
        if data.classifier is not None:
            from sfd.eval.fashion_classifier import load_fashion_classifier

            self.classifier = load_fashion_classifier(data.classifier, device=device)
            self.classifier_info = json.loads((data.classifier / "classifier.json").read_text())
        ref = np.load(data.reference)
        images, labels = ref["arr_0"], (ref["arr_1"] if "arr_1" in ref.files else None)
        if len(images) < 2 * num:
            raise ValueError(f"{data.reference}: {len(images)} images; {2 * num} needed")
        self.real = self.features(images[:num])
        self.real_stats = {k: FeatureStats.of(v) for k, v in self.real.items() if k != "logits"}
        self.real_labels = None if labels is None else torch.from_numpy(labels[:num]).long()
        self.reference = self._reference(out, data, images, labels)

    @torch.no_grad()
    def features(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        """uint8 (N, H, W, C) -> {"effnet": (N, 1280), "fmnist": (N, D), "logits": (N, K)}."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        xf = x.float() / 127.5 - 1
        out = {"effnet": pooled_features(self.effnet, xf, self.device, batch=250)}
        if self.classifier is not None:
            from sfd.eval.fashion_classifier import classifier_outputs

            logits, feats = classifier_outputs(self.classifier, x, device=self.device)
            out["fmnist"], out["logits"] = feats.double(), logits
        return out

    def metrics(self, feats: dict, labels: torch.Tensor | None) -> dict[str, float]:
        from sfd.eval.metrics import frechet_distance

        result = {
            "fd_effnet": frechet_distance(
                FeatureStats.of(feats["effnet"]), self.real_stats["effnet"], method="eigh"
            )
        }
        if "fmnist" in feats:
            result["fd_fmnist"] = frechet_distance(
                FeatureStats.of(feats["fmnist"]), self.real_stats["fmnist"], method="eigh"
            )
            if labels is not None:
                result["acc"] = class_accuracy(feats["logits"], labels)
        return result

    def _reference(self, out: Path, data: AblationData, images, labels) -> dict:
        path = out / f"reference_{self.num}.json"
        if path.exists():
            return json.loads(path.read_text())
        from sfd.latents.texture import load_texture_autoencoder

        n = self.num
        other = self.features(images[n : 2 * n])
        lab = None if labels is None else torch.from_numpy(labels[n : 2 * n]).long()
        floor = self.metrics(other, lab)
        vae = load_texture_autoencoder(data.decoder).to(self.device).eval()
        x = torch.from_numpy(np.ascontiguousarray(images[:n])).permute(0, 3, 1, 2)
        x = x.float() / 127.5 - 1
        if x.shape[1] == 3 and _decoder_channels(vae) == 1:
            x = x[:, :1]
        from sfd.generate import to_uint8

        recon = reconstruct(vae, x, self.device)
        recon_u8 = to_uint8(recon).numpy()
        ceiling = self.metrics(self.features(recon_u8), self.real_labels)
        result = {"floor": floor, "ceiling": ceiling, "num": n}
        if self.classifier is not None:
            result["real_acc"] = float(
                (self.real["logits"].argmax(1) == self.real_labels).float().mean()
            )
            result["classifier"] = self.classifier_info
        atomic_write_json(path, result)
        return result


def _decoder_channels(vae) -> int:
    return int(getattr(getattr(vae, "config", None), "in_channels", 0) or 1)


@torch.no_grad()
def sample_images(ckpt_dir: Path, decoder, settings: AblationSettings, cfg_scale: float, device):
    """Balanced, per-image-seeded samples of one checkpoint: uint8 (N, H, W, C) and labels."""
    from sfd.api import load_checkpoint
    from sfd.generate import GenerationJob, LatentSampler

    model, ckpt = load_checkpoint(ckpt_dir, device)
    cfg = sample_config(ckpt.config, settings, cfg_scale)
    sampler = LatentSampler(model, cfg, ckpt.stats, device=device)
    n = settings.num_samples
    job = GenerationJob(sampler, decoder, Path("."), n, seed=settings.sample_seed)
    chunk = 250
    images = np.concatenate(
        [job.images(list(range(i, min(i + chunk, n)))).numpy() for i in range(0, n, chunk)]
    )
    return images, job.label_of(range(n))


# --------------------------------------------------------------------------------------------
# The grid


def result_path(out: Path, row: str, seed: int, step: int, cfg_scale: float) -> Path:
    return out / "results" / row / f"seed{seed}" / f"step{step:07d}_cfg{cfg_scale:g}.json"


def run_ablation(
    out: str | Path,
    settings: AblationSettings,
    *,
    shard: tuple[int, int] = (0, 1),
    device: str = "cpu",
    latents: Path | None = None,
    features: Path | None = None,
    decoder: Path | None = None,
    reference: Path | None = None,
    demo_settings=None,
    progress: bool = False,
) -> dict:
    """Run (or resume) this shard's part of the grid, then rebuild the summary."""
    from sfd.ablate_report import write_report
    from sfd.latents.texture import load_texture_autoencoder
    from sfd.training.checkpoint import checkpoint_dir
    from sfd.training.loop import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    data = prepare_data(
        out,
        settings,
        latents=latents,
        features=features,
        decoder=decoder,
        reference=reference,
        demo_settings=demo_settings,
        device=device,
    )
    base = base_config(data.meta, settings.overrides)
    for r in settings.rows:  # every row's config is valid before anything trains
        row_config(base, parse_row(r), base.latent.sem_channels, 0, settings.steps)
    _check_settings(out, settings, write=True)
    i, n = shard
    jobs = [job for k, job in enumerate(settings.jobs()) if k % n == i]
    evaluator = None
    decoder_net = None
    work: dict[str, list] = {"trained": [], "evaluated": [], "skipped": []}
    for row_name, seed in jobs:
        row = parse_row(row_name)
        cfg = row_config(base, row, base.latent.sem_channels, seed, settings.steps)
        run_dir = out / "runs" / row_name / f"seed{seed}"
        todo = _evaluations(out, settings, row_name, seed)
        if not todo:
            continue
        lock = _JobLock(run_dir)
        if not lock.acquire():
            log.info("%s seed %d: another live process holds %s; skipped", row_name, seed, lock)
            work["skipped"].append([row_name, seed])
            continue
        ckpt_steps = settings.checkpoint_steps()
        if not all((checkpoint_dir(run_dir, k) / "ema.safetensors").exists() for k in ckpt_steps):
            t0 = time.perf_counter()
            train(
                _with_checkpoints(cfg, ckpt_steps),
                data.latents[row.semantic],
                run_dir,
                device=device,
                progress=progress,
            )
            work["trained"].append([row_name, seed, round(time.perf_counter() - t0, 1)])
        if evaluator is None:
            evaluator = Evaluator(out, data, settings.num_samples, device)
            decoder_net = load_texture_autoencoder(data.decoder).to(device).eval()
        for step, scale in todo:
            t0 = time.perf_counter()
            images, labels = sample_images(
                checkpoint_dir(run_dir, step), decoder_net, settings, scale, device
            )
            metrics = evaluator.metrics(evaluator.features(images), labels)
            record = {
                "row": row_name,
                "seed": seed,
                "step": step,
                "cfg_scale": scale,
                "delta_t": row.delta_t,
                "semantic": row.semantic,
                "repa": row.repa,
                **metrics,
                "eval_seconds": round(time.perf_counter() - t0, 1),
            }
            target = result_path(out, row_name, seed, step, scale)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(target, record)
            work["evaluated"].append([row_name, seed, step, scale])
            log.info("%s seed %d step %d cfg %g: %s", row_name, seed, step, scale, metrics)
        lock.release()
    if evaluator is None:  # nothing left to do here: the reference may still be missing
        ref = sorted(out.glob(f"reference_{settings.num_samples}.json"))
        reference_info = json.loads(ref[0].read_text()) if ref else None
    else:
        reference_info = evaluator.reference
    summary = write_report(out, settings, reference_info, data.info)
    summary["work"] = work
    return summary


def _with_checkpoints(cfg: Config, steps: list[int]) -> Config:
    """Checkpoint every gap of the evenly spaced list (they are all equal up to rounding)."""
    gaps = {b - a for a, b in zip([0, *steps[:-1]], steps, strict=True)}
    every = math.gcd(*gaps) if gaps else steps[-1]
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ckpt_every=every))


def _evaluations(out: Path, s: AblationSettings, row: str, seed: int) -> list[tuple[int, float]]:
    """The (step, cfg scale) evaluations of one run that have no cached result yet."""
    wanted = [(k, s.cfg_scale) for k in s.checkpoint_steps()]
    if row in MAIN_ROWS:
        wanted += [(s.steps, w) for w in s.cfg_sweep if w != s.cfg_scale]
    return [(k, w) for k, w in wanted if not result_path(out, row, seed, k, w).exists()]


def _check_settings(out: Path, s: AblationSettings, write: bool = False) -> None:
    """A grid directory holds one protocol: rerunning with another one would mix results.
    It is recorded (``write``) once the inputs are checked, so a refused start leaves none."""
    path = out / "protocol.json"
    proto = s.protocol()
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != proto:
            diffs = [k for k in proto if stored.get(k) != proto[k]]
            raise ValueError(
                f"{out} holds an ablation with another protocol (differs in {', '.join(diffs)}); "
                f"use a new --out or the same settings"
            )
        return
    if write:
        atomic_write_json(path, proto)
