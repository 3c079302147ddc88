#!/usr/bin/env bash
# "Where does a gap open?": `sfd` (Δt = 0.3) against `semvae-sync` (Δt = 0) while one thing of
# the default grid changes (docs/ABLATION.md, "Where a gap could open"). Each variant is its own
# `sfd ablate` grid directory under runs/gap/, sharing the default grid's cached data stages
# (runs/ablate/base: texture VAE, features, SemVAE, latents) through symbolic links, run as two
# single-threaded shards. Cached and resumable like every grid: rerun the same line to resume.
#
#   bash scripts/ablation_gaps.sh long ema clamp repa0 sem8 wide
#   SHARDS=1 bash scripts/ablation_gaps.sh clamp     # one process per variant (default 2)
#
# long   4x the training (4,000 steps, 4 checkpoints, CFG 2 and 4 at the end), 2 seeds
# clamp  flow.mask_clamped=true (no semantic target where t_sem = 1), `sfd` only, 2 seeds
# repa0  flow.repa_weight=0 (no REPA), 2 seeds
# sem8   an 8-channel SemVAE (its own SemVAE and latents), 2 seeds
# ema    EMA decay 0.999 instead of the demo preset's 0.99, 3,000 steps, CFG 2/3/4 at the end,
#        `sfd` seed 0 only: against `long`'s seed 0 at 1,000-3,000 steps (the demo's choice)
# wide   the former demo backbone (width 256, depth 6, 4 heads; 6x the FLOPs), 2 seeds
set -euo pipefail
cd "$(dirname "$0")/.."
SFD=${SFD:-.venv/bin/sfd}
GRID=runs/ablate
[ -f "$GRID/base/stages.json" ] || { echo "run the default grid first (sfd ablate)" >&2; exit 2; }
mkdir -p runs/logs

link_metric() {  # the default grid's classifier and reference images
  local out=$1
  [ -e "$out/classifier" ] || ln -s "$(realpath $GRID/classifier)" "$out/classifier"
  [ -e "$out/real_test_1000.npz" ] || cp "$GRID/real_test_1000.npz" "$out/"
}

link_base() {  # share the default grid's data stages, classifier and reference images
  local out=$1
  mkdir -p "$out"
  [ -e "$out/base" ] || ln -s "$(realpath $GRID/base)" "$out/base"
  link_metric "$out"
}

link_data_stages() {  # the texture VAE and features only: the variant trains its own SemVAE
  local out=$1
  mkdir -p "$out/base"
  for s in texture_vae features features_val; do
    [ -e "$out/base/$s" ] || ln -s "$(realpath $GRID/base/$s)" "$out/base/$s"
  done
  [ -e "$out/base/stages.json" ] || python3 - "$GRID/base/stages.json" "$out/base/stages.json" <<'EOF'
import json, sys
stages = json.load(open(sys.argv[1]))
keep = {k: v for k, v in stages.items() if k in ("texture_vae", "features", "features_val")}
json.dump(keep, open(sys.argv[2], "w"), indent=2)
EOF
  link_metric "$out"
}

SHARDS=${SHARDS:-2}  # processes per variant (each single-threaded)

two_shards() {  # name, then the `sfd ablate` arguments
  local name=$1
  shift
  for ((i = 0; i < SHARDS; i++)); do
    OMP_NUM_THREADS=1 "$SFD" ablate --out "runs/gap/$name" --shard "$i/$SHARDS" "$@" \
      >"runs/logs/gap_${name}_s$i.log" 2>&1 &
  done
  wait
  # one more pass on one shard: rebuilds the summary with both shards' results
  OMP_NUM_THREADS=2 "$SFD" ablate --out "runs/gap/$name" "$@" >>"runs/logs/gap_${name}_s0.log" 2>&1
}

PAIR=(--rows sfd,semvae-sync --seeds 2)
FINAL=(--checkpoints 1 --cfg-sweep 4)
for variant in "$@"; do
  echo "$(date -u +%FT%TZ) variant $variant"
  case $variant in
    long) link_base runs/gap/long
      two_shards long "${PAIR[@]}" --steps 4000 --checkpoints 4 ;;
    ema) link_base runs/gap/ema
      two_shards ema --rows sfd --seeds 1 --steps 3000 --checkpoints 3 --cfg-sweep 2,3,4 \
        --set train.ema_decay=0.999 ;;
    clamp) link_base runs/gap/clamp
      two_shards clamp --rows sfd --seeds 2 "${FINAL[@]}" --set flow.mask_clamped=true ;;
    repa0) link_base runs/gap/repa0
      two_shards repa0 "${PAIR[@]}" "${FINAL[@]}" --set flow.repa_weight=0 ;;
    sem8) link_data_stages runs/gap/sem8
      # the SemVAE and latents first, in one process, so two shards do not race to build them
      OMP_NUM_THREADS=2 "$SFD" ablate --out runs/gap/sem8 "${PAIR[@]}" "${FINAL[@]}" \
        --sem-channels 8 --shard 98/99 >runs/logs/gap_sem8_base.log 2>&1
      two_shards sem8 "${PAIR[@]}" "${FINAL[@]}" --sem-channels 8 ;;
    wide) link_base runs/gap/wide
      two_shards wide "${PAIR[@]}" "${FINAL[@]}" --set model.width=256 --set model.depth=6 \
        --set model.num_heads=4 --set model.repa_projector_dim=256 ;;
    *) echo "unknown variant $variant (long ema clamp repa0 sem8 wide)" >&2; exit 2 ;;
  esac
done
echo "$(date -u +%FT%TZ) done"
