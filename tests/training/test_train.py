import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import sfd
from sfd.data.latent_shards import LatentDataset
from sfd.training.batches import EpochOrder, global_batch
from sfd.training.checkpoint import list_checkpoints, load_weights
from sfd.training.loop import Trainer, train
from tests.helpers import tiny_config, write_synthetic_latents


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    d = tmp_path_factory.mktemp("latents")
    return write_synthetic_latents(d, tiny_config(), count=24, shard_size=10)


def tensors(path):
    return load_file(str(path))


def final_weights_of_both(base, train_changes: dict, latents, tmp_path):
    """Train ``base`` and ``base`` with ``train_changes``; the final model weights of each."""
    other = dataclasses.replace(base, train=dataclasses.replace(base.train, **train_changes))
    last = f"checkpoints/step-{base.train.total_steps:07d}/model.safetensors"
    weights = []
    for name, cfg in (("base", base), ("other", other)):
        train(cfg, latents, tmp_path / name, progress=False)
        weights.append(tensors(tmp_path / name / last))
    return weights


def test_resume_is_exact(latents, tmp_path):
    cfg = tiny_config(total_steps=8, ckpt_every=100, log_every=2, global_batch_size=8)
    train(cfg, latents, tmp_path / "a", progress=False)
    train(cfg, latents, tmp_path / "b", progress=False, max_steps=4)
    train(cfg, latents, tmp_path / "b", progress=False)
    for name in ("model", "ema", "optimizer"):
        a = tensors(tmp_path / "a/checkpoints/step-0000008" / f"{name}.safetensors")
        b = tensors(tmp_path / "b/checkpoints/step-0000008" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    steps = [
        int(line.split(",")[0].split(":")[1])
        for line in (tmp_path / "b/log.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4, 6, 8]


def test_grad_accumulation_matches_one_big_batch(latents, tmp_path):
    base = tiny_config(total_steps=3, global_batch_size=8, log_every=1)
    a, b = final_weights_of_both(base, {"grad_accum_steps": 4}, latents, tmp_path)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=1e-5)


def test_global_batch_rows_do_not_depend_on_slicing(latents):
    cfg = tiny_config(global_batch_size=8)
    ds = LatentDataset(latents)
    order = EpochOrder(len(ds), 0)
    full = global_batch(ds, order, cfg, step=5)
    part = global_batch(ds, order, cfg, step=5, lo=3, hi=7)
    for name in ("x1", "y", "x0", "base_time", "repa"):
        assert torch.equal(getattr(full, name)[3:7], getattr(part, name)), name
    other = global_batch(ds, order, cfg, step=6)
    assert not torch.equal(full.x0, other.x0)


def test_epoch_order_is_a_permutation_per_epoch():
    order = EpochOrder(10, seed=3)
    first = order.indices(0, 10)
    assert sorted(first.tolist()) == list(range(10))
    assert sorted(order.indices(10, 10).tolist()) == list(range(10))
    assert np.array_equal(order.indices(4, 8), np.concatenate([first[4:], order.indices(10, 2)]))


def test_loading_is_strict_with_clear_errors(latents, tmp_path):
    cfg = tiny_config(total_steps=1, global_batch_size=4)
    train(cfg, latents, tmp_path / "run", progress=False)
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    loaded = sfd.load_model(tmp_path / "run")
    model = loaded.model
    assert not model.training and loaded.config == cfg and loaded.step == 1
    state = tensors(ckpt / "ema.safetensors")
    state.pop("final_layer.linear.bias")
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="missing keys \\['final_layer.linear.bias'\\]"):
        load_weights(model, tmp_path / "missing.safetensors")
    state = tensors(ckpt / "ema.safetensors")
    state["final_layer.linear.bias"] = torch.zeros(7)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match="has shape \\(7,\\)"):
        load_weights(model, tmp_path / "shape.safetensors")
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        sfd.load_model(tmp_path)


def test_rerun_with_another_config_is_refused(latents, tmp_path):
    cfg = tiny_config(total_steps=1, global_batch_size=4)
    train(cfg, latents, tmp_path / "run", progress=False)
    other = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, delta_t=0.5))
    with pytest.raises(ValueError, match="flow.delta_t: 0.3 -> 0.5"):
        train(other, latents, tmp_path / "run", progress=False)
    longer = tiny_config(total_steps=2, global_batch_size=4)
    assert train(longer, latents, tmp_path / "run", progress=False).step == 2
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000001", "step-0000002"]


def test_data_mismatch_is_a_clear_error(latents, tmp_path):
    cfg = tiny_config()
    bad = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=7))
    with pytest.raises(ValueError, match="latent data has 10 classes"):
        Trainer(bad, latents, tmp_path)


def test_loader_threads_do_not_change_the_run(latents, tmp_path):
    base = tiny_config(total_steps=5, global_batch_size=8, log_every=1)
    a, b = final_weights_of_both(base, {"num_workers": 3}, latents, tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_config_the_data_refuses_writes_nothing(latents, tmp_path):
    cfg = tiny_config()
    bad = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=7))
    with pytest.raises(ValueError, match="latent data has 10 classes"):
        train(bad, latents, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
