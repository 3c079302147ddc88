"""``sfd export-diffusers RUN OUT``: an sfd run as a standard diffusers directory.

``OUT`` gets ``model_index.json``, ``transformer/`` (:class:`SFDTransformer2DModel`, the run's
EMA weights and latent statistics), ``vae/`` (the texture autoencoder as diffusers'
``AutoencoderKL``, whatever format it was trained or imported in), ``scheduler/``
(:class:`SFDScheduler`: the run's Δt, sampler and fixed-step schedule), an optional
``guide_transformer/`` (the AutoGuidance guide), the module files of each (sfd's own source,
verbatim: :mod:`sfd.ecosystem.remote`), named in ``model_index.json`` so that diffusers loads
the directory without sfd (``trust_remote_code=True``), and ``README.md`` (a model card). The
class names are ``--class-names``, else those the run recorded, else the ids. It works for runs
trained by ``sfd`` and
for release checkpoints imported with ``sfd import-upstream`` (their decoder is named with
``--decoder``). The directory is written beside ``OUT`` and renamed into place, and an existing
``OUT`` is refused: an export never overwrites.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sfd.api import load_checkpoint
from sfd.ecosystem.convert import scheduler_from_config, transformer_from_sfd
from sfd.ecosystem.model_card import model_card
from sfd.ecosystem.remote import PARTS, source_file
from sfd.ecosystem.remote.pipeline_sfd import SFDPipeline
from sfd.errors import (
    BadInputError,
    MismatchError,
    MissingInputError,
    SfdError,
    as_os_error,
    write_failed,
)
from sfd.latents.texture import load_texture_autoencoder
from sfd.training.run_dir import CLASS_NAMES


@dataclass(frozen=True)
class ExportSources:
    """Where an export's parts come from."""

    run: Path
    decoder: Path | None = None  # default: the run's latent.texture_autoencoder
    guide: Path | None = None
    class_names: Path | None = None
    metrics: Path | None = None


def find_decoder(run: Path, config_path: str, checkpoint_dir: Path) -> Path:
    """The run's texture autoencoder as ``sfd sample`` finds it: the stored path as given if
    it exists, else relative to the run directory."""
    if not config_path:
        raise MissingInputError(
            f"{run} names no texture autoencoder (latent.texture_autoencoder is empty); "
            f"pass --decoder PATH"
        )
    p = Path(config_path)
    for candidate in (p, checkpoint_dir.parent.parent / p):
        if candidate.exists():
            return candidate
    raise MissingInputError(
        f"the run's texture autoencoder {config_path!r} exists neither from the current "
        f"directory nor from the run directory; pass --decoder PATH"
    )


def read_class_names(path: Path | None, num_classes: int, run_dir: Path | None = None) -> dict:
    """``{id: name}`` from a JSON list / dict or a text file (one name a line); default: the names
    the run recorded (``RUN/class_names.json``, from its dataset), else the ids."""
    if path is None and run_dir is not None and (run_dir / CLASS_NAMES).is_file():
        path = run_dir / CLASS_NAMES
    if path is None:
        return {i: str(i) for i in range(num_classes)}
    text = Path(path).read_text()
    if Path(path).suffix == ".json":
        data = json.loads(text)
        names = data if isinstance(data, list) else [data[str(i)] for i in range(len(data))]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise MismatchError(f"{path} holds {len(names)} class names; the run has {num_classes}")
    return {i: str(n) for i, n in enumerate(names)}


def read_metrics(path: Path | None) -> dict:
    """The measured metrics for the model card: a JSON object (e.g. ``sfd eval --out``)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInputError(f"{path} is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path} must hold a JSON object of metrics")
    return data


def build_pipeline(sources: ExportSources, device: str = "cpu"):
    """An :class:`SFDPipeline` from an sfd run (EMA weights), its decoder and optional guide."""
    model, ckpt = load_checkpoint(sources.run, device)
    if ckpt.config.sample.guide == "autoguidance" and sources.guide is None:
        raise MismatchError(
            f"{sources.run} samples with AutoGuidance (sample.guide); pass --guide GUIDE_RUN"
        )
    guide = None
    if sources.guide is not None:
        g_model, g_ckpt = load_checkpoint(sources.guide, device)
        guide = transformer_from_sfd(g_model, g_ckpt.stats)
    decoder = sources.decoder or find_decoder(
        sources.run, ckpt.config.latent.texture_autoencoder, ckpt.path
    )
    vae = load_texture_autoencoder(decoder).vae
    if int(vae.config.latent_channels) != ckpt.config.latent.tex_channels:
        raise MismatchError(
            f"the decoder {decoder} has {vae.config.latent_channels} latent channels; "
            f"the run's texture latent has {ckpt.config.latent.tex_channels}"
        )
    pipe = SFDPipeline(
        transformer=transformer_from_sfd(model, ckpt.stats),
        vae=vae,
        scheduler=scheduler_from_config(ckpt.config),
        guide_transformer=guide,
        id2label=read_class_names(
            sources.class_names, ckpt.config.model.num_classes, ckpt.path.parent.parent
        ),
    )
    return pipe.to(device), ckpt


def export_diffusers(sources: ExportSources, out: str | Path) -> Path:
    """Write the diffusers directory ``out`` (refused if it exists); returns it."""
    out = Path(out)
    if out.exists():
        raise SfdError(f"{out} exists; choose a new export directory (nothing is overwritten)")
    pipe, ckpt = build_pipeline(sources)
    metrics = read_metrics(sources.metrics)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_remote_code(tmp)
        card = model_card(ckpt, metrics, sources, pipe.config.id2label)
        (tmp / "README.md").write_text(card)
        os.rename(tmp, out)  # atomic; fails rather than replace a directory made meanwhile
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if as_os_error(err) is not None:  # disk full, read-only, ...: one line
            raise write_failed(out, as_os_error(err), "no partial export was left") from err
        raise
    return out


def write_remote_code(out: Path) -> dict:
    """Write each component's module files (the package's source, verbatim) and name them in
    ``model_index.json`` as ``["module_file", "ClassName"]``; returns the new index."""
    index = json.loads((out / "model_index.json").read_text())
    for folder, (module, cls, siblings) in PARTS.items():
        users = [folder] if folder != "transformer" else ["transformer", "guide_transformer"]
        for part in users:
            if part and (index.get(part) or [None])[0] is None:
                continue  # an optional component that is absent
            for name in (module, *siblings):
                shutil.copyfile(source_file(name), out / part / f"{name}.py")
            if part:
                index[part] = [module, cls]
            else:
                index["_class_name"] = [module, cls]
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index
