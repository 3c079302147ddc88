import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from sfd.cli import main
from sfd.errors import EXIT_MISMATCH
from tests.helpers import FIXTURES, tiny_config, tiny_train_args, write_synthetic_latents


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_and_dry_run():
    assert run("--help").exit_code == 0
    res = run(
        "train", "--preset", "S", "--dry-run", "--set", "train.lr=2e-4", "--set", "flow.delta_t=0"
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)
    assert cfg["train"]["lr"] == 2e-4 and cfg["flow"]["delta_t"] == 0.0
    assert cfg["model"]["width"] == 384


def test_bad_inputs_are_clear_errors(tmp_path):
    res = run("train", "--preset", "XS", "--dry-run")
    assert res.exit_code == 2 and "XS" in res.output
    res = run("train", "--dry-run", "--set", "flow.delta_t=2")
    assert res.exit_code == 2 and "flow.delta_t must be a number in [0, 1]" in res.output
    res = run("train", "--data", tmp_path, "--out", tmp_path / "run")
    assert res.exit_code == 2 and "not a latent shard directory" in res.output
    res = run("sample", tmp_path, "--out", tmp_path / "s")
    assert res.exit_code == 3 and "holds no checkpoint" in res.output


def test_train_resume_and_sample(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", tiny_config(), count=12, shard_size=6)
    out = tmp_path / "run"
    args = tiny_train_args(data, out, 4)
    assert run(*args, "--max-steps", "2").exit_code == 0
    res = run(*args)
    assert res.exit_code == 0 and "trained to step 4" in res.output
    res = run(
        "sample",
        out,
        "--num",
        5,
        "--batch-size",
        2,
        "--out",
        tmp_path / "samples",
        "--latents-only",
        "--set",
        "sample.method=euler",
        "--set",
        "sample.num_steps=3",
    )
    assert res.exit_code == 0, res.output
    latents = load_file(str(tmp_path / "samples/latents.safetensors"))
    assert latents["latents"].shape == (5, 6, 8, 8)
    res = run("sample", out, "--num", 5, "--out", tmp_path / "samples", "--latents-only")
    assert res.exit_code == 1 and "exists" in res.output


def test_import_upstream_cli(tmp_path):
    out = tmp_path / "imported"
    res = run(
        "import-upstream",
        FIXTURES / "state_dict.safetensors",
        "--upstream-config",
        FIXTURES / "upstream_config.json",
        "--out",
        out,
    )
    assert res.exit_code == 0, res.output
    res = run(
        "import-upstream",
        FIXTURES / "guide_state_dict.safetensors",
        "--upstream-config",
        FIXTURES / "upstream_config.json",
        "--out",
        tmp_path / "bad",
    )
    assert res.exit_code == 5 and "does not match the config" in res.output


def test_sample_latents_only_honours_labels(tmp_path):
    # the release fixture model, whose output depends strongly on the label
    ckpt = tmp_path / "imported"
    res = run(
        "import-upstream",
        FIXTURES / "state_dict.safetensors",
        "--upstream-config",
        FIXTURES / "upstream_config.json",
        "--out",
        ckpt,
    )
    assert res.exit_code == 0, res.output
    k = json.loads((FIXTURES / "upstream_config.json").read_text())["model_kwargs"]["num_classes"]
    balanced = torch.arange(5) % k
    labels = (balanced + torch.tensor([1, 0, 0, 2, 0])) % k  # items 0 and 3 change
    (tmp_path / "labels.txt").write_text("\n".join(map(str, labels.tolist())))
    common = ["--num", 5, "--batch-size", 2, "--latents-only"]
    common += ["--set", "sample.method=euler", "--set", "sample.num_steps=3"]
    res = run("sample", ckpt, *common, "--out", tmp_path / "balanced")
    assert res.exit_code == 0, res.output
    res = run(
        "sample", ckpt, *common, "--out", tmp_path / "given", "--labels", tmp_path / "labels.txt"
    )
    assert res.exit_code == 0, res.output
    a, b = (load_file(str(tmp_path / d / "latents.safetensors")) for d in ("balanced", "given"))
    assert torch.equal(a["labels"], balanced) and torch.equal(b["labels"], labels)
    same = labels == balanced  # same seeds: equal where the label is equal, else different
    assert torch.equal(a["latents"][same], b["latents"][same])
    assert all((a["latents"][i] != b["latents"][i]).any() for i in torch.nonzero(~same).flatten())


def _release_stats(path: Path, channels: int, offset: float) -> torch.Tensor:
    """A statistics file as the release writes it: torch.save of {'mean', 'std'}, (1, C, 1, 1)."""
    mean = torch.linspace(-1, 1, channels).view(1, channels, 1, 1) + offset
    std = torch.linspace(0.5, 2, channels).view(1, channels, 1, 1) + offset
    torch.save({"mean": mean, "std": std}, path)
    return torch.cat([mean.reshape(-1), std.reshape(-1)])


def test_import_upstream_release_latent_stats(tmp_path):
    from sfd.api import load_checkpoint
    from sfd.upstream import read_upstream_config

    lat = read_upstream_config(FIXTURES / "upstream_config.json").latent
    tex, sem = lat.tex_channels, lat.sem_channels
    tex_file, sem_file = tmp_path / "latents_stats.pt", tmp_path / "latents_sv_stats.pt"
    tex_ms, sem_ms = _release_stats(tex_file, tex, 0.0), _release_stats(sem_file, sem, 3.0)
    all_file = tmp_path / "all_stats.pt"
    all_ms = _release_stats(all_file, tex + sem, 1.0)
    base = ["import-upstream", FIXTURES / "state_dict.safetensors"]
    base += ["--upstream-config", FIXTURES / "upstream_config.json"]

    # the release's two files: texture then semantic
    res = run(
        *base, "--out", tmp_path / "two", "--latent-stats", tex_file, "--latent-stats", sem_file
    )
    assert res.exit_code == 0, res.output
    stats = load_checkpoint(tmp_path / "two")[1].stats
    assert torch.equal(stats.mean, torch.cat([tex_ms[:tex], sem_ms[:sem]]))
    assert torch.equal(stats.std, torch.cat([tex_ms[tex:], sem_ms[sem:]]))
    # one file for all channels
    res = run(*base, "--out", tmp_path / "one", "--latent-stats", all_file)
    assert res.exit_code == 0, res.output
    stats = load_checkpoint(tmp_path / "one")[1].stats
    assert torch.equal(torch.cat([stats.mean, stats.std]), all_ms)
    # each part's channel count is checked, in one line naming the file and the count
    bad = (
        ([tex_file], tex_file, f"all {tex + sem} channels"),
        ([sem_file, tex_file], sem_file, f"the {tex} texture channels"),
        ([tex_file, all_file], all_file, f"the {sem} semantic channels"),
    )
    for i, (files, named, expected) in enumerate(bad):
        given = [a for f in files for a in ("--latent-stats", f)]
        res = run(*base, "--out", tmp_path / f"bad{i}", *given)
        assert res.exit_code == 5 and str(named) in res.output and expected in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    res = run(*base, "--out", tmp_path / "three", *(["--latent-stats", tex_file] * 3))
    assert res.exit_code == 1 and "got 3" in res.output


def test_decoder_resolved_from_the_run_config(tmp_path, monkeypatch):
    import dataclasses

    from sfd.api import resolve_decoder
    from sfd.errors import UsageError

    run_dir = tmp_path / "demo" / "run"
    (tmp_path / "demo" / "texture_vae").mkdir(parents=True)
    run_dir.mkdir()
    monkeypatch.chdir(tmp_path)  # "../texture_vae" does not exist from here
    cfg = tiny_config()

    def naming(path):
        return dataclasses.replace(
            cfg, latent=dataclasses.replace(cfg.latent, texture_autoencoder=path)
        )

    assert (
        resolve_decoder(naming("../texture_vae"), run_dir).resolve()
        == tmp_path / "demo/texture_vae"
    )
    assert resolve_decoder(naming("demo/texture_vae"), run_dir) == Path("demo/texture_vae")
    with pytest.raises(UsageError, match="'missing_vae'.*--decoder"):
        resolve_decoder(naming("missing_vae"), run_dir)
    with pytest.raises(UsageError, match="no decoder"):
        resolve_decoder(naming(""), run_dir)


def _latents_of_another_shape(tmp_path):
    """A latent set of shape (3, 2, 4), 3 classes, 12-d REPA features, made with a decoder."""
    import dataclasses

    cfg = tiny_config()
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, num_classes=3, repa_dim=12),
        latent=dataclasses.replace(cfg.latent, tex_channels=3, sem_channels=2, size=4),
    )
    data = write_synthetic_latents(tmp_path / "lat", cfg, count=12, shard_size=6)
    meta = json.loads((data / "meta.json").read_text())
    (tmp_path / "vae").mkdir()
    meta["extraction"] = {"texture_ae_path": str(tmp_path / "vae")}
    (data / "meta.json").write_text(json.dumps(meta))
    return data


