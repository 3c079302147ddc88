"""This tree against the official SFD release, side by side in one process, calls alternated.

The release (github.com/yuemingPAN/SFD, a LightningDiT fork; Pan et al., CVPR 2026) is imported
from a checkout given by ``--release-dir`` (the folder holding its ``models/`` and
``transport/``); nothing of it is copied here. Its importable dependencies (timm, einops,
scipy) must be on ``PYTHONPATH``.

Both models get the same configuration (a preset of this tree, written as the release's
``LightningDiT(...)`` arguments) and the same weights (this tree's initialisation, loaded into
the release model by its own key names); the script checks that the parameter counts are equal
and that the eval forwards agree (bit for bit in eager mode) before timing anything.

Timed, each as the library's own code runs it, calls alternated so that a drifting machine hits
both sides alike (medians; ratio > 1 means this tree is faster):

- **training step**: the release's ``train.py`` step (``Transport.training_losses`` with REPA,
  the sum of the three loss means, backward, gradient clipping only where the config clips,
  ``torch.optim.AdamW`` as it builds it, ``zero_grad``, its ``update_ema`` loop and the
  ``loss.item()`` it logs) against :class:`sfd.training.step.TrainStep` (``sfd train``'s step:
  loss, backward, gradient norm and non-finite check, AdamW, EMA);
- **inference forward**: one eval forward without gradients;
- **CFG velocity**: the release's ``forward_with_cfg`` against
  :func:`sfd.flow.guidance.cfg_velocity` (scale 1.5 on both parts, no interval), on a doubled
  batch.

With ``--ceiling`` the training step is timed alternated with a third function: the step's
matmuls and attention alone (:mod:`sfd.tools.matmuls`), nothing else. No implementation of
the same model can take less time than that, so ``release / matmuls alone`` bounds the speed-up
any implementation can reach over the release on this machine.

Modes: ``eager`` (the release's ``@torch.compile`` decorators replaced by the identity while it
is imported; this tree with ``train.compile=false``) and ``best`` (the release as written, its
blocks, embedders and final layer compiled by its decorators; this tree with
``train.compile=true`` and ``--scope``).

    PYTHONPATH=DEPS python scripts/bench_release.py --release-dir SFD --preset demo --batch-size 64
    PYTHONPATH=DEPS python scripts/bench_release.py --release-dir SFD --preset S --batch-size 8 \\
        --iters 5 [--mode best --scope loss] [--ceiling] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sfd.bench.throughput import build_train_step, synthetic_batch, time_interleaved
from sfd.config import apply_overrides, preset
from sfd.config.sections import Config
from sfd.flow.guidance import Guidance, cfg_velocity
from sfd.hardware import cpu_model_name
from sfd.latents.composite import LatentLayout
from sfd.model import count_parameters
from sfd.tools.matmuls import step_matmuls
from sfd.upstream.config import config_from_kwargs

# the release-made parity fixtures of the checkout the tools run from (scripts/)
FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "upstream_parity"
# The release's REPA table (encoder name -> feature width) for the widths our presets use.
REPA_NAMES = {384: "dinov2_vits14_reg", 768: "dinov2_vitb14_reg", 1024: "dinov2_vitl14_reg"}


def release_kwargs(cfg: Config) -> tuple[dict, dict]:
    """The release's ``LightningDiT(...)`` and ``create_transport(...)`` arguments for ``cfg``."""
    m, lat, flow = cfg.model, cfg.latent, cfg.flow
    model = dict(
        input_size=lat.size,
        patch_size=m.patch_size,
        in_channels=lat.channels,
        hidden_size=m.width,
        depth=m.depth,
        num_heads=m.num_heads,
        mlp_ratio=m.mlp_ratio,
        class_dropout_prob=m.class_dropout_prob,
        num_classes=m.num_classes,
        use_qknorm=m.use_qknorm,
        use_swiglu=m.use_swiglu,
        use_rope=m.use_rope,
        use_rmsnorm=m.use_rmsnorm,
        use_repa=m.repa_dim > 0,
        repa_dino_version=REPA_NAMES.get(m.repa_dim, "dinov2_vits14_reg"),
        repa_depth=m.repa_depth,
        repa_projector_dim=m.repa_projector_dim,
        semantic_chans=lat.sem_channels,
        semfirst_delta_t=flow.delta_t,
    )
    transport = dict(
        path_type="Linear",
        prediction="velocity",
        use_cosine_loss=flow.cos_weight > 0,
        use_lognorm=flow.time_dist == "logit_normal",
        semantic_weight=flow.sem_weight,
        semantic_chans=lat.sem_channels,
        semfirst_delta_t=flow.delta_t,
        repa_weight=flow.repa_weight,
        repa_mode=flow.repa_mode,
    )
    back = config_from_kwargs(model, transport)
    if dataclasses.replace(back.model, repa_dim=m.repa_dim) != m:
        raise SystemExit(f"preset {cfg.preset}: the release cannot express this model config")
    return model, transport


