"""``sfd ablate``: rows, settings, the speed-up interpolation, Welch's test, and the quick grid
end to end (every artefact, finite metrics, sharding into disjoint parts, a rerun does no work)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sfd.data.fashion_mnist import DEFAULT_ROOT
from sfd.experiments.ablate import (
    GRID_MODEL,
    MAIN_ROWS,
    AblationSettings,
    base_config,
    parse_row,
    parse_shard,
    row_config,
    sweep_rows,
)
from sfd.experiments.ablate_report import steps_to_reach, welch_t_test

have_data = (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").exists()
needs_data = pytest.mark.skipif(
    not have_data and not os.environ.get("SFD_REQUIRE_FASHION_MNIST"),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def test_rows_parse_and_reject_bad_names():
    assert parse_row("sfd").delta_t == 0.3 and parse_row("sfd").semantic == "semvae"
    assert parse_row("baseline").semantic == "none" and not parse_row("baseline").repa
    assert parse_row("redi").semantic == "pca" and parse_row("redi-sf").delta_t == 0.3
    assert parse_row("dt-0.7").delta_t == 0.7
    assert sweep_rows() == ("dt-0.1", "dt-0.2", "dt-0.5", "dt-0.7", "dt-1")
    with pytest.raises(ValueError, match="unknown ablation row 'sdf'"):
        parse_row("sdf")
    with pytest.raises(ValueError, match=r"Δt must be in \[0, 1\]"):
        parse_row("dt-1.5")
    with pytest.raises(ValueError, match="unknown ablation row"):
        AblationSettings(rows=("sfd", "nope"))


def test_sem_channels_is_part_of_the_protocol_only_when_given():
    from sfd.experiments.ablate import AblationSettings

    assert "sem_channels" not in AblationSettings().protocol()
    assert AblationSettings(sem_channels=8).protocol()["sem_channels"] == 8
    with pytest.raises(ValueError, match="sem_channels must be >= 1"):
        AblationSettings(sem_channels=0)


def test_speed_switches_are_not_part_of_the_protocol():
    """Compiled or fused-AdamW rows share a grid with eager ones; anything else splits it."""
    plain = AblationSettings().protocol()
    fast = AblationSettings(
        overrides=(
            *GRID_MODEL,
            "train.compile=true",
            "train.compile_scope=loss",
            " train.fused_adamw = false",
        )
    )
    assert fast.protocol() == plain
    other = AblationSettings(overrides=(*GRID_MODEL, "train.lr=2e-4")).protocol()
    assert other["overrides"] == [*plain["overrides"], "train.lr=2e-4"]


def test_settings_checkpoints_jobs_and_shards():
    s = AblationSettings(rows=("sfd", "dt-0.5"), steps=1000, checkpoints=5)
    assert s.checkpoint_steps() == [200, 400, 600, 800, 1000]
    jobs = s.jobs()
    assert jobs.count(("sfd", 2)) == 1 and ("dt-0.5", 1) not in jobs  # sweep rows: one seed
    assert len(jobs) == 3 + 1
    parts = [{j for k, j in enumerate(jobs) if k % 3 == i} for i in range(3)]
    assert set().union(*parts) == set(jobs) and sum(map(len, parts)) == len(jobs)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "-1/2", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="checkpoints"):
        AblationSettings(steps=3, checkpoints=5)


def test_row_configs_differ_only_where_the_paper_says():
    meta = {"num_classes": 10, "repa_dim": 40, "tex_channels": 4, "sem_channels": 4, "size": 8}
    base = base_config(meta)
    cfgs = {r: row_config(base, parse_row(r), 4, seed=1, steps=100) for r in MAIN_ROWS}
    assert cfgs["baseline"].latent.sem_channels == 0 and cfgs["baseline"].model.repa_dim == 0
    assert cfgs["baseline"].flow.repa_weight == 0 and not cfgs["baseline"].model.dual_timestep
    assert cfgs["repa"].latent.sem_channels == 0 and cfgs["repa"].model.repa_dim == 40
    sync, sfd = cfgs["semvae-sync"], cfgs["sfd"]
    assert sync.flow.delta_t == 0 and sfd.flow.delta_t == 0.3
    # semvae-sync and sfd differ in Δt alone (the paper's semantic-first ablation)
    assert sync.to_dict() | {"flow": None} == sfd.to_dict() | {"flow": None}
    assert {k for k in sync.flow.__dict__ if getattr(sync.flow, k) != getattr(sfd.flow, k)} == {
        "delta_t"
    }
    assert all(c.train.seed == 1 and c.train.total_steps == 100 for c in cfgs.values())


def test_steps_to_reach_interpolates_linear_curves_exactly():
    steps = [100, 200, 300, 400]
    fd = [50.0, 40.0, 30.0, 20.0]  # fd = 60 - step / 10
    assert steps_to_reach(steps, fd, 35.0) == (250.0, "=")
    assert steps_to_reach(steps, fd, 20.0) == (400.0, "=")
    assert steps_to_reach(steps, fd, 55.0) == (100.0, "<=")
    assert steps_to_reach(steps, fd, 10.0) == (400.0, ">")
    acc = [0.5, 0.6, 0.7, 0.8]  # higher is better
    s, kind = steps_to_reach(steps, acc, 0.65, lower_is_better=False)
    assert kind == "=" and s == pytest.approx(250.0)
    # a noisy curve: the first crossing counts
    assert steps_to_reach(steps, [50, 30, 40, 20], 35.0) == (175.0, "=")


def test_samplers_control_rows_and_dataset_settings():
    from sfd.experiments.ablate_grid import parse_sampler
    from sfd.experiments.ablate_rows import CONTROL_ROWS

    assert parse_sampler("euler-8") == ("euler", 8) and parse_sampler("heun-10") == ("heun", 10)
    assert parse_sampler("dopri5") == ("dopri5", 0)
    for bad in ("euler", "euler-0", "rk4-8", "heun-x"):
        with pytest.raises(ValueError, match="unknown sampler"):
            parse_sampler(bad)
    with pytest.raises(ValueError, match="unknown sampler"):
        AblationSettings(nfe_samplers=("euler-4", "midpoint-4"))
    for name in CONTROL_ROWS:
        assert parse_row(name).semantic == "random"
    assert parse_row("random-sf").delta_t == 0.3 and parse_row("random-sync").delta_t == 0
    assert AblationSettings().seeds_of("random-sf") == AblationSettings().main_seeds
    # learned rows are compared seed by seed with sfd / semvae-sync: main seeds, the guidance
    # sweep and the sampling-steps axis at the final checkpoint
    from sfd.experiments.ablate import _evaluations

    s = AblationSettings(steps=100, checkpoints=2, cfg_sweep=(2.0,), main_seeds=4, sweep_seeds=1)
    for name in ("learned", "redi-learned"):
        assert s.seeds_of(name) == 4
        jobs = _evaluations(Path("/nonexistent"), s, name, 0)
        assert (100, 2.0, None) in jobs and (100, 1.0, "euler-4") in jobs
        assert (100, 1.0, "dopri5") in jobs and (100, 1.0, "heun-10") not in jobs
    assert s.seeds_of("dt-0.5") == 1 and (100, 2.0, None) not in _evaluations(
        Path("/nonexistent"), s, "dt-0.5", 0
    )
    assert "dataset" not in AblationSettings().protocol()  # existing grids keep their protocol
    proto = AblationSettings(dataset="composites", background_strength=0.8).protocol()
    assert proto["dataset"] == "composites" and proto["background_strength"] == 0.8
    from sfd.experiments.ablate_report import metric_label, short_label

    assert metric_label("fd_fmnist", proto).startswith("FD_COMP")
    assert metric_label("fd_fmnist", AblationSettings().protocol()).startswith("FD_FMNIST")
    # the tables' and figures' short name: the composites' distance is never called FD_FMNIST
    assert short_label({"primary_metric": "fd_fmnist", "protocol": proto}) == "FD_COMP"
    assert short_label({"primary_metric": "acc", "protocol": proto}) == "class accuracy of samples"
    assert "texture_steps" not in AblationSettings().protocol()
    assert AblationSettings(texture_steps=1500).protocol()["texture_steps"] == 1500
    with pytest.raises(ValueError, match="texture_steps must be >= 1"):
        AblationSettings(texture_steps=0)


def test_paired_comparison_matches_its_closed_form():
    from scipy import stats

    from sfd.experiments.ablate_nfe import paired

    a = {0: 10.0, 1: 12.0, 2: 9.0, 3: 11.0, 9: 1.0}
    b = {0: 11.0, 1: 12.5, 2: 10.5, 3: 10.0}
    got = paired(a, b)  # seed 9 has no partner
    d = np.array([-1.0, -0.5, -1.5, 1.0])
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert got["n"] == 4 and got["mean_difference"] == pytest.approx(d.mean())
    assert got["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert got["paired_t_p"] == pytest.approx(stats.ttest_rel(d, np.zeros(4)).pvalue)
    assert got["first_lower_in"] == 3


def test_best_of_scales_pairs_each_row_at_its_own_best_scale():
    from sfd.experiments.ablate_nfe import best_of_scales, paired

    # row a is best at CFG 2 in both seeds, row b at CFG 1.5 in seed 0 and CFG 3 in seed 1;
    # CFG 4 exists only for a's seed 0 and must not count (b has no such scale for that seed)
    a = {0: {1.5: 50.0, 2.0: 40.0, 3.0: 45.0, 4.0: 30.0}, 1: {1.5: 52.0, 2.0: 41.0, 3.0: 47.0}}
    b = {0: {1.5: 44.0, 2.0: 46.0, 3.0: 48.0}, 1: {1.5: 49.0, 2.0: 47.5, 3.0: 43.0}, 7: {2.0: 1.0}}
    records = {
        (row, seed, scale): v
        for row, table in (("a", a), ("b", b))
        for seed, values in table.items()
        for scale, v in values.items()
    }
    got = best_of_scales(records, "a", "b")
    assert got["scales"] == {"a": {"0": 2.0, "1": 2.0}, "b": {"0": 1.5, "1": 3.0}}
    assert got["best"] == {"a": {"0": 40.0, "1": 41.0}, "b": {"0": 44.0, "1": 43.0}}
    want = paired({0: 40.0, 1: 41.0}, {0: 44.0, 1: 43.0})
    assert got["mean_difference"] == pytest.approx(-3.0)
    assert got["ci95"] == pytest.approx(want["ci95"])
    assert got["n"] == 2 and got["first_lower_in"] == 2


def test_welch_t_test_matches_its_closed_form():
    a, b = [1.0, 2.0, 3.5], [4.0, 6.0, 5.5, 7.0]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    got = welch_t_test(a, b)
    assert got["t"] == pytest.approx(t) and 0 < got["p"] < 0.05
    assert welch_t_test([1.0], b)["p"] is None


@pytest.fixture(scope="module")
def quick_base(tmp_path_factory):
    from sfd.experiments.demo import DemoSettings, prepare_base

    out = tmp_path_factory.mktemp("ablate-base") / "base"
    prepare_base(out, DemoSettings.quick())
    return out


def _grid(out, shard, *extra):
    from sfd.cli import main

    args = ["ablate", "--quick", "--out", str(out), "--shard", shard, "--device", "cpu", *extra]
    args += ["--set", "train.lr=1e-3"]  # the demo preset's own value: --set adds to the grid's
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output


def _results(out):
    return {p.relative_to(out / "results") for p in (out / "results").rglob("*.json")}


@needs_data
def test_quick_grid_shards_resumes_and_writes_every_artefact(tmp_path, quick_base):
    from sfd.cli import main

    out = tmp_path / "grid"
    shutil.copytree(quick_base, out / "base")
    first = _grid(out, "0/2")
    part0 = _results(out)
    assert part0 and "trained 2 and evaluated" in first
    _grid(out, "1/2")
    part1 = _results(out) - part0
    assert part1 and not part0 & part1  # the other shard computed a disjoint part
    # 2 rows x 2 seeds x 2 checkpoints at CFG 1, plus the CFG sweep at the final checkpoint,
    # plus the sampling-steps axis (quick: euler-2) of sfd's 2 seeds
    assert len(part0 | part1) == 2 * 2 * (2 + 1) + 2
    mtimes = {p: (out / "results" / p).stat().st_mtime_ns for p in part0 | part1}
    again = _grid(out, "0/1")
    assert "trained 0 and evaluated 0" in again  # a rerun does no work
    assert {p: (out / "results" / p).stat().st_mtime_ns for p in mtimes} == mtimes

    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["overrides"][0] == "model.depth=2"
    assert protocol["overrides"][-1] == "train.lr=1e-3"
    res = CliRunner().invoke(main, ["ablate", "--quick", "--out", str(out), "--steps", "10"])
    assert res.exit_code != 0 and "another protocol (differs in steps, checkpoints" in res.output

    # another sampler on the NFE axis: evaluated from the saved checkpoints, nothing retrained
    more = _grid(out, "0/1", "--nfe-samplers", "euler-2,euler-5")  # the grid samples euler-3
    assert "trained 0 and evaluated 2" in more
    summary = json.loads((out / "results.json").read_text())
    nfe = summary["summary"]["nfe"]
    assert nfe["euler-2"]["nfe"] == 2 and nfe["euler-5"]["nfe"] == 5 and nfe["euler-3"]["nfe"] == 3
    assert nfe["euler-5"]["rows"]["sfd"]["n"] == 2 and "baseline" not in nfe["euler-5"]["rows"]
    assert (out / "nfe.png").exists() and "Sampling-steps axis" in (out / "table.md").read_text()
    assert len(summary["results"]) == 16
    for r in summary["results"]:
        for m in ("fd_fmnist", "acc", "fd_effnet"):
            assert math.isfinite(r[m]), (r, m)
    assert set(summary["summary"]["final"]) == {"baseline", "sfd"}  # the NFE axis apart
    assert summary["summary"]["final"]["sfd"]["fd_fmnist"]["n"] == 2
    ref = summary["summary"]["reference"]
    assert ref["floor"]["fd_fmnist"] >= 0 and 0 <= ref["real_acc"] <= 1
    assert "sfd vs baseline" in summary["summary"]["welch"]
    assert "baseline" in summary["summary"]["speedup"]
    assert "| `sfd` |" in (out / "table.md").read_text()
    for name in ("ablation.png", "delta_t.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 200, name


@needs_data
def test_bad_rows_and_missing_inputs_fail_before_training(tmp_path):
    from sfd.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["ablate", "--quick", "--out", str(tmp_path), "--rows", "sfd,xx"])
    assert res.exit_code != 0 and "unknown ablation row 'xx'" in res.output
    res = runner.invoke(main, ["ablate", "--quick", "--out", str(tmp_path), "--rows", "dt-2"])
    assert res.exit_code != 0 and "Δt must be in [0, 1]" in res.output
    assert not (tmp_path / "runs").exists()


def test_a_latent_set_missing_what_a_row_needs_is_refused_before_training(tmp_path):
    from sfd.cli import main
    from tests.helpers import tiny_config, write_synthetic_latents

    cfg = tiny_config()
    no_repa = write_synthetic_latents(tmp_path / "lat", cfg, repa=False)
    decoder = tmp_path / "vae"
    decoder.mkdir()
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=np.zeros((100, 8, 8, 1), np.uint8))
    common = ["ablate", "--data", str(no_repa), "--decoder", str(decoder), "--ref", str(ref)]
    runner = CliRunner()
    res = runner.invoke(main, [*common, "--out", str(tmp_path / "a"), "--rows", "repa"])
    assert res.exit_code != 0 and "need REPA targets" in res.output
    with_repa = write_synthetic_latents(tmp_path / "lat2", cfg)
    res = runner.invoke(
        main,
        ["ablate", "--data", str(with_repa), "--decoder", str(decoder), "--ref", str(ref)]
        + ["--out", str(tmp_path / "b"), "--rows", "redi"],
    )
    assert res.exit_code != 0 and "--features" in res.output
    res = runner.invoke(
        main, ["ablate", "--data", str(no_repa), "--out", str(tmp_path / "c"), "--rows", "baseline"]
    )
    assert res.exit_code != 0 and "--decoder" in res.output
    res = runner.invoke(
        main, [*common, "--out", str(tmp_path / "d"), "--rows", "sfd", "--sem-channels", "8"]
    )
    assert res.exit_code != 0 and "--sem-channels" in res.output and "--data" in res.output
    res = runner.invoke(
        main, [*common, "--out", str(tmp_path / "e"), "--rows", "sfd", "--texture-steps", "900"]
    )
    assert res.exit_code != 0 and "--texture-steps" in res.output and "--data" in res.output
    for sub in "abcde":  # refused before anything was trained or recorded
        assert not (tmp_path / sub / "runs").exists()
        assert not (tmp_path / sub / "protocol.json").exists()


def test_a_job_lock_keeps_out_live_processes_and_takes_over_dead_ones(tmp_path):
    import socket
    import subprocess
    import sys

    from sfd.experiments.ablate import _JobLock

    lock = _JobLock(tmp_path / "run")
    assert lock.acquire() and lock.path.exists()
    lock.release()
    assert not lock.path.exists()
    host = socket.gethostname()
    lock.path.write_text(f"{host} {os.getppid()}")  # a live process that is not us
    assert not lock.acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.path.write_text(f"{host} {dead.pid}")  # its process is gone: stale
    assert lock.acquire()
    assert lock.path.read_text() == f"{host} {os.getpid()}"


@pytest.mark.parametrize("channels", [1, 3])
def test_the_reference_ceiling_decodes_through_a_texture_vae_of_either_channel_count(
    tmp_path, channels
):
    """The grid's floor and ceiling on RGB data (the composites) and on gray data stored as
    RGB images (Fashion-MNIST): the reconstructions go through the decoder's own channels."""
    from sfd.config import TextureVAETrainConfig
    from sfd.experiments.ablate_eval import AblationData, Evaluator
    from sfd.training.texture_vae import train_texture_vae

    g = torch.Generator().manual_seed(0)
    images = [(torch.rand(channels, 32, 32, generator=g) * 2 - 1, k % 10) for k in range(8)]
    cfg = TextureVAETrainConfig(total_steps=1, batch_size=4, warmup_steps=1, log_every=1)
    train_texture_vae(images, tmp_path / "vae", cfg)
    rgb = torch.rand(8, 32, 32, 3, generator=g)
    if channels == 1:
        rgb = rgb[..., :1].expand(-1, -1, -1, 3)
    np.savez(
        tmp_path / "ref.npz",
        arr_0=(rgb * 255).round().to(torch.uint8).numpy(),
        arr_1=np.arange(8) % 10,
    )
    data = AblationData({}, tmp_path / "vae", tmp_path / "ref.npz", {}, None)
    ref = Evaluator(tmp_path, data, 4, "cpu").reference
    assert ref["num"] == 4 and math.isfinite(ref["ceiling"]["fd_effnet"])


