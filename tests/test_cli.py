import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from helpers import FIXTURES, HAVE_FIXTURES, tiny_config, write_synthetic_latents
from sfd.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_and_dry_run():
    assert run("--help").exit_code == 0
    res = run(
        "train", "--preset", "S", "--dry-run", "--set", "train.lr=2e-4", "--set", "flow.delta_t=0"
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)
    assert cfg["train"]["lr"] == 2e-4 and cfg["flow"]["delta_t"] == 0.0
    assert cfg["model"]["width"] == 384


def test_bad_inputs_are_clear_errors(tmp_path):
    res = run("train", "--preset", "XS", "--dry-run")
    assert res.exit_code == 2 and "XS" in res.output
    res = run("train", "--dry-run", "--set", "flow.delta_t=2")
    assert res.exit_code == 2 and "flow.delta_t must be a number in [0, 1]" in res.output
    res = run("train", "--data", tmp_path, "--out", tmp_path / "run")
    assert res.exit_code == 2 and "not a latent shard directory" in res.output
    res = run("sample", tmp_path, "--out", tmp_path / "s")
    assert res.exit_code == 1 and "holds no checkpoint" in res.output


def test_train_resume_and_sample(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", tiny_config(), count=12, shard_size=6)
    out = tmp_path / "run"
    args = [
        "train",
        "--preset",
        "tiny",
        "--data",
        data,
        "--out",
        out,
        "--device",
        "cpu",
        "--set",
        "train.total_steps=4",
        "--set",
        "train.global_batch_size=4",
    ]
    assert run(*args, "--max-steps", "2").exit_code == 0
    res = run(*args)
    assert res.exit_code == 0 and "trained to step 4" in res.output
    res = run(
        "sample",
        out,
        "--num",
        5,
        "--batch-size",
        2,
        "--out",
        tmp_path / "samples",
        "--latents-only",
        "--set",
        "sample.method=euler",
        "--set",
        "sample.num_steps=3",
    )
    assert res.exit_code == 0, res.output
    latents = load_file(str(tmp_path / "samples/latents.safetensors"))
    assert latents["latents"].shape == (5, 6, 8, 8)
    res = run("sample", out, "--num", 5, "--out", tmp_path / "samples", "--latents-only")
    assert res.exit_code == 1 and "exists" in res.output


@pytest.mark.skipif(not HAVE_FIXTURES, reason="upstream fixtures not present")
def test_import_upstream_cli(tmp_path):
    out = tmp_path / "imported"
    res = run(
        "import-upstream",
        FIXTURES / "state_dict.safetensors",
        "--upstream-config",
        FIXTURES / "upstream_config.json",
        "--out",
        out,
    )
    assert res.exit_code == 0, res.output
    res = run(
        "import-upstream",
        FIXTURES / "guide_state_dict.safetensors",
        "--upstream-config",
        FIXTURES / "upstream_config.json",
        "--out",
        tmp_path / "bad",
    )
    assert res.exit_code == 1 and "does not match the config" in res.output


def test_run_relative_decoder_path(tmp_path, monkeypatch):
    import click

    from sfd.cli import _run_relative

    run_dir = tmp_path / "demo" / "run"
    (tmp_path / "demo" / "texture_vae").mkdir(parents=True)
    run_dir.mkdir()
    monkeypatch.chdir(tmp_path)  # "../texture_vae" does not exist from here
    assert _run_relative("../texture_vae", run_dir).resolve() == tmp_path / "demo/texture_vae"
    assert _run_relative("demo/texture_vae", run_dir) == Path("demo/texture_vae")  # cwd first
    with pytest.raises(click.UsageError, match="'missing_vae'.*--decoder"):
        _run_relative("missing_vae", run_dir)
