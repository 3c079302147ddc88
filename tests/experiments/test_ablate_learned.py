"""The grid's learned-schedule rows: `learned` (SemVAE latent) and `redi-learned` (PCA latent)
train on a probe's schedule made once per latent set and seed; they are not on the Δt curve."""

from sfd.experiments.ablate_grid import AblationSettings, row_config
from sfd.experiments.ablate_rows import parse_row, row_delta_t
from sfd.experiments.ablate_schedules import with_learned_schedule
from sfd.flow.run_path import path_of
from sfd.training.schedule_file import with_schedule_file
from tests.helpers import tiny_config, write_synthetic_latents


def test_learned_rows_parse_and_are_not_on_the_delta_t_curve():
    for name, semantic in (("learned", "semvae"), ("redi-learned", "pca")):
        row = parse_row(name)
        assert row.semantic == semantic and row.schedule == "learned"
        assert row_delta_t(name) is None
    assert row_delta_t("sfd") == 0.3 and parse_row("sfd").schedule == "offset"
    assert "learned" not in AblationSettings().rows  # asked for by name only
    AblationSettings(rows=("sfd", "learned", "redi-learned"))


def test_a_learned_row_probes_once_per_seed_and_trains_on_it(tmp_path):
    base = tiny_config()
    latents = write_synthetic_latents(tmp_path / "lat", base, count=16, repa=False)
    cfg = row_config(base, parse_row("learned"), 2, seed=1, steps=10)
    sfd_cfg = row_config(base, parse_row("sfd"), 2, seed=1, steps=10)
    assert with_learned_schedule(sfd_cfg, parse_row("sfd"), tmp_path, latents, 1, True) == sfd_cfg
    got = with_learned_schedule(cfg, parse_row("learned"), tmp_path, latents, 1, quick=True)
    target = tmp_path / "schedules" / "semvae-seed1.json"
    assert got.flow.schedule_file == str(target) and target.with_suffix(".png").exists()
    stamp = target.stat().st_mtime_ns
    again = with_learned_schedule(cfg, parse_row("learned"), tmp_path, latents, 1, quick=True)
    assert again == got and target.stat().st_mtime_ns == stamp  # cached, not probed again
    path = path_of(with_schedule_file(got).flow)
    assert path.delta_t is None and path.span == 1.0


def test_learned_lambda_rows_probe_with_their_lambda_and_are_paired(tmp_path):
    import json
    from pathlib import Path

    import pytest

    from sfd.experiments.ablate import _evaluations
    from sfd.experiments.ablate_nfe import nfe_summary
    from sfd.experiments.ablate_rows import Row

    row = parse_row("learned-lam1")
    assert (row.semantic, row.schedule, row.probe_lam, row.delta_t) == ("semvae", "learned", 1, 0)
    assert row.schedule_key == "semvae-lam1" and parse_row("learned").schedule_key == "semvae"
    assert parse_row("learned-lam0.5").schedule_key == "semvae-lam0.5"
    assert row_delta_t("learned-lam1") is None
    for bad in ("learned-lam", "learned-lam-1", "learned-lamx"):
        with pytest.raises(ValueError, match="unknown ablation row"):
            parse_row(bad)
    with pytest.raises(ValueError, match="goes with a learned schedule"):
        Row("x", "semvae", 0.3, probe_lam=1.0)
    s = AblationSettings(steps=100, checkpoints=2, cfg_sweep=(2.0,), main_seeds=4, sweep_seeds=1)
    assert s.seeds_of("learned-lam1") == 4
    jobs = _evaluations(Path("/nonexistent"), s, "learned-lam1", 0)
    assert (100, 2.0, None) in jobs and (100, 1.0, "euler-4") in jobs
    # its probe runs with λ = 1 into its own file, beside the default probe's
    base = tiny_config()
    latents = write_synthetic_latents(tmp_path / "lat", base, count=16, repa=False)
    cfg = row_config(base, row, 2, seed=1, steps=10)
    got = with_learned_schedule(cfg, row, tmp_path, latents, 1, quick=True)
    target = tmp_path / "schedules" / "semvae-lam1-seed1.json"
    assert got.flow.schedule_file == str(target)
    assert json.loads(target.read_text())["probe"]["settings"]["lam"] == 1.0
    # the sampling-steps table pairs it with learned, semvae-sync and sfd
    values = {"learned-lam1": [90.0, 91.0, 89.5], "learned": [95.0] * 3, "sfd": [92.0, 92.5, 91.0]}
    results = [
        {"row": r, "seed": k, "step": 100, "cfg_scale": 1.0, "sampler": "euler-4", "fd_fmnist": v}
        for r, vals in values.items()
        for k, v in enumerate(vals)
    ]
    paired = nfe_summary(results, s, "fd_fmnist")["euler-4"]["paired"]
    assert paired["learned-lam1 - learned"]["differences"] == [-5.0, -4.0, -5.5]
    assert paired["learned-lam1 - sfd"]["differences"] == [-2.0, -1.5, -1.5]
    assert "learned-lam1 - semvae-sync" not in paired  # no such row in these results