def test_train_takes_shape_classes_repa_dim_and_decoder_from_the_data(tmp_path):
    """no --set is needed to match the data; --dry-run --data shows it."""
    data = _latents_of_another_shape(tmp_path)
    res = run("train", "--data", data, "--dry-run")
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)
    lat = cfg["latent"]
    assert (lat["tex_channels"], lat["sem_channels"], lat["size"]) == (3, 2, 4)
    assert (cfg["model"]["num_classes"], cfg["model"]["repa_dim"]) == (3, 12)
    assert lat["texture_autoencoder"] == str(tmp_path / "vae")
    # only an explicit value that disagrees is an error, naming both values; nothing written
    for key, want in (("model.num_classes=10", "= 3"), ("latent.size=8", "= 4")):
        for extra in ((), ("--out", tmp_path / "run")):
            res = CliRunner().invoke(
                main, ["train", "--data", str(data), "--set", key, *map(str, extra)]
            )
            assert (
                res.exit_code == EXIT_MISMATCH
                and key.split("=")[0] in res.output
                and want in res.output
            )
            assert "Traceback" not in res.output and not (tmp_path / "run").exists()
    res = run("train", "--data", data, "--dry-run", "--set", "model.repa_dim=0")
    assert res.exit_code == 0 and json.loads(res.output)["model"]["repa_dim"] == 0


