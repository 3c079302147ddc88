"""The negative control of the ablation grid: a semantic latent from a randomly initialised
encoder (docs/ABLATION.md, "The random-encoder control").

A semantic-first gain that also appears with a semantic latent made by an encoder that learned
nothing is not semantic: it comes from the extra channels, the second timestep or the schedule.
The control keeps everything of the embedded default but the semantic channels: the same images,
the same texture autoencoder (so the same texture latents, bit for bit), the same REPA targets
(the pretrained encoder's); only the SemVAE is trained on, and encodes, the features of
EfficientNet-Lite0 with random weights (:func:`sfd.latents.encoders.random_efficientnet_lite0`).
Its stages are cached in ``OUT/control`` like the base's.
"""

from __future__ import annotations

from pathlib import Path

from sfd.data.images import first_image_shape
from sfd.experiments.stages import StagedBase, Stages, StageSizes, semantic_stages
from sfd.latents.derive import derive_latent_set
from sfd.latents.encoders import EfficientNetLite0Encoder
from sfd.latents.texture import load_texture_autoencoder

CONTROL_SEED = 0  # the random encoder's weights


def random_encoder_latents(
    out: Path, base: StagedBase, sizes: StageSizes, device: str = "cpu", seed: int = CONTROL_SEED
) -> tuple[Path, dict]:
    """The base latent set with its semantic channels from the random encoder's SemVAE, in
    ``out / "latents" / "random"``; returns it and the control SemVAE's summary."""
    ctrl = Path(out) / "control"
    ctrl.mkdir(parents=True, exist_ok=True)
    texture_ae = load_texture_autoencoder(base.texture_vae)
    grid = first_image_shape(base.train_set)[-1] // texture_ae.downsample
    encoder = EfficientNetLite0Encoder(grid=grid, stride=sizes.encoder_stride, random_init=seed)
    sem = semantic_stages(
        ctrl,
        Stages(ctrl),
        base.train_set,
        base.test_set,
        sizes,
        encoder.to(device),
        texture_ae,
        device,
    )
    target = Path(out) / "latents" / "random"
    derive_latent_set(base.latents, target, "from", source=ctrl / "latents")
    return target, sem
