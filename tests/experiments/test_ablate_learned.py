"""The grid's learned-schedule rows: `learned` (SemVAE latent) and `redi-learned` (PCA latent)
train on a probe's schedule made once per latent set and seed; they are not on the Δt curve."""

from sfd.experiments.ablate_grid import (
    AblationSettings,
    parse_row,
    row_config,
    row_delta_t,
    with_learned_schedule,
)
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
