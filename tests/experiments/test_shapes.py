"""``sfd pipeline`` runs to the end on every shape of folder a user may have (one class, very
unbalanced classes, classes of 1-3 images, tiny and huge images, nested folders, upper-case
extensions, symlinks), and refuses what cannot work in one line before any training."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from sfd.cli import main
from sfd.errors import EXIT_BAD_INPUT
from tests.image_folders import image_folder, photo

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = {
    "texture_steps": 2,
    "texture_batch": 4,
    "semvae_steps": 2,
    "semvae_width": 16,
    "semvae_depth": 1,
    "sfd_preset": "tiny",
    "sfd_steps": 2,
    "sfd_batch": 4,
    "num_samples": 6,
    "test_fraction": 0.25,
    "batch_size": 16,
}


def _run(folder, out, size=16, **stages):
    args = ["pipeline", "--data-root", str(folder), "--out", str(out), "--image-size", str(size)]
    args += [a for k, v in {**TOY, **stages}.items() for a in ("--stage", f"{k}={v}")]
    args += ["--set", "sample.method=euler", "--set", "sample.num_steps=2", "--device", "cpu"]
    return CliRunner().invoke(main, args)


def one_class(root):
    return image_folder(root, {"only": 16})


def two_classes(root):
    return image_folder(root, {"cats": 4, "dogs": 4})


def unbalanced(root):
    return image_folder(root, {"many": 14, "few": 2})


def one_two_three(root):
    return image_folder(root, {"one": 1, "two": 2, "three": 3})


def tiny_images(root):
    return image_folder(root, {"a": 4, "b": 4}, sizes=(3, 7))


def huge_images(root):
    return image_folder(root, {"a": 3, "b": 3}, sizes=(1200, 1600), ext=".jpg")


def nested_upper_case(root):
    image_folder(root / "x", {"a": 2, "b": 2}, ext=".PNG")
    image_folder(root / "y", {"a": 2, "b": 2}, ext=".JPEG", seed=1)
    for name in "ab":  # root/a/{x,y}/deep/*.PNG|JPEG
        for part in "xy":
            (root / name / part).mkdir(parents=True)
            (root / part / name).rename(root / name / part / "deep")
    for part in "xy":
        (root / part).rmdir()
    return root


def symlinks(root):
    store = image_folder(root.parent / "elsewhere", {"a": 4, "b": 3})
    (root / "b").mkdir(parents=True)
    os.symlink(store / "a", root / "a", target_is_directory=True)  # a linked class folder
    for p in sorted((store / "b").iterdir()):
        os.symlink(p, root / "b" / p.name)  # linked files
    return root


FAST = [unbalanced, one_two_three, symlinks]
# the rest run to the end with `pytest -m slow tests/experiments/test_shapes.py` (~1 min); their
# image discovery is checked fast below, and one class by its own test
SLOW = [one_class, two_classes, tiny_images, huge_images, nested_upper_case]
SHAPES = [*FAST, *(pytest.param(s, marks=pytest.mark.slow) for s in SLOW)]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.__name__ for s in FAST + SLOW])
def test_every_folder_shape_runs_to_the_end(tmp_path, shape):
    folder = shape(tmp_path / "photos")
    res = _run(folder, tmp_path / "run")
    assert res.exit_code == 0, res.output
    out = tmp_path / "run"
    classes = sorted(p.name for p in folder.iterdir())
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["model"]["num_classes"] == len(classes)
    assert (out / "samples.png").stat().st_size > 0
    samples = np.load(out / "samples" / "samples.npz")
    assert samples["arr_0"].shape == (6, 16, 16, 3)
    ref = summary.get("reference")
    if ref is not None:  # every class of 2+ images is held out, in proportion
        assert sorted(ref["per_class"]) == classes
        counts = {p.name: sum(1 for f in p.rglob("*") if f.is_file()) for p in folder.iterdir()}
        assert ref["classes_missing"] == sorted(
            c for c in classes if counts[c] < 2 or ref["per_class"][c] == 0
        )
        images = summary["images"]
        assert images["fd_samples"][1] == ref["images"] == summary["metric_images"]
    else:
        assert "skipped" in summary


def test_one_class_runs_to_the_end_with_no_probe_but_the_distances(tmp_path):
    folder = image_folder(tmp_path / "photos", {"only": 8})
    res = _run(folder, tmp_path / "run", test_fraction=0.5)
    assert res.exit_code == 0, res.output  # the sample grid of one row included
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["probe_acc_samples"] is None and "one class" in summary["probe"]
    assert np.isfinite(summary["fd_samples"]) and summary["spread"]["fd_samples"] >= 0


def _empty_class(root):
    image_folder(root, {"a": 4, "b": 4})
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("not an image")
    return root


def _two_images(root):
    return image_folder(root, {"a": 1, "b": 1})


def _flat(root):
    root.mkdir(parents=True)
    for i in range(4):
        photo(20, 20, 0, i).save(root / f"{i}.png")
    return root


REFUSED = [
    (_empty_class, "c hold no image files"),
    (_two_images, "needs at least 3"),
    (_flat, "no class sub-directories"),
]


@pytest.mark.parametrize(("shape", "says"), REFUSED, ids=[r[0].__name__ for r in REFUSED])
def test_what_cannot_work_is_refused_before_any_work(tmp_path, shape, says):
    res = _run(shape(tmp_path / "photos"), tmp_path / "run")
    assert res.exit_code == EXIT_BAD_INPUT, res.output
    assert says in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("shape", SLOW, ids=[s.__name__ for s in SLOW])
def test_every_image_of_every_shape_is_found_and_read(tmp_path, shape):
    """Fast: each shape's files are found (nested, upper-case, linked) and read at the size."""
    from sfd.experiments.custom import PipelineSettings, open_images

    folder = shape(tmp_path / "photos")
    files = [f for f in folder.rglob("*") if f.is_file()]
    train, test, names = open_images(str(folder), PipelineSettings(image_size=16), "raise")
    assert names == sorted(p.name for p in folder.iterdir())
    assert len(train) + len(test) == len(files)
    assert {tuple(train[i][0].shape) for i in range(len(train))} == {(3, 16, 16)}
