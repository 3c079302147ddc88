"""An export carries its code: the module files are the package's own source, verbatim, named
in ``model_index.json`` as diffusers' remote code; they import nothing of sfd; the scheduler
uses the schedule stored in the export; an export whose code no longer fits its weights fails
to load with the loader's error.

Loading with ``trust_remote_code=True`` in an environment without sfd, and the images' parity
with ``sfd sample`` there, is the slow test ``tests/ecosystem/test_remote_venv.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import sfd.ecosystem.convert as convert
from sfd.api import load_checkpoint
from sfd.cli import main
from sfd.ecosystem import image_generators, load_export
from sfd.ecosystem.remote import PARTS, SOURCES, source_file
from sfd.ecosystem.remote.scheduler_sfd import schedule_rows
from sfd.flow.schedule import staged_schedule
from sfd.generate import LatentSampler, sampling_schedule
from tests.ecosystem.ecosystem_helpers import tiny_run_fixture  # noqa: F401  (fixture tiny_run)

LOADER = Path(__file__).with_name("remote_load.py")
# what an exported module may import: the standard library, torch, diffusers and what they bring
ALLOWED = {"torch", "diffusers", "numpy", "PIL", "torchdiffeq"} | set(sys.stdlib_module_names)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("remote") / "tiny-remote"
    res = CliRunner().invoke(main, ["export-diffusers", str(tiny_run / "run"), str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_module_files_are_the_package_source_verbatim(exported):
    for folder, (module, _, siblings) in PARTS.items():
        written = {p.stem for p in (exported / folder).glob("*.py")}
        assert written == {module, *siblings}, folder
        for name in written:
            assert (exported / folder / f"{name}.py").read_bytes() == source_file(name).read_bytes()
    # the maths files are the modules sfd itself runs, not copies kept beside them
    assert source_file("lightningdit") == Path(sys.modules["sfd.model.lightningdit"].__file__)
    assert source_file("solvers") == Path(sys.modules["sfd.flow.solvers"].__file__)


def test_model_index_names_module_files_and_classes(exported):
    index = json.loads((exported / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_sfd", "SFDPipeline"]
    assert index["transformer"] == ["transformer_sfd", "SFDTransformer2DModel"]
    assert index["scheduler"] == ["scheduler_sfd", "SFDScheduler"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]  # stock: no code travels for it
    assert index["guide_transformer"] == [None, None]
    assert not list((exported / "vae").glob("*.py"))
    for part, name in (("transformer", "config.json"), ("scheduler", "scheduler_config.json")):
        cls = json.loads((exported / part / name).read_text())["_class_name"]
        assert [index[part][0], cls] == index[part]
        assert (exported / part / f"{index[part][0]}.py").is_file()


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level names of absolute imports, relative module names) of a file."""
    absolute, relative = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            absolute |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            absolute.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 1 and node.module and "." not in node.module, path
            relative.add(node.module)
    return absolute, relative


def test_exported_files_import_only_torch_diffusers_and_their_siblings(exported):
    for folder, (module, _, siblings) in PARTS.items():
        for name in (module, *siblings):
            absolute, relative = _imports(exported / folder / f"{name}.py")
            assert absolute <= ALLOWED, (name, absolute - ALLOWED)
            assert relative <= set(siblings), (name, relative)
        # diffusers copies only the files the module file itself imports: it names them all
        assert _imports(exported / folder / f"{module}.py")[1] == set(siblings), folder
    assert set(SOURCES) == {n for _, _, sib in PARTS.values() for n in sib}