def import_release(root: Path, compiled: bool):
    """The release's ``LightningDiT`` class and ``create_transport``, imported from ``root``."""
    if not (root / "models" / "lightningdit.py").is_file():
        raise SystemExit(f"--release-dir {root}: expected a checkout with models/lightningdit.py")
    sys.path.insert(0, str(root))  # the release is a folder of modules, not a package
    real = torch.compile
    if not compiled:  # its decorators run at import: make them the identity
        torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    try:
        from models.lightningdit import LightningDiT  # type: ignore  # lazy: from --release-dir
        from transport import create_transport  # type: ignore  # lazy: from --release-dir
    finally:
        torch.compile = real
    return LightningDiT, create_transport


def verify_release(cls, create_transport, fixtures: Path) -> str:
    """Check that the imported code is the release: it must reproduce the release-made fixtures
    (eval forward, CFG, the three loss terms) bit for bit. Eager import only."""
    up = json.loads((fixtures / "upstream_config.json").read_text())
    c = load_file(fixtures / "cases.safetensors")
    model = cls(**up["model_kwargs"])
    model.load_state_dict(load_file(fixtures / "state_dict.safetensors"), strict=True)
    with torch.no_grad():
        gaps = [
            (model.eval()(c["fwd.x"], (c["fwd.t_tex"], c["fwd.t_sem"]), c["fwd.y"]) - c["fwd.out"])
            .abs()
            .max()
        ]
        g = model.forward_with_cfg(c["cfg.x"], (c["cfg.t_tex"], c["cfg.t_sem"]), c["cfg.y"], 1.5)
        gaps.append((g - c["cfg.out_scale1p5"]).abs().max())
    tt = sys.modules[type(create_transport(**up["create_transport_kwargs"])).__module__]
    draws = c["loss.n_normal"].numpy()
    model.y_embedder.dropout_prob = 0.0  # as the fixtures were made: no random label drop
    with (
        mock.patch.object(tt.norm, "rvs", lambda loc, scale, size: draws),
        mock.patch.object(tt.th, "randn_like", lambda x: c["loss.x0"].clone()),
    ):
        terms = create_transport(**up["create_transport_kwargs"]).training_losses(
            model.train(),
            c["loss.x1"],
            dict(y=c["loss.y"]),
            use_repa=True,
            feature_dino=c["loss.feature_dino"].float(),
        )
    for key, name in (("loss", "loss_mse"), ("cos_loss", "loss_cos"), ("repa_loss", "loss_repa")):
        gaps.append((terms[key] - c[f"loss.{name}"]).abs().max())
    worst = max(float(g.detach()) for g in gaps)
    if worst != 0.0:
        raise SystemExit(f"--release-dir does not reproduce the release's fixtures (gap {worst})")
    return "reproduces the release's fixture tensors bit for bit (forward, CFG, loss terms)"


def build_release(cls, kwargs: dict, ours: torch.nn.Module, repa_dim: int) -> torch.nn.Module:
    """The release model with ``ours``'s weights (same key names; strict load)."""
    theirs = cls(**kwargs)
    if kwargs["use_repa"] and theirs.repa_projector[-1].out_features != repa_dim:
        # a REPA width outside the release's encoder table: only the last projector layer differs
        theirs.repa_projector[-1] = torch.nn.Linear(kwargs["repa_projector_dim"], repa_dim)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    n_ours = count_parameters(ours, trainable_only=False)
    n_theirs = count_parameters(theirs, trainable_only=False)
    if n_ours != n_theirs:
        raise SystemExit(f"parameter counts differ: sfd {n_ours}, release {n_theirs}")
    return theirs


@torch.no_grad()
def forward_gap(ours, theirs, b) -> float:
    """Largest |difference| of the two eval forwards on the batch's first items."""
    was = ours.training, theirs.training
    ours.eval(), theirs.eval()
    x, y, t = b.x0[:4], b.y[:4], b.base_time[:4]
    gap = (ours(x, t_tex=t, t_sem=t, y=y) - theirs(x, (t, t), y)).abs().max().item()
    ours.train(was[0]), theirs.train(was[1])
    return gap


