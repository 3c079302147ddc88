"""What each cached stage of a pipeline run was made with (``OUT/stages.json``).

Every stage records its settings beside its result: its own sizes, the data it read (counts
and a digest of the files) and a digest of each input stage's settings. A rerun into the same
``OUT`` keeps a finished stage only when its settings are the same; otherwise it refuses, in
one line naming the settings that differ and both ways forward (a new ``--out``, or ``--redo``),
before any work. With ``redo`` the stage and every stage after it are recomputed: their
entries and files are removed first (and the removal is logged), so nothing stale is kept.

A stage is entered in ``stages.json`` when it starts (its settings, no result) and completed
when it ends, so a run cut mid-stage resumes that stage only with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Subset

from sfd.data.tensor_files import atomic_write_json
from sfd.errors import MismatchError

log = logging.getLogger("sfd.demo")

# The stages of a run in order, and the files in OUT each one writes.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "texture_vae": ("texture_vae",),
    "features": ("features",),
    "features_val": ("features_val",),
    "semvae": ("semvae",),
    "latents": ("latents",),
    "sfd": ("run",),
    "samples": ("samples", "samples.png", "stages.png", "curves.png"),
    "metrics": ("real_test.npz", "metrics.json"),
}
SHOWN = 4  # differing settings named in the refusal (then "and N more")


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def differences(stored: dict, settings: dict) -> list[str]:
    """``key old -> new`` for each setting that differs (digests: ``key changed``), the
    outermost keys first (``preset`` before the ``model.*`` it implies)."""
    a, b = flatten(stored), flatten(settings)
    out = []
    for key in sorted(a.keys() | b.keys(), key=lambda k: (k.count("."), k)):
        if a.get(key) != b.get(key):
            hashed = key.startswith("inputs.") or key.endswith(".files")
            out.append(f"{key} changed" if hashed else f"{key} {a.get(key)} -> {b.get(key)}")
    return out


def dataset_settings(dataset) -> dict:
    """What identifies the images of ``dataset`` (a chain of Subsets over an ImageFolder or
    Fashion-MNIST): their count, size, colour mode and which files (a digest)."""
    indices = None
    while isinstance(dataset, Subset):
        idx = list(dataset.indices)
        indices = idx if indices is None else [idx[i] for i in indices]
        dataset = dataset.dataset
    indices = list(range(len(dataset))) if indices is None else indices
    info = {"images": len(indices), "kind": type(dataset).__name__}
    if hasattr(dataset, "describe"):  # generated images (the composites): every option they use
        info["options"] = dataset.describe()
    for name in ("size", "mode", "channels", "split", "classes"):
        if hasattr(dataset, name):
            value = getattr(dataset, name)
            info[name] = list(value) if isinstance(value, (list, tuple)) else value
    samples = getattr(dataset, "samples", None)
    if samples is not None:  # an ImageFolder: relative paths and byte sizes of the files used
        root = Path(dataset.root)
        rows = [_file_row(root, samples[i][0]) for i in indices]
    else:
        rows = indices
    info["files"] = digest({"rows": rows})
    return info


def _file_row(root: Path, path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    return f"{path.relative_to(root).as_posix()}:{size}"


class Stages:
    """Runs named stages once per settings; results, settings and wall times live in
    ``stages.json`` (module docstring)."""

    def __init__(self, out: Path, redo: bool = False) -> None:
        self.out, self.redo = Path(out), redo
        self.path = self.out / "stages.json"
        self.done: dict = json.loads(self.path.read_text()) if self.path.exists() else {}

    @property
    def finished(self) -> dict:
        """The stages that ran to the end: ``{name: {"result", "seconds", "settings"}}``."""
        return {k: v for k, v in self.done.items() if "result" in v}

    def settings_of(self, name: str) -> dict:
        return self.done.get(name, {}).get("settings", {})

    def run(
        self, name: str, fn: Callable[[], dict], settings: dict, inputs: tuple[str, ...] = ()
    ) -> dict:
        """``fn()``'s result, computed now or kept from a run with the same ``settings`` (and
        the same settings of the ``inputs`` stages)."""
        settings = json.loads(json.dumps(settings, default=str))
        settings["inputs"] = {k: digest(self.settings_of(k)) for k in inputs}
        entry = self.done.get(name)
        if entry is not None and "settings" not in entry:
            log.warning(
                "stage %s in %s was made by an sfd that did not record settings; kept as made "
                "with the current ones",
                name,
                self.out,
            )
            entry["settings"] = settings
            atomic_write_json(self.path, self.done)
        elif entry is not None and entry["settings"] != settings:
            if "result" in entry or self._wrote(name):
                self._other_settings(name, differences(entry["settings"], settings))
            entry = None  # (an unfinished stage that wrote nothing starts anew)
        if entry is not None and "result" in entry:
            log.info("stage %s: done before with the same settings, kept", name)
            return entry["result"]
        log.info("stage %s: %s", name, "resuming" if entry else "running")
        self.done[name] = {"settings": settings}
        atomic_write_json(self.path, self.done)
        t0 = time.perf_counter()
        result = fn()
        seconds = round(time.perf_counter() - t0, 1)
        self.done[name] = {"result": result, "seconds": seconds, "settings": settings}
        atomic_write_json(self.path, self.done)
        return result

    def _wrote(self, name: str) -> bool:
        return any((self.out / f).exists() for f in STAGE_FILES.get(name, ()))

    def _other_settings(self, name: str, diff: list[str]) -> None:
        """Refuse (one line), or with ``redo`` remove ``name`` and every later stage."""
        order = list(STAGE_FILES)
        later = order[order.index(name) :] if name in order else [name]
        more = f" and {len(diff) - SHOWN} more" if len(diff) > SHOWN else ""
        shown = ", ".join(diff[:SHOWN]) + more
        if not self.redo:
            raise MismatchError(
                f"{self.out}: stage {name} was made with other settings ({shown}); nothing was "
                f"changed. Use a new --out to keep it, or pass --redo to recompute {name} and "
                f"every stage after it, replacing their files in {self.out}"
            )
        files = [f for stage in later for f in STAGE_FILES.get(stage, ())]
        files = [f for f in files if (self.out / f).exists()]
        log.warning(
            "--redo: stage %s was made with other settings (%s); replacing stages %s "
            "(removing %s in %s)",
            name,
            shown,
            ", ".join(later),
            ", ".join(files) or "no files",
            self.out,
        )
        for f in files:
            path = self.out / f
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for stage in later:
            self.done.pop(stage, None)
        atomic_write_json(self.path, self.done)
