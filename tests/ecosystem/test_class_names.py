"""Class names travel: a dataset that names its classes (Fashion-MNIST's names, an image
folder's class folders) records them in its latent set, training copies them into the run, and
the export, the app and ``pipe.get_label_ids`` use them without ``--class-names``."""

from __future__ import annotations

import json
import shutil

import pytest
from torch.utils.data import Subset

from sfd.data.fashion_mnist import FashionMNIST
from sfd.ecosystem import load_export
from sfd.ecosystem.app import load_pipeline
from sfd.extract import class_names
from sfd.training.run_dir import CLASS_NAMES, record_class_names
from tests.ecosystem.ecosystem_helpers import cli, tiny_run_fixture  # noqa: F401  (fixture tiny_run)

FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]  # fmt: skip  (the dataset's documented label order)


def test_datasets_name_their_classes():
    fashion = FashionMNIST.__new__(FashionMNIST)  # the class names need no data files
    assert class_names(fashion) == {"class_names": FASHION}
    assert class_names(Subset(fashion, [])) == {"class_names": FASHION}  # as the demo passes it
    assert class_names(object()) == {}  # a dataset without names records none


def test_training_copies_the_latent_sets_names_into_the_run(tmp_path):
    data = tmp_path / "latents"
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"class_names": FASHION}))
    (tmp_path / "run").mkdir()
    (tmp_path / "other").mkdir()
    record_class_names(tmp_path / "run", data, 10)
    assert json.loads((tmp_path / "run" / CLASS_NAMES).read_text()) == FASHION
    record_class_names(tmp_path / "other", data, 12)  # names that do not fit are not copied
    assert not (tmp_path / "other" / CLASS_NAMES).exists()


@pytest.fixture()
def named_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    shutil.copytree(tiny_run / "vae", tmp_path / "vae")
    (run / CLASS_NAMES).write_text(json.dumps(FASHION))
    return run


def test_export_and_app_use_the_runs_names(named_run, tmp_path):
    res = cli("export-diffusers", named_run, tmp_path / "out")
    assert res.exit_code == 0, res.output
    index = json.loads((tmp_path / "out/model_index.json").read_text())
    assert index["id2label"]["7"] == "Sneaker"
    pipe = load_export(tmp_path / "out")
    assert pipe.get_label_ids(["sneaker", "Bag", "ankle boot"]) == [7, 8, 9]
    assert "Sneaker" in (tmp_path / "out/README.md").read_text()
    assert load_pipeline(named_run).get_label_ids("sneaker") == [7]  # the app, on the run


def test_class_names_given_override_and_a_wrong_length_is_one_line(named_run, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"c{i}" for i in range(10)))
    res = cli("export-diffusers", named_run, tmp_path / "out", "--class-names", names)
    assert res.exit_code == 0, res.output
    assert load_export(tmp_path / "out").get_label_ids("c7") == [7]
    names.write_text("\n".join(f"c{i}" for i in range(9)))
    res = cli("export-diffusers", named_run, tmp_path / "bad", "--class-names", names)
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert "9 class names" in res.output and not (tmp_path / "bad").exists()
