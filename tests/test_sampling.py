"""The library does what ``sfd sample`` does: ``generate_to_dir`` writes the same images as the
command, finds the decoder the run's config names, and refuses a rerun with other settings."""

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import sfd
from sfd.cli import main
from sfd.config import TextureVAETrainConfig
from sfd.errors import MismatchError
from sfd.sampling import generate_to_dir
from sfd.training.loop import train
from sfd.training.texture_vae import build_texture_vae
from tests.helpers import tiny_config, write_synthetic_latents

FAST = ("sample.method=euler", "sample.num_steps=2")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step tiny run whose config names its decoder relative to the run directory."""
    root = tmp_path_factory.mktemp("sampling")
    cfg = tiny_config(total_steps=2, global_batch_size=4)
    cfg = dataclasses.replace(
        cfg, latent=dataclasses.replace(cfg.latent, texture_autoencoder="../decoder")
    )
    data = write_synthetic_latents(root / "latents", cfg, count=8, shard_size=8)
    train(cfg, data, root / "run", progress=False)
    torch.manual_seed(0)
    vae = TextureVAETrainConfig(block_out_channels=(8,), latent_channels=4, norm_num_groups=4)
    build_texture_vae(3, vae).save_pretrained(root / "decoder")
    return root / "run"


def test_the_library_writes_what_the_command_writes(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "../decoder" resolves from the run directory only
    result = generate_to_dir(run, tmp_path / "api", num=3, batch_size=2, overrides=FAST)
    assert result.written == 3 and result.npz == tmp_path / "api" / "samples.npz"
    args = ["sample", str(run), "--num", "3", "--batch-size", "2", "--out", str(tmp_path / "cli")]
    res = CliRunner().invoke(main, [*args, *(a for s in FAST for a in ("--set", s))])
    assert res.exit_code == 0, res.output
    api, cli = np.load(tmp_path / "api/samples.npz"), np.load(tmp_path / "cli/samples.npz")
    assert np.array_equal(api["arr_0"], cli["arr_0"]) and np.array_equal(api["arr_1"], cli["arr_1"])
    with pytest.raises(MismatchError, match="seed"):
        generate_to_dir(run, tmp_path / "api", num=3, seed=1, batch_size=2, overrides=FAST)


def test_load_model_returns_the_model_with_its_record(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = sfd.load_model(run)
    assert isinstance(loaded, sfd.LoadedModel) and not loaded.model.training
    assert loaded.step == 2 and loaded.config.latent.texture_autoencoder == "../decoder"
    assert loaded.stats.mean.numel() == loaded.config.latent.channels
    assert loaded.decoder_path().resolve() == (run.parent / "decoder").resolve()


def test_compile_without_a_compiler_is_one_line(run, tmp_path):
    from torch._inductor import config as inductor

    args = ["sample", str(run), "--num", "1", "--out", str(tmp_path / "c"), "--compile"]
    with inductor.patch({"cpp.cxx": ("sfd-no-such-compiler",)}):
        res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--compile: torch.compile on CPU needs a C++ compiler" in res.output
    assert not (tmp_path / "c").exists()  # refused before anything is written


def test_a_compiled_job_is_not_resumed_eager(run, tmp_path, monkeypatch):
    """Compiled kernels may round differently, so the two never share an output directory."""
    import sfd.sampling

    compiled = []
    monkeypatch.setattr(sfd.sampling, "compile_blocks", compiled.append)  # the choice, not the cost
    monkeypatch.chdir(tmp_path)
    generate_to_dir(run, tmp_path / "s", num=2, batch_size=2, overrides=FAST, compile=True)
    assert len(compiled) == 1  # the model (no guide)
    with pytest.raises(MismatchError, match="compile"):
        generate_to_dir(run, tmp_path / "s", num=2, batch_size=2, overrides=FAST)


@pytest.mark.slow  # compiles the tiny model's blocks: ~20-40 s on 2 cores
def test_compiled_sampling_writes_the_eager_images(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate_to_dir(run, tmp_path / "eager", num=3, batch_size=2, overrides=FAST)
    generate_to_dir(run, tmp_path / "comp", num=3, batch_size=2, overrides=FAST, compile=True)
    eager, comp = np.load(tmp_path / "eager/samples.npz"), np.load(tmp_path / "comp/samples.npz")
    assert np.array_equal(eager["arr_1"], comp["arr_1"])
    gap = np.abs(eager["arr_0"].astype(int) - comp["arr_0"].astype(int)).max()
    assert gap <= 1, gap  # fp32 rounding of the compiled kernels, at most one grey level
