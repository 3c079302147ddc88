"""The model card (``README.md``) of a diffusers export: YAML front matter, then prose.

The front matter follows the Hugging Face model-card metadata (``license``, ``library_name``,
``tags``, ``pipeline_tag``; huggingface.co/docs/hub/model-cards). The Hub has no pipeline tag
for class-conditional generation: class-conditional ImageNet generators (DiT, MAR and their
kin) use ``unconditional-image-generation``, the tag for "a label or nothing in, an image out",
so the card does too and says ``class-conditional`` in its tags. The body answers a user's
questions: how to load the export (three lines, with and without sfd, and what
``trust_remote_code`` means), its classes, the sampler and guidance it was made with, the
metrics given to the export (``--metrics``: no number is written that was not measured), the
license and the method's citation.
"""

from __future__ import annotations

import json

import yaml

from sfd.training.checkpoint import Checkpoint

TAGS = [
    "sfd",
    "semantic-first-diffusion",
    "diffusers",
    "class-conditional",
    "image-generation",
    "flow-matching",
]
CITATION = """@inproceedings{pan2026sfd,
  title     = {Semantics Lead the Way: Harmonizing Semantic and Texture Modeling with
               Asynchronous Latent Diffusion},
  author    = {Pan and others},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern
               Recognition (CVPR)},
  year      = {2026},
  eprint    = {2512.04926},
  archivePrefix = {arXiv}
}"""


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


def usage(id2label: dict, steps: int) -> str:
    """How to load and run the export, with and without sfd installed."""
    first = next(iter(sorted(id2label.items())), (0, "0"))[1]
    labels = f"class_labels=pipe.get_label_ids([{first!r}])"
    call = f"pipe({labels}, num_inference_steps={steps})"
    seeded = f"pipe({labels}, generator=image_generators(0, 1))"
    return f"""## Use

Without sfd (only `torch`, `diffusers` and `safetensors` installed; `torchdiffeq` for dopri5):

```python
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("DIRECTORY", trust_remote_code=True)
images = {call}.images
```

From the Hub, download the repository at a pinned commit first and load that directory:
`DIRECTORY = huggingface_hub.snapshot_download("ORG/NAME", revision="COMMIT")` (diffusers
fetches only each component's module file from a repository, not the files it imports).

`trust_remote_code=True` runs the Python files of this directory (`pipeline_sfd.py` and the
`.py` files beside it, in `transformer/` and in `scheduler/`; the `vae/` is a stock
`AutoencoderKL`): the code you trust is the code in the repository, so read it, and pin
`revision` to the commit you read, so that a later push cannot change what runs. These files
are sfd's own source, verbatim (the model, the staged schedule and its solvers, the guidance).

With sfd installed, the installed package's code runs instead of the directory's:

```python
from sfd.ecosystem import image_generators, load_export
pipe = load_export("DIRECTORY")
images = {seeded}.images
```

With `generator=image_generators(seed, n)` (one generator per image, seeded `seed + i`) image i
equals `sfd sample --seed seed`'s image i.
"""


def model_card(ckpt: Checkpoint, metrics: dict, sources, id2label: dict | None) -> str:
    """The card's text for checkpoint ``ckpt`` exported from ``sources``."""
    cfg = ckpt.config
    m, lat, s = cfg.model, cfg.latent, cfg.sample
    id2label = id2label or {i: str(i) for i in range(m.num_classes)}
    names = ", ".join(f"{k}: {v}" for k, v in sorted(id2label.items())[:100])
    more = f" ... ({len(id2label)} in all; `pipe.labels`)" if len(id2label) > 100 else ""
    measured = (
        "\n".join(f"- `{k}`: {json.dumps(v)}" for k, v in metrics.items())
        if metrics
        else "None were given to the export (`sfd export-diffusers --metrics FILE`)."
    )
    guide = "yes (`guide_transformer/`)" if sources.guide else "no"
    scales = f"{s.cfg_scale_tex} (texture) / {s.cfg_scale_sem} (semantics)"
    body = f"""
# SFD (Semantic-First Diffusion) class-conditional generator

A LightningDiT with dual timesteps (depth {m.depth}, width {m.width}, {m.num_classes} classes)
that denoises a composite latent of {lat.tex_channels} texture and {lat.sem_channels} semantic
channels on a {lat.size}x{lat.size} grid, semantics leading textures by
Δt = {cfg.flow.delta_t} (Pan et al., CVPR 2026). Exported by `sfd export-diffusers` from
`{sources.run}` (step {ckpt.step}, EMA weights). AutoGuidance guide included: {guide}.

{usage(id2label, s.num_steps)}
## Classes

{names}{more}

## Sampler and guidance

Made with (and the defaults of `pipe(...)`): {s.method}, {s.num_steps} steps, boundary rule
`{s.boundary}`, timestep shift {s.timestep_shift}; guidance `{s.guide}` with scales {scales},
intervals {list(s.cfg_interval_tex)} / {list(s.cfg_interval_sem)}; the model runs on
{s.compute_batch} rows at a time. `guidance_scale=` sets both scales, `guidance="cfg"` or
`"autoguidance"` the rule, `method=` the solver. The fixed-step schedule is stored in
`scheduler/scheduler_config.json` (`schedules`).

## Measured metrics

{measured}

The full training and sampling config is in the front matter (`sfd.config`).

## License

The code in this directory is sfd's, under the MIT license; the weights also carry the terms of
the data they were trained on.

## Citation

```bibtex
{CITATION}
```
"""
    return front_matter(ckpt, metrics) + body
