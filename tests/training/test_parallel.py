"""Two gloo processes on CPU train the same model as one process (DDP and FSDP2).

One module fixture makes every run once: the two-process runs in one ``torch.multiprocessing``
launch (each process initialises through ``sfd.distributed.init_from_env`` as under
``torchrun``, on 127.0.0.1), the one-process references meanwhile in this process. The tests
compare checkpoints: equal up to fp32 reduction order (the gradient of the global-batch mean
is summed in another order over ranks and micro-batches).
"""

import copy
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import sfd
from sfd import distributed as D
from sfd.training.checkpoint import checkpoint_dir, optimizer_tensors
from sfd.training.loop import Trainer, train
from tests.helpers import tiny_config, write_synthetic_latents

WORLD, STEPS, HALF, BATCH = 2, 4, 2, 8
ATOL = RTOL = 1e-5
# Adam moments of the zero-initialised output layer are ~1e5 at these steps (the cosine loss
# of a near-zero prediction), so their fp32 summation-order error is relative, ~1e-4.
MOMENT_RTOL = 1e-3


def run_config(parallel: str = "ddp", **train_overrides):
    """The tiny preset, global batch 8, one checkpoint at the end, ``train.parallel`` set."""
    cfg = tiny_config(
        total_steps=STEPS, global_batch_size=BATCH, ckpt_every=STEPS, log_every=1, **train_overrides
    )
    if "parallel" in {f.name for f in dataclasses.fields(cfg.train)}:
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, parallel=parallel))
    train_cfg = copy.copy(cfg.train)  # until TrainConfig has the field (read with getattr)
    object.__setattr__(train_cfg, "parallel", parallel)
    return dataclasses.replace(cfg, train=train_cfg)


FSDP = {"grad_accum_steps": 2, "activation_checkpointing": True}
# Two-process runs: name -> (train.parallel, overrides, first stop or None). "fsdp" resumes a
# one-process FSDP checkpoint of step 2 (a DCP checkpoint saved on 1, loaded on 2).
TWO_PROCESS_RUNS = {
    "ddp": ("ddp", {}, None),
    "ddp_resumed": ("ddp", {"grad_accum_steps": 2}, HALF),
    "fsdp": ("fsdp", FSDP, None),
    "fsdp_bf16": ("fsdp", {"precision": "bf16"}, None),
}


def _worker(rank: int, port: int, latents: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    device = D.init_from_env("cpu")
    try:
        for name, (parallel, overrides, first) in TWO_PROCESS_RUNS.items():
            cfg = run_config(parallel, **overrides)
            if first is not None:
                train(cfg, latents, Path(out, name), device=device, progress=False, max_steps=first)
            train(cfg, latents, Path(out, name), device=device, progress=False)
        Path(out, f"checks-rank{rank}.json").write_text(json.dumps(_checks(latents, out)))
    finally:
        D.shutdown()


def _checks(latents: str, out: str) -> dict:
    """FSDP's shards and bf16 compute dtype; whether a NaN on rank 1 alone skips every rank."""
    ddp = Trainer(run_config("ddp"), latents, Path(out, "scratch"))
    fsdp = Trainer(run_config("fsdp", precision="bf16"), latents, Path(out, "scratch"))
    weight = fsdp.model.blocks[0].attn.qkv.weight
    local_fraction = weight.to_local().numel() / weight.numel()
    fsdp.model.blocks[0].unshard()
    compute_dtype = str(fsdp.model.blocks[0].attn.qkv.weight.dtype)
    fsdp.model.blocks[0].reshard()
    applied = {}
    for name, trainer in (("ddp", ddp), ("fsdp", fsdp)):
        batches = trainer.micro_batches(0)
        if D.rank() == 1:
            batches[0].x1[0] = float("nan")
        applied[name] = bool(trainer.step_fn(trainer.module, batches).applied)
    return {"local_fraction": local_fraction, "compute_dtype": compute_dtype, "applied": applied}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    latents = write_synthetic_latents(root / "latents", tiny_config(), count=24, shard_size=10)
    train(run_config("fsdp", **FSDP), latents, root / "fsdp", progress=False, max_steps=HALF)
    args = (_free_port(), str(latents), str(root))
    procs = mp.start_processes(_worker, args, nprocs=WORLD, join=False, start_method="spawn")
    train(run_config("ddp"), latents, root / "one", progress=False)
    train(run_config("ddp", precision="bf16"), latents, root / "one_bf16", progress=False)
    while not procs.join():
        pass
    return root


def weights(run: Path, name: str, step: int = STEPS) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint_dir(run, step) / f"{name}.safetensors"))


def assert_same(got: dict, want: dict, atol: float = ATOL, rtol: float = RTOL) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=atol, rtol=rtol, msg=key)


def test_ddp_two_processes_equal_one(runs):
    for name in ("model", "ema"):
        assert_same(weights(runs / "ddp", name), weights(runs / "one", name))
    assert not (checkpoint_dir(runs / "ddp", STEPS) / "dcp").exists()