def test_warp_rows_keep_the_learned_time_warp_and_drop_the_lead(tmp_path):
    import json

    import pytest
    import torch

    from sfd.experiments.ablate_nfe import nfe_summary
    from sfd.experiments.ablate_rows import is_paired, on_nfe_axis, paired_with
    from sfd.experiments.ablate_schedules import warp_table
    from sfd.flow.progress import lead_at_middle, table_path
    from sfd.training.schedule_file import load_schedule

    row = parse_row("warp-lam1")
    assert (row.schedule, row.probe_lam, row.warp, row.schedule_key) == (
        "learned",
        1.0,
        True,
        "semvae-lam1",
    )  # the same probe file as learned-lam1
    assert parse_row("warp").schedule_key == "semvae" and parse_row("warp").warp
    assert not parse_row("learned-lam1").warp and row_delta_t("warp-lam1") is None
    assert is_paired("warp-lam1") and on_nfe_axis("warp", ())
    assert not is_paired("warpx") and not on_nfe_axis("warp-x", ())
    assert paired_with("warp-lam1") == ("learned-lam1", "semvae-sync", "sfd")
    assert paired_with("warp") == ("learned", "semvae-sync", "sfd")
    assert paired_with("learned-lam1") == ("learned", "semvae-sync", "sfd")
    with pytest.raises(ValueError, match="unknown ablation row"):
        parse_row("warp-lam")
    # closed form: a lagging semantic row and a leading texture row average to the diagonal
    lead = torch.tensor([[0.0, 0.3, 0.6, 1.0], [0.0, 0.36, 0.74, 1.0]], dtype=torch.float64)
    both = warp_table(lead)
    assert torch.equal(both[0], both[1])
    assert torch.allclose(both[0], torch.tensor([0.0, 0.33, 0.67, 1.0], dtype=torch.float64))
    assert abs(lead_at_middle(table_path(both))) < 1e-6 and lead_at_middle(table_path(lead)) > 0
    # in the grid: the learned-lam1 probe's file, then its warp beside it, made once
    base = tiny_config()
    latents = write_synthetic_latents(tmp_path / "lat", base, count=16, repa=False)
    cfg = row_config(base, row, 2, seed=1, steps=10)
    got = with_learned_schedule(cfg, row, tmp_path, latents, 1, quick=True)
    learned = tmp_path / "schedules" / "semvae-lam1-seed1.json"
    target = tmp_path / "schedules" / "semvae-lam1-seed1-warp.json"
    assert got.flow.schedule_file == str(target) and learned.exists()
    assert torch.equal(load_schedule(target), warp_table(load_schedule(learned)))
    assert json.loads(target.read_text())["probe"]["warp_of"] == learned.name
    stamp = target.stat().st_mtime_ns
    assert with_learned_schedule(cfg, row, tmp_path, latents, 1, quick=True) == got
    assert target.stat().st_mtime_ns == stamp
    path = path_of(with_schedule_file(got).flow)
    u_tex, u_sem = path.progress(torch.linspace(0, 1, 11))
    assert torch.equal(u_tex, u_sem)
    # the sampling-steps table pairs it with the learned path it comes from
    s = AblationSettings(steps=100, checkpoints=2, cfg_sweep=(2.0,), main_seeds=2, sweep_seeds=1)
    values = {"warp-lam1": [90.0, 91.0], "learned-lam1": [88.0, 92.0], "sfd": [95.0, 93.0]}
    results = [
        {"row": r, "seed": k, "step": 100, "cfg_scale": 1.0, "sampler": "euler-4", "fd_fmnist": v}
        for r, vals in values.items()
        for k, v in enumerate(vals)
    ]
    paired = nfe_summary(results, s, "fd_fmnist")["euler-4"]["paired"]
    assert paired["warp-lam1 - learned-lam1"]["differences"] == [2.0, -1.0]
    assert paired["warp-lam1 - sfd"]["differences"] == [-5.0, -2.0]


def test_probe_length_rows_probe_for_their_steps_into_their_own_file(tmp_path):
    import json

    import pytest

    from sfd.experiments.ablate_rows import Row, is_paired, on_nfe_axis, paired_with

    row = parse_row("learned-p6")
    assert (row.schedule, row.probe_steps, row.probe_lam, row.warp) == ("learned", 6, None, False)
    assert row.schedule_key == "semvae-p6" and row_delta_t("learned-p6") is None
    both = parse_row("learned-lam1-p600")
    assert (both.probe_lam, both.probe_steps, both.schedule_key) == (1.0, 600, "semvae-lam1-p600")
    warp = parse_row("warp-p600")
    assert warp.warp and warp.schedule_key == "semvae-p600"
    assert is_paired("learned-p600") and on_nfe_axis("learned-p600", ())
    assert paired_with("learned-p600") == ("learned", "semvae-sync", "sfd")
    assert paired_with("warp-p600") == ("learned-p600", "semvae-sync", "sfd")
    for bad in ("learned-p", "learned-p0", "learned-p06", "learned-p600-lam1", "learned-px"):
        with pytest.raises(ValueError, match="unknown ablation row"):
            parse_row(bad)
    with pytest.raises(ValueError, match="probe steps >= 1 go with a learned schedule"):
        Row("x", "semvae", 0.3, probe_steps=100)
    # its probe runs for its own number of steps (here 6, not the quick probe's 20), into its
    # own file beside the default probe's
    base = tiny_config()
    latents = write_synthetic_latents(tmp_path / "lat", base, count=16, repa=False)
    got = with_learned_schedule(row_config(base, row, 2, 1, 10), row, tmp_path, latents, 1, True)
    target = tmp_path / "schedules" / "semvae-p6-seed1.json"
    assert got.flow.schedule_file == str(target)
    assert json.loads(target.read_text())["probe"]["settings"]["steps"] == 6
    assert not (tmp_path / "schedules" / "semvae-seed1.json").exists()
