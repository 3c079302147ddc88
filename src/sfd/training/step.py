"""One optimisation step: micro-batch losses and backward, gradient norm, AdamW, EMA.

Shared by :class:`sfd.training.loop.Trainer` and ``sfd bench`` (the benchmark times exactly the
step that trains). With ``train.fused_adamw`` (the default) the step never waits on the device:

- the loss terms, the gradient norm and the non-finite flag stay device tensors, read only when
  a step is logged (the loop's logging sync, nothing else does);
- a non-finite step is skipped inside the fused AdamW kernel (its ``found_inf`` input: moments,
  weights and step count stay as they were) and by a zero EMA weight (``lerp`` by 0 is exact);
- AdamW is the fused kernel (one pass over each parameter, CPU and CUDA) and the EMA one
  ``_foreach_lerp_``.

``train.fused_adamw=false`` gives the for-loop AdamW of torch's default on CPU and a host-side
skip, i.e. the update of sfd before the fused step bit for bit.

The step holds no state of the run: the parameters, EMA and optimizer it updates in place are
the run's, and everything the loop decides from (the statistics, whether the update was applied,
a loss spike) comes back in a :class:`StepResult`. A ``spike_limit`` (the loop's loss-spike
threshold, ``train.spike_factor > 0``) makes the step read the loss on the host: one sync per
step, only when that detection is on; a finite loss above it is refused (no AdamW, no EMA).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sfd import distributed as D
from sfd.config import Config, TrainConfig
from sfd.latents.composite import LatentLayout
from sfd.training import parallel as P
from sfd.training.batches import Batch
from sfd.training.ema import update_ema
from sfd.training.loss import flow_loss

log = logging.getLogger("sfd.train")

STAT_NAMES = ("loss", "loss_vel", "loss_cos", "loss_repa", "grad_norm")
FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(
    params: list[nn.Parameter], t: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW of the config: the fused kernel where ``fused_adamw`` and the device has one."""
    return torch.optim.AdamW(
        params,
        lr=t.lr,
        betas=(t.beta1, t.beta2),
        weight_decay=t.weight_decay,
        fused=t.fused_adamw and device.type in FUSED_DEVICES,
    )


@dataclass(frozen=True)
class StepResult:
    """What one step did.

    ``stats``: a device tensor (5,) in the order of :data:`STAT_NAMES`, averaged over ranks
    (:func:`stats_dict` reads it). ``applied``: a 0-dim bool device tensor, whether AdamW and the
    EMA moved (reading it waits for the device). ``spike``: the update was refused because the
    loss was above the given ``spike_limit``. ``loss``: the loss as read on the host for that
    check, when it and every statistic were finite (``None`` without a limit).
    """

    stats: torch.Tensor
    applied: torch.Tensor
    spike: bool = False
    loss: float | None = None


class TrainStep:
    """``step(module, batches)``: one update of ``model`` (and ``ema``) -> :class:`StepResult`.

    ``module`` is what the forward calls (``model`` itself, or its DDP wrapper); ``repa_targets``
    turns stored REPA targets into targets on the device (:mod:`sfd.latents.repa_targets`;
    ``None``: a batch holds the targets themselves).
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        ema: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        repa_targets: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.cfg, self.model, self.ema, self.optimizer = cfg, model, ema, optimizer
        self.device = torch.device(device)
        self.layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fused = any(g.get("fused") for g in optimizer.param_groups)
        self.repa_targets = repa_targets  # outside autocast: the targets are fp32
        if cfg.train.compile and cfg.train.compile_scope == "loss":
            self.loss = torch.compile(self.loss)  # forward + loss as one region (and backward)

    def __call__(
        self,
        module: nn.Module,
        batches: list[Batch],
        *,
        step: int = -1,
        spike_limit: float | None = None,
    ) -> StepResult:
        """Forward/backward of every micro-batch (gradients synced on the last), then update.
        ``step`` only names the step in warnings."""
        accum = len(batches)
        sums = torch.zeros(4, device=self.device)
        for a, cpu_batch in enumerate(batches):
            with P.grad_sync(module, enabled=a == accum - 1):
                loss, terms = self.loss(module, cpu_batch.to(self.device))
                (loss / accum).backward()
            sums += terms / accum
        return self.update(sums, step=step, spike_limit=spike_limit)

    def loss(self, module: nn.Module, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch loss and its (total, vel, cos, repa) means, detached in fp32."""
        cfg = self.cfg
        bf16 = cfg.train.precision == "bf16"
        target = b.repa
        if target is not None and self.repa_targets is not None:
            target = self.repa_targets(target)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = flow_loss(
                module,
                b.x1,
                b.y,
                x0=b.x0,
                base_time=b.base_time,
                flow=cfg.flow,
                layout=self.layout,
                repa_target=target,
            )
            loss = terms.total(cfg.flow.cos_weight)
        repa = terms.repa.mean() if terms.repa is not None else torch.zeros_like(loss)
        parts = torch.stack([loss, terms.vel.mean(), terms.cos.mean(), repa])
        return loss, parts.detach().float()

    def update(
        self, sums: torch.Tensor, *, step: int = -1, spike_limit: float | None = None
    ) -> StepResult:
        """Clip, then AdamW + EMA unless any rank saw a non-finite loss or gradient, or the
        loss is above ``spike_limit``; the gradients are cleared either way."""
        t = self.cfg.train
        params = [p for p in self.params if p.grad is not None]
        gnorm = P.clip_grad_norm(params, t.grad_clip)
        # Losses are per rank, the norm already global: after the mean all ranks agree.
        stats = D.all_reduce_mean(torch.cat([sums, gnorm.reshape(1).float().to(sums.device)]))
        loss = None
        if spike_limit is not None:  # a host sync; stats are global: all ranks agree
            values = stats.tolist()
            loss = values[0] if all(map(math.isfinite, values)) else None
        spike = loss is not None and loss > spike_limit
        if spike:
            applied = torch.zeros((), dtype=torch.bool, device=stats.device)  # no AdamW, no EMA
        elif self.fused and t.skip_nonfinite:
            bad = (~torch.isfinite(stats).all()).float()  # 0-dim, stays on the device
            self.optimizer.found_inf = bad
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
            keep = 1.0 - bad
            update_ema(self.ema, self.model, t.ema_decay, keep=keep)
            applied = keep.bool()
        else:
            applied = torch.isfinite(stats).all()
            if not t.skip_nonfinite or bool(applied):
                self.optimizer.step()
                update_ema(self.ema, self.model, t.ema_decay)
                applied = torch.ones((), dtype=torch.bool, device=stats.device)
            elif D.is_main():
                log.warning("step %d: non-finite loss or gradient; update skipped", step)
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(stats, applied, spike, loss)


def stats_dict(stats: torch.Tensor) -> dict[str, float]:
    """The step statistics as floats (one host sync)."""
    return dict(zip(STAT_NAMES, stats.tolist(), strict=True))
