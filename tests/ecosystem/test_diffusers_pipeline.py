"""``sfd export-diffusers`` + ``load_export`` (the installed sfd) against ``sfd sample``.

Parity is byte-level: for the same seeds, labels and settings the pipeline's PNGs equal the
files ``sfd sample`` writes, and its ``"latent"`` output equals ``sfd sample --latents-only``.
"""

from __future__ import annotations

import dataclasses
import io
import shutil

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from sfd.api import load_checkpoint
from sfd.cli import main
from sfd.config import SampleConfig
from sfd.ecosystem import SFDScheduler, SFDTransformer2DModel, image_generators, load_export
from sfd.ecosystem.export import ExportSources, build_pipeline
from sfd.ecosystem.remote.scheduler_sfd import scheduler_settings
from sfd.flow.solvers import SOLVERS
from sfd.generate import LatentSampler, balanced_labels
from sfd.training.checkpoint import save_checkpoint
from tests.ecosystem.ecosystem_helpers import tiny_run_fixture, tiny_vae  # noqa: F401

NUM, SEED = 5, 7


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-diffusers"
    res = run("export-diffusers", tiny_run / "run", out)
    assert res.exit_code == 0, res.output
    return out


def test_export_is_a_standard_diffusers_directory(exported, tiny_run):
    for part in ("model_index.json", "transformer/config.json", "vae/config.json"):
        assert (exported / part).is_file(), part
    assert (exported / "scheduler/scheduler_config.json").is_file()
    assert (exported / "transformer/diffusion_pytorch_model.safetensors").is_file()
    card = (exported / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "mit" and front["library_name"] == "diffusers"
    assert "sfd" in front["tags"] and front["sfd"]["step"] == 7
    assert front["sfd"]["config"]["model"]["num_classes"] == 10
    assert "unconditional" not in front.get("pipeline_tag", "")  # a class-conditional model
    assert "class-conditional" in front["tags"]
    # how to load it, with and without sfd; what trusting remote code means; the citation
    assert 'DiffusionPipeline.from_pretrained("DIRECTORY", trust_remote_code=True)' in card
    assert 'revision="COMMIT"' in card and "pin\n`revision`" in card
    assert "load_export(" in card and "arXiv" in card and "## License" in card


def test_pipeline_images_equal_sfd_sample_bytes(exported, tiny_run, tmp_path):
    res = run(
        "sample",
        tiny_run / "run",
        "--num",
        NUM,
        "--seed",
        SEED,
        "--batch-size",
        3,
        "--out",
        tmp_path / "cli",
    )
    assert res.exit_code == 0, res.output
    pipe = load_export(exported)
    assert isinstance(pipe.transformer, SFDTransformer2DModel)
    assert isinstance(pipe.scheduler, SFDScheduler)
    labels = balanced_labels(range(NUM), 10).tolist()
    images = pipe(class_labels=labels, generator=image_generators(SEED, NUM)).images
    for i, image in enumerate(images):
        assert png_bytes(image) == (tmp_path / f"cli/images/{i:06d}.png").read_bytes(), i
    # "np" is the same decode, unquantised: within half a grey level of the PNG
    arr = pipe(class_labels=labels, generator=image_generators(SEED, NUM), output_type="np")
    pngs = np.stack([np.asarray(im) for im in images]).astype(np.float64)
    assert np.abs(arr.images * 255 - pngs).max() <= 0.5 + 1e-3


def test_pipeline_latents_equal_sfd_sample_latents(exported, tiny_run, tmp_path):
    res = run(
        "sample",
        tiny_run / "run",
        "--num",
        NUM,
        "--seed",
        SEED,
        "--latents-only",
        "--set",
        "sample.method=euler",
        "--set",
        "sample.num_steps=4",
        "--out",
        tmp_path / "cli",
    )
    assert res.exit_code == 0, res.output
    want = load_file(str(tmp_path / "cli/latents.safetensors"))["latents"]
    pipe = load_export(exported)
    got = pipe(
        class_labels=balanced_labels(range(NUM), 10).tolist(),
        generator=image_generators(SEED, NUM),
        num_inference_steps=4,
        method="euler",
        output_type="latent",
    ).images
    assert torch.equal(got, want)


def test_a_batch_equals_its_images_one_at_a_time(exported):
    pipe = load_export(exported)
    batch = pipe([3, 1, 4], generator=image_generators(0, 3), output_type="latent").images
    single = [
        pipe([y], generator=image_generators(0, 1, start=i), output_type="latent").images
        for i, y in enumerate([3, 1, 4])
    ]
    assert torch.equal(batch, torch.cat(single))


def test_cfg_uses_null_class_num_classes_on_all_channels(exported):
    pipe = load_export(exported)
    seen = []
    hook = pipe.transformer.dit.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["y"].clone()), with_kwargs=True
    )
    guided = pipe([2], generator=image_generators(0, 1), guidance_scale=3.0, output_type="latent")
    hook.remove()
    labels = torch.cat(seen).unique().tolist()
    assert labels == [2, 10]  # the null class is num_classes (10), never 1000
    plain = pipe([2], generator=image_generators(0, 1), guidance_scale=1.0, output_type="latent")
    tex, sem = pipe.transformer.layout.split(guided.images - plain.images)
    assert tex.abs().max() > 1e-4 and sem.abs().max() > 1e-4  # guidance moved both parts


