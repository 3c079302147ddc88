"""SFD training on pre-computed latents: seeded, exactly resumable, single- or multi-process.

One owner of a run's state: :class:`Trainer` holds the model, EMA, optimizer and data, and the
loop's own state (the step, the loss-spike window, the counts of skipped updates, spikes and
rollbacks). Its loop reads top to bottom: fetch the step's batches (:class:`Prefetch`), run the
step (:class:`~sfd.training.step.TrainStep`, a function of the parameters it updates and the
batches that returns a :class:`~sfd.training.step.StepResult`), count what it did, roll back
on a loss spike, log, checkpoint.

One step: the global batch of ``(seed, step)`` (see :mod:`sfd.training.batches`) is split over
ranks and micro-batches; each micro-batch's loss is scaled so the summed gradient is the
gradient of the global-batch mean; then AdamW (optionally clipped), EMA. A step whose loss or
gradient is not finite is skipped on every rank (and counted). Checkpoints hold model, EMA,
optimizer and the loop's state, so resuming from step k gives bit-identical parameters to an
uninterrupted run; :mod:`sfd.training.run_checkpoint` writes and reads them (full-state, or
sharded under FSDP). Data parallelism (DDP or FSDP2, ``train.parallel``) lives in
:mod:`sfd.training.parallel`; only rank 0 logs and writes the run's files.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sfd import distributed as D
from sfd.config import Config
from sfd.data.latent_shards import LatentDataset
from sfd.errors import DivergedError
from sfd.latents.repa_targets import repa_targets
from sfd.locks import DirLock
from sfd.model import LightningDiT
from sfd.training import parallel as P
from sfd.training.batches import Batch, EpochOrder, Prefetch, global_batch
from sfd.training.checkpoint import list_checkpoints, read_checkpoint
from sfd.training.ema import make_ema
from sfd.training.integrity import verify_data
from sfd.training.loggers import make_tracker
from sfd.training.logs import MetricLog
from sfd.training.run_checkpoint import load_run_checkpoint, save_run_checkpoint
from sfd.training.run_dir import check_data, micro_batch_size, prepare_run_dir
from sfd.training.schedule_file import with_schedule_file
from sfd.training.step import StepResult, TrainStep, make_optimizer, stats_dict

log = logging.getLogger("sfd.train")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    skipped_steps: int = 0
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Holds the model, EMA, optimizer and data of one run, and the loop's state; :meth:`run`
    trains."""

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
        uses_repa = cfg.model.repa_dim > 0 and cfg.flow.repa_weight > 0
        targets = repa_targets(self.dataset, self.device) if uses_repa else None
        self.step_fn = TrainStep(
            cfg, self.model, self.ema, self.optimizer, self.device, repa_targets=targets
        )
        # The loop's state (a checkpoint stores it: see state()).
        self.step = 0
        self.loss_window: deque[float] = deque(maxlen=cfg.train.spike_window)
        self.spikes, self.rollbacks, self.skip_until = 0, 0, 0
        # Non-finite updates skipped: counted before the last restore + since (on the device,
        # so the fused step never waits for it); ``_warned``: how many were logged.
        self._skipped_before, self._warned = 0, 0
        self._skipped_since = torch.zeros((), device=self.device)

    def _repa_unused(self) -> bool:
        """Whether the model has a REPA projector that the loss never uses (no gradients)."""
        uses = self.cfg.flow.repa_weight > 0 and self.dataset.meta["repa_dim"] > 0
        return self.model.repa_projector is not None and not uses

    @property
    def skipped(self) -> int:
        """Updates skipped for a non-finite loss or gradient (reading it syncs the device)."""
        return self._skipped_before + int(self._skipped_since.item())

    def resume(self) -> None:
        """Restore the newest checkpoint of the run directory, if any (weights, optimizer and
        the loop's state)."""
        found = list_checkpoints(self.run_dir)
        if not found:
            return
        ckpt = read_checkpoint(found[-1])
        sharded = self.parallel == "fsdp"
        state = load_run_checkpoint(
            ckpt.path, self.model, self.ema, self.optimizer, sharded=sharded
        )
        self.load_state(state)
        self.step = ckpt.step
        log.info("resumed from %s (step %d)", ckpt.path, ckpt.step)

    def save(self) -> None:
        """Checkpoint this step (sharded for FSDP, full-state otherwise; every rank calls)."""
        save_run_checkpoint(
            self.run_dir,
            step=self.step,
            config=self.cfg,
            stats=self.dataset.stats,
            model=self.model,
            ema=self.ema,
            optimizer=self.optimizer,
            trainer_state=self.state(),
            sharded=self.parallel == "fsdp",
            keep_last=self.cfg.train.keep_last,
        )

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
            self._loop(end, metrics, bar)
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
        return TrainResult(self.run_dir, self.step, self.skipped, self.history)

    def _loop(self, end: int, metrics: MetricLog | None, bar: tqdm) -> None:
        """Steps until ``end``: fetch, step, count, maybe roll back, log, maybe checkpoint."""
        cfg = self.cfg.train
        with Prefetch(self.micro_batches, ahead=cfg.num_workers) as loader:
            t0, done = time.perf_counter(), 0
            while self.step < end:
                step = self.step
                # After a rollback the batches up to the spike are skipped (no step runs).
                batches = loader.take(step, end, first=self.skip_until)
                result = None
                if batches is not None:
                    limit = self._spike_limit()
                    result = self.step_fn(self.module, batches, step=step, spike_limit=limit)
                    self._count(step, result)
                    if result.spike and cfg.spike_rollback:
                        self._rollback(step + 1)
                        loader.clear()
                        continue
                self.step += 1
                done += 1
                bar.update(1)
                if result is not None and (self.step % cfg.log_every == 0 or self.step == end):
                    self._log(result.stats, done, t0, metrics, bar)
                    t0, done = time.perf_counter(), 0
                if self.step % cfg.ckpt_every == 0 or self.step == end:
                    self.save()

    def _count(self, step: int, result: StepResult) -> None:
        """What the step did: a loss spike, or a skipped non-finite update (counted on the
        device), or an applied update's loss for the spike window (when it was read)."""
        if result.spike:
            self.spikes += 1
            if D.is_main():
                log.warning("step %d: loss spike %.4g; update skipped", step, result.loss)
            return
        self._skipped_since += ~result.applied
        if result.loss is not None:
            self.loss_window.append(result.loss)

    def _log(self, stats: torch.Tensor, done: int, t0: float, metrics, bar) -> None:
        """Log this step's statistics and the throughput of the ``done`` steps since ``t0``."""
        out = stats_dict(stats)  # the loop's host sync (each step only for spikes)
        self._warn_skipped()
        elapsed = time.perf_counter() - t0
        out["img_per_s"] = done * self.cfg.train.global_batch_size / max(elapsed, 1e-9)
        out["spikes"], out["rollbacks"] = self.spikes, self.rollbacks
        self.history.append({"step": self.step, **out})
        if metrics is not None:
            metrics.write(self.step, out)
        bar.set_postfix(loss=f"{out['loss']:.4f}", img_s=f"{out['img_per_s']:.1f}")

    def _warn_skipped(self) -> None:
        """Log the non-finite steps skipped since the last log (read at log time, no sync)."""
        total = self.skipped
        new, self._warned = total - self._warned, total
        if new and D.is_main() and self.step_fn.fused:
            log.warning("%d non-finite update(s) skipped up to step %d", new, self.step)

    # -- loss spikes (train.spike_factor > 0) -----------------------------------------------

    def _spike_limit(self) -> float | None:
        """The loss above which this step's update is refused: ``spike_factor`` x the median of
        the last ``spike_window`` losses of applied updates (``inf`` until the window is full);
        ``None`` with detection off, so the step reads no loss on the host."""
        cfg = self.cfg.train
        if cfg.spike_factor <= 0:
            return None
        window = self.loss_window
        if len(window) < cfg.spike_window:
            return math.inf
        median = sorted(window)[len(window) // 2]
        return cfg.spike_factor * median

    def _rollback(self, spike_step: int) -> None:
        """Back to the last checkpoint; the steps up to ``spike_step`` are then skipped."""
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
        self.rollbacks, self.spikes, skipped, self._warned = counts
        self._set_skipped(skipped)
        if D.is_main():
            log.warning(
                "loss spike at step %d: rolled back to step %d, skipping its batches up to step %d",
                spike_step,
                self.step,
                spike_step,
            )

    # -- what a checkpoint stores besides the weights ---------------------------------------

    def state(self) -> dict:
        """The loop's state, so a resumed run decides as this one (a device sync: the count
        of skipped updates)."""
        return {
            "loss_window": list(self.loss_window),
            "spikes": self.spikes,
            "rollbacks": self.rollbacks,
            "skip_until": self.skip_until,
            "skipped": self.skipped,
        }

    def load_state(self, state: dict) -> None:
        self.loss_window = deque(state.get("loss_window", []), maxlen=self.cfg.train.spike_window)
        self.spikes = int(state.get("spikes", 0))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.skip_until = int(state.get("skip_until", 0))
        self._set_skipped(int(state.get("skipped", 0)))
        self._warned = self._skipped_before  # already warned about

    def _set_skipped(self, count: int) -> None:
        self._skipped_before = count
        self._skipped_since.zero_()


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
