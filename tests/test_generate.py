"""The one generation path: per-image seeds, chunked jobs, resumable, process-count invariant."""

import dataclasses
import hashlib

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import nn

from sfd.config import apply_overrides, preset
from sfd.data.images import read_png
from sfd.generate import (
    FixedBatch,
    GenerationJob,
    LatentSampler,
    balanced_labels,
    image_noise,
    to_uint8,
)
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT


class ToyDecoder(nn.Module):
    """Texture latent (4, 8, 8) -> RGB (3, 16, 16) in [-1, 1]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(4, 3, 3, padding=1)

    def decode(self, z):
        return torch.tanh(nn.functional.interpolate(self.conv(z), scale_factor=2.0))


def sampler(method="euler", compute_batch=4):
    cfg = apply_overrides(
        preset("tiny"),
        [
            f"sample.method={method}",
            "sample.num_steps=4",
            f"sample.compute_batch={compute_batch}",
            "sample.atol=1e-3",
            "sample.rtol=1e-2",
        ],
    )
    torch.manual_seed(0)
    model = LightningDiT.from_configs(cfg.model, cfg.latent).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return LatentSampler(model, cfg, LatentStats.identity(6))


def digest(out_dir, num):
    h = hashlib.sha256()
    for i in range(num):
        h.update(read_png(out_dir / "images" / f"{i:06d}.png").tobytes())
    return h.hexdigest()


def test_noise_and_labels_depend_on_the_index_only():
    a = image_noise([5, 2, 9], (2, 3, 3), seed=7)
    b = image_noise([9, 5], (2, 3, 3), seed=7)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert torch.bincount(balanced_labels(range(50), 10)).tolist() == [5] * 10


def test_uint8_conversion_rounds():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 3.0]).view(1, 1, 1, 6)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255, 255]
    x = torch.tensor([2 * 100.4 / 255 - 1, 2 * 100.6 / 255 - 1]).view(1, 1, 1, 2)
    assert to_uint8(x).flatten().tolist() == [100, 101]


def test_images_identical_across_batch_sizes_and_resume(tmp_path):
    num = 7
    for bs in (2, 5):
        GenerationJob(sampler(), ToyDecoder(), tmp_path / f"bs{bs}", num, bs).run(progress=False)
    assert digest(tmp_path / "bs2", num) == digest(tmp_path / "bs5", num)
    # an interrupted job: delete some images, rerun, only those are redone
    job = GenerationJob(sampler(), ToyDecoder(), tmp_path / "bs2", num, 2)
    (tmp_path / "bs2/images/000003.png").unlink()
    keep = (tmp_path / "bs2/images/000000.png").stat().st_mtime_ns
    assert job.run(progress=False) == 2  # the chunk {2, 3} again
    assert (tmp_path / "bs2/images/000000.png").stat().st_mtime_ns == keep
    assert digest(tmp_path / "bs2", num) == digest(tmp_path / "bs5", num)
    npz = np.load(job.write_npz())
    assert npz["arr_0"].shape == (num, 16, 16, 3) and npz["arr_0"].dtype == np.uint8
    assert npz["arr_1"].tolist() == balanced_labels(range(num), 10).tolist()
    assert np.array_equal(npz["arr_0"][4], read_png(tmp_path / "bs2/images/000004.png"))


def _worker(rank, world, out_dir, num, method):
    torch.set_num_threads(1)
    GenerationJob(sampler(method), ToyDecoder(), out_dir, num, 3).run(rank, world, progress=False)


def test_images_identical_for_one_and_two_processes(tmp_path):
    num = 8
    for method in ("euler", "dopri5"):
        _worker(0, 1, tmp_path / f"{method}1", num, method)
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=_worker, args=(r, 2, tmp_path / f"{method}2", num, method))
            for r in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        assert digest(tmp_path / f"{method}1", num) == digest(tmp_path / f"{method}2", num)


def test_fixed_batch_wrapper_keeps_rows():
    s = sampler(compute_batch=3)
    x = torch.randn(5, 6, 8, 8)
    t = torch.rand(5)
    y = torch.arange(5)
    with torch.no_grad():
        out = FixedBatch(s.model, 3)(x, t_tex=t, t_sem=t, y=y)
        ref = s.model(x, t_tex=t, t_sem=t, y=y)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert dataclasses.is_dataclass(s.config)
