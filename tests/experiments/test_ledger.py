"""A rerun of ``sfd pipeline`` into the same ``--out`` keeps a stage only when it was made with
the same settings: each setting that changes a stage's output is refused in one line that
names it (nothing is written), ``--redo`` recomputes that stage and every later one, and a
setting that changes nothing (the extraction batch) is accepted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from sfd.cli import main
from sfd.errors import EXIT_MISMATCH
from tests.image_folders import image_folder

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = {
    "texture_steps": 4,
    "texture_batch": 4,
    "semvae_steps": 3,
    "semvae_width": 16,
    "semvae_depth": 1,
    "sfd_preset": "tiny",
    "sfd_steps": 2,
    "sfd_batch": 4,
    "num_samples": 6,
    "test_fraction": 0.25,
}
SAMPLER = ("sample.method=euler", "sample.num_steps=2")


def _args(folder, out, size=16, stages=None, sets=SAMPLER, extra=()):
    stages = {**TOY, **(stages or {})}
    args = ["pipeline", "--data-root", str(folder), "--out", str(out), "--image-size", str(size)]
    args += [a for k, v in stages.items() for a in ("--stage", f"{k}={v}")]
    return [*args, *(a for s in sets for a in ("--set", s)), "--device", "cpu", *extra]


def _mtimes(out):
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger")
    folder = image_folder(root / "photos", {"red": 6, "green": 6, "blue": 6})
    res = CliRunner().invoke(main, _args(folder, root / "run"))
    assert res.exit_code == 0, res.output
    return folder, root / "run"


# (what the rerun changes, the stage that refuses, the setting it names)
CHANGES = [
    ({"size": 12}, "texture_vae", "data.size 16 -> 12"),
    ({"extra": ("--channels", "1")}, "texture_vae", "data.mode RGB -> L"),
    ({"stages": {"max_images": 8}}, "texture_vae", "data.images 12 -> 8"),
    ({"stages": {"test_fraction": 0.5}}, "texture_vae", "held_out.images 6 -> 9"),
    ({"stages": {"texture_steps": 5}}, "texture_vae", "train.total_steps 4 -> 5"),
    ({"stages": {"texture_batch": 3}}, "texture_vae", "train.batch_size 4 -> 3"),
    ({"stages": {"seed": 1}}, "texture_vae", "train.seed 0 -> 1"),
    ({"stages": {"semvae_images": 5}}, "features", "data.images 12 -> 5"),
    ({"stages": {"encoder_stride": 16}}, "features", "stride 8 -> 16"),
    ({"stages": {"semvae_steps": 4}}, "semvae", "train.total_steps 3 -> 4"),
    ({"stages": {"semvae_width": 24}}, "semvae", "model.width 16 -> 24"),
    ({"stages": {"semvae_depth": 2}}, "semvae", "model.depth 1 -> 2"),
    ({"stages": {"sem_channels": 2}}, "semvae", "model.latent_channels 4 -> 2"),
    ({"stages": {"sfd_steps": 3}}, "sfd", "train.total_steps 2 -> 3"),
    ({"stages": {"sfd_batch": 6}}, "sfd", "train.global_batch_size 4 -> 6"),
    ({"stages": {"sfd_preset": "demo"}}, "sfd", "preset tiny -> demo"),
    ({"sets": (*SAMPLER, "train.lr=0.001")}, "sfd", "train.lr 0.0001 -> 0.001"),
    ({"stages": {"num_samples": 9}}, "samples", "num 6 -> 9"),
    ({"sets": ("sample.method=euler", "sample.num_steps=3")}, "samples", "sample.num_steps 2 -> 3"),
]


@pytest.mark.parametrize(("change", "stage", "named"), CHANGES, ids=[c[2] for c in CHANGES])
def test_a_rerun_with_another_setting_is_refused_naming_it(made, change, stage, named):
    folder, out = made
    before = _mtimes(out)
    res = CliRunner().invoke(main, _args(folder, out, **change))
    assert res.exit_code == EXIT_MISMATCH, res.output
    line = res.output.strip()
    assert "\n" not in line and f"stage {stage} was made with other settings" in line
    assert named in line and "a new --out" in line and "--redo" in line
    assert _mtimes(out) == before  # nothing written, nothing "skipped" with other settings


def test_a_setting_that_changes_no_output_is_accepted(made):
    folder, out = made
    before = _mtimes(out)
    res = CliRunner().invoke(main, _args(folder, out, stages={"batch_size": 5}))
    assert res.exit_code == 0, res.output
    assert _mtimes(out) == before


def _copy(made, tmp_path):
    folder, out = made
    shutil.copytree(out, tmp_path / "run")
    return folder, tmp_path / "run"


def test_redo_recomputes_the_changed_stage_and_every_later_one(made, tmp_path, caplog):
    folder, out = _copy(made, tmp_path)
    before = _mtimes(out)
    with caplog.at_level("WARNING"):
        res = CliRunner().invoke(
            main, _args(folder, out, stages={"sfd_steps": 3}, extra=["--redo"])
        )
    assert res.exit_code == 0, res.output
    assert "replacing stages sfd, samples, metrics" in caplog.text
    after = _mtimes(out)
    changed = {p.split("/run/", 1)[1].split("/")[0] for p in after if after[p] != before.get(p)}
    assert changed == {
        "run",
        "samples",
        "samples.png",
        "stages.png",
        "curves.png",
        "real_test.npz",
        "metrics.json",
        "stages.json",
        "estimate.json",
    }
    stages = json.loads((out / "stages.json").read_text())
    assert stages["sfd"]["result"]["step"] == 3
    assert stages["sfd"]["settings"]["train"]["total_steps"] == 3
    # the redone run is what the settings say, and a plain rerun now keeps it
    res = CliRunner().invoke(main, _args(folder, out, stages={"sfd_steps": 3}))
    assert res.exit_code == 0, res.output


def test_redo_with_another_image_size_leaves_nothing_of_the_old_size(made, tmp_path):
    folder, out = _copy(made, tmp_path)
    res = CliRunner().invoke(main, _args(folder, out, size=12, extra=["--redo"]))
    assert res.exit_code == 0, res.output
    assert np.load(out / "samples" / "samples.npz")["arr_0"].shape[1:] == (12, 12, 3)
    assert np.load(out / "real_test.npz")["arr_0"].shape[1:] == (12, 12, 3)
    assert json.loads((out / "latents" / "meta.json").read_text())["size"] == 3
    stages = json.loads((out / "stages.json").read_text())
    assert {s["settings"]["data"]["size"] for s in stages.values() if "data" in s["settings"]} == {
        12
    }


def test_stages_of_an_sfd_that_recorded_no_settings_are_kept_with_a_warning(made, tmp_path, caplog):
    folder, out = _copy(made, tmp_path)
    stages = json.loads((out / "stages.json").read_text())
    old = {k: {"result": v["result"], "seconds": v["seconds"]} for k, v in stages.items()}
    (out / "stages.json").write_text(json.dumps(old))
    with caplog.at_level("WARNING"):
        res = CliRunner().invoke(main, _args(folder, out))
    assert res.exit_code == 0, res.output
    assert "did not record settings" in caplog.text
    assert json.loads((out / "stages.json").read_text()) == stages
