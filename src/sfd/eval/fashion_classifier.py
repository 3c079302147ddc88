"""An in-domain evaluator for Fashion-MNIST generators: a small CNN classifier and its metrics.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, *Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms*, arXiv:1708.07747) has 10 classes of 28 x 28 gray
clothes; ``sfd`` generates them at 32 x 32. ImageNet networks see such images far off their
domain, so this module trains a classifier on the dataset itself and scores samples with it:

- ``accuracy``: the fraction of class-conditional samples the classifier assigns the class they
  were generated for (a semantic-fidelity score, as the classification accuracy of samples);
- ``FD_FMNIST``: the Fréchet distance between Gaussian fits of the 128-d penultimate features
  of samples and of real images, as FID (Heusel et al. 2017) does in Inception pool3 features.

Read both against two bounds measured with the same number of images: a floor, real vs real
(two disjoint real test sets: what a perfect generator gets; FD is biased upwards at finite N),
and a ceiling, the reconstructions of real test images through the generator's decoder (what
samples can reach through it). The classifier's own test accuracy caps ``accuracy``.

The network: a stride-2 stem and two conv stages (BatchNorm, ReLU, max pool) down to 4 x 4, a
linear layer to 128 features after a ReLU, a linear classifier. Training: AdamW, linear warmup
then cosine decay, label smoothing 0.1, random horizontal flips (generators flip too). Data
order, flips and initialisation come from one seeded ``torch.Generator``: a CPU training is
exactly reproducible. Stored as ``classifier.safetensors`` plus ``classifier.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from sfd.data.composites import FashionComposites
from sfd.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST
from sfd.data.tensor_files import atomic_save_safetensors, atomic_write_json
from sfd.eval.metrics import frechet_distance
from sfd.eval.sources import open_images
from sfd.eval.stats import FeatureStats

log = logging.getLogger(__name__)

FORMAT, VERSION = "sfd-fashion-mnist-classifier", 1
WEIGHTS_FILE, META_FILE = "classifier.safetensors", "classifier.json"
# 700 steps x 256 images = 3 epochs: test accuracy 0.9104 (seed 0) / 0.9144 (seed 1); 216 s
# wall and 223 s CPU with 2 threads on 2 shared cores (about 110 s on 2 idle cores).
DEFAULT_STEPS, DEFAULT_BATCH_SIZE, DEFAULT_LR = 700, 256, 5e-3


@dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, int] = (32, 64)  # the 16 x 16 and the 8 x 8 stage
    feature_dim: int = 128
    num_classes: int = 10
    image_size: int = 32
    in_channels: int = 1  # 1: gray (Fashion-MNIST); 3: RGB (the composites testbed)


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class FashionClassifier(nn.Module):
    """(B, 1, H, H) images in [-1, 1] -> logits (B, classes); ``features``: (B, feature_dim)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        if config.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8; got {config.image_size}")
        self.config = config
        c1, c2 = config.channels
        # a table of the layers, one stage per row
        self.body = nn.Sequential(
            *_conv(config.in_channels, c1, stride=2), *_conv(c1, c1), nn.MaxPool2d(2),  # S/4
            *_conv(c1, c2), *_conv(c2, c2), nn.MaxPool2d(2),  # (B, c2, S/8, S/8)
        )  # fmt: skip
        self.project = nn.Linear(c2 * (config.image_size // 8) ** 2, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def initialize_weights(self, generator: torch.Generator) -> FashionClassifier:
        """He-normal convolutions and features, a near-zero classifier, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=0.01, generator=generator)  # start near uniform
        return self

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check (B, C, H, H); resize to ``image_size`` (bilinear, antialiased) if H differs."""
        c = self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] != x.shape[3]:
            raise ValueError(f"expected (B, {c}, H, H) images in [-1, 1]; got {tuple(x.shape)}")
        size = self.config.image_size
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) penultimate features (after the ReLU)."""
        return F.relu(self.project(self.body(self.prepare(x)).flatten(1)))

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return self.head(feats), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def gray_input(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3} -> float (N, 1, H, W)
    in [-1, 1]; colour channels are averaged (the pipeline replicates gray to RGB)."""
    return _as_nchw(images).float().mean(1, keepdim=True) / 127.5 - 1.0


