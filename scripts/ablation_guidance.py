"""Guidance scales at any checkpoint of an `sfd ablate` grid, with the grid's own protocol.

`sfd ablate` evaluates its curves at one guidance scale and sweeps guidance only at the final
checkpoint. This evaluates chosen (row, seed, step) checkpoints at chosen CFG scales with the
same samples (per-image seeds, balanced classes, sampler) and metrics as the grid, and caches
each result in GRID/guidance/ROW/seedS/stepNNNNNNN_cfgW.json (a rerun recomputes nothing). A
scale the grid already evaluated with its own sampler (GRID/results/ROW/seedS/, the same file
name) is read from there, not sampled again.

    python scripts/ablation_guidance.py --grid runs/gap/long --rows sfd,semvae-sync \
        --seeds 0 --steps 3000 --cfg 1.5,2,3,4

With ``--best`` and two rows, it also compares them at their best scales: per row and scale the
mean ± std over seeds, and, per seed, each row's lowest FD over the scales given, the two paired
by seed (first minus second: ``sfd.experiments.ablate_nfe.paired``). A guided gain that is only
a shift of the best scale vanishes in that comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sfd.data.tensor_files import atomic_write_json
from sfd.experiments.ablate import AblationSettings, Evaluator, prepare_data, sample_images
from sfd.experiments.ablate_nfe import best_of_scales
from sfd.latents.texture import load_texture_autoencoder
from sfd.training.checkpoint import checkpoint_dir

METRIC = "fd_fmnist"  # the grid's in-domain FD (FD_FMNIST, or FD_COMP on the composites)


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
        texture_steps=proto.get("texture_steps"),
        dataset=proto.get("dataset", "fashion-mnist"),
        background_strength=proto.get("background_strength", 0.6),
    )


def record_name(step: int, scale: float) -> str:
    return f"step{step:07d}_cfg{scale:g}.json"


def summarise(records: dict[tuple[str, int, float], float], rows: tuple[str, ...]) -> None:
    scales = sorted({c for (_, _, c) in records})
    print(f"\n{METRIC} at step, mean ± std over seeds (n):")
    for row in rows:
        cells = []
        for c in scales:
            v = np.array([x for (r, _, cc), x in records.items() if r == row and cc == c])
            cells.append(
                f"CFG {c:g}: {v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f} ({len(v)})"
            )
        print(f"  {row}: " + "; ".join(cells))
    out = best_of_scales(records, rows[0], rows[1])
    ci = out.get("ci95")
    print(
        f"best scale against best scale, {rows[0]} - {rows[1]}: "
        f"{out['mean_difference']:+.2f}"
        + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}], paired t p = {out['paired_t_p']:.3f}" if ci else "")
        + f", n = {out['n']}"
    )
    for row in rows[:2]:
        print(f"  {row}'s best scale per seed: {out['scales'][row]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--grid", type=Path, required=True)
    ap.add_argument("--rows", required=True, help="comma-separated rows of the grid")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
    ap.add_argument("--cfg", required=True, help="comma-separated guidance scales")
    ap.add_argument(
        "--best", action="store_true", help="compare the first two rows at their best scales"
    )
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    rows = tuple(args.rows.split(","))
    steps = [int(s) for s in args.steps.split(",")]
    if args.best and (len(rows) < 2 or len(steps) != 1):
        raise SystemExit("--best: give two rows (--rows A,B) and one checkpoint step (--steps N)")
    settings = grid_settings(args.grid, rows)
    data = evaluator = decoder = None
    records: dict[tuple[str, int, float], float] = {}
    for row in rows:
        for seed in map(int, args.seeds.split(",")):
            for step in steps:
                ckpt = checkpoint_dir(args.grid / "runs" / row / f"seed{seed}", step)
                if not (ckpt / "ema.safetensors").exists():
                    raise SystemExit(f"no checkpoint {ckpt}: train it first (sfd ablate)")
                for scale in map(float, args.cfg.split(",")):
                    name = record_name(step, scale)
                    own = args.grid / "results" / row / f"seed{seed}" / name
                    target = args.grid / "guidance" / row / f"seed{seed}" / name
                    if own.exists():
                        target = own
                    elif not target.exists():
                        if evaluator is None:  # the data stages load only when something is sampled
                            data = prepare_data(args.grid, settings, device=args.device)
                            evaluator = Evaluator(
                                args.grid, data, settings.num_samples, args.device
                            )
                            decoder = load_texture_autoencoder(data.decoder).to(args.device).eval()
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
                    records[(row, seed, scale)] = float(r[METRIC])
                    print(
                        f"{row} seed {seed} step {step} cfg {scale:g}: FD "
                        f"{r[METRIC]:.2f}, accuracy {r['acc']:.3f}, FD EfficientNet "
                        f"{r['fd_effnet']:.1f}"
                    )
    if args.best:
        summarise(records, rows)


if __name__ == "__main__":
    main()
