"""Weight files: a malicious pickle for every loader that accepts .pt/.pth/.ckpt (refused, no
code runs), truncated tensor files, and release configs the importer cannot read."""

import json

import numpy as np
import pytest

from sfd.errors import EXIT_BAD_INPUT, EXIT_CONFIG, EXIT_UNSAFE
from tests.badinput.conftest import refused, write_evil
from tests.helpers import FIXTURES, FIXTURES_ROOT

UP = ["--upstream-config", FIXTURES / "upstream_config.json"]
DECODE = ["--num", 2, "--device", "cpu", "--set", "sample.method=euler"]
SEMVAE = FIXTURES_ROOT / "upstream_parity_semvae"


def _loaders(tmp, evil, trained):
    """(args, input) of every command option that reads a torch pickle file."""
    np.savez(tmp / "imgs.npz", np.zeros((4, 16, 16, 3), np.uint8))
    (tmp / "folder" / "c").mkdir(parents=True)
    return {
        "import-upstream CKPT": ["import-upstream", evil, *UP, "--out", tmp / "o"],
        "import-upstream --latent-stats": [
            "import-upstream",
            FIXTURES / "state_dict.safetensors",
            *UP,
            "--latent-stats",
            evil,
            "--out",
            tmp / "o",
        ],
        "import-upstream-semvae": [
            "import-upstream-semvae",
            evil,
            "--config",
            SEMVAE / "config.json",
            "--out",
            tmp / "o",
        ],
        "eval --inception-weights": [
            "eval",
            tmp / "imgs.npz",
            "--ref",
            tmp / "imgs.npz",
            "--inception-weights",
            evil,
            "--device",
            "cpu",
        ],
        "ref-stats --inception-weights": [
            "ref-stats",
            tmp / "imgs.npz",
            "--inception-weights",
            evil,
            "--out",
            tmp / "r.safetensors",
            "--device",
            "cpu",
        ],
        "eval --feature-weights (efficientnet)": [
            "eval",
            tmp / "imgs.npz",
            "--ref",
            tmp / "imgs.npz",
            "--feature-space",
            "efficientnet-lite0",
            "--feature-weights",
            evil,
            "--device",
            "cpu",
        ],
        "extract-features --encoder-path": [
            "extract-features",
            "--dataset",
            "folder",
            "--data-root",
            tmp / "folder",
            "--out",
            tmp / "o",
            "--encoder-path",
            evil,
            "--device",
            "cpu",
        ],
        "extract --texture-ae": [
            "extract",
            "--texture-ae",
            evil,
            "--semvae",
            tmp,
            "--store",  # the default storage would first ask for its PCA's features
            "f32",
            "--dataset",
            "folder",
            "--data-root",
            tmp / "folder",
            "--out",
            tmp / "o",
            "--device",
            "cpu",
        ],
        "sample --decoder": ["sample", trained, "--decoder", evil, "--out", tmp / "s", *DECODE],
    }


LOADERS = [
    "import-upstream CKPT",
    "import-upstream --latent-stats",
    "import-upstream-semvae",
    "eval --inception-weights",
    "ref-stats --inception-weights",
    "eval --feature-weights (efficientnet)",
    "extract-features --encoder-path",
    "extract --texture-ae",
    "sample --decoder",
]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("suffix", [".pt", ".ckpt"])
def test_malicious_pickle_is_refused(tmp_path, trained, loader, suffix):
    marker = tmp_path / "PWNED"
    evil = write_evil(tmp_path / f"evil{suffix}", marker)
    args = _loaders(tmp_path, evil, trained)[loader]
    refused(args, EXIT_UNSAFE, str(evil), "could run code", "refused", inputs=[evil])
    assert not marker.exists(), "the pickle ran code"


def test_truncated_safetensors_import(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes((FIXTURES / "state_dict.safetensors").read_bytes()[:1000])
    refused(
        ["import-upstream", bad, *UP, "--out", tmp_path / "o"],
        EXIT_BAD_INPUT,
        str(bad),
        "not a readable safetensors file",
        inputs=[bad],
    )
    assert not (tmp_path / "o").exists()


def test_truncated_pt_import(tmp_path):
    import torch

    bad = tmp_path / "w.pt"
    torch.save({"ema": {"w": torch.zeros(100)}}, bad)
    bad.write_bytes(bad.read_bytes()[:200])
    refused(
        ["import-upstream", bad, *UP, "--out", tmp_path / "o"],
        EXIT_BAD_INPUT,
        str(bad),
        "not a readable torch file",
        inputs=[bad],
    )


def test_not_a_state_dict(tmp_path):
    import torch

    bad = tmp_path / "w.pt"
    torch.save({"ema": [1, 2, 3]}, bad)
    refused(
        ["import-upstream", bad, *UP, "--out", tmp_path / "o"],
        EXIT_BAD_INPUT,
        "state dict of tensors",
    )


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c["model_kwargs"].pop("in_channels"), "lacks the key 'in_channels'"),
        (lambda c: c["model_kwargs"].update(depth="six"), "cannot be read"),
        (lambda c: c.clear(), "lacks the key"),
    ],
)
def test_upstream_config_the_code_cannot_read(tmp_path, edit, needle):
    cfg = json.loads((FIXTURES / "upstream_config.json").read_text())
    edit(cfg)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    args = ["import-upstream", FIXTURES / "state_dict.safetensors", "--upstream-config", path]
    refused([*args, "--out", tmp_path / "o"], EXIT_CONFIG, str(path), needle, inputs=[path])


def test_upstream_yaml_not_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed\n")
    args = ["import-upstream", FIXTURES / "state_dict.safetensors", "--upstream-config", path]
    refused([*args, "--out", tmp_path / "o"], EXIT_CONFIG, str(path))
