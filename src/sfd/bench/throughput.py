"""``sfd bench``: training and sampling throughput, FLOPs and MFU on this device.

MFU is measured against the peak of a large matmul timed in the SAME run on the same device and
dtype (not a datasheet number), so the ratio says how close the model gets to what this machine
actually does. Model FLOPs are counted analytically (matmuls only, 2 FLOPs per multiply-add;
training = 3 x forward, the usual convention of PaLM / Chinchilla-style MFU).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from sfd.config import Config
from sfd.flow.guidance import plain_velocity
from sfd.flow.schedule import staged_schedule
from sfd.flow.solvers import euler
from sfd.hardware import cpu_model_name
from sfd.latents.composite import LatentLayout
from sfd.model import LightningDiT, count_parameters
from sfd.training.batches import Batch
from sfd.training.ema import make_ema
from sfd.training.parallel import compile_for_training
from sfd.training.step import TrainStep, make_optimizer


def forward_flops_per_image(cfg: Config, with_repa: bool = False, attention: bool = True) -> float:
    """Matmul FLOPs of one forward pass for one latent (attention scores/values included)."""
    m, lat = cfg.model, cfg.latent
    d, t = m.width, (lat.size // m.patch_size) ** 2
    hidden = int(2 / 3 * int(d * m.mlp_ratio)) if m.use_swiglu else int(d * m.mlp_ratio)
    mlp = 3 * d * hidden if m.use_swiglu else 2 * d * hidden
    per_block = t * (3 * d * d + d * d + mlp) + 6 * d * d + (2 * t * t * d if attention else 0)
    flops = m.depth * per_block
    flops += t * lat.channels * m.patch_size**2 * d * 2  # patch embed + final linear
    flops += 2 * d * d + 2 * (256 * d // 2 + (d // 2) ** 2)  # final adaLN, time embedders
    if with_repa and m.repa_dim:
        p = m.repa_projector_dim
        flops += t * (d * p + p * p + p * m.repa_dim)
    return 2.0 * flops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call after ``warmup`` calls (median of ``iters`` timed calls)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def time_interleaved(
    fns: list[Callable[[], object]], device: torch.device, warmup: int, iters: int
) -> list[float]:
    """Median seconds per call of each of ``fns``, timed in alternation.

    Alternating the calls makes slow drifts of a shared machine hit every function alike, so
    their ratio is not biased by when each was timed; the order is reversed every other round,
    so neither is it by which function runs first.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for i in range(iters):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return [sorted(t)[len(t) // 2] for t in times]


def peak_matmul(device: torch.device, dtype: torch.dtype) -> tuple[Callable[[], object], float]:
    """A large square matmul on this device and dtype, and its FLOPs."""
    n = 8192 if device.type == "cuda" else 1536
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: a @ b), 2.0 * n**3


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Achieved FLOP/s of a large square matmul on this device and dtype."""
    fn, flops = peak_matmul(device, dtype)
    return flops / time_fn(fn, device, warmup=2, iters=5)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # process peak RSS


@dataclass
class BenchResult:
    preset: str
    device: str
    hardware: str
    dtype: str
    batch_size: int
    params_m: float
    train_ms_per_step: float
    train_img_per_s: float
    sample_ms_per_forward: float
    sample_img_per_s_per_nfe: float
    staged_overhead: float  # staged sampler time / plain forwards time - 1
    forward_gflops_per_image: float
    train_tflops: float
    matmul_peak_tflops: float
    train_mfu: float
    peak_memory_gb: float

    def table(self) -> str:
        rows = [
            (k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in asdict(self).items()
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model_name()} ({torch.get_num_threads()} threads)"


def synthetic_batch(cfg: Config, batch_size: int, device: torch.device) -> Batch:
    """Random latents, noise, times, labels and REPA targets of the config's shapes (seed 0)."""
    g = torch.Generator().manual_seed(0)
    lat = cfg.latent
    shape = (batch_size, lat.channels, lat.size, lat.size)
    repa = (
        torch.randn(batch_size, cfg.model.repa_dim, lat.size, lat.size, generator=g)
        if cfg.model.repa_dim
        else None
    )
    batch = Batch(
        torch.randn(shape, generator=g),
        torch.randint(0, cfg.model.num_classes, (batch_size,), generator=g),
        torch.randn(shape, generator=g),
        torch.rand(batch_size, generator=g),
        repa,
    )
    return batch.to(device)


def build_train_step(
    cfg: Config, batch_size: int, device: torch.device | str = "cpu"
) -> tuple[TrainStep, Callable[[], torch.Tensor]]:
    """The training step of ``sfd train`` and a closure running it on one fixed batch.

    The same :class:`~sfd.training.step.TrainStep` as training (loss, backward, gradient norm,
    AdamW, EMA, the non-finite check), compiled as ``train.compile`` says; no data loading.
    """
    device = torch.device(device)
    torch.manual_seed(0)
    model = LightningDiT.from_configs(cfg.model, cfg.latent).to(device)
    model.gradient_checkpointing = cfg.train.activation_checkpointing
    ema = make_ema(model)
    compile_for_training(model, cfg, device)  # in place, as training does
    trained = [p for p in model.parameters() if p.requires_grad]
    step = TrainStep(cfg, model, ema, make_optimizer(trained, cfg.train, device), device)
    batch = synthetic_batch(cfg, batch_size, device)
    model.train()
    return step, lambda: step(model, [batch])


def _time_sampling(cfg: Config, model, b: Batch, autocast, device, sample_steps: int, iters: int):
    """(seconds of ``sample_steps`` plain forwards, of a staged Euler solve of as many steps),
    interleaved."""
    layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
    x0, y, base = b.x0, b.y, b.base_time

    @torch.no_grad()
    def forwards() -> None:
        with autocast:
            for _ in range(sample_steps):
                model(x0, t_tex=base, t_sem=base, y=y)

    @torch.no_grad()
    def staged() -> None:
        with autocast:
            euler(
                plain_velocity(model, y),
                x0,
                staged_schedule(sample_steps, cfg.flow.delta_t),
                layout,
            )

    return time_interleaved([forwards, staged], device, 1, max(iters, 3))


def run_bench(
    cfg: Config,
    batch_size: int,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    iters: int = 5,
    sample_steps: int = 8,
) -> BenchResult:
    """Time one training step and the sampler for ``cfg`` at ``batch_size``."""
    device = torch.device(device)
    bf16 = cfg.train.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step, train_step = build_train_step(cfg, batch_size, device)
    model = step.model
    b = synthetic_batch(cfg, batch_size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    model.train()
    # The matmul peak alternates with the training step, so the MFU is not skewed by the
    # load of a shared machine drifting between the two measurements.
    matmul, matmul_flops = peak_matmul(device, dtype)
    train_sec, matmul_sec = time_interleaved([train_step, matmul], device, warmup, iters)
    peak = matmul_flops / matmul_sec
    model.eval()
    plain_sec, staged_sec = _time_sampling(cfg, model, b, autocast, device, sample_steps, iters)
    fwd_flops = forward_flops_per_image(cfg)
    train_flops = 3 * forward_flops_per_image(cfg, with_repa=True) * batch_size / train_sec
    return BenchResult(
        preset=cfg.preset,
        device=str(device),
        hardware=hardware_name(device),
        dtype=str(dtype).removeprefix("torch."),
        batch_size=batch_size,
        params_m=count_parameters(model) / 1e6,
        train_ms_per_step=1e3 * train_sec,
        train_img_per_s=batch_size / train_sec,
        sample_ms_per_forward=1e3 * plain_sec / sample_steps,
        sample_img_per_s_per_nfe=batch_size * sample_steps / plain_sec,
        staged_overhead=staged_sec / plain_sec - 1,
        forward_gflops_per_image=fwd_flops / 1e9,
        train_tflops=train_flops / 1e12,
        matmul_peak_tflops=peak / 1e12,
        train_mfu=train_flops / peak,
        peak_memory_gb=peak_memory_bytes(device) / 2**30,
    )
