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
from ecosystem_helpers import tiny_vae
from safetensors.torch import load_file

from helpers import FIXTURES
from sfd.cli import main
from sfd.ecosystem import image_generators, load_export

NUM, SEED, SCALE = 3, 11, 1.5
SETTINGS = {"method": "heun", "num_steps": 3, "compute_batch": 4}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def release_stats(path, channels: int, offset: float) -> None:
    mean = torch.linspace(-0.5, 0.5, channels).view(1, channels, 1, 1) + offset
    std = torch.linspace(0.5, 1.5, channels).view(1, channels, 1, 1)
    torch.save({"mean": mean, "std": std}, path)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    meta = json.loads((FIXTURES / "upstream_config.json").read_text())
    mk = meta["model_kwargs"]
    guide_json = root / "guide_config.json"
    guide_json.write_text(
        json.dumps(
            {
                "model_kwargs": meta["guide_model_kwargs"],
                "create_transport_kwargs": meta["create_transport_kwargs"],
            }
        )
    )
    sem, tex = mk["semantic_chans"], mk["in_channels"] - mk["semantic_chans"]
    release_stats(root / "latents_stats.pt", tex, 0.2)
    release_stats(root / "latents_sv_stats.pt", sem, -0.3)
    stats = ["--latent-stats", root / "latents_stats.pt", "--latent-stats"]
    stats += [root / "latents_sv_stats.pt"]
    for name, weights, config in (
        ("main", "state_dict", FIXTURES / "upstream_config.json"),
        ("guide", "guide_state_dict", guide_json),
    ):
        sd = load_file(str(FIXTURES / f"{weights}.safetensors"))
        torch.save({"model": {k: v + 0.05 for k, v in sd.items()}, "ema": sd}, root / f"{name}.pt")
        res = run("import-upstream", root / f"{name}.pt", "--upstream-config", config, *stats,
                  "--out", root / name)  # fmt: skip
        assert res.exit_code == 0, res.output
    tiny_vae(tex).save_pretrained(root / "vae")
    return root


def test_imported_release_exports_and_matches_sfd_sample(imported, tmp_path):
    out = tmp_path / "release-diffusers"
    res = run("export-diffusers", imported / "main", out, "--decoder", imported / "vae",
              "--guide", imported / "guide")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "guide_transformer/config.json").is_file()

    sets = [f"sample.{k}={v}" for k, v in SETTINGS.items()]
    sets += ["sample.guide=autoguidance", f"sample.cfg_scale_tex={SCALE}"]
    sets += [f"sample.cfg_scale_sem={SCALE}"]
    res = run(
        "sample", imported / "main", "--guide", imported / "guide", "--num", NUM, "--seed", SEED,
        "--latents-only", "--out", tmp_path / "cli", *[a for s in sets for a in ("--set", s)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    want = load_file(str(tmp_path / "cli/latents.safetensors"))

    pipe = load_export(out)
    pipe.scheduler.register_to_config(compute_batch=SETTINGS["compute_batch"])
    kwargs = dict(num_inference_steps=SETTINGS["num_steps"], method="heun", guidance_scale=SCALE)
    got = pipe(
        want["labels"].tolist(), generator=image_generators(SEED, NUM), guidance="autoguidance",
        output_type="latent", **kwargs,
    ).images  # fmt: skip
    assert torch.equal(got, want["latents"])
    # the guide acted: CFG with the same scale ends elsewhere
    cfg = pipe(want["labels"].tolist(), generator=image_generators(SEED, NUM),
               guidance="cfg", output_type="latent", **kwargs).images  # fmt: skip
    assert (cfg - got).abs().max() > 1e-3
    images = pipe(want["labels"].tolist(), generator=image_generators(SEED, NUM), **kwargs)
    assert len(images.images) == NUM and images.images[0].size == (32, 32)
