"""``sfd app RUN``: a local gradio web app over :class:`SFDPipeline`.

Pick classes, a seed, steps and the CFG (or AutoGuidance) scale; see the sample grid and the
three stages of one sample as ``sfd demo`` draws them (:func:`sfd.figures.stage_strip`: decoded
texture and semantic PCA colours over the global time tau). Image i of the grid is generated as
``sfd sample --seed SEED`` generates image i (its own generator, seed + i), with the label of
the chosen classes in turn, so the app shows exactly what the command line writes. The layout
follows gradio's Blocks API (gradio.app/docs); the app logic (:func:`generate`) is plain Python
and is tested without a browser.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch
from PIL import Image

from sfd.ecosystem.convert import load_export
from sfd.ecosystem.export import ExportSources, build_pipeline
from sfd.ecosystem.remote.pipeline_sfd import SFDPipeline, image_generators
from sfd.figures import stage_strip
from sfd.generate import to_uint8

STRIP_STEPS = 26  # the demo's stage picture: Euler, 26 steps, 10 of the 27 states shown
STRIP_PICKS = (0, 3, 6, 9, 12, 15, 18, 21, 23, 26)


@dataclasses.dataclass(frozen=True)
class Request:
    classes: tuple[int, ...]
    num_images: int
    seed: int
    steps: int
    scale: float
    guidance: str = "cfg"

    def labels(self) -> list[int]:
        """Label of image i: the chosen classes in turn."""
        if not self.classes:
            raise ValueError("pick at least one class")
        return [self.classes[i % len(self.classes)] for i in range(self.num_images)]


def generate(pipe: SFDPipeline, req: Request) -> list[Image.Image]:
    """The grid's images (image i from seed + i, as ``sfd sample``)."""
    return pipe(
        class_labels=req.labels(),
        num_inference_steps=req.steps,
        guidance_scale=req.scale,
        generator=image_generators(req.seed, req.num_images),
        guidance=req.guidance,
    ).images


def grid(images: list[Image.Image], columns: int = 8) -> Image.Image:
    """Images side by side, ``columns`` a row (RGB)."""
    w, h = images[0].size
    rows = -(-len(images) // columns)
    cols = min(columns, len(images))
    sheet = Image.new("RGB", (cols * w, rows * h))
    for i, im in enumerate(images):
        sheet.paste(im.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    return sheet


@torch.no_grad()
def stage_picture(pipe: SFDPipeline, req: Request, path: Path) -> Path:
    """The stage strip of image 0 (Euler, 26 steps, guidance as requested)."""
    sol = pipe.latents(
        req.labels()[:1],
        STRIP_STEPS,
        req.scale,
        image_generators(req.seed, 1),
        method="euler",
        guidance=req.guidance,
        keep_trajectory=True,
    )
    pipe.scheduler.set_timesteps(STRIP_STEPS, method="euler")
    taus = pipe.scheduler.timesteps.tolist()
    states = torch.cat([sol.trajectory[k] for k in STRIP_PICKS])
    t = pipe.transformer
    textures = to_uint8(pipe.decode(states).cpu()).numpy()
    sem = t.layout.sem(t.latent_stats.denormalize(states)).cpu()
    stage_strip([taus[k] for k in STRIP_PICKS], textures, sem, pipe.scheduler.config.delta_t, path)
    return path


def build_app(pipe: SFDPipeline, default_steps: int | None = None, seed: int = 0):
    """The gradio Blocks app (import gradio: the ``[app]`` extra)."""
    import gradio as gr  # optional: the ``[app]`` extra; sfd runs without it

    names = [pipe.config.id2label[k] for k in sorted(pipe.config.id2label)]
    s = pipe.scheduler.config
    autoguidance = pipe.guide_transformer is not None
    work = Path(tempfile.mkdtemp(prefix="sfd-app-"))

    def run(classes, num, seed, steps, scale, guidance):
        req = Request(
            tuple(names.index(c) for c in classes),
            int(num),
            int(seed),
            int(steps),
            float(scale),
            guidance,
        )
        if not req.classes:
            raise gr.Error("pick at least one class")
        images = generate(pipe, req)
        strip = stage_picture(pipe, req, work / f"strip-{req.seed}-{req.steps}.png")
        return images, str(strip)

    with gr.Blocks(title="SFD: Semantic-First Diffusion") as app:
        gr.Markdown("## SFD: semantics lead, textures follow")
        with gr.Row():
            with gr.Column(scale=1):
                classes = gr.CheckboxGroup(names, value=names[:4], label="classes")
                num = gr.Slider(1, 32, value=8, step=1, label="images")
                seed = gr.Number(seed, precision=0, label="seed (image i uses seed + i)")
                first = default_steps or int(s.num_inference_steps)
                steps = gr.Slider(1, 100, value=first, step=1, label=f"steps ({s.method})")
                scale = gr.Slider(1.0, 10.0, value=float(s.cfg_scale_tex), step=0.1, label="scale")
                choices = ["cfg", "autoguidance"] if autoguidance else ["cfg"]
                guidance = gr.Radio(choices, value=choices[0], label="guidance")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="samples", columns=8, elem_id="samples", format="png")
                strip = gr.Image(label="the three stages of image 0", elem_id="stages")
        button.click(run, [classes, num, seed, steps, scale, guidance], [gallery, strip])
    return app


def load_pipeline(run: Path, decoder=None, guide=None, class_names=None, device: str = "cpu"):
    """The pipeline of a diffusers export (has ``model_index.json``) or of an sfd run."""
    run = Path(run)
    if (run / "model_index.json").exists():
        return load_export(run, device)
    return build_pipeline(ExportSources(run, decoder, guide, class_names), device)[0]
