"""``sfd bench --compare``: two trees timed in their own worker processes."""

import math

import pytest


def test_compare_times_two_trees_each_in_its_own_process():
    """Against 5b5309d where the clone has it (its workers rebuild that revision's Trainer
    step, which has no ``build_train_step``), else against this tree's own directory."""
    import subprocess

    from sfd.bench.compare import compare, this_tree

    repo = this_tree().parent
    has_ref = not subprocess.run(["git", "-C", str(repo), "cat-file", "-e", "5b5309d"]).returncode
    got = compare(
        "5b5309d" if has_ref else str(this_tree()),
        "tiny",
        2,
        warmup=1,
        iters=2,
        threads=1,
        repeats=2,
    )
    assert got.ours_ms > 0 and got.ref_ms > 0 and math.isfinite(got.ratio)
    assert 0 < got.ratio_q1 <= got.ratio_q3 < math.inf
    assert len(got.repeat_ratios) == 2 and all(r > 0 for r in got.repeat_ratios)
    assert got.threads == 1 and "ratio" in got.table()


def test_quantiles_of_the_round_ratios_match_numpy():
    import numpy as np

    from sfd.bench.compare import median, quantile

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 9):
        xs = rng.uniform(0.5, 2.0, n).tolist()
        for q in (0.0, 0.25, 0.5, 0.75, 1.0):
            assert quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)), rel=1e-12)
        assert median(xs) == pytest.approx(float(np.median(xs)), rel=1e-12)