def model_input(images: torch.Tensor | np.ndarray, channels: int) -> torch.Tensor:
    """uint8 images -> float (N, ``channels``, H, W) in [-1, 1]: gray (:func:`gray_input`) for
    1 channel, RGB for 3 (gray images replicated)."""
    if channels == 1:
        return gray_input(images)
    x = _as_nchw(images).float() / 127.5 - 1.0
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _as_nchw(images) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        raise ValueError(
            f"expected uint8 images (N, H, W), (N, H, W, C) or (N, C, H, W); "
            f"got {x.dtype} {tuple(x.shape)}"
        )
    if x.ndim == 3:
        return x[:, None]
    if x.shape[1] in (1, 3) and x.shape[2] == x.shape[3]:
        return x
    if x.shape[3] in (1, 3) and x.shape[1] == x.shape[2]:
        return x.permute(0, 3, 1, 2)  # NHWC -> NCHW
    raise ValueError(f"expected square images with 1 or 3 channels; got {tuple(x.shape)}")


def load_split(
    root: str | Path | None, split: str, limit: int | None = None, dataset: str = "fashion-mnist"
):
    """The first ``limit`` images of a split as uint8 (N, 32, 32) for Fashion-MNIST (the
    dataset's bicubic resize, quantised exactly as the PNG samples are) or (N, 3, 32, 32) for
    the composites (on the training photographs: the distribution generators learn), and int64
    labels (N,)."""
    if dataset == "composites":
        ds = FashionComposites(root or DEFAULT_ROOT, split, backgrounds="train")
    elif dataset == "fashion-mnist":
        ds = FashionMNIST(root or DEFAULT_ROOT, split)
    else:
        raise ValueError(f"no in-domain classifier for dataset {dataset!r}")
    n = len(ds) if limit is None else min(limit, len(ds))
    x = torch.stack([ds[i][0] for i in range(n)])  # (N, C, 32, 32) in [-1, 1]
    x = x[:, 0] if dataset == "fashion-mnist" else x
    return ((x + 1) * 127.5).round().to(torch.uint8), torch.from_numpy(ds.labels[:n])


def _lr_factor(step: int, steps: int, warmup: float = 0.05) -> float:
    """Linear warmup over the first ``warmup`` of the steps, then cosine decay to 0."""
    ramp = min(1.0, (step + 1) / max(1.0, warmup * steps))
    return ramp * 0.5 * (1 + math.cos(math.pi * step / steps))


