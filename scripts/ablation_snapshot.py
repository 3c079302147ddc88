"""Version an `sfd ablate` grid's small state in the repository, and restore it to resume.

`save` copies from a grid directory (default runs/ablate) into experiments/ablation: every
cached evaluation (results/**.json), the protocol, the reference metrics, the summary
(results.json, table.md, the plots), the latent probe, and the two small autoencoders of the
base (texture VAE, SemVAE: ~2 MB) with a stages.json that names only them. `restore` copies that
back; `sfd ablate` then re-extracts the features and latents from those same autoencoders (the
extraction is deterministic), skips every (row, seed) whose results exist and trains the rest.

    python scripts/ablation_snapshot.py save    [--grid runs/ablate] [--to experiments/ablation]
    python scripts/ablation_snapshot.py restore [--grid runs/ablate] [--to experiments/ablation]

The variants of scripts/ablation_gaps.sh (runs/gap/NAME) are saved with --grid runs/gap/NAME
--to experiments/ablation/gaps/NAME; those sharing the default grid's base through a link save
no base (ablation_gaps.sh links it again when it resumes them).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

FILES = ("protocol.json", "results.json", "table.md", "ablation.png", "delta_t.png", "probe.json")
BASE = ("texture_vae", "semvae")


def save_base(base: Path, dst: Path) -> None:
    """The base's two autoencoders and a stages.json naming only them (restore re-extracts the
    rest from them)."""
    stages = json.loads((base / "stages.json").read_text())
    dst.mkdir(parents=True, exist_ok=True)
    for name in BASE:
        shutil.copytree(base / name, dst / name, dirs_exist_ok=True)
    kept = {k: v for k, v in stages.items() if k in BASE}
    (dst / "stages.json").write_text(json.dumps(kept, indent=2))


def save(grid: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(grid / "results", dst / "results", dirs_exist_ok=True)
    if (grid / "guidance").exists():  # scripts/ablation_guidance.py's cached evaluations
        shutil.copytree(grid / "guidance", dst / "guidance", dirs_exist_ok=True)
    for name in FILES:
        if (grid / name).exists():
            shutil.copy2(grid / name, dst / name)
    for ref in grid.glob("reference_*.json"):
        shutil.copy2(ref, dst / ref.name)
    if (grid / "base").is_symlink():  # a variant sharing another grid's data stages
        print(f"saved {len(list((dst / 'results').rglob('*.json')))} results to {dst} (no base)")
        return
    save_base(grid / "base", dst / "base")
    print(f"saved {len(list((dst / 'results').rglob('*.json')))} results to {dst}")


def restore(grid: Path, src: Path) -> None:
    if (grid / "protocol.json").exists():
        raise SystemExit(f"{grid} already holds a grid; restore into a new --grid")
    grid.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "results", grid / "results")
    if (src / "guidance").exists():
        shutil.copytree(src / "guidance", grid / "guidance")
    for path in src.iterdir():
        if path.is_file():
            shutil.copy2(path, grid / path.name)
    if (src / "schedules").exists():  # the learned rows' probes (scripts/regime_snapshot.py)
        shutil.copytree(src / "schedules", grid / "schedules")
    if (src / "base").exists():  # variants of scripts/ablation_gaps.sh link the default's
        shutil.copytree(src / "base", grid / "base")
    print(f"restored {grid}; rerun `sfd ablate --out {grid}` to resume")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("action", choices=("save", "restore"))
    ap.add_argument("--grid", type=Path, default=Path("runs/ablate"))
    ap.add_argument("--to", type=Path, default=Path("experiments/ablation"))
    args = ap.parse_args()
    (save if args.action == "save" else restore)(args.grid, args.to)


if __name__ == "__main__":
    main()
