"""Checkpoints given to ``sfd sample`` (and ``--guide``, and resumed by ``sfd train``).

The cases edit a checkpoint and drop its ``checksums.json``, as a checkpoint written before
checksums existed (or edited by hand) would be, so the loaders' own checks are what answers;
with the checksums in place any edit is refused first (tests/badinput/test_integrity.py)."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sfd.errors import EXIT_BAD_INPUT, EXIT_MISMATCH
from sfd.training.checkpoint import list_checkpoints
from tests.badinput.conftest import SAMPLE, TRAIN, refused


def _ckpt(run):
    ckpt = list_checkpoints(run)[-1]
    (ckpt / "checksums.json").unlink(missing_ok=True)
    return ckpt


def _resave(path, fn_tensors=None, fn_meta=None):
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    if fn_tensors:
        tensors = fn_tensors(tensors)
    if fn_meta:
        fn_meta(meta)
    save_file(tensors, str(path), metadata=meta)


def _config_edit(meta, **model):
    cfg = json.loads(meta["config"])
    cfg["model"].update(model)
    meta["config"] = json.dumps(cfg)


CASES = {
    "truncated ema": (
        lambda c: (c / "ema.safetensors").write_bytes((c / "ema.safetensors").read_bytes()[:500]),
        EXIT_BAD_INPUT,
        "not a readable safetensors file",
    ),
    "zero-byte ema": (
        lambda c: (c / "ema.safetensors").write_bytes(b""),
        EXIT_BAD_INPUT,
        "not a readable safetensors file",
    ),
    "another model's shapes": (
        lambda c: _resave(
            c / "ema.safetensors",
            lambda t: {
                k: (torch.zeros(7) if k.endswith("final_layer.linear.bias") else v)
                for k, v in t.items()
            },
        ),
        EXIT_MISMATCH,
        "has shape (7,)",
    ),
    "another model's keys": (
        lambda c: _resave(c / "ema.safetensors", lambda t: {**t, "extra.weight": torch.zeros(1)}),
        EXIT_MISMATCH,
        "unexpected keys ['extra.weight']",
    ),
    "config the code cannot read": (
        lambda c: _resave(c / "ema.safetensors", fn_meta=lambda m: _config_edit(m, wings=2)),
        EXIT_BAD_INPUT,
        "cannot read: unknown config key model.wings",
    ),
    "config with a wrong type": (
        lambda c: _resave(c / "ema.safetensors", fn_meta=lambda m: _config_edit(m, depth="2")),
        EXIT_BAD_INPUT,
        "model.depth must be an integer",
    ),
    "config not json": (
        lambda c: _resave(c / "ema.safetensors", fn_meta=lambda m: m.update(config="{")),
        EXIT_BAD_INPUT,
        "cannot read",
    ),
    "no step metadata": (
        lambda c: _resave(c / "ema.safetensors", fn_meta=lambda m: m.pop("step")),
        EXIT_BAD_INPUT,
        "lacks its 'step' metadata",
    ),
    "not an sfd checkpoint": (
        lambda c: _resave(c / "ema.safetensors", fn_meta=lambda m: m.update(format="x")),
        EXIT_BAD_INPUT,
        "is not an sfd checkpoint",
    ),
    "missing EMA": (
        lambda c: (c / "ema.safetensors").unlink(),
        EXIT_BAD_INPUT,
        "holds no checkpoint",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_checkpoint_sample(trained, copy_of, tmp_path, case):
    run = copy_of(trained, "run")
    corrupt, code, needle = CASES[case]
    corrupt(_ckpt(run))
    refused(["sample", run, "--out", tmp_path / "s", *SAMPLE], code, needle, inputs=[run])
    assert not (tmp_path / "s" / "latents.safetensors").exists()


@pytest.mark.parametrize("case", ["truncated ema", "another model's shapes", "missing EMA"])
def test_bad_guide(trained, copy_of, tmp_path, case):
    guide = copy_of(trained, "guide")
    corrupt, code, needle = CASES[case]
    corrupt(_ckpt(guide))
    args = ["sample", trained, "--guide", guide, "--out", tmp_path / "s", *SAMPLE]
    refused(args, code, needle, inputs=[guide, trained])


@pytest.mark.parametrize("case", ["truncated ema", "config the code cannot read"])
def test_bad_checkpoint_resume(trained, latents, copy_of, tmp_path, case):
    run = copy_of(trained, "run")
    corrupt, code, needle = CASES[case]
    corrupt(_ckpt(run))
    args = [*TRAIN, "--set", "train.total_steps=3", "--data", latents, "--out", run]
    refused(args, code, needle, inputs=[latents])


def test_truncated_optimizer_on_resume(trained, latents, copy_of):
    run = copy_of(trained, "run")
    opt = _ckpt(run) / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    args = [*TRAIN, "--set", "train.total_steps=3", "--data", latents, "--out", run]
    refused(args, EXIT_BAD_INPUT, "optimizer state", "not a readable safetensors file")
