"""sfd objects <-> the diffusers classes of an export, with the installed ``sfd``.

:func:`transformer_from_sfd` and :func:`scheduler_from_config` turn a run's model and config into
the diffusers components; :func:`load_export` loads an export directory with the installed
package's classes (no code from the directory is run; the other way, without sfd, is
``DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)``; docs/ECOSYSTEM.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from sfd.config import Config
from sfd.ecosystem.remote.pipeline_sfd import SFDPipeline
from sfd.ecosystem.remote.scheduler_sfd import (
    SCHEDULE_ROWS,
    SFDScheduler,
    schedule_rows,
    scheduler_settings,
)
from sfd.ecosystem.remote.transformer_sfd import SFDTransformer2DModel
from sfd.errors import MissingInputError
from sfd.flow.schedule import staged_schedule
from sfd.generate import sampling_schedule
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT


def transformer_from_sfd(model: LightningDiT, stats: LatentStats) -> SFDTransformer2DModel:
    """A wrapper holding a copy of ``model``'s weights (loaded strictly) and ``stats``."""
    args = model.arguments()
    wrapper = SFDTransformer2DModel(
        sample_size=args.pop("latent_size"),
        latent_mean=stats.to_dict()["mean"],
        latent_std=stats.to_dict()["std"],
        **args,
    )
    wrapper.dit.load_state_dict(model.state_dict(), strict=True)
    return wrapper.eval()


def scheduler_from_config(config: Config) -> SFDScheduler:
    """The run's sampler, with its fixed-step schedule stored as data (``sampling_schedule``).

    ``path`` is ``"staged"`` when that schedule is the staged one of the run's Δt (other step
    counts are then built from Δt), else ``"stored"`` (a run on another path: the export
    samples the stored step count only)."""
    s = config.sample
    run = sampling_schedule(config)
    staged = staged_schedule(s.num_steps, config.flow.delta_t, s.timestep_shift, s.boundary)
    same = all(torch.equal(getattr(run, k), getattr(staged, k)) for k in SCHEDULE_ROWS)
    return SFDScheduler(
        delta_t=config.flow.delta_t,
        path="staged" if same else "stored",
        schedules={str(s.num_steps): schedule_rows(run)},
        **scheduler_settings(s),
    )


def load_export(path: str | Path, device: str = "cpu") -> SFDPipeline:
    """An export directory's pipeline, built from the installed sfd's classes."""
    root = Path(path)
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise MissingInputError(f"{root} is not a diffusers export (no model_index.json)")
    index = json.loads(index_file.read_text())
    guide = None
    if (index.get("guide_transformer") or [None])[0] is not None:
        guide = SFDTransformer2DModel.from_pretrained(root / "guide_transformer")
    pipe = SFDPipeline(
        transformer=SFDTransformer2DModel.from_pretrained(root / "transformer"),
        vae=AutoencoderKL.from_pretrained(root / "vae"),
        scheduler=SFDScheduler.from_pretrained(root / "scheduler"),
        guide_transformer=guide,
        id2label=index.get("id2label"),
    )
    return pipe.to(device)
