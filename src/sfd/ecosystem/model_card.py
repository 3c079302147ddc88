"""The model card (``README.md``) of a diffusers export: YAML front matter, then prose.

The front matter follows the Hugging Face model-card metadata (``license``, ``library_name``,
``tags``, ``pipeline_tag``; huggingface.co/docs/hub/model-cards). The body states what the
export is, how to run it (three lines), the run's full config and the metrics given to the
export (``--metrics``): no number is written that was not measured.
"""

from __future__ import annotations

import json

import yaml

from sfd.training.checkpoint import Checkpoint

TAGS = ["sfd", "semantic-first-diffusion", "diffusers", "class-conditional", "flow-matching"]


def front_matter(ckpt: Checkpoint, metrics: dict, license_id: str = "mit") -> str:
    meta = {
        "license": license_id,
        "library_name": "diffusers",
        "tags": TAGS,
        "sfd": {
            "step": ckpt.step,
            "config": ckpt.config.to_dict(),
            "metrics": metrics or None,
        },
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def model_card(ckpt: Checkpoint, metrics: dict, sources, id2label: dict | None) -> str:
    """The card's text for checkpoint ``ckpt`` exported from ``sources``."""
    cfg = ckpt.config
    m, lat, s = cfg.model, cfg.latent, cfg.sample
    names = ", ".join(f"{k}: {v}" for k, v in sorted((id2label or {}).items())[:20])
    measured = (
        "\n".join(f"- `{k}`: {json.dumps(v)}" for k, v in metrics.items())
        if metrics
        else "None were given to the export (`sfd export-diffusers --metrics FILE`)."
    )
    guide = "yes (`guide_transformer/`)" if sources.guide else "no"
    body = f"""
# SFD (Semantic-First Diffusion) class-conditional generator

A LightningDiT with dual timesteps (depth {m.depth}, width {m.width}, {m.num_classes} classes)
that denoises a composite latent of {lat.tex_channels} texture and {lat.sem_channels} semantic
channels on a {lat.size}x{lat.size} grid, semantics leading textures by
Δt = {cfg.flow.delta_t} (Pan et al., CVPR 2026). Exported by `sfd export-diffusers` from
`{sources.run}` (step {ckpt.step}, EMA weights). AutoGuidance guide included: {guide}.

## Use

```python
from sfd.ecosystem import SFDPipeline
pipe = SFDPipeline.from_pretrained("path/to/this/directory")
images = pipe(class_labels=[0, 1, 2], num_inference_steps={s.num_steps}).images
```

Default sampler (from the run): {s.method}, {s.num_steps} steps, boundary rule `{s.boundary}`,
guidance `{s.guide}` with scales {s.cfg_scale_tex} (texture) / {s.cfg_scale_sem} (semantics).
With `generator=image_generators(seed, n)` image i equals `sfd sample --seed seed`'s image i.

Classes: {names}{" ..." if len(id2label or {}) > 20 else ""}

## Measured metrics

{measured}

The full training and sampling config is in the front matter (`sfd.config`).
"""
    return front_matter(ckpt, metrics) + body
