"""The autoencoder trainers' shared parts: the fit loop (lr, step, log, resume state) and
:class:`TrainState`, the mid-run state a rerun resumes from bit for bit.

:func:`fit` is the loop both :func:`sfd.training.semvae_fit.train_semvae` and
:func:`sfd.training.texture_vae.train_texture_vae` run; each passes its own ``step_fn`` (data,
noise and loss terms of one step, drawing its randomness in its own fixed order).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from sfd.data.tensor_files import atomic_save_safetensors, atomic_write_json, load_safetensors
from sfd.errors import write_failed
from sfd.locks import refuse_other_settings
from sfd.training.checkpoint import load_optimizer_tensors, optimizer_tensors
from sfd.training.run_dir import AUTOENCODER_RESUMABLE

log = logging.getLogger(__name__)


class TrainState:
    """Mid-run state of an autoencoder training in ``OUT/.train_state`` (model, optimizer,
    generator, step, history), written atomically; a rerun with the same settings resumes
    from it bit for bit, and it is removed once the outputs are written."""

    RESUMABLE = AUTOENCODER_RESUMABLE  # settings a rerun may change (sfd.training.run_dir)

    def __init__(self, out_dir: str | Path, config) -> None:
        self.dir = Path(out_dir) / ".train_state"
        settings = json.loads(json.dumps(asdict(config)))
        self.settings = {k: v for k, v in settings.items() if k not in self.RESUMABLE}
        self.generator_state: torch.Tensor | None = None

    def load(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list]:
        """(first step, history) of the saved state, or (0, []); fills model and optimizer."""
        for tmp in self.dir.parent.glob(".train_state.tmp*"):  # a save cut by a kill
            shutil.rmtree(tmp, ignore_errors=True)
        old = self.dir.with_name(".train_state.old")
        if not self.dir.exists() and (old / "state.json").exists():
            old.rename(self.dir)  # killed between the two renames of save()
        info_path = self.dir / "state.json"
        if not info_path.exists():
            return 0, []
        info = json.loads(info_path.read_text())
        what, hint = "a training run", "use a new --out or the same settings"
        refuse_other_settings(self.dir.parent, what, info["settings"], self.settings, hint)
        model.load_state_dict(load_safetensors(self.dir / "model.safetensors"), strict=True)
        load_optimizer_tensors(opt, self.dir / "optimizer.safetensors")
        self.generator_state = torch.tensor(info["generator"], dtype=torch.uint8)
        log.info("resuming from %s (step %d)", self.dir, info["step"])
        return int(info["step"]), info["history"]

    def save(self, step, model, opt, history, generator: torch.Generator | None = None) -> None:
        """Write the state of ``step`` atomically (a temporary directory, then two renames)."""
        tmp = self.dir.with_name(f".train_state.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            atomic_save_safetensors(tmp / "model.safetensors", model.state_dict())
            tensors, groups = optimizer_tensors(opt)
            atomic_save_safetensors(
                tmp / "optimizer.safetensors", tensors, {"param_groups": groups}
            )
            state = generator.get_state().tolist() if generator is not None else []
            info = {"step": step, "settings": self.settings, "generator": state}
            atomic_write_json(tmp / "state.json", {**info, "history": history})
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(err, OSError):
                raise
            kept = "the last saved state is intact; nothing partial was left; a rerun resumes"
            raise write_failed(self.dir, err, kept) from err
        old = self.dir.with_name(".train_state.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.dir.exists():
            self.dir.rename(old)
        os.replace(tmp, self.dir)
        shutil.rmtree(old, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def fit(
    name: str,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    step_fn: Callable[[int], dict[str, torch.Tensor]],
    lr_fn: Callable[[int], float],
    config,
    resume: TrainState,
    first: int,
    history: list,
    generator: torch.Generator | None = None,
) -> list:
    """Steps ``[first, config.total_steps)``: set the lr, ``step_fn(step)``'s ``"loss"``
    backward, an optimizer step; log every ``config.log_every`` steps (and the last) into
    ``history``; save the resume state every ``config.ckpt_every`` steps and at the end. A
    progress bar on stderr shows the steps, images per second and the time left."""
    # closed on any exit, so an error line after a failure starts a line of its own
    with tqdm(total=config.total_steps, initial=first, desc=name, unit="step", leave=False) as bar:
        t0 = time.perf_counter()
        for step in range(first, config.total_steps):
            if step > first and step % config.ckpt_every == 0:
                resume.save(step, model, opt, history, generator)
            for group in opt.param_groups:
                group["lr"] = lr_fn(step)
            terms = step_fn(step)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            bar.update(1)
            if step % config.log_every == 0 or step == config.total_steps - 1:
                row = {"step": step, **{k: round(v.item(), 6) for k, v in terms.items()}}
                history.append(row)
                log.info("%s %s", name, row)
                rate = (step + 1 - first) * config.batch_size / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{row['loss']:.4g}", img_s=f"{rate:.1f}")
    if first < config.total_steps:
        resume.save(config.total_steps, model, opt, history, generator)
    return history
