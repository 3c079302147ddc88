"""What the export's card says about the model, and the install hints of the optional extras:
a class-conditional model is not tagged as an unconditional one, and a hint works both for an
installed wheel and for a clone of the repository."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from sfd.cli import main
from sfd.config import preset
from sfd.ecosystem.model_card import front_matter
from sfd.errors import install_hint
from sfd.training.loggers import WandbTracker


def test_the_card_describes_a_class_conditional_model():
    ckpt = SimpleNamespace(step=3, config=preset("tiny"))
    meta = yaml.safe_load(front_matter(ckpt, {}).strip("-\n"))
    assert "unconditional" not in meta.get("pipeline_tag", "")  # the Hub has no such task
    assert "class-conditional" in meta["tags"]


def test_install_hints_work_from_a_wheel_and_from_a_clone(monkeypatch, tmp_path):
    hint = install_hint("app")
    assert "pip install 'sfd[app]'" in hint and "pip install -e '.[app]'" in hint
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio fails
    res = CliRunner().invoke(main, ["app", str(tmp_path)])
    assert res.exit_code != 0 and hint in res.output


def test_the_wandb_hint_is_the_same(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ValueError, match=re.escape(install_hint("wandb"))):
        WandbTracker(tmp_path, preset("tiny"))