def release_step(cfg: Config, model, ema, transport, b) -> Callable[[], float]:
    """One step as the release's train.py takes it, on a fixed batch."""
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=0, betas=(0.9, cfg.train.beta2)
    )
    grid = cfg.latent.size // cfg.model.patch_size
    # its loader stores the encoder features on the token grid already
    feats = F.adaptive_avg_pool2d(b.repa, grid) if b.repa is not None else None
    x, y, decay = b.x1, b.y, cfg.train.ema_decay
    model_params, ema_params = dict(model.named_parameters()), dict(ema.named_parameters())

    def step() -> float:
        terms = transport.training_losses(
            model, x, dict(y=y), use_repa=feats is not None, feature_dino=feats
        )
        mse = terms["loss"].mean()
        loss = terms["cos_loss"].mean() + mse + terms["repa_loss"].mean()
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for name, p in model_params.items():
                ema_params[name].mul_(decay).add_(p.data, alpha=1 - decay)
        return mse.item()

    return step


def inference_fns(cfg: Config, ours, theirs, b) -> dict[str, tuple[Callable, Callable]]:
    """(sfd, release) closures for one eval forward and one CFG velocity."""
    x, y, t = b.x0, b.y, b.base_time
    null = torch.full_like(y, cfg.model.num_classes)
    layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
    guided = cfg_velocity(ours, y, Guidance(1.5, 1.5), layout)
    x2, t2, y2 = torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])

    no_grad = torch.no_grad()  # as a decorator: each call runs without autograd
    return {
        "inference forward": (
            no_grad(lambda: ours(x, t_tex=t, t_sem=t, y=y)),
            no_grad(lambda: theirs(x, (t, t), y)),
        ),
        "CFG velocity": (
            no_grad(lambda: guided(x, t, t)),
            no_grad(lambda: theirs.forward_with_cfg(x2, (t2, t2), y2, 1.5)),
        ),
    }


def build(args) -> tuple[dict, float, tuple]:
    """Both sides, checked equal; the functions to time; the forward gap; the two models."""
    sets = list(args.overrides)
    if args.mode == "best":
        sets += ["train.compile=true", f"train.compile_scope={args.scope}"]
    cfg = apply_overrides(preset(args.preset), sets)
    kwargs, tkw = release_kwargs(cfg)
    cls, create_transport = import_release(Path(args.release_dir), args.mode == "best")
    if args.mode == "eager" and FIXTURES.is_dir():
        print(f"--release-dir {verify_release(cls, create_transport, FIXTURES)}", flush=True)
    step_fn, ours_step = build_train_step(cfg, args.batch_size)
    ours_eval = step_fn.model
    theirs = build_release(cls, kwargs, ours_eval, cfg.model.repa_dim)
    ema = build_release(cls, kwargs, ours_eval, cfg.model.repa_dim).eval().requires_grad_(False)
    theirs.train()
    b = synthetic_batch(cfg, args.batch_size, torch.device("cpu"))
    gap = forward_gap(ours_eval, theirs, b)
    fns = {"training step": (ours_step, release_step(cfg, theirs, ema, create_transport(**tkw), b))}
    if args.ceiling:
        fns["training step"] += (step_matmuls(cfg, args.batch_size),)
    fns.update(inference_fns(cfg, ours_eval, theirs, b))
    return fns, gap, (ours_eval, theirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release-dir", required=True)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mode", choices=["eager", "best"], default="eager")
    ap.add_argument("--scope", choices=["blocks", "loss"], default="blocks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=9)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--ceiling", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fns, gap, models = build(args)
    print(
        f"{args.preset}, batch {args.batch_size}, {args.mode}, {args.threads} threads, "
        f"{cpu_model_name()}, torch {torch.__version__}; "
        f"eval forwards differ by at most {gap:.3g}",
        flush=True,
    )
    rows = {}
    for name, sides in fns.items():
        if name != "training step":  # the training step runs first, in train mode
            for model in models:
                model.eval()
        t0 = time.perf_counter()
        ms = [
            1e3 * s
            for s in time_interleaved(list(sides), torch.device("cpu"), args.warmup, args.iters)
        ]
        rows[name] = dict(sfd_ms=ms[0], release_ms=ms[1], ratio=ms[1] / ms[0])
        print(
            f"{name:18s} sfd {ms[0]:9.1f} ms  release {ms[1]:9.1f} ms  ratio {ms[1] / ms[0]:.3f}"
            f"   ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        if len(ms) == 3:
            rows[name].update(matmuls_alone_ms=ms[2], bound=ms[1] / ms[2])
            print(
                f"{'':18s} the step's matmuls + attention alone {ms[2]:9.1f} ms: no "
                f"implementation beats the release by more than {ms[1] / ms[2]:.3f}",
                flush=True,
            )
    if args.json:
        out = dict(vars(args), forward_gap=gap, torch=torch.__version__, rows=rows)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
