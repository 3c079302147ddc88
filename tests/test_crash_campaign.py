"""The short crash campaign (scripts/crash_campaign.py): sfd train and sfd sample, each killed
with SIGKILL at a random moment and rerun, end bitwise equal to an uninterrupted run."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "crash_campaign.py"


def test_short_crash_campaign(tmp_path):
    spec = importlib.util.spec_from_file_location("crash_campaign", SCRIPT)
    campaign = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(campaign)
    results = campaign.campaign(tmp_path, ["train", "sample"], kills=1, seed=1)
    for name, r in results.items():
        assert r["bitwise_equal"], (name, r["problems"])
        assert r["kills"] == 1, (name, r)
