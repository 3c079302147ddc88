"""A timing worker for ``sfd bench --compare`` (run by :mod:`sfd.bench.compare`, not imported).

Started as ``python -P -c <this source> SPEC`` with ``PYTHONPATH`` naming ONE source tree, so
``import sfd`` is that tree's package (the current one or the reference). It builds the timed
function with that tree's own code, prints one JSON line ``{"ready": ...}``, then for each line
``run`` on stdin runs the function once and prints ``{"sec": ..., "peak_bytes": ...}``.

The training step is the tree's ``build_train_step`` where it exists (the step of ``sfd train``;
in ``sfd.bench.throughput``, or ``sfd.bench`` when that was one module). Older trees (with no
``build_train_step``) get the step their ``Trainer`` ran, rebuilt here from that tree's own
functions: ``flow_loss`` and ``total``, backward, ``clip_grad_norm``, the host-side non-finite
check, AdamW (fused only on CUDA), ``update_ema``.
"""

import importlib
import json
import resource
import sys
import time

import torch


def synthetic(cfg, batch_size, device):
    g = torch.Generator().manual_seed(0)
    lat = cfg.latent
    shape = (batch_size, lat.channels, lat.size, lat.size)
    repa = None
    if cfg.model.repa_dim:
        repa = torch.randn(batch_size, cfg.model.repa_dim, lat.size, lat.size, generator=g)
    y = torch.randint(0, cfg.model.num_classes, (batch_size,), generator=g)
    x1, x0 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    base = torch.rand(batch_size, generator=g)
    return [t if t is None else t.to(device) for t in (x1, y, x0, base, repa)]


def legacy_train_step(cfg, batch_size, device):
    """The training step of an older tree's ``Trainer``, from the tree's own functions."""
    # lazy: the modules of the older trees this step is rebuilt for (not all exist in newer ones)
    from sfd.latents.composite import LatentLayout
    from sfd.model import LightningDiT
    from sfd.training import parallel as P
    from sfd.training.ema import make_ema, update_ema
    from sfd.training.loss import flow_loss

    torch.manual_seed(0)
    model = LightningDiT(cfg.model, cfg.latent).to(device)  # the tree of that commit
    model.gradient_checkpointing = cfg.train.activation_checkpointing
    ema = make_ema(model)
    if cfg.train.compile:
        P.compile_blocks(model)
    t = cfg.train
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=t.lr,
        betas=(t.beta1, t.beta2),
        weight_decay=t.weight_decay,
        fused=t.fused_adamw and device.type == "cuda",
    )
    layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
    x1, y, x0, base, repa = synthetic(cfg, batch_size, device)
    model.train()

    def step():
        bf16 = t.precision == "bf16"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = flow_loss(
                model, x1, y, x0=x0, base_time=base, flow=cfg.flow, layout=layout, repa_target=repa
            )
            loss = terms.total(cfg.flow.cos_weight)
        r = terms.repa.mean() if terms.repa is not None else torch.zeros_like(loss)
        sums = torch.stack([loss, terms.vel.mean(), terms.cos.mean(), r]).detach().float()
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        gnorm = P.clip_grad_norm(params, t.grad_clip)
        stats = torch.cat([sums, gnorm.reshape(1).float()])
        if bool(torch.isfinite(stats).all()) or not t.skip_nonfinite:
            opt.step()
            update_ema(ema, model, t.ema_decay)
        opt.zero_grad(set_to_none=True)
        return stats.tolist()

    return model, step


def train_step_builder():
    """The tree's ``build_train_step`` (``sfd.bench.throughput`` now, ``sfd.bench`` in trees
    where the benchmark was one module), or ``None`` in trees older than it."""
    for name in ("sfd.bench.throughput", "sfd.bench"):
        try:
            return importlib.import_module(name).build_train_step
        except (ImportError, AttributeError):
            continue
    return None


def build(spec):
    # lazy: the tree's own sfd, imported by main once the thread count is set
    from sfd.config import apply_overrides, preset

    device = torch.device(spec["device"])
    cfg = apply_overrides(preset(spec["preset"]), spec["overrides"])
    b = spec["batch_size"]
    build_train_step = train_step_builder()
    if build_train_step is not None:
        step, run = build_train_step(cfg, b, device)
        model, how = step.model, f"{build_train_step.__module__}.build_train_step"
    else:
        model, run = legacy_train_step(cfg, b, device)
        how = "the older Trainer step (rebuilt from the tree's functions)"
    if spec["mode"] == "forward":
        x1, y, x0, base, _ = synthetic(cfg, b, device)
        model.eval()

        @torch.no_grad()
        def run():
            model(x0, t_tex=base, t_sem=base, y=y)

        how = "model forward, no_grad, eval"
    return run, how, device


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    # lazy: the sfd of the tree PYTHONPATH names, imported with the thread count set
    import sfd

    run, how, device = build(spec)
    out = {"ready": True, "sfd": sfd.__file__, "how": how, "threads": torch.get_num_threads()}
    print(json.dumps(out), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"sec": time.perf_counter() - t0, "peak_bytes": peak}), flush=True)


if __name__ == "__main__":
    main()
