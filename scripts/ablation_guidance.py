"""Guidance scales at any checkpoint of an `sfd ablate` grid, with the grid's own protocol.

`sfd ablate` evaluates its curves at one guidance scale and sweeps guidance only at the final
checkpoint. This evaluates chosen (row, seed, step) checkpoints at chosen CFG scales with the
same samples (per-image seeds, balanced classes, sampler) and metrics as the grid, and caches
each result in GRID/guidance/ROW/seedS/stepNNNNNNN_cfgW.json (a rerun recomputes nothing).

    python scripts/ablation_guidance.py --grid runs/gap/long --rows sfd,semvae-sync \
        --seeds 0 --steps 3000 --cfg 1.5,2,3,4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sfd.data.tensor_files import atomic_write_json
from sfd.experiments.ablate import AblationSettings, Evaluator, prepare_data, sample_images
from sfd.latents.texture import load_texture_autoencoder
from sfd.training.checkpoint import checkpoint_dir


def grid_settings(grid: Path, rows: tuple[str, ...]) -> AblationSettings:
    """The grid's evaluation protocol (protocol.json) as settings for ``rows``."""
    proto = json.loads((grid / "protocol.json").read_text())
    method, num_steps = proto["sampler"].split()
    return AblationSettings(
        rows=rows,
        steps=proto["steps"],
        checkpoints=len(proto["checkpoints"]),
        num_samples=proto["num_samples"],
        sample_seed=proto["sample_seed"],
        method=method,
        num_steps=int(num_steps),
        overrides=tuple(proto["overrides"]),
        sem_channels=proto.get("sem_channels"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--grid", type=Path, required=True)
    ap.add_argument("--rows", required=True, help="comma-separated rows of the grid")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
    ap.add_argument("--cfg", required=True, help="comma-separated guidance scales")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    rows = tuple(args.rows.split(","))
    settings = grid_settings(args.grid, rows)
    data = prepare_data(args.grid, settings, device=args.device)
    evaluator = Evaluator(args.grid, data, settings.num_samples, args.device)
    decoder = load_texture_autoencoder(data.decoder).to(args.device).eval()
    for row in rows:
        for seed in map(int, args.seeds.split(",")):
            for step in map(int, args.steps.split(",")):
                ckpt = checkpoint_dir(args.grid / "runs" / row / f"seed{seed}", step)
                if not (ckpt / "ema.safetensors").exists():
                    raise SystemExit(f"no checkpoint {ckpt}: train it first (sfd ablate)")
                for scale in map(float, args.cfg.split(",")):
                    target = (
                        args.grid
                        / "guidance"
                        / row
                        / f"seed{seed}"
                        / f"step{step:07d}_cfg{scale:g}.json"
                    )
                    if not target.exists():
                        t0 = time.perf_counter()
                        images, labels, _ = sample_images(
                            ckpt, decoder, settings, scale, args.device
                        )
                        record = {"row": row, "seed": seed, "step": step, "cfg_scale": scale}
                        record |= evaluator.metrics(evaluator.features(images), labels)
                        record["eval_seconds"] = round(time.perf_counter() - t0, 1)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_json(target, record)
                    r = json.loads(target.read_text())
                    print(
                        f"{row} seed {seed} step {step} cfg {scale:g}: FD_FMNIST "
                        f"{r['fd_fmnist']:.2f}, accuracy {r['acc']:.3f}, FD EfficientNet "
                        f"{r['fd_effnet']:.1f}"
                    )


if __name__ == "__main__":
    main()