def test_learned_leads_read_the_probes_schedules(tmp_path):
    from sfd.experiments.ablate_nfe import leads_markdown, learned_leads
    from sfd.flow.progress import offset_path
    from sfd.training.schedule_file import save_schedule

    # SFD's offset path is a member of the family; its lead at the middle is its Δt
    for seed, dt in enumerate((0.1, 0.3, 0.2)):
        save_schedule(tmp_path / "schedules" / f"semvae-seed{seed}.json", offset_path(dt).table())
    save_schedule(tmp_path / "schedules" / "pca-seed4.json", offset_path(0.0).table())
    (tmp_path / "schedules" / "notes.json").write_text("{}")  # not a probe's file: ignored
    leads = learned_leads(tmp_path)
    assert sorted(leads) == ["pca", "semvae"]
    assert list(leads["semvae"]["seeds"]) == [0, 1, 2]
    assert leads["semvae"]["seeds"][1] == pytest.approx(0.3, abs=1e-6)
    assert leads["semvae"]["mean"] == pytest.approx(0.2, abs=1e-6)
    assert leads["semvae"]["std"] == pytest.approx(0.1, abs=1e-6)
    assert leads["pca"] == {
        "seeds": {4: pytest.approx(0.0, abs=1e-9)},
        "mean": pytest.approx(0.0, abs=1e-9),
        "std": 0.0,
    }
    assert "semvae: +0.200 ± 0.100 (n=3)" in leads_markdown(leads)
    assert learned_leads(tmp_path / "none") == {} and leads_markdown({}) == ""
