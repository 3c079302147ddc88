"""SFD training on pre-computed latents: seeded, exactly resumable, single- or multi-process.

One step: the global batch of ``(seed, step)`` (see :mod:`sfd.training.batches`) is split over
ranks and micro-batches; each micro-batch's loss is scaled so the summed gradient is the
gradient of the global-batch mean; then AdamW (optionally clipped), EMA. A step whose loss or
gradient is not finite is skipped on every rank (and counted). Checkpoints hold model, EMA and
optimizer, so resuming from step k gives bit-identical parameters to an uninterrupted run.
Data parallelism (DDP or FSDP2, ``train.parallel``) and sharded checkpoints live in
:mod:`sfd.training.parallel`; only rank 0 logs and writes the run's files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from sfd import distributed as D
from sfd.config import Config
from sfd.data.latent_shards import LatentDataset
from sfd.data.tensor_files import safetensors_metadata
from sfd.errors import DivergedError, WriteError
from sfd.latents.repa_targets import repa_targets
from sfd.locks import DirLock
from sfd.model import LightningDiT
from sfd.training import parallel as P
from sfd.training.batches import Batch, EpochOrder, global_batch
from sfd.training.checkpoint import (
    list_checkpoints,
    load_optimizer_tensors,
    load_weights,
    prune_checkpoints,
    read_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from sfd.training.ema import make_ema
from sfd.training.integrity import verify_data
from sfd.training.loggers import make_tracker
from sfd.training.logs import MetricLog
from sfd.training.run_dir import check_data, micro_batch_size, prepare_run_dir
from sfd.training.schedule_file import with_schedule_file
from sfd.training.step import TrainStep, make_optimizer, stats_dict

log = logging.getLogger("sfd.train")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    skipped_steps: int = 0
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Holds the model, EMA, optimizer and data of one run; :meth:`run` trains."""

    def __init__(
        self,
        cfg: Config,
        data_dir: str | Path,
        run_dir: str | Path,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), torch.device(device)
        self.rank, self.world = D.rank(), D.world_size()
        self.micro = micro_batch_size(cfg, self.world)
        self.parallel = P.parallel_mode(cfg)
        self.dataset = LatentDataset(data_dir)
        check_data(self.dataset, cfg)
        self.order = EpochOrder(len(self.dataset), cfg.train.seed)
        torch.manual_seed(cfg.train.seed)  # only weight init draws from the global RNG
        self.model = LightningDiT.from_configs(cfg.model, cfg.latent).to(self.device)
        self.model.gradient_checkpointing = cfg.train.activation_checkpointing
        self.ema = make_ema(self.model)
        # DDP/FSDP wrapping before the optimizer: FSDP replaces parameters by sharded DTensors.
        self.module = P.prepare(
            self.model, self.ema, cfg, self.device, find_unused=self._repa_unused()
        )
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(trained, cfg.train, self.device)
        self.step_fn = TrainStep(cfg, self.model, self.ema, self.optimizer, self.device)
        if cfg.model.repa_dim > 0 and cfg.flow.repa_weight > 0:
            self.step_fn.repa_targets = repa_targets(self.dataset, self.device)
        self.step, self._warned = 0, 0
        self.loss_window: deque[float] = deque(maxlen=cfg.train.spike_window)
        self.spikes, self.rollbacks, self.skip_until, self.rollback_pending = 0, 0, 0, False
        if cfg.train.spike_factor > 0:  # reads the loss on the host: a sync per step
            self.step_fn.gate = self._spike_gate

    def _repa_unused(self) -> bool:
        """Whether the model has a REPA projector that the loss never uses (no gradients)."""
        uses = self.cfg.flow.repa_weight > 0 and self.dataset.meta["repa_dim"] > 0
        return self.model.repa_projector is not None and not uses

    def resume(self) -> None:
        found = list_checkpoints(self.run_dir)
        if not found:
            return
        ckpt = read_checkpoint(found[-1])
        verify_checkpoint(ckpt.path)  # every file, before anything is loaded
        if P.is_sharded_checkpoint(ckpt.path):
            P.load_sharded(ckpt.path, self.model, self.ema, self.optimizer)
        elif self.parallel == "fsdp":
            raise ValueError(
                f"{ckpt.path} is a full-state (DDP) checkpoint; resume it with train.parallel=ddp"
            )
        else:
            load_weights(self.model, ckpt.path / "model.safetensors", verify=False)
            load_weights(self.ema, ckpt.path / "ema.safetensors", verify=False)
            opt = ckpt.path / "optimizer.safetensors"
            load_optimizer_tensors(self.optimizer, opt, verify=False)
            meta = safetensors_metadata(opt, "optimizer state")
            self.load_state(json.loads(meta.get("trainer_state", "{}")))
        self.step = ckpt.step
        log.info("resumed from %s (step %d)", ckpt.path, ckpt.step)

    def micro_batches(self, step: int) -> list[Batch]:
        """This rank's micro-batches of the global batch of ``step`` (CPU; pinned for CUDA)."""
        base = self.rank * self.micro * self.cfg.train.grad_accum_steps
        batches = [
            global_batch(
                self.dataset,
                self.order,
                self.cfg,
                step,
                base + a * self.micro,
                base + (a + 1) * self.micro,
            )
            for a in range(self.cfg.train.grad_accum_steps)
        ]
        return [P.pin(b) for b in batches] if self.device.type == "cuda" else batches

    @property
    def skipped(self) -> int:
        """Updates skipped for a non-finite loss or gradient (reading it syncs the device)."""
        return self.step_fn.skipped

    @skipped.setter
    def skipped(self, count: int) -> None:
        self.step_fn.skipped = count

    def train_step(self, module: nn.Module, batches: list[Batch]) -> torch.Tensor:
        """One update (see :class:`~sfd.training.step.TrainStep`); statistics on the device."""
        self.step_fn.last_step = self.step
        return self.step_fn(module, batches)

    def _apply_update(self, sums: torch.Tensor) -> torch.Tensor:
        """Clip, then AdamW + EMA unless any rank saw a non-finite loss or gradient."""
        return self.step_fn.update(sums)

    def save(self) -> None:
        """Checkpoint: sharded (all ranks) for FSDP, safetensors from rank 0 otherwise."""
        state = dict(
            step=self.step,
            config=self.cfg,
            stats=self.dataset.stats,
            ema=self.ema,
            model=self.model,
            optimizer=self.optimizer,
        )
        if self.parallel == "fsdp":
            P.save_sharded(self.run_dir, **state)
        else:
            error = None
            if D.is_main():
                try:
                    save_checkpoint(self.run_dir, **state, trainer_state=self.state())
                except WriteError as err:
                    error = err
            error = D.broadcast_object(error)  # every rank stops alike on a failed write
            if error is not None:
                raise error
        if D.is_main():
            prune_checkpoints(self.run_dir, self.cfg.train.keep_last)
        D.barrier()

    def run(self, max_steps: int | None = None, progress: bool = True) -> TrainResult:
        """Train until ``train.total_steps`` (or ``max_steps`` more steps), checkpointing."""
        cfg = self.cfg.train
        end = cfg.total_steps if max_steps is None else min(cfg.total_steps, self.step + max_steps)
        self.module.train()
        metrics = None
        if D.is_main():
            tracker = make_tracker(self.cfg.train.logger, self.run_dir, self.cfg, self.step)
            metrics = MetricLog(self.run_dir, self.step, tracker)
        self.history: list[dict] = []
        bar = tqdm(
            total=end,
            initial=self.step,
            disable=not (progress and D.is_main()),
            desc="train",
            unit="step",
        )
        try:
            self._steps(end, metrics, bar)
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
        return TrainResult(self.run_dir, self.step, self.skipped, self.history)

    def _steps(self, end: int, metrics: MetricLog | None, bar) -> None:
        cfg = self.cfg.train
        # Batches are pure functions of the step, so loader threads may run ahead in any order.
        ahead = max(1, cfg.num_workers)
        pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="sfd-loader")
        pending = {s: pool.submit(self.micro_batches, s) for s in range(self.step, end)[:ahead]}
        t0, done = time.perf_counter(), 0
        try:
            while self.step < end:
                step = self.step
                batches = pending.pop(step).result() if step in pending else None
                for s in range(step + 1, min(step + 1 + ahead, end)):
                    if s not in pending and s > self.skip_until:
                        pending[s] = pool.submit(self.micro_batches, s)
                if step < self.skip_until:  # after a rollback: the batches up to the spike
                    stats = None
                else:
                    stats = self.train_step(self.module, batches or self.micro_batches(step))
                    if self.rollback_pending:
                        self._rollback(step + 1)
                        pending.clear()
                        continue
                self.step += 1
                done += 1
                bar.update(1)
                if stats is not None and (self.step % cfg.log_every == 0 or self.step == end):
                    out = stats_dict(stats)  # the loop's host sync (each step only for spikes)
                    self._warn_skipped()
                    elapsed = time.perf_counter() - t0
                    out["img_per_s"] = done * cfg.global_batch_size / max(elapsed, 1e-9)
                    out["spikes"], out["rollbacks"] = self.spikes, self.rollbacks
                    self.history.append({"step": self.step, **out})
                    if metrics is not None:
                        metrics.write(self.step, out)
                    bar.set_postfix(loss=f"{out['loss']:.4f}", img_s=f"{out['img_per_s']:.1f}")
                    t0, done = time.perf_counter(), 0
                if self.step % cfg.ckpt_every == 0 or self.step == end:
                    self.save()
        finally:
            pool.shutdown(cancel_futures=True)

    def _warn_skipped(self) -> None:
        """Log the non-finite steps skipped since the last log (read at log time, no sync)."""
        total = self.skipped
        new, self._warned = total - self._warned, total
        if new and D.is_main() and self.step_fn.fused:
            log.warning("%d non-finite update(s) skipped up to step %d", new, self.step)

    # -- loss spikes (train.spike_factor > 0) -----------------------------------------------

    def _spike_gate(self, stats: torch.Tensor) -> bool:
        """:attr:`TrainStep.gate`: whether to skip the update for a loss spike (one host sync).
        Finite losses of applied updates go into the window; a non-finite step is left to the
        step's own skip."""
        loss, *rest = stats.tolist()
        finite = all(map(math.isfinite, (loss, *rest)))
        if finite and self._is_spike(loss):
            self.spikes += 1
            self.rollback_pending = self.cfg.train.spike_rollback
            if D.is_main():
                log.warning("step %d: loss spike %.4g; update skipped", self.step, loss)
            return True
        if finite:
            self.loss_window.append(loss)
        return False

    def _is_spike(self, loss: float) -> bool:
        """Whether ``loss`` is above ``spike_factor`` x the median of the recent losses (the
        window is the last ``spike_window`` losses of applied updates; full before it judges)."""
        cfg = self.cfg.train
        window = self.loss_window
        if cfg.spike_factor <= 0 or len(window) < cfg.spike_window:
            return False
        median = sorted(window)[len(window) // 2]
        return loss > cfg.spike_factor * median

    def _rollback(self, spike_step: int) -> None:
        """Back to the last checkpoint; the steps up to ``spike_step`` are then skipped."""
        self.rollback_pending = False
        self.rollbacks += 1
        if self.rollbacks > self.cfg.train.max_rollbacks:
            raise DivergedError(
                f"loss spike at step {spike_step} after {self.rollbacks - 1} rollbacks "
                f"(train.max_rollbacks={self.cfg.train.max_rollbacks}): training diverges; "
                f"lower train.lr or raise train.spike_factor. Checkpoints in {self.run_dir}"
            )
        if not list_checkpoints(self.run_dir):
            log.warning("loss spike at step %d: no checkpoint to roll back to", spike_step)
            self.step = spike_step
            return
        counts = self.rollbacks, self.spikes, self.skipped, self._warned
        self.resume()  # restores the checkpoint's loss window; the counts go on
        self.skip_until = spike_step
        self.rollbacks, self.spikes, self.skipped, self._warned = counts
        if D.is_main():
            log.warning(
                "loss spike at step %d: rolled back to step %d, skipping its batches up to step %d",
                spike_step,
                self.step,
                spike_step,
            )

    def state(self) -> dict:
        """What a checkpoint stores besides weights, so a resumed run decides as this one."""
        return {
            "loss_window": list(self.loss_window),
            "spikes": self.spikes,
            "rollbacks": self.rollbacks,
            "skip_until": self.skip_until,
            "skipped": self.skipped,  # a device sync, at checkpoint time only
        }

    def load_state(self, state: dict) -> None:
        self.loss_window = deque(state.get("loss_window", []), maxlen=self.cfg.train.spike_window)
        self.spikes = int(state.get("spikes", 0))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.skip_until = int(state.get("skip_until", 0))
        self.skipped = self._warned = int(state.get("skipped", 0))  # already warned about


def train(
    cfg: Config,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    resume: bool = True,
    max_steps: int | None = None,
    progress: bool = True,
    verify: bool = True,
) -> TrainResult:
    """Train (or resume) a run in ``run_dir`` on the latent shard set ``data_dir``.

    The set is checked against its recorded digests once per run before the first step
    (:func:`sfd.training.integrity.verify_data`; ``verify=False`` skips it, recorded in the run).

    Under ``torchrun`` call :func:`sfd.distributed.init_from_env` first (the CLI does) and pass
    its device; every rank runs this function. A ``flow.schedule_file`` is read into
    ``flow.schedule`` first, so the run's config and checkpoints carry the learned schedule.
    """
    cfg = with_schedule_file(cfg)
    run_dir = Path(run_dir)
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls (process state: entry point)
    lock = DirLock(run_dir) if D.is_main() else None
    error = prepare_run_dir(run_dir, cfg, resume, data_dir, lock) if lock else None
    error = D.broadcast_object(error)  # every rank fails alike (no rank hangs in a barrier)
    if error:
        raise error
    try:
        verify_data(data_dir, run_dir, verify=verify, progress=progress)
        trainer = Trainer(cfg, data_dir, run_dir, device)
        if resume:
            trainer.resume()
        return trainer.run(max_steps=max_steps, progress=progress)
    finally:
        if lock is not None:
            lock.release()