def test_label_names_map_to_ids(exported, tiny_run, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["tee, t-shirt", *(f"class{i}" for i in range(1, 10))]))
    res = run("export-diffusers", tiny_run / "run", tmp_path / "named", "--class-names", names)
    assert res.exit_code == 0, res.output
    pipe = load_export(tmp_path / "named")
    assert pipe.get_label_ids(["t-shirt", "class3"]) == [0, 3]
    with pytest.raises(ValueError, match="unknown labels"):
        pipe.get_label_ids("sneaker")


def test_export_refuses_an_existing_directory(exported, tiny_run, tmp_path):
    before = sorted(p.name for p in exported.iterdir())
    res = run("export-diffusers", tiny_run / "run", exported)
    assert res.exit_code == 1 and "exists" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in exported.iterdir()) == before


def test_wrong_decoder_is_one_line(tiny_run, tmp_path):
    tiny_vae(latent_channels=3).save_pretrained(tmp_path / "vae3")
    res = run(
        "export-diffusers", tiny_run / "run", tmp_path / "out", "--decoder", tmp_path / "vae3"
    )
    assert res.exit_code == 5, res.output
    assert "3 latent channels" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_decoder_that_cannot_be_found_is_one_line(tiny_run, tmp_path):
    shutil.copytree(tiny_run / "run", tmp_path / "run")  # names ../vae, which is not there
    res = run("export-diffusers", tmp_path / "run", tmp_path / "out")
    assert res.exit_code == 3 and len(res.output.strip().splitlines()) == 1, res.output
    assert "--decoder" in res.output and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing left beside it


def test_metrics_reach_the_model_card_and_bad_metrics_are_one_line(tiny_run, tmp_path):
    good, bad = tmp_path / "metrics.json", tmp_path / "bad.json"
    good.write_text('{"fd_fmnist": 42.5, "acc": 0.61}')
    bad.write_text("[1, 2")
    res = run("export-diffusers", tiny_run / "run", tmp_path / "out", "--metrics", bad)
    assert res.exit_code == 3 and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "out").exists()
    res = run("export-diffusers", tiny_run / "run", tmp_path / "out", "--metrics", good)
    assert res.exit_code == 0, res.output
    card = (tmp_path / "out/README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["sfd"]["metrics"] == {
        "fd_fmnist": 42.5,
        "acc": 0.61,
    }


def test_autoguidance_without_a_guide_is_refused(exported, tiny_run, tmp_path):
    pipe = load_export(exported)
    with pytest.raises(ValueError, match="needs a guide_transformer"):
        pipe([1], guidance="autoguidance", guidance_scale=2.0, output_type="latent")
    # a run that samples with AutoGuidance exports only with its guide
    model, ckpt = load_checkpoint(tiny_run / "run")
    sample = dataclasses.replace(ckpt.config.sample, guide="autoguidance")
    cfg = dataclasses.replace(ckpt.config, sample=sample)
    save_checkpoint(tmp_path / "ag", step=1, config=cfg, stats=ckpt.stats, ema=model)
    res = run("export-diffusers", tmp_path / "ag", tmp_path / "out", "--decoder", tiny_run / "vae")
    assert res.exit_code == 5 and "--guide" in res.output, res.output
    res = run(
        "export-diffusers",
        tmp_path / "ag",
        tmp_path / "out",
        "--decoder",
        tiny_run / "vae",
        "--guide",
        tiny_run / "run",
    )
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("method", list(SOLVERS))
def test_pipeline_and_sfd_generate_give_identical_latents_with_every_solver(tiny_run, method):
    model, ckpt = load_checkpoint(tiny_run / "run")
    pipe = build_pipeline(ExportSources(tiny_run / "run"))[0]
    sample = dataclasses.replace(ckpt.config.sample, method=method, atol=1e-4, rtol=1e-3)
    cfg = dataclasses.replace(ckpt.config, sample=sample)
    pipe.scheduler.register_to_config(atol=1e-4, rtol=1e-3)
    labels = torch.tensor([3, 1, 4])
    want = LatentSampler(model, cfg, ckpt.stats).sample(range(3), labels, seed=SEED).final
    got = pipe.latents(labels, generator=image_generators(SEED, 3), method=method).final
    assert torch.equal(got, want)


def test_the_scheduler_stores_a_sample_section_and_gives_it_back():
    sample = dataclasses.replace(
        SampleConfig(), method="heun", num_steps=9, cfg_scale_sem=2.5, cfg_interval_tex=(0.1, 0.9)
    )
    settings = SFDScheduler(**scheduler_settings(sample)).sampler()
    assert dataclasses.asdict(settings) == dataclasses.asdict(sample)
    assert SFDScheduler().sampler() == SFDScheduler(**scheduler_settings(SampleConfig())).sampler()