def _fit(net, images, labels, steps, batch_size, lr, generator, device) -> None:
    """AdamW with warmup + cosine decay on uint8 images, random flips, epochs reshuffled."""
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=0.05)
    net.train().to(device, memory_format=torch.channels_last)
    order, pos = torch.randperm(len(images), generator=generator), 0
    for step in range(steps):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(images), generator=generator), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        x = model_input(images[idx], net.config.in_channels)  # (B, C, 32, 32)
        flip = torch.rand(len(idx), generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        for group in opt.param_groups:
            group["lr"] = lr * _lr_factor(step, steps)
        loss = F.cross_entropy(net(x), labels[idx].to(device), label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("classifier step %d/%d loss %.4f", step + 1, steps, loss.item())
    net.eval().to(memory_format=torch.contiguous_format)


def train_fashion_classifier(
    out_dir: str | Path,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
    train_images: int | None = None,
    test_images: int | None = None,
    dataset: str = "fashion-mnist",
) -> dict:
    """Train on the first ``train_images`` training images (default all 60,000), measure the
    accuracy on the first ``test_images`` test images (default all 10,000), write
    ``classifier.safetensors`` and ``classifier.json`` atomically and return the JSON.

    A cached stage: if ``out_dir`` already holds a finished classifier, return its JSON and
    change nothing.
    """
    out_dir = Path(out_dir)
    if (out_dir / META_FILE).exists():
        meta = _read_meta(out_dir)
        log.info("Fashion-MNIST classifier in %s is already trained; kept", out_dir)
        return meta
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive; got {steps}, {batch_size}")
    images, labels = load_split(root, "train", train_images, dataset)
    generator = torch.Generator().manual_seed(seed)
    config = ClassifierConfig(in_channels=1 if dataset == "fashion-mnist" else 3)
    net = FashionClassifier(config).initialize_weights(generator)
    t0 = time.perf_counter()
    _fit(net, images, labels, steps, batch_size, lr, generator, device)
    seconds = time.perf_counter() - t0
    test_x, test_y = load_split(root, "test", test_images, dataset)
    logits, _ = classifier_outputs(net, test_x, device=device)
    info = {"dataset": dataset, "seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr}
    info |= {"train_images": len(images), "test_images": len(test_x)}
    info |= {"test_accuracy": class_accuracy(logits, test_y), "train_seconds": round(seconds, 2)}
    info["torch_threads"] = torch.get_num_threads()
    meta = save_fashion_classifier(net, out_dir, info)
    log.info(
        "classifier: test accuracy %.4f after %.0f s -> %s", meta["test_accuracy"], seconds, out_dir
    )
    return meta


def save_fashion_classifier(net: FashionClassifier, out_dir: str | Path, info: dict) -> dict:
    """Write ``classifier.safetensors`` then ``classifier.json`` (format, version, config and
    ``info``; written last, it marks the directory finished), atomically; return the JSON."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "config": asdict(net.config), **info}
    atomic_save_safetensors(out_dir / WEIGHTS_FILE, net.state_dict(), {"format": FORMAT})
    atomic_write_json(out_dir / META_FILE, meta)
    return json.loads(json.dumps(meta))  # as a reader of the file sees it (lists, not tuples)


def _read_meta(path: Path) -> dict:
    expected = f"a directory with {META_FILE} and {WEIGHTS_FILE} (`sfd train-classifier`)"
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: expected {expected}; cannot read {META_FILE} ({e})") from e
    if not isinstance(meta, dict) or (meta.get("format"), meta.get("version")) != (FORMAT, VERSION):
        raise ValueError(f"{path}: {META_FILE} is not format {FORMAT!r} version {VERSION}")
    if not (path / WEIGHTS_FILE).is_file():
        raise ValueError(f"{path}: expected {expected}; {WEIGHTS_FILE} is missing")
    return meta


def load_fashion_classifier(
    path: str | Path, device: str | torch.device = "cpu"
) -> FashionClassifier:
    """The classifier saved in directory ``path``, strictly loaded, in eval mode."""
    path = Path(path)
    meta = _read_meta(path)
    try:
        config = dict(meta["config"], channels=tuple(meta["config"]["channels"]))
        net = FashionClassifier(ClassifierConfig(**config))
        net.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=True)
    except Exception as e:  # safetensors, state-dict and config errors alike
        raise ValueError(f"{path}: malformed classifier ({type(e).__name__}: {e})") from e
    return net.to(device).eval().requires_grad_(False)


# The classifier every `sfd` installation scores with: trained once with the defaults below
# (`sfd train-classifier --out DIR`, seed 0, test accuracy 0.9104 on the 10,000 test images) and
# shipped with the package, so FD_FMNIST and accuracy are the same metric on every machine.
PACKAGED_CLASSIFIER = Path(__file__).parent / "weights" / "fashion-mnist-classifier"


def packaged_classifier(dataset: str = "fashion-mnist") -> Path:
    """Where the package keeps the in-domain classifier of ``dataset`` (the composites one was
    trained the same way: `sfd train-classifier --dataset composites`)."""
    return PACKAGED_CLASSIFIER.parent / f"{dataset}-classifier"


def default_classifier_dir(dataset: str = "fashion-mnist") -> Path:
    """The packaged classifier (:func:`packaged_classifier`); ``$SFD_CACHE`` or
    ``~/.cache/sfd`` + ``/<dataset>-classifier`` if the package was installed without it."""
    if (packaged_classifier(dataset) / META_FILE).exists():
        return packaged_classifier(dataset)
    cache = os.environ.get("SFD_CACHE")
    base = Path(cache) if cache else Path.home() / ".cache" / "sfd"
    return base / f"{dataset}-classifier"


def ensure_fashion_classifier(
    path: str | Path | None = None,
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
    dataset: str = "fashion-mnist",
) -> FashionClassifier:
    """Load the classifier at ``path`` (default :func:`default_classifier_dir`), training it
    there first with the default settings if it is absent."""
    path = Path(path) if path is not None else default_classifier_dir(dataset)
    if not (path / META_FILE).exists():
        log.info("training the %s classifier in %s (once; ~2-4 min on CPU)", dataset, path)
        train_fashion_classifier(path, root=root, device=device, dataset=dataset)
    return load_fashion_classifier(path, device)


@torch.inference_mode()
def classifier_outputs(
    net: FashionClassifier, images_uint8, batch_size: int = 256, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits float32 (N, classes) and penultimate features float64 (N, feature_dim), on CPU,
    of uint8 images (N, H, W), (N, H, W, C) or (N, C, H, W)."""
    images = _as_nchw(images_uint8)
    logits, feats = [], []
    for i in range(0, len(images), batch_size):
        x = model_input(images[i : i + batch_size], net.config.in_channels)
        out, f = net.logits_and_features(x.to(device))
        logits.append(out.float().cpu())
        feats.append(f.double().cpu())
    dim = net.config.feature_dim
    if not logits:
        return torch.zeros(0, net.config.num_classes), torch.zeros(0, dim, dtype=torch.float64)
    return torch.cat(logits), torch.cat(feats)


def class_accuracy(logits, labels) -> float:
    """Fraction of rows of ``logits`` (N, classes) whose argmax is ``labels`` (N,)."""
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or len(labels) == 0:
        raise ValueError(
            f"expected logits (N, C) and labels (N,) with N > 0; got {tuple(logits.shape)}, "
            f"{tuple(labels.shape)}"
        )
    return float((logits.argmax(1).cpu() == labels.cpu().long()).double().mean())


def fd_fmnist(feats_a, feats_b) -> float:
    """FD_FMNIST: Fréchet distance of the Gaussian fits of two (N, D) feature sets (exact
    ``eigh`` trace of :func:`sfd.eval.metrics.frechet_distance`)."""
    return frechet_distance(FeatureStats.of(feats_a), FeatureStats.of(feats_b), method="eigh")


def labelled_accuracy(
    samples: str | Path,
    path: str | Path | None = None,
    *,
    batch_size: int = 256,
    device="cpu",
) -> float | None:
    """Accuracy of the classifier in ``path`` (default: :func:`ensure_fashion_classifier`) on
    the images ``arr_0`` of a samples ``.npz`` w.r.t. its labels ``arr_1`` (as ``sfd sample``
    and ADM write them); None when ``samples`` is no ``.npz`` or holds no labels."""
    samples = Path(samples)
    if samples.suffix != ".npz":
        return None
    with np.load(samples) as npz:
        if "arr_1" not in npz.files:
            return None
        labels = torch.from_numpy(np.asarray(npz["arr_1"]))
    source = open_images(samples)
    if labels.shape != (len(source),):
        raise ValueError(
            f"{samples}: arr_1 has shape {tuple(labels.shape)}; expected labels "
            f"({len(source)},) for the images of arr_0"
        )
    net = (
        ensure_fashion_classifier(device=device)
        if path is None
        else load_fashion_classifier(path, device)
    )
    correct = 0
    for i in range(0, len(source), batch_size):
        logits, _ = classifier_outputs(net, source.read(i, i + batch_size), batch_size, device)
        correct += int((logits.argmax(1) == labels[i : i + batch_size]).sum())
    return correct / max(len(source), 1)
