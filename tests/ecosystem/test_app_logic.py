"""The web app's logic without a browser: image i of the grid is ``sfd sample``'s image i for
the same seed, with the chosen classes in turn; the stage strip is drawn from one trajectory."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner
from PIL import Image

from sfd.cli import main
from sfd.ecosystem.app import Request, generate, grid, load_pipeline, stage_picture
from tests.ecosystem.ecosystem_helpers import tiny_run_fixture  # noqa: F401  (fixture tiny_run)


def test_labels_cycle_through_the_chosen_classes():
    assert Request((7, 2), 5, 0, 3, 1.0).labels() == [7, 2, 7, 2, 7]
    with pytest.raises(ValueError, match="at least one class"):
        Request((), 2, 0, 3, 1.0).labels()


def test_app_images_equal_sfd_sample(tiny_run, tmp_path):
    pipe = load_pipeline(tiny_run / "run")  # an sfd run: built in memory, no export needed
    req = Request((4, 9), 3, 5, 2, 2.5)
    images = generate(pipe, req)
    labels = tmp_path / "labels.txt"
    labels.write_text("4\n9\n4\n")
    res = CliRunner().invoke(
        main,
        [
            str(a)
            for a in (
                "sample",
                tiny_run / "run",
                "--num",
                3,
                "--seed",
                5,
                "--labels",
                labels,
                "--out",
                tmp_path / "cli",
                "--set",
                "sample.num_steps=2",
                "--set",
                "sample.cfg_scale_tex=2.5",
                "--set",
                "sample.cfg_scale_sem=2.5",
            )
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    for i, image in enumerate(images):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        assert buf.getvalue() == (tmp_path / f"cli/images/{i:06d}.png").read_bytes(), i
    sheet = grid(images, columns=2)
    assert sheet.size == (2 * images[0].size[0], 2 * images[0].size[1])

    strip = stage_picture(pipe, req, tmp_path / "strip.png")
    with Image.open(strip) as im:
        assert im.size[0] > 4 * im.size[1]  # ten columns, two rows