def test_a_plain_rerun_resumes_from_the_stored_config(tmp_path):
    """rerunning without the --set options resumes; a conflict is named."""
    data = _latents_of_another_shape(tmp_path)
    out = tmp_path / "run"
    sets = ["--set", "train.total_steps=2", "--set", "train.global_batch_size=4"]
    res = run("train", "--data", data, "--out", out, "--device", "cpu", *sets, "--max-steps", 1)
    assert res.exit_code == 0 and "trained to step 1" in res.output
    stored = json.loads((out / "config.json").read_text())
    assert stored["latent"]["texture_autoencoder"] == str(tmp_path / "vae")
    res = run("train", "--data", data, "--out", out, "--device", "cpu")
    assert res.exit_code == 0 and "trained to step 2" in res.output, res.output
    assert json.loads((out / "config.json").read_text()) == stored
    res = run("train", "--data", data, "--out", out, "--set", "train.total_steps=3")
    assert res.exit_code == 0 and "trained to step 3" in res.output
    res = CliRunner().invoke(
        main, ["train", "--data", str(data), "--out", str(out), "--set", "flow.delta_t=0.5"]
    )
    assert res.exit_code == EXIT_MISMATCH and "flow.delta_t: 0.3 -> 0.5" in res.output
    res = CliRunner().invoke(
        main, ["train", "--preset", "S", "--data", str(data), "--out", str(out)]
    )
    assert res.exit_code == EXIT_MISMATCH and "preset 'tiny'" in res.output


def test_the_default_ema_decay_follows_the_run_length(tmp_path):
    """EMA 0.9999 on a 150-step run would stay at the initial weights."""
    res = run("train", "--dry-run", "--set", "train.total_steps=150")
    assert json.loads(res.output)["train"]["ema_decay"] == pytest.approx(0.5 ** (1 / 15))
    res = run(
        "train", "--dry-run", "--set", "train.total_steps=150", "--set", "train.ema_decay=0.9999"
    )
    assert json.loads(res.output)["train"]["ema_decay"] == 0.9999
    res = run("train", "--dry-run", "--preset", "demo", "--set", "train.total_steps=30")
    assert json.loads(res.output)["train"]["ema_decay"] == 0.99  # a preset's choice is kept
    res = run("train", "--dry-run", "--preset", "XL")
    assert json.loads(res.output)["train"]["ema_decay"] == 0.9999  # 400K steps: unchanged


def test_every_image_reading_command_has_the_same_on_error_option():
    """sfd eval had none; the help text is one."""
    from sfd.data.images import ON_ERROR_HELP

    readers = ("extract", "extract-features", "train-texture-vae", "eval", "ref-stats")
    for name in readers:
        options = {o.name: o for o in main.commands[name].params}
        assert options["on_error"].help == ON_ERROR_HELP, name
        assert options["on_error"].default == "raise"


def test_every_long_command_has_dry_run_and_the_shared_device_option():
    from sfd.cli.options import device_option

    shared = device_option()(lambda device: None).__click_params__[0].help
    long_work = (
        "train",
        "sample",
        "extract",
        "extract-features",
        "train-semvae",
        "train-texture-vae",
        "eval",
        "ref-stats",
        "train-classifier",
        "demo",
        "pipeline",
        "ablate",
    )
    for name in long_work:
        options = {o.name: o for o in main.commands[name].params}
        assert "dry_run" in options, name
        if name != "train-classifier":  # cpu by default: the packaged classifier is reproduced
            assert options["device"].default is None and options["device"].help == shared, name


@pytest.mark.parametrize("command", ["demo", "ablate"])
def test_an_unknown_dataset_lists_the_known_ones_and_options_are_checked(tmp_path, command):
    out = ["--out", str(tmp_path / command), "--dry-run"]
    res = CliRunner().invoke(main, [command, "--dataset", "imagenet", *out])
    assert res.exit_code == 2 and "'fashion-mnist', 'composites'" in res.output
    res = CliRunner().invoke(
        main, [command, "--dataset", "composites", "--background-strength", "1.5", *out]
    )
    assert res.exit_code == 2 and "--background-strength" in res.output and "1.5" in res.output
    res = CliRunner().invoke(main, [command, "--dataset", "composites", *out])
    assert res.exit_code == 0 and '"dataset": "composites"' in res.output
    if command == "demo":  # its decoder must keep the garments: the longer texture VAE
        assert '"texture_steps": 1500' in res.output
    assert not (tmp_path / command).exists()  # a dry run writes nothing


def test_pipeline_takes_the_composites_by_name(tmp_path):
    res = CliRunner().invoke(
        main, ["pipeline", "--data-root", "composites", "--out", str(tmp_path / "p"), "--dry-run"]
    )
    assert res.exit_code == 0 and '"image_size": 32' in res.output and '"channels": 3' in res.output
    res = CliRunner().invoke(main, ["pipeline", "--data-root", "compsites", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "fashion-mnist, composites" in res.output
