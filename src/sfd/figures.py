"""Pictures of a run: a labelled class-conditional grid, the three stages, loss curves, the
schedule's paths.

``stages.png`` shows one sample's trajectory: the decoded texture latent and a colour picture of
the semantic latent (its first three principal components, fixed across time) at several global
times tau, so semantics can be seen to settle before texture (Pan et al. 2026, Fig. 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from sfd.flow.progress import ProgressPath  # noqa: E402


def _show(ax, image: np.ndarray) -> None:
    ax.imshow(
        image[..., 0] if image.shape[-1] == 1 else image,
        cmap="gray" if image.shape[-1] == 1 else None,
        vmin=0,
        vmax=255,
    )
    ax.set_xticks([])
    ax.set_yticks([])


MAX_ROWS = 20  # classes shown in a sample grid (the figure stays a readable size)


def sample_grid(
    images: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    path: Path,
    per_class: int = 10,
) -> None:
    """Rows of ``per_class`` uint8 (H, W, C) images per class, labelled with the class name:
    any number of classes (the first :data:`MAX_ROWS` shown) and of images (a class with
    fewer leaves its row's end blank)."""
    n_cls, per_class = min(len(class_names), MAX_ROWS), max(1, per_class)
    fig, axes = plt.subplots(
        max(n_cls, 1), per_class, figsize=(per_class * 0.8, max(n_cls, 1) * 0.85), squeeze=False
    )
    labels = np.asarray(labels)
    for c in range(n_cls):
        idx = np.nonzero(labels == c)[0][:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            if j < len(idx):
                _show(ax, images[idx[j]])
            elif j:
                ax.axis("off")
            else:  # keep the axes (and the class name) of a class without samples
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if j == 0:
                ax.set_ylabel(class_names[c], rotation=0, ha="right", va="center", fontsize=8)
    more = f" (the first {n_cls} of {len(class_names)} classes)" if len(class_names) > n_cls else ""
    fig.suptitle(f"sfd samples, one row per class{more}", fontsize=9)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def semantic_colours(sem: torch.Tensor) -> np.ndarray:
    """(T, C_s, H, W) semantic latents -> (T, H, W, 3) uint8 by a PCA fitted on the LAST state."""
    t, c, h, w = sem.shape
    flat = sem.permute(0, 2, 3, 1).reshape(t, h * w, c).double()
    last = flat[-1]
    mean = last.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(last - mean, full_matrices=False)
    k = min(3, c)
    proj = (flat - mean) @ v[:k].T  # (T, HW, k)
    if k < 3:
        proj = torch.cat([proj, torch.zeros(t, h * w, 3 - k, dtype=proj.dtype)], -1)
    lo, hi = proj[-1].amin(0), proj[-1].amax(0)
    scaled = ((proj - lo) / (hi - lo + 1e-8)).clamp(0, 1)
    return (scaled.reshape(t, h, w, 3) * 255).round().byte().numpy()


# The stage picture of a run: sample 3 of class `picture_class` (the demo: a sneaker) solved
# with Euler in STAGE_STEPS steps, shown at these steps of its trajectory.
STAGE_STEPS = 26
STAGE_PICKS = (0, 3, 6, 9, 12, 15, 18, 21, 23, 26)


def stage_strip(
    taus: Sequence[float], textures: np.ndarray, sem: torch.Tensor, delta_t: float, path: Path
) -> None:
    """Two rows over tau: decoded texture (uint8 (T, H, W, C)) and semantic PCA colours."""
    colours = semantic_colours(sem)
    n = len(taus)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.1, 2.6))
    for j, tau in enumerate(taus):
        stage = "I" if tau < delta_t else ("III" if tau > 1 else "II")
        _show(axes[0, j], textures[j])
        axes[0, j].set_title(f"τ={tau:.2f}\nstage {stage}", fontsize=7)
        _show(axes[1, j], colours[j])
    axes[0, 0].set_ylabel("texture\n(decoded)", fontsize=7)
    axes[1, 0].set_ylabel("semantics\n(PCA)", fontsize=7)
    fig.suptitle(f"semantics lead texture by Δt = {delta_t}", fontsize=9)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loss_curves(curves: dict[str, tuple[list[float], list[float]]], path: Path) -> None:
    """One panel per training stage: {name: (steps, losses)}."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, (name, (steps, values)) in zip(axes[0], curves.items(), strict=True):
        ax.plot(steps, values)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_schedule(paths: dict[str, ProgressPath], path: Path, knots: int = 200) -> None:
    """``schedule.png``: each path in the (u_sem, u_tex) plane, and its two curves over the
    generation time t (docs/SCHEDULE.md)."""
    fig, (plane, curves) = plt.subplots(1, 2, figsize=(8.4, 3.8))
    t = np.linspace(0, 1, knots + 1)
    for i, (label, p) in enumerate(paths.items()):
        table = p.table(knots).numpy()
        colour = f"C{i}"
        plane.plot(table[1], table[0], color=colour, label=label)
        curves.plot(t, table[1], color=colour, label=f"{label}: semantics")
        curves.plot(t, table[0], color=colour, linestyle="--", label=f"{label}: texture")
    plane.set_xlabel("u_sem (semantic progress)")
    plane.set_ylabel("u_tex (texture progress)")
    plane.set_aspect("equal")
    plane.legend(fontsize=7)
    curves.set_xlabel("generation time t")
    curves.set_ylabel("progress u")
    curves.legend(fontsize=6)
    for ax in (plane, curves):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
