"""Version a running grid's results in the repository and rebuild its report there.

Copies ``results/``, ``protocol.json``, the reference metrics and the learned rows' schedules
of an `sfd ablate` grid directory (``--dataset``: composites by default) into ``--to`` and
writes its summary
(``results.json``, ``table.md``, ``ablation.png``, ``nfe.png``) from whatever evaluations
exist, as ``sfd ablate`` itself does when a run of it ends (docs/ABLATION.md, "A second testbed"):

    python scripts/regime_snapshot.py --grid runs/ablate-composites-t1500 \\
        --to experiments/regime/composites-t1500 --texture-steps 1500
    python scripts/regime_snapshot.py --grid runs/ablate-fmnist --to experiments/ablation \
        --dataset fashion-mnist --rows sfd,semvae-sync,learned

``--seeds`` keeps only those seeds' runs (a grid resumed on a rebuilt data stage holds copies
of the original build's results so that it skips them). With ``--base`` it also keeps the
grid's two autoencoders, so that `python scripts/ablation_snapshot.py restore --grid GRID --to
SNAPSHOT` rebuilds the same latents.
Rows asked for that the grid has not evaluated yet are named and left out; the run length
(the final checkpoint of the tables) is the grid's own, from its ``protocol.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ablation_snapshot import BASE, save_base  # scripts/ is on the path when run as a script

from sfd.experiments.ablate import AblationSettings
from sfd.experiments.ablate_report import write_report


def keep_base(base: Path, dst: Path) -> None:
    """Keep the grid's texture VAE and SemVAE (~2 MB) so that `ablation_snapshot.py restore`
    rebuilds the same latents; one already kept that differs is refused, never overwritten."""
    for name in BASE:
        src, kept = base / name, dst / name
        if kept.exists():
            for f in src.iterdir():
                if not (kept / f.name).exists() or (kept / f.name).read_bytes() != f.read_bytes():
                    raise SystemExit(f"{kept}: holds another {name} than {src}; not overwritten")
    save_base(base, dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--grid", type=Path, required=True)
    ap.add_argument("--to", type=Path, required=True)
    ap.add_argument("--dataset", default="composites")
    ap.add_argument("--texture-steps", type=int, default=None)
    ap.add_argument("--rows", default=None, help="Comma-separated rows (default: those present).")
    ap.add_argument("--seeds", default=None, help="Comma-separated seeds (default: all).")
    ap.add_argument("--base", action="store_true", help="Also keep the base's two autoencoders.")
    args = ap.parse_args()
    args.to.mkdir(parents=True, exist_ok=True)
    present = sorted(p.name for p in (args.grid / "results").iterdir())
    rows = args.rows.split(",") if args.rows else present
    missing = [r for r in rows if r not in present]
    if missing:
        print(f"not in {args.grid}/results (left out): {', '.join(missing)}")
    rows = [r for r in rows if r in present]
    seeds = None if args.seeds is None else {f"seed{int(k)}" for k in args.seeds.split(",")}
    for row in rows:  # only the rows asked for: another row may be half evaluated
        for run in sorted((args.grid / "results" / row).iterdir()):
            if seeds is None or run.name in seeds:
                shutil.copytree(run, args.to / "results" / row / run.name, dirs_exist_ok=True)
    for name in ["protocol.json", *[p.name for p in args.grid.glob("reference_*.json")]]:
        shutil.copy2(args.grid / name, args.to / name)
    for probe in (args.grid / "schedules").glob("*-seed*.json"):  # the learned rows' schedules
        (args.to / "schedules").mkdir(exist_ok=True)
        shutil.copy2(probe, args.to / "schedules" / probe.name)
    if args.base:
        keep_base(args.grid / "base", args.to / "base")
    steps = json.loads((args.grid / "protocol.json").read_text())["steps"]  # its run length
    settings = AblationSettings(
        dataset=args.dataset,
        texture_steps=args.texture_steps,
        rows=tuple(rows),
        main_seeds=8,
        steps=steps,
    )
    ref = json.loads(next(args.to.glob("reference_*.json")).read_text())
    summary = write_report(args.to, settings, ref, {"grid": str(args.grid)})
    print((args.to / "table.md").read_text())
    print(json.dumps(summary["nfe"], indent=1)[:2000])


if __name__ == "__main__":
    main()
