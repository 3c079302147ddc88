"""The short crash campaign (``sfd.tools.crash_campaign``, run by scripts/crash_campaign.py):
sfd train and sfd sample, each killed with SIGKILL at a random moment and rerun, end bitwise
equal to an uninterrupted run."""

from sfd.tools.crash_campaign import campaign


def test_short_crash_campaign(tmp_path):
    results = campaign(tmp_path, ["train", "sample"], kills=1, seed=1)
    assert set(results) == {"train", "sample"}
    for name, r in results.items():
        assert r["bitwise_equal"], (name, r["problems"])
        assert r["kills"] == 1, (name, r)
