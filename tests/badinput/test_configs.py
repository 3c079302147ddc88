"""Config files and --set overrides: typed like --set, unknown keys named, absurd values refused."""

import json

import pytest

from sfd.errors import EXIT_CONFIG, EXIT_USAGE
from tests.badinput.conftest import SAMPLE, refused


@pytest.mark.parametrize(
    "content, needles",
    [
        ({"model": {"depth": "six"}}, ["model.depth must be an integer", "'six'"]),
        ({"model": {"dpth": 6}}, ["unknown config key model.dpth"]),
        ({"modle": {}}, ["unknown config key modle"]),
        ({"model": {"use_rope": 1}}, ["model.use_rope must be true or false"]),
        ({"train": {"lr": "fast"}}, ["train.lr must be a number"]),
        ({"train": {"precision": "fp8"}}, ["train.precision must be one of"]),
        ({"sample": {"cfg_interval_tex": [0.1]}}, ["sample.cfg_interval_tex must be a list of 2"]),
        ({"model": {"depth": 0}}, ["model.depth must be an integer >= 1"]),
        ({"model": {"num_heads": 0}}, ["model.num_heads must be an integer >= 1"]),
        ({"train": {"global_batch_size": -4}}, ["train.global_batch_size"]),
        ({"model": []}, ["config section model must be a mapping"]),
        ([1, 2], ["must be a mapping"]),
        ("{not json", ["is not valid JSON"]),
    ],
)
def test_config_file(tmp_path, content, needles):
    path = tmp_path / "C.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    refused(
        ["train", "--config", path, "--dry-run"],
        EXIT_CONFIG,
        str(path),
        *needles,
        inputs=[tmp_path],
    )


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.depth=six", "cannot parse 'six' for model.depth"),
        ("model.nope=1", "unknown key 'nope'"),
        ("nope.depth=1", "unknown config section 'nope'"),
        ("train.lr", "must look like section.key=value"),
        ("train.lr=nan", "expected a finite number"),
        ("train.lr=-1", "train.lr must be a number > 0"),
        ("train.global_batch_size=0", "train.global_batch_size must be an integer >= 1"),
        ("latent.size=-8", "latent.size must be an integer >= 1"),
        ("train.beta2=1.5", "train.beta2 must be in [0, 1)"),
    ],
)
def test_set_override(override, needle):
    refused(["train", "--dry-run", "--set", override], EXIT_USAGE, needle)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample", ".", "--out", "o", "--num", 0], "'--num': 0 makes no sense"),
        (["sample", ".", "--out", "o", "--num", -3], "'--num': -3 makes no sense"),
        (["sample", ".", "--out", "o", "--batch-size", 0], "'--batch-size': 0"),
        (["extract-features", "--out", "o", "--image-size", -32], "'--image-size': -32"),
        (["extract-features", "--out", "o", "--shard-size", 0], "'--shard-size': 0"),
        (["extract-features", "--out", "o", "--num-workers", -1], "'--num-workers': -1"),
        (["train-semvae", "--features", ".", "--out", "o", "--batch-size", 0], "--batch-size"),
        (["train-texture-vae", "--out", "o", "--total-steps", 0], "'--total-steps': 0"),
        (["train-texture-vae", "--out", "o", "--lr", 0], "'--lr': 0.0"),
        (["bench", "--iters", 0], "'--iters': 0"),
        (["ablate", "--num-samples", 0], "'--num-samples': 0"),
        (["eval", ".", "--ref", ".", "--batch-size", 0], "--batch-size"),
        (["train", "--dry-run", "--max-steps", -1], "'--max-steps': -1"),
    ],
)
def test_absurd_values_refused_up_front(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    refused(args, EXIT_USAGE, needle)
    assert not (tmp_path / "o").exists()


def test_sample_refuses_other_sections(trained):
    refused(
        ["sample", trained, "--out", "x", *SAMPLE, "--set", "train.lr=1"],
        EXIT_USAGE,
        "only sample.* overrides",
        inputs=[trained],
    )
