"""The ablation grid's storage rows: parsing, their latent sets, the paired test against sfd."""

from __future__ import annotations

import math

import pytest

from sfd.data.latent_shards import LatentDataset
from sfd.experiments.ablate import AblationSettings, parse_row, row_delta_t
from sfd.experiments.ablate_report import curves
from sfd.experiments.ablate_store import paired_t_test, store_sets, store_tests
from tests.helpers import tiny_config, write_synthetic_latents


def test_store_rows_are_sfd_on_another_storage():
    row = parse_row("store-f16-pca16-flip")
    sfd = parse_row("sfd")
    assert (row.semantic, row.delta_t, row.repa) == (sfd.semantic, sfd.delta_t, sfd.repa)
    assert row.store == "f16-pca16-flip" and row.latents == "store-f16-pca16-flip"
    assert sfd.latents == "semvae" and row_delta_t("store-f16") is None  # not on the Δt curve
    with pytest.raises(ValueError, match="row 'store-f8'.*unknown storage spec"):
        parse_row("store-f8")
    settings = AblationSettings(rows=("sfd", "store-f16", "dt-0.5"), main_seeds=5)
    assert [settings.seeds_of(r) for r in settings.rows] == [5, 5, 1]


def test_paired_t_test_matches_its_closed_form():
    # differences 1, 1, 3: mean 5/3, sd sqrt(4/3), t = (5/3) / (sd / sqrt 3) = 2.5 on 2 df;
    # the t(2) tail is 1/2 - t / (2 sqrt(2 + t^2)), so p = 1 - t / sqrt(2 + t^2)
    res = paired_t_test({0: 1.0, 1: 2.0, 2: 4.0, 7: 9.0}, {0: 0.0, 1: 1.0, 2: 1.0})
    assert res["n"] == 3 and math.isclose(res["mean_diff"], 5 / 3)
    assert math.isclose(res["t"], 2.5, rel_tol=1e-12)
    assert math.isclose(res["p"], 1 - 2.5 / math.sqrt(8.25), rel_tol=1e-9)
    assert paired_t_test({0: 1.0}, {0: 2.0})["p"] is None  # one pair: no test


def test_report_pairs_store_rows_with_sfd_seed_by_seed():
    results = [
        {"row": row, "seed": s, "step": 8, "cfg_scale": 1.0, "fd_fmnist": v + s, "acc": 0.5}
        for row, base in (("sfd", 10.0), ("store-f16", 10.5))
        for s in range(3)
        for v in [base + (0.1 * s if row == "sfd" else 0.0)]
    ]
    tests = store_tests(curves(results, 1.0), 8, ("fd_fmnist", "acc"))
    fd = tests["store-f16 vs sfd, fd_fmnist, paired by seed"]
    assert fd["n"] == 3 and math.isclose(fd["mean_diff"], 0.4)  # 0.5 - 0.1 s, s = 0, 1, 2
    assert tests["store-f16 vs sfd, acc, paired by seed"]["p"] is None  # no differences


def test_store_sets_reencode_the_semvae_set_once(tmp_path):
    latents = write_synthetic_latents(tmp_path / "latents", tiny_config(), count=12)
    rows = [parse_row(r) for r in ("sfd", "store-f32", "store-f16-flip")]
    meta = LatentDataset(latents).meta
    sets = store_sets(tmp_path / "grid", latents, None, meta, rows)
    assert sets["store-f32"] == latents
    assert LatentDataset(sets["store-f16-flip"]).storage.spec == "f16-flip"
    with pytest.raises(ValueError, match="store-f16-pca4 needs encoder features.*--features"):
        store_sets(tmp_path / "grid", latents, None, meta, [parse_row("store-f16-pca4")])
    with pytest.raises(ValueError, match="store-f16-semvae needs the SemVAE"):
        store_sets(tmp_path / "grid", latents, None, meta, [parse_row("store-f16-semvae")])
