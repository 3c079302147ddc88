"""The README cites only files in the repository and runs only commands that exist
(it once cited a section of a method note that is not in the repository)."""

from __future__ import annotations

import re
from pathlib import Path

from sfd.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_markdown_file_the_readme_cites_is_in_the_repository():
    cited = set(re.findall(r"[\w./-]*\b[\w-]+\.md\b", README))
    missing = sorted(
        c for c in cited if not (ROOT / c).exists() and not (ROOT / "docs" / c).exists()
    )
    assert not missing, missing


def test_every_sfd_command_in_the_readme_exists():
    used = set(re.findall(r"(?:^|\s|`)sfd ([a-z][a-z-]+)", README))
    used -= {"is", "on", "adds", "samples", "must"}  # prose, not commands
    unknown = sorted(used - set(main.commands))
    assert not unknown, unknown
    assert "sfd pipeline --data-root" in README
