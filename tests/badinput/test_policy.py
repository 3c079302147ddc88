"""The policy itself: an unexpected exception is one line with exit 70; --debug / SFD_DEBUG=1
show the traceback instead."""

from click.testing import CliRunner

from sfd import cli
from sfd.errors import EXIT_INTERNAL
from tests.badinput.conftest import refused


def _boom(monkeypatch):
    def preset(name):
        raise TypeError("boom")

    import sfd.training.run_config as run_config

    monkeypatch.setattr(run_config, "preset", preset)


def test_internal_error_is_one_line(monkeypatch):
    _boom(monkeypatch)
    refused(["train", "--dry-run"], EXIT_INTERNAL, "internal error TypeError: boom", "--debug")


def test_debug_shows_the_traceback(monkeypatch):
    _boom(monkeypatch)
    res = CliRunner().invoke(cli.main, ["--debug", "train", "--dry-run"])
    assert isinstance(res.exception, TypeError)
    res = CliRunner(env={"SFD_DEBUG": "1"}).invoke(cli.main, ["train", "--dry-run"])
    assert isinstance(res.exception, TypeError)
