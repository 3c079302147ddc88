"""``SFDPipeline``: class-conditional SFD sampling as a diffusers ``DiffusionPipeline``.

Conventions from diffusers' ``DiTPipeline`` (diffusers/pipelines/dit/pipeline_dit.py, read, not
copied): ``__call__(class_labels, num_inference_steps, guidance_scale, generator, output_type,
return_dict)``, ``id2label`` and ``get_label_ids``, ``ImagePipelineOutput``. Where SFD differs
the pipeline follows sfd (docs/METHOD.md §4-5), through sfd's own code:

- the latents come from sfd's one generation function, ``sample.sample_latents``, the one
  ``sfd sample`` runs: guidance by ``guidance.guided_velocity`` (CFG on ALL channels, null class
  = ``num_classes``, not DiT's 1000 and first-3-channels; or AutoGuidance with
  ``guide_transformer``), the model on ``compute_batch`` rows at a time, the registry's solver on
  the scheduler's staged schedule (or along its path);
- noise is drawn per image on the CPU in float32 (``sample.draw_noise``; one generator per
  image: pass ``image_generators(seed, n)`` and image i equals ``sfd sample --seed seed``'s
  image i);
- the latents are de-normalised with the transformer's latent statistics and the texture part
  is decoded by the VAE; ``vae.config.scaling_factor`` is not used (the statistics own that).

This file is written verbatim into an export's root beside the files it imports
(``sfd.ecosystem.remote``): it imports nothing of sfd by name, and loads with
``DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

# diffusers copies only the files this module imports itself: it names every sibling it needs
from .composite import LatentStats
from .guidance import Guidance  # noqa: F401  latent_sampling's sibling
from .latent_sampling import draw_noise, image_generators, sample_latents
from .numerics import padded_batches, to_uint8
from .path import Layout
from .progress import ProgressPath  # noqa: F401  latent_sampling's sibling
from .schedule import StagedSchedule  # noqa: F401  latent_sampling's sibling
from .solvers import Solution

__all__ = ["SFDPipeline", "image_generators", "to_pil"]


class SFDPipeline(DiffusionPipeline):
    """Semantic-First Diffusion: class labels -> images (``transformer`` -> ``vae``)."""

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["guide_transformer"]

    def __init__(
        self,
        transformer: ModelMixin,
        vae: ModelMixin,
        scheduler: SchedulerMixin,
        guide_transformer: ModelMixin | None = None,
        id2label: dict | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
            guide_transformer=guide_transformer,
        )
        names = {int(k): str(v) for k, v in (id2label or {}).items()}
        self.register_to_config(id2label=names or None)
        # "name, synonym" entries map every name to the class, as in DiTPipeline
        self.labels = {
            part.strip(): k for k, v in sorted(names.items()) for part in v.split(",") if part
        }

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """Class ids of label names (``self.labels`` lists them; an exact name first, else the
        name in any case: ``"sneaker"`` finds ``"Sneaker"``)."""
        wanted = [label] if isinstance(label, str) else list(label)
        folded = {}
        for name, k in self.labels.items():
            folded.setdefault(name.casefold(), k)
        ids = [self.labels.get(w, folded.get(str(w).casefold())) for w in wanted]
        unknown = [w for w, k in zip(wanted, ids, strict=True) if k is None]
        if unknown:
            raise ValueError(f"unknown labels {unknown}; known: {', '.join(self.labels)}")
        return ids

    def _noise(self, n: int, generator) -> torch.Tensor:
        t = self.transformer
        shape = (t.in_channels, t.config.sample_size, t.config.sample_size)
        gens = generator if isinstance(generator, list) else [generator] * n
        if len(gens) != n:
            raise ValueError(f"got {len(gens)} generators for {n} class labels")
        return draw_noise(gens, shape)  # (N, C, H, W) fp32

    @torch.no_grad()
    def latents(
        self,
        class_labels: Sequence[int] | torch.Tensor,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        method: str | None = None,
        guidance: str | None = None,
        keep_trajectory: bool = False,
    ) -> Solution:
        """Normalised composite latents (and the trajectory if kept): sfd's one generation
        function with the scheduler's settings, changed by the arguments given."""
        t = self.transformer
        device = self._execution_device
        y = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        if y.numel() == 0 or int(y.min()) < 0 or int(y.max()) >= t.config.num_classes:
            raise ValueError(f"class_labels must be in [0, {t.config.num_classes}); got {y}")
        changes = {}
        if num_inference_steps is not None:
            changes["num_steps"] = int(num_inference_steps)
        if guidance_scale is not None:
            changes["cfg_scale_tex"] = changes["cfg_scale_sem"] = float(guidance_scale)
        if method is not None:
            changes["method"] = method
        if guidance is not None:
            changes["guide"] = guidance
        sample = self.scheduler.sampler(**changes)
        if sample.guide == "autoguidance" and self.guide_transformer is None:
            raise ValueError(
                "guidance='autoguidance' needs a guide_transformer "
                "(sfd export-diffusers RUN OUT --guide GUIDE_RUN); or pass guidance='cfg'"
            )
        guide = self.guide_transformer.dit if sample.guide == "autoguidance" else None
        x = self._noise(len(y), generator).to(device)
        path, schedule = self.scheduler.use(sample, device)
        return sample_latents(
            t.dit, y.to(device), x, sample, self.layout, path, schedule, guide, keep_trajectory
        )

    @property
    def layout(self) -> Layout:
        """The composite latent's channel layout (texture first)."""
        return self.transformer.layout

    @property
    def latent_stats(self) -> LatentStats:
        return self.transformer.latent_stats

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, compute_batch: int | None = None) -> torch.Tensor:
        """Normalised composite latents -> images in [-1, 1] (B, C, H, W), decoded on
        ``compute_batch`` rows at a time (as ``sfd sample`` decodes)."""
        t = self.transformer
        z = t.layout.tex(t.latent_stats.denormalize(latents))
        k = compute_batch or int(self.scheduler.config.compute_batch)
        parts = [
            self.vae.decode(z[idx]).sample[:real]
            for idx, real in padded_batches(len(z), k, z.device)
        ]
        return torch.cat(parts)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Sequence[int] | torch.Tensor,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        method: str | None = None,
        guidance: str | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Generate one image per class label.

        Args:
            class_labels: class ids (``get_label_ids`` maps names).
            num_inference_steps: solver steps of Euler/Heun (default: the run's).
            guidance_scale: CFG (or AutoGuidance) scale of both parts (default: the run's
                per-part scales); 1 turns guidance off.
            generator: one generator, or one per image (``image_generators``).
            output_type: ``"pil"`` (uint8, rounded as ``sfd sample`` writes PNGs), ``"np"``
                (float32 (B, H, W, C) in [0, 1]) or ``"latent"`` (the de-normalised composite
                latents (B, C_z + C_s, h, w)).
            method: ``"euler"``, ``"heun"`` or ``"dopri5"`` (default: the run's).
            guidance: ``"cfg"`` or ``"autoguidance"`` (needs ``guide_transformer``).
        """
        if output_type not in ("pil", "np", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'latent'; got {output_type!r}")
        sol = self.latents(
            class_labels, num_inference_steps, guidance_scale, generator, method, guidance
        )
        if output_type == "latent":
            images = self.transformer.latent_stats.denormalize(sol.final)
        else:
            decoded = self.decode(sol.final).cpu()
            if output_type == "np":
                images = ((decoded.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
            else:
                images = [to_pil(img) for img in to_uint8(decoded).numpy()]
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 (H, W, C) -> PIL (mode L for one channel)."""
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