def test_the_stored_schedule_is_the_runs_and_the_scheduler_uses_it(exported, tiny_run):
    _, ckpt = load_checkpoint(tiny_run / "run")
    steps = ckpt.config.sample.num_steps
    stored = json.loads((exported / "scheduler/scheduler_config.json").read_text())["schedules"]
    assert stored == {str(steps): schedule_rows(sampling_schedule(ckpt.config))}

    # a different stored schedule (here: the staged one with a timestep shift) is what samples
    pipe = load_export(exported)
    base = pipe(class_labels=[1, 2], generator=image_generators(3, 2), output_type="latent")
    shifted = staged_schedule(steps, ckpt.config.flow.delta_t, shift=3.0)
    pipe.scheduler.register_to_config(schedules={str(steps): schedule_rows(shifted)})
    got = pipe(class_labels=[1, 2], generator=image_generators(3, 2), output_type="latent")
    assert torch.equal(pipe.scheduler.schedule.tau, shifted.tau)
    assert not torch.equal(got.images, base.images)
    cfg = dataclasses.replace(
        ckpt.config, sample=dataclasses.replace(ckpt.config.sample, timestep_shift=3.0)
    )
    want = load_export(exported)
    want.scheduler.register_to_config(timestep_shift=3.0, schedules=None)
    ref = want(class_labels=[1, 2], generator=image_generators(3, 2), output_type="latent")
    assert torch.equal(sampling_schedule(cfg).tau, shifted.tau)
    assert torch.equal(got.images, ref.images)


def test_a_run_on_another_path_exports_its_schedule_and_only_that(tiny_run, monkeypatch):
    _, ckpt = load_checkpoint(tiny_run / "run")
    assert convert.scheduler_from_config(ckpt.config).config.path == "staged"
    steps, dt = ckpt.config.sample.num_steps, ckpt.config.flow.delta_t
    other = staged_schedule(steps, dt, shift=3.0)  # stands for any schedule the run carries
    monkeypatch.setattr(convert, "sampling_schedule", lambda config: other)
    sched = convert.scheduler_from_config(ckpt.config)
    assert sched.config.path == "stored"
    assert sched.config.schedules == {str(steps): schedule_rows(other)}
    sched.set_timesteps()
    assert torch.equal(sched.timesteps, other.tau)


def test_a_path_other_than_staged_samples_only_its_stored_step_counts(exported):
    pipe = load_export(exported)
    pipe.scheduler.register_to_config(path="stored")
    steps = int(pipe.scheduler.config.num_inference_steps)
    pipe([0], generator=image_generators(0, 1), output_type="latent")  # stored: fine
    with pytest.raises(ValueError, match=rf"stored for \[{steps}\] steps"):
        pipe([0], num_inference_steps=steps + 1, output_type="latent")
    with pytest.raises(ValueError, match="dopri5 integrates the staged path"):
        pipe([0], method="dopri5", output_type="latent")


def _load_without_sfd(
    export: Path, out: Path, cache: Path, changes: dict | None = None
) -> subprocess.CompletedProcess:
    spec = {"labels": [0, 1], "seed": 0, "kwargs": {}, **(changes or {})}
    env = {**os.environ, "HF_MODULES_CACHE": str(cache), "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, str(LOADER), str(export), str(out), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_module_files_edited_to_misfit_the_weights_fail_to_load(exported, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(exported, edited)
    code = edited / "transformer/lightningdit.py"
    text = code.read_text()
    assert "self.final_layer = FinalLayer(" in text
    code.write_text(text.replace("self.final_layer = FinalLayer(", "self.head = FinalLayer("))
    text = code.read_text()
    code.write_text(text.replace("self.final_layer", "self.head"))
    res = _load_without_sfd(edited, tmp_path / "out", tmp_path / "modules")
    assert res.returncode == 3, res.stdout + res.stderr[-2000:]
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("LOAD-ERROR ValueError") and "dit.head" in line, line
    assert "do not fit SFDTransformer2DModel's code" in line
    assert not (tmp_path / "out").exists()  # nothing was generated


def test_an_export_loaded_without_sfd_samples_as_sfd_generate_does(exported, tiny_run, tmp_path):
    model, ckpt = load_checkpoint(tiny_run / "run")
    sample = dataclasses.replace(ckpt.config.sample, method="dopri5")
    sampler = LatentSampler(model, dataclasses.replace(ckpt.config, sample=sample), ckpt.stats)
    want = ckpt.stats.denormalize(sampler.sample([0, 1], torch.tensor([0, 1]), seed=0).final)
    spec = {"latent": True, "threads": torch.get_num_threads(), "kwargs": {"method": "dopri5"}}
    res = _load_without_sfd(exported, tmp_path / "out", tmp_path / "modules", spec)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    got = load_file(str(tmp_path / "out/latents.safetensors"))["latents"]
    assert torch.equal(got, want)
