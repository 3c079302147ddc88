"""The speed switches of ``train`` change speed, not results (compile, bf16 + fused AdamW on GPU).

``torch.compile`` on CPU needs a C++ compiler and takes tens of seconds, so those tests are
``slow`` (``pytest -m slow``); the CUDA ones are ``gpu`` (``pytest -m gpu`` on a GPU machine).
Compiled training against eager training is in ``test_parallel.py``; compiled blocks against
eager ones in ``tests/model/test_compile.py``.
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from safetensors.torch import load_file

from sfd.bench.throughput import build_train_step
from sfd.errors import ConfigError
from sfd.hardware import missing_compiler
from sfd.training.loop import train
from tests.helpers import tiny_config, write_synthetic_latents

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    d = tmp_path_factory.mktemp("latents")
    return write_synthetic_latents(d, tiny_config(), count=24, shard_size=10)


def with_train(cfg, **changes):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


def final_weights(run):
    return load_file(str(run / "checkpoints/step-0000003/model.safetensors"))


def compilers(*names):
    """Inductor's C++ compiler list set to ``names`` (a context manager)."""
    from torch._inductor import config as inductor  # here: inductor is slow to import

    return inductor.patch({"cpp.cxx": names})


def test_missing_compiler_reads_inductors_compiler_list():
    with compilers(None, "sfd-no-such-compiler"):
        assert "needs a C++ compiler (sfd-no-such-compiler)" in missing_compiler("cpu")
        assert missing_compiler("cuda") is None  # not a C++ build: triton's business
    with compilers("false"):  # on PATH but fails its --version, as inductor's probe would
        assert "needs a C++ compiler (false)" in missing_compiler("cpu")
    with compilers("sfd-no-such-compiler", sys.executable):  # answers --version
        assert missing_compiler("cpu") is None


def test_compile_without_a_compiler_is_one_config_error_before_training(latents, tmp_path):
    cfg = with_train(tiny_config(), compile=True, total_steps=3, ckpt_every=3)
    refused = pytest.raises(ConfigError, match=r"train.compile=true: .*set train.compile=false")
    with compilers("sfd-no-such-compiler"), refused:
        train(cfg, latents, tmp_path / "run", device="cpu")
    assert not list(tmp_path.glob("run/checkpoints/*"))
    with compilers("sfd-no-such-compiler"), refused:  # sfd bench builds the same step
        build_train_step(cfg, 2)


@pytest.mark.gpu
@needs_cuda
def test_bf16_compile_fused_adamw_on_cuda_tracks_fp32(latents, tmp_path):
    cfg = tiny_config(total_steps=3, global_batch_size=8, log_every=1)
    fp32 = train(cfg, latents, tmp_path / "fp32", device="cuda", progress=False)
    fast = with_train(cfg, precision="bf16", compile=True, fused_adamw=True)
    bf16 = train(fast, latents, tmp_path / "bf16", device="cuda", progress=False)
    for h32, h16 in zip(fp32.history, bf16.history, strict=True):
        assert torch.isfinite(torch.tensor(h16["loss"]))
        assert abs(h16["loss"] - h32["loss"]) <= 0.05 * abs(h32["loss"]) + 1e-3
    a, b = final_weights(tmp_path / "fp32"), final_weights(tmp_path / "bf16")
    for k in a:  # fp32 master weights: bf16 only rounds the compute
        assert b[k].dtype == torch.float32
        torch.testing.assert_close(b[k], a[k], atol=5e-3, rtol=5e-2)


@pytest.mark.slow
def test_compiled_loss_region_trains_like_eager(latents, tmp_path):
    cfg = tiny_config(total_steps=3, global_batch_size=8, log_every=1)
    eager = train(cfg, latents, tmp_path / "eager", progress=False)
    region = with_train(cfg, compile=True, compile_scope="loss")
    compiled = train(region, latents, tmp_path / "loss", progress=False)
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
    a, b = final_weights(tmp_path / "eager"), final_weights(tmp_path / "loss")
    assert a.keys() == b.keys()  # the module is not wrapped: checkpoints keep their names
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
