"""The pipeline's time estimate: each stage's timed step (or image) times the steps (or
images) the stage will do, for the stages asked, in the run's order."""

from __future__ import annotations

import threading

import pytest

from sfd.config import apply_overrides, preset
from sfd.experiments import estimate
from sfd.experiments.custom import PipelineSettings, pipeline_plan
from sfd.experiments.ledger import STAGE_FILES
from sfd.model import LightningDiT
from sfd.training.batches import LOADER_THREADS
from sfd.training.loop import train
from tests.helpers import tiny_config, write_synthetic_latents
from tests.image_folders import image_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_stage_is_its_timed_step_times_its_steps(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "photos", {"a": 8, "b": 8})
    settings = PipelineSettings(
        image_size=16,
        texture_steps=40,
        texture_batch=4,
        semvae_steps=30,
        semvae_width=16,
        semvae_depth=1,
        sfd_preset="tiny",
        sfd_steps=50,
        sfd_batch=4,
        num_samples=6,
        test_fraction=0.25,
    )
    plan = pipeline_plan(
        folder, settings, ("sample.num_steps=5", "sample.cfg_scale_tex=1", "sample.cfg_scale_sem=1")
    )
    monkeypatch.setattr(estimate, "_read_seconds", lambda dataset: 0.01)
    monkeypatch.setattr(estimate, "_texture_step", lambda plan, shape, device: 0.5)
    monkeypatch.setattr(estimate, "_semvae_step", lambda plan, dim, grid, device: 0.2)
    monkeypatch.setattr(estimate, "_per_image", lambda fn, shape, device, n=8: 0.001)
    monkeypatch.setattr(estimate, "_sfd", lambda plan, grid, dim, device: (0.3, 0.05, _cfg(plan)))
    est = estimate.estimate_stages(plan, tuple(STAGE_FILES))
    assert list(est) == list(STAGE_FILES)
    n_test = len(plan.test_set)
    assert est["texture_vae"] == pytest.approx(40 * (0.5 + 4 * 0.01) + n_test * 0.01, abs=0.06)
    assert est["semvae"] == pytest.approx(30 * 0.2, abs=0.06)
    assert est["sfd"] == pytest.approx(50 * 0.3, abs=0.06)
    # 6 samples in one chunk solved by the tiny preset's dopri5 (adaptive: ADAPTIVE_NFE
    # evaluations) and the stage picture's 26 Euler steps, unguided
    fixed = estimate.FIXED_SECONDS["samples"]
    assert est["samples"] == pytest.approx((40 + 26) * 0.05 + fixed, abs=0.06)
    heun = apply_overrides(_cfg(plan), ["sample.method=heun"])
    monkeypatch.setattr(estimate, "_sfd", lambda plan, grid, dim, device: (0.3, 0.05, heun))
    # Heun makes two evaluations a step: 2 x 5, and the picture's 26
    assert estimate.estimate_stages(plan, ("samples",))["samples"] == pytest.approx(
        (2 * 5 + 26) * 0.05 + fixed, abs=0.06
    )
    assert set(estimate.estimate_stages(plan, ("sfd", "metrics"))) == {"sfd", "metrics"}


def _cfg(plan):
    overrides = ["train.total_steps=50", "sample.num_steps=5", "sample.cfg_scale_tex=1"]
    return apply_overrides(preset("tiny"), [*overrides, "sample.cfg_scale_sem=1"])


def test_the_estimate_reads_as_durations():
    text = estimate.describe_estimate({"texture_vae": 30.0, "sfd": 600.0, "samples": 20000.0})
    assert "texture_vae   30 s" in text and "sfd           10.0 min" in text
    assert "samples       5.6 h" in text and "total" in text


def test_sfd_step_is_timed_under_the_threads_and_batches_of_the_training_loop(
    tmp_path, monkeypatch
):
    """Timed alone on one fixed batch, SFD's step took 3-6x the loop's on shared cores: the
    loop's loader threads change how OpenMP waits (README.md, "Time."). So every update the
    estimate times runs, as every update of the loop does, while a loader thread is alive, on
    a batch made by the loop's batch code in that thread."""
    alive: dict[str, list[set[str]]] = {"loop": [], "estimate": []}
    side = ["loop"]
    forward = LightningDiT.forward

    def spy(self, *args, **kwargs):
        if self.training:
            names = {t.name.rsplit("_", 1)[0] for t in threading.enumerate()}
            alive[side[0]].append({n for n in names if n.startswith("sfd-")})
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LightningDiT, "forward", spy)
    cfg = tiny_config(total_steps=3, global_batch_size=4, ckpt_every=3, log_every=3)
    data = write_synthetic_latents(tmp_path / "latents", cfg, count=8, shard_size=8)
    train(cfg, data, tmp_path / "run", progress=False)

    made_in: list[str] = []
    batch = estimate.global_batch

    def batch_spy(*args, **kwargs):
        made_in.append(threading.current_thread().name)
        return batch(*args, **kwargs)

    monkeypatch.setattr(estimate, "global_batch", batch_spy)
    side[0] = "estimate"
    folder = image_folder(tmp_path / "photos", {"a": 6, "b": 6})
    settings = PipelineSettings(image_size=16, sfd_preset="tiny", sfd_batch=4, num_samples=2)
    estimate._sfd(pipeline_plan(folder, settings), grid=4, dim=8, device="cpu")

    assert len(alive["loop"]) == 3 and len(alive["estimate"]) == 1 + estimate.TIMED
    loader = {LOADER_THREADS}
    assert all(names == loader for names in alive["loop"] + alive["estimate"]), alive
    assert made_in and all(name.startswith(LOADER_THREADS) for name in made_in)
