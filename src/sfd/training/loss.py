"""The SFD training objective: asynchronous flow matching + cosine velocity loss + REPA.

docs/METHOD.md §3 (Pan et al. 2026, Eq. for L_vel with β; LightningDiT's cosine loss; REPA, Yu et
al. 2025). Per sample::

    L_vel  = mean over (C, H, W) of [(v_tex - u_tex)^2, β (v_sem - u_sem)^2]
    L_cos  = mean over positions of 1 - cos(v, u) along the channel axis (all channels)
    L_REPA = λ mean over tokens of 1 - cos(h_proj, f)      ('cos'; also 'mse', 'cos_mse')
    L      = L_vel + w_cos L_cos + L_REPA

All randomness (base times, noise) comes in as arguments. The terms are returned per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sfd.config import FlowConfig
from sfd.flow.path import interpolate, velocity_target
from sfd.flow.run_path import path_of
from sfd.latents.composite import LatentLayout


@dataclass
class LossTerms:
    """Per-sample loss terms (B,) and the tensors they came from."""

    vel: torch.Tensor
    cos: torch.Tensor
    repa: torch.Tensor | None
    pred: torch.Tensor
    x_t: torch.Tensor
    target: torch.Tensor
    t_tex: torch.Tensor
    t_sem: torch.Tensor

    def total(self, cos_weight: float = 1.0) -> torch.Tensor:
        """Scalar loss: mean(vel) + w_cos mean(cos) + mean(repa) (REPA weight already inside)."""
        loss = self.vel.mean() + cos_weight * self.cos.mean()
        return loss + self.repa.mean() if self.repa is not None else loss


def repa_loss(proj: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-sample REPA loss between projected tokens (B, T, D) and target maps (B, D, H, W).

    A target map finer than the token grid (patch size > 1) is average-pooled onto it: a
    token covering p x p latent cells is aligned with the mean feature of those cells.
    """
    target = target.float()
    grid = math.isqrt(proj.shape[1])
    if target.ndim == 4 and target.shape[-1] != grid and grid * grid == proj.shape[1]:
        factor = target.shape[-1] // grid
        if factor * grid == target.shape[-1] and target.shape[-2] == target.shape[-1]:
            target = F.avg_pool2d(target, factor)
    feats = target.flatten(2).transpose(1, 2)  # (B, T, D), row-major tokens
    if feats.shape != proj.shape:
        raise ValueError(
            f"REPA target tokens {tuple(feats.shape)} do not match the projector "
            f"output {tuple(proj.shape)}"
        )
    cos = (1 - F.cosine_similarity(feats, proj, dim=-1)).mean(dim=1)
    if mode == "cos":
        return cos
    mse = (feats - proj).pow(2).mean(dim=(1, 2))
    if mode == "mse":
        return mse
    if mode == "cos_mse":
        return (cos + mse) / 2
    raise ValueError(f"repa mode must be 'cos', 'mse' or 'cos_mse'; got {mode!r}")


def clamp_mask(t_sem: torch.Tensor, layout: LatentLayout) -> torch.Tensor:
    """(B, C, 1, 1): 0 on the semantic channels of samples whose ``t_sem`` is clamped to 1, else 1.

    docs/METHOD.md §3.7: at ``t_sem = 1`` (tau >= 1) the model sees the clean ``s1`` but not the
    noise
    ``s0``, so the semantic target ``s1 - s0`` is unpredictable. The texture target is never
    masked: at ``t_tex = 0`` the model sees ``z0`` itself and ``z1 - z0`` stays learnable.
    """
    keep_sem = (t_sem.float() < 1).float().view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    b = keep_sem.shape[0]
    return layout.join(
        torch.ones(b, layout.tex_channels, 1, 1, device=t_sem.device),
        keep_sem.expand(b, layout.sem_channels, 1, 1),
    )


def flow_loss(
    model: nn.Module,
    x1: torch.Tensor,
    y: torch.Tensor,
    *,
    x0: torch.Tensor,
    base_time: torch.Tensor,
    flow: FlowConfig,
    layout: LatentLayout,
    repa_target: torch.Tensor | None = None,
) -> LossTerms:
    """Loss terms for clean latents ``x1`` with injected noise ``x0`` and base times ``u``.

    Args:
        x1: (B, C_z + C_s, H, W) normalised composite latents.
        y: (B,) labels, already with dropped labels replaced by the null class.
        x0: noise like x1. base_time: (B,) base times u in [0, 1]: the generation time at
            which both parts' progress is read off the run's schedule (``flow.schedule``, else
            SFD's offset Δt).
        repa_target: (B, D, H, W) clean encoder features, or None to skip REPA.
    """
    t_tex, t_sem = path_of(flow).progress(base_time)  # SFD's offset: path.stretch bit for bit
    x_t = interpolate(x0, x1, t_tex, t_sem, layout)
    target = velocity_target(x0, x1)
    use_repa = repa_target is not None and flow.repa_weight > 0
    out = model(x_t, t_tex=t_tex, t_sem=t_sem, y=y, return_repa=use_repa)
    pred, proj = out if use_repa else (out, None)
    pred_f = pred.float()

    weight = layout.per_channel(1.0, flow.sem_weight, pred_f)
    err = weight * (pred_f - target).pow(2)
    cos_pred, cos_target = pred_f, target
    if flow.mask_clamped:  # the clamped semantic target only (never the texture one)
        keep = clamp_mask(t_sem, layout)
        err = err * keep
        cos_pred, cos_target = pred_f * keep, target * keep
    vel = err.mean(dim=(1, 2, 3))
    cos = (1 - F.cosine_similarity(cos_pred, cos_target, dim=1)).mean(dim=(1, 2))
    repa = (
        flow.repa_weight * repa_loss(proj.float(), repa_target, flow.repa_mode)
        if use_repa
        else None
    )
    return LossTerms(vel, cos, repa, pred, x_t, target, t_tex, t_sem)