def test_ddp_resume_with_accumulation_equals_one_process(runs):
    log = [json.loads(line)["step"] for line in (runs / "ddp_resumed/log.jsonl").open()]
    assert log == [1, 2, 3, 4]
    for name in ("model", "ema"):
        assert_same(weights(runs / "ddp_resumed", name), weights(runs / "one", name))
    moments = weights(runs / "ddp_resumed", "optimizer"), weights(runs / "one", "optimizer")
    assert_same(*moments, rtol=MOMENT_RTOL)


@pytest.fixture(scope="module")
def fsdp_on_one(runs):
    """The two-process FSDP checkpoint of step 4, loaded by one process."""
    trainer = Trainer(run_config("fsdp", **FSDP), runs / "latents", runs / "fsdp")
    trainer.resume()
    return trainer


def test_fsdp_checkpoint_saved_on_two_loads_on_one(runs, fsdp_on_one):
    ckpt = checkpoint_dir(runs / "fsdp", STEPS)
    assert (ckpt / "dcp").is_dir() and not (ckpt / "model.safetensors").exists()
    assert fsdp_on_one.step == STEPS
    consolidated = weights(runs / "fsdp", "ema")  # gathered by rank 0 from the EMA shards
    assert_same(fsdp_on_one.ema.state_dict(), consolidated, atol=0, rtol=0)
    loaded = sfd.load_model(runs / "fsdp")  # sampling reads the consolidated EMA as before
    assert loaded.config.train.total_steps == STEPS


def test_fsdp_two_processes_equal_one(runs, fsdp_on_one):
    """Steps 1-2 on one process, 3-4 on two (resumed): FSDP with accumulation and AC."""
    assert_same(fsdp_on_one.model.state_dict(), weights(runs / "one", "model"))
    assert_same(fsdp_on_one.ema.state_dict(), weights(runs / "one", "ema"))
    moments = optimizer_tensors(fsdp_on_one.optimizer)[0], weights(runs / "one", "optimizer")
    assert_same(*moments, rtol=MOMENT_RTOL)


def checks(runs: Path, rank: int) -> dict:
    return json.loads((runs / f"checks-rank{rank}.json").read_text())


def test_fsdp_shards_blocks_and_computes_in_bf16(runs):
    for rank in range(WORLD):
        assert checks(runs, rank)["local_fraction"] == 1 / WORLD
        assert checks(runs, rank)["compute_dtype"] == "torch.bfloat16"


def test_fsdp_bf16_trains_like_one_process_bf16(runs, tmp_path):
    log = [json.loads(line) for line in (runs / "fsdp_bf16/log.jsonl").open()]
    assert len(log) == STEPS and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    trainer = Trainer(run_config("fsdp", precision="bf16"), runs / "latents", runs / "fsdp_bf16")
    trainer.resume()
    got = trainer.model.state_dict()
    assert all(v.dtype == torch.float32 for v in got.values())  # fp32 master weights
    init = Trainer(run_config(), runs / "latents", tmp_path).model.state_dict()
    want = weights(runs / "one_bf16", "model")

    def update(state):
        return torch.cat([(state[k] - init[k]).flatten() for k in sorted(init)])

    # bf16 parameters (FSDP) vs bf16 autocast of fp32 parameters: not bitwise; a wrong shard
    # or reduction would be off by ~100 %, bf16 rounding is a few %.
    error = (update(got) - update(want)).norm() / update(want).norm()
    assert error < 0.1


def test_all_ranks_skip_a_step_that_is_nonfinite_on_one_rank(runs):
    for rank in range(WORLD):
        assert checks(runs, rank)["applied"] == {"ddp": False, "fsdp": False}, rank


@pytest.fixture
def slow_selected(request):
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("slow: run with `pytest -m slow`")


@pytest.mark.slow
def test_torchrun_cli_trains_and_resumes(runs, tmp_path, slow_selected):
    """``torchrun --nproc_per_node 2 -m sfd train`` on CPU, stopped at step 2 and resumed."""
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD)),
        *("--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{_free_port()}"),
        *("-m", "sfd", "train", "--preset", "tiny", "--device", "cpu"),
        *("--data", str(runs / "latents"), "--out", str(tmp_path / "run")),
        *("--set", f"train.total_steps={STEPS}", "--set", f"train.global_batch_size={BATCH}"),
        *("--set", f"train.ckpt_every={STEPS}", "--set", "train.log_every=1"),
        # explicit, as the API run has it: left unset, the CLI fits the EMA to the run length
        *("--set", f"train.ema_decay={run_config().train.ema_decay}"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for extra in (["--max-steps", str(HALF)], []):
        done = subprocess.run(cmd + extra, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr
    for name in ("model", "ema"):
        assert_same(weights(tmp_path / "run", name), weights(runs / "one", name))


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(runs, tmp_path, slow_selected):
    train(run_config("ddp", compile=True), runs / "latents", tmp_path / "run", progress=False)
    for name in ("model", "ema"):
        assert_same(weights(tmp_path / "run", name), weights(runs / "one", name), atol=1e-4)
