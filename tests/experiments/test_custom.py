"""``sfd pipeline`` on a folder of real RGB photos (``skimage.data``) in 3 classes plus one
unreadable file, at toy sizes: every artefact, every shape derived from the stage before, the
skipped file reported, a rerun that does no work, and ``sfd sample`` on the result with no
extra options."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sfd.cli import main
from sfd.errors import EXIT_BAD_INPUT

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "chelsea", "coffee")  # bundled with scikit-image (no download)


def photo_folder(root, per_class=6, seed=0):
    """Random crops (48..96 px, rescaled) of three photos, one class each, and a broken file."""
    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        photo = getattr(skimage_data, name)()
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = int(rng.integers(48, 97))
            y, x = (int(rng.integers(0, d - size)) for d in photo.shape[:2])
            crop = Image.fromarray(photo[y : y + size, x : x + size])
            crop.save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    (root / "chelsea" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


STAGES = (
    "texture_vae",
    "features",
    "features_val",
    "semvae",
    "latents",
    "sfd",
    "samples",
    "metrics",
)
TOY = [
    *("--stage", "texture_steps=4", "--stage", "texture_batch=4"),
    *("--stage", "semvae_steps=3", "--stage", "semvae_width=16", "--stage", "semvae_depth=1"),
    *("--stage", "sfd_preset=tiny", "--stage", "sfd_steps=2", "--stage", "sfd_batch=4"),
    *("--stage", "num_samples=6", "--stage", "test_fraction=0.25"),
    *("--set", "sample.method=euler", "--set", "sample.num_steps=2"),
]


def _pipeline(folder, out):
    args = ["pipeline", "--data-root", str(folder), "--out", str(out), "--image-size", "16"]
    return CliRunner().invoke(main, [*args, "--on-error", "skip", "--device", "cpu", *TOY])


def _mtimes(out):
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_pipeline_on_a_folder_of_photos_end_to_end(tmp_path, caplog):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_pipeline(tmp_path, caplog)
    finally:
        torch.set_num_threads(threads)


def _check_pipeline(tmp_path, caplog):
    folder, out = photo_folder(tmp_path / "photos"), tmp_path / "run"
    # without --on-error skip the broken file stops the run, naming itself and the option
    res = CliRunner().invoke(
        main, ["pipeline", "--data-root", str(folder), "--out", str(out), "--image-size", "16"]
    )
    assert res.exit_code == EXIT_BAD_INPUT and "broken.jpg" in res.output
    assert "--on-error skip" in res.output
    # its own CPU time (one thread), which other processes on the machine do not inflate
    t0 = time.process_time()
    with caplog.at_level("INFO"):
        res = _pipeline(folder, out)
    seconds = time.process_time() - t0
    assert res.exit_code == 0, res.output
    assert seconds < 60, f"the toy pipeline took {seconds:.0f} CPU seconds"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("broken.jpg" in m for m in warned) == 1
    # before any stage: an estimate of each; then a progress bar per training stage
    messages = [r.getMessage() for r in caplog.records]
    first = next(i for i, m in enumerate(messages) if m.startswith("stage texture_vae"))
    estimate = next(m for m in messages[:first] if m.startswith("estimated time"))
    assert all(f"  {name} " in estimate for name in STAGES)
    for bar in ("texture vae:", "semvae:", "train:"):
        assert bar in res.output and "img_s=" in res.output.split(bar, 1)[1], bar
    summary = json.loads((out / "metrics.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in summary["skipped_files"]] == ["broken.jpg"]
    assert np.isfinite(summary["texture_vae_psnr_db"]) and -1 <= summary["semvae_cosine"] <= 1

    # every shape follows from the stage before: 16 px / f4 -> a 4x4 grid everywhere
    tex = json.loads((out / "texture_vae" / "config.json").read_text())
    features = json.loads((out / "features" / "meta.json").read_text())
    semvae = json.loads((out / "semvae" / "semvae.json").read_text())
    latents = json.loads((out / "latents" / "meta.json").read_text())
    cfg = json.loads((out / "run" / "config.json").read_text())
    assert tex["sample_size"] == 16 and tex["in_channels"] == 3
    assert features["grid"] == semvae["config"]["grid"] == latents["size"] == 4
    assert semvae["config"]["in_dim"] == features["dim"] == latents["repa_dim"]
    assert semvae["encoder"] == features["extraction"]["encoder"]
    held_out = json.loads((out / "features_val" / "meta.json").read_text())["count"]
    assert latents["num_classes"] == 3 and latents["count"] + held_out == 18  # 18 readable
    assert held_out == 6  # stratified: 2 of each class (a quarter of 6-7 files, at least 2)
    lat = cfg["latent"]
    model = summary["model"]
    assert [lat["tex_channels"], lat["sem_channels"], lat["size"]] == model["latent"]
    assert model["latent"] == [latents["tex_channels"], latents["sem_channels"], 4]
    assert cfg["model"]["num_classes"] == model["num_classes"] == 3
    assert cfg["model"]["repa_dim"] == model["repa_dim"] == features["dim"]
    samples = np.load(out / "samples" / "samples.npz")
    assert samples["arr_0"].shape == (6, 16, 16, 3) and sorted(set(samples["arr_1"])) == [0, 1, 2]
    for name in ("samples.png", "stages.png", "curves.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 50, name
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == set(STAGES) == set(summary["stage_estimates"])
    # the metrics stage, the demo's: samples against the held-out photos, with the real floor
    # half the 6 held-out photos (the floor takes two sets), one of each class in each set
    assert summary["metric_images"] == 3
    assert summary["reference"]["per_class"] == dict.fromkeys(PHOTOS, 1)
    assert summary["images"]["fd_samples"] == summary["images"]["fd_real_floor"] == [3, 3]
    for key in ("fd_samples", "fd_real_floor", "probe_acc_samples", "probe_acc_real"):
        assert np.isfinite(summary[key]), key
    assert "fd_fmnist_samples" not in summary  # the Fashion-MNIST classifier: its data only
    with np.load(out / "real_test.npz") as real:
        assert real["arr_0"].shape == (summary["metric_images"], 16, 16, 3)

    # a rerun does no work: nothing is rewritten
    before = _mtimes(out)
    res = _pipeline(folder, out)
    assert res.exit_code == 0, res.output
    after = _mtimes(out)
    assert sorted(p for p in after if after[p] != before.get(p)) == []
    assert json.loads((out / "metrics.json").read_text()) == summary

    # the run samples with no extra option: the decoder travels with it
    res = CliRunner().invoke(
        main, ["sample", str(out / "run"), "--num", "3", "--out", str(tmp_path / "s")]
    )
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 3


def test_budgets_are_named_by_size_and_the_old_names_still_work(tmp_path, caplog):
    args = ["pipeline", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), "--dry-run"]
    small = CliRunner().invoke(main, [*args, "--budget", "small"])
    with caplog.at_level("WARNING"):
        old = CliRunner().invoke(main, [*args, "--budget", "cpu-10min"])
    assert small.exit_code == old.exit_code == 0, old.output
    assert json.loads(old.output) == json.loads(small.output)
    assert "old name of small" in caplog.text
    assert "default: small" in CliRunner().invoke(main, ["pipeline", "--help"]).output
