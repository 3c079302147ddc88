"""A release checkpoint imported with ``sfd import-upstream``, exported for diffusers with its
AutoGuidance guide: the pipeline's latents equal ``sfd sample --guide``'s, bit for bit.

The release folder is built as tests/test_upstream_release.py builds it: the release-made
fixture weights (tests/fixtures/upstream_parity) in a ``{'model', 'ema'}`` ``.pt`` and the two
release statistics files. The release ships no pixel decoder for this tiny architecture, so the
export names a random VAE of the right latent channels (``--decoder``).
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from sfd.cli import main
from sfd.ecosystem import image_generators, load_export
from sfd.ecosystem.remote import source_file
from tests.ecosystem.ecosystem_helpers import import_release

NUM, SEED, SCALE = 3, 11, 1.5
SETTINGS = {"method": "heun", "num_steps": 3, "compute_batch": 4}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    return import_release(tmp_path_factory.mktemp("release"))


def test_imported_release_exports_and_matches_sfd_sample(imported, tmp_path):
    out = tmp_path / "release-diffusers"
    res = run(
        "export-diffusers",
        imported / "main",
        out,
        "--decoder",
        imported / "vae",
        "--guide",
        imported / "guide",
    )
    assert res.exit_code == 0, res.output
    assert (out / "guide_transformer/config.json").is_file()
    index = json.loads((out / "model_index.json").read_text())
    assert index["guide_transformer"] == ["transformer_sfd", "SFDTransformer2DModel"]
    for name in ("transformer_sfd", "lightningdit", "layers", "composite"):
        assert (out / f"guide_transformer/{name}.py").read_bytes() == source_file(name).read_bytes()

    sets = [f"sample.{k}={v}" for k, v in SETTINGS.items()]
    sets += ["sample.guide=autoguidance", f"sample.cfg_scale_tex={SCALE}"]
    sets += [f"sample.cfg_scale_sem={SCALE}"]
    res = run(
        "sample",
        imported / "main",
        "--guide",
        imported / "guide",
        "--num",
        NUM,
        "--seed",
        SEED,
        "--latents-only",
        "--out",
        tmp_path / "cli",
        *[a for s in sets for a in ("--set", s)],
    )
    assert res.exit_code == 0, res.output
    want = load_file(str(tmp_path / "cli/latents.safetensors"))

    pipe = load_export(out)
    pipe.scheduler.register_to_config(compute_batch=SETTINGS["compute_batch"])
    kwargs = dict(num_inference_steps=SETTINGS["num_steps"], method="heun", guidance_scale=SCALE)
    got = pipe(
        want["labels"].tolist(),
        generator=image_generators(SEED, NUM),
        guidance="autoguidance",
        output_type="latent",
        **kwargs,
    ).images
    assert torch.equal(got, want["latents"])
    # the guide acted: CFG with the same scale ends elsewhere
    cfg = pipe(
        want["labels"].tolist(),
        generator=image_generators(SEED, NUM),
        guidance="cfg",
        output_type="latent",
        **kwargs,
    ).images
    assert (cfg - got).abs().max() > 1e-3
    images = pipe(want["labels"].tolist(), generator=image_generators(SEED, NUM), **kwargs)
    assert len(images.images) == NUM and images.images[0].size == (32, 32)
