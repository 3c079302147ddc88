"""A learned schedule end to end: `sfd learn-schedule` writes it, `sfd train` trains on it, the
checkpoint carries it and `sfd sample` samples along it with no extra option; an imported
release checkpoint keeps SFD's fixed schedule."""

import json

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import sfd
from sfd.cli import main
from sfd.config import Config, FlowConfig
from sfd.flow.progress import table_path
from sfd.flow.run_path import path_of
from sfd.flow.schedule import path_schedule
from sfd.flow.solvers import euler
from sfd.generate import FixedBatch, image_noise, velocity_function
from sfd.latents.composite import LatentLayout
from sfd.training.schedule_file import save_schedule
from sfd.upstream.config import config_from_kwargs
from tests.helpers import FIXTURES, tiny_config, tiny_train_args, write_synthetic_latents


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# semantics well ahead over the first half, texture catching up (not any offset path)
TABLE = torch.tensor([[0.0, 0.05, 0.2, 0.6, 1.0], [0.0, 0.5, 0.8, 0.95, 1.0]], dtype=torch.float64)


def test_train_on_a_schedule_file_and_sample_along_it(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", tiny_config(), count=12, shard_size=6)
    schedule = save_schedule(tmp_path / "schedule.json", TABLE)
    out = tmp_path / "run"
    lr = "train.lr=0.02"  # a model that already moves its input
    res = run(*tiny_train_args(data, out, 3, lr, f"flow.schedule_file={schedule}"))
    assert res.exit_code == 0, res.output
    schedule.unlink()  # the checkpoint carries the numbers, not the file
    loaded = sfd.load_model(out)
    flow = loaded.config.flow
    assert flow.schedule == tuple(TABLE.flatten().tolist())
    common = ["--num", 3, "--batch-size", 3, "--latents-only"]
    common += ["--set", "sample.method=euler", "--set", "sample.num_steps=4"]
    res = run("sample", out, *common, "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    got = load_file(str(tmp_path / "s/latents.safetensors"))["latents"]

    def along(path):
        cfg = loaded.config
        layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
        x = image_noise(range(3), (6, 8, 8), 0)
        y = torch.arange(3) % cfg.model.num_classes
        fn = velocity_function(
            FixedBatch(loaded.model, cfg.sample.compute_batch), y, cfg.sample, layout
        )
        with torch.no_grad():
            return loaded.stats.denormalize(euler(fn, x, path_schedule(4, path), layout).final)

    torch.testing.assert_close(got, along(table_path(TABLE)), atol=1e-6, rtol=0)
    assert not torch.allclose(got, along(path_of(FlowConfig(delta_t=0.3))), atol=1e-4)


def test_learn_schedule_command(tmp_path):
    data = write_synthetic_latents(
        tmp_path / "lat", tiny_config(), count=12, shard_size=6, repa=False
    )
    out = tmp_path / "s" / "schedule.json"
    args = [
        "learn-schedule",
        "--data",
        data,
        "--out",
        out,
        "--steps",
        4,
        "--batch",
        4,
        "--knots",
        4,
    ]
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert "lead at the middle" in res.output and out.with_suffix(".png").exists()
    doc = json.loads(out.read_text())
    assert len(doc["progress"]["tex"]) == 5 and doc["format"] == "sfd-schedule/1"
    res = run(*args)
    assert (
        res.exit_code != 0 and "exists" in res.output and len(res.output.strip().splitlines()) == 1
    )
    res = run("learn-schedule", "--data", tmp_path / "nothing", "--out", tmp_path / "x.json")
    assert res.exit_code != 0 and not (tmp_path / "x.json").exists()


def test_an_imported_release_config_keeps_sfds_fixed_schedule():
    kwargs = json.loads((FIXTURES / "upstream_config.json").read_text())["model_kwargs"]
    cfg = config_from_kwargs(kwargs)
    path = path_of(cfg.flow)
    assert cfg.flow.schedule == () and path.delta_t == cfg.flow.delta_t
    assert Config.from_dict(cfg.to_dict()).flow.schedule == ()
