#!/usr/bin/env bash
# Does torch.compile pay on the ablation grid? One grid job (`sfd`, seed 0,
# the default protocol: 1,000 steps, 5 checkpoints, CFG 2 and 4 at the end) trained eager, with
# compiled blocks and with the compiled forward + loss, each as a single-threaded process beside
# another one (as the grid's two shards run), with a cold inductor cache and again with a warm
# one. Every directory shares the default grid's cached data stages (runs/ablate/base) through
# symbolic links. Cached and resumable like every grid: rerun to resume.
#
#   bash scripts/ablation_compile.sh            # three passes of two processes, ~25 min idle
#   python scripts/ablation_compile.py          # the table: train seconds, img/s, FD, equality
#
# pass 1: eager        | loss (cold cache)
# pass 2: blocks (cold) | loss_again (warm cache)
# pass 3: blocks_again (warm) | eager_again
set -euo pipefail
cd "$(dirname "$0")/.."
SFD=${SFD:-.venv/bin/sfd}
GRID=runs/ablate
SPEED=runs/speed
[ -f "$GRID/base/stages.json" ] || { echo "run the default grid first (sfd ablate)" >&2; exit 2; }
mkdir -p runs/logs "$SPEED"

link_base() {  # the default grid's data stages, classifier and reference images
  local out=$1
  mkdir -p "$out"
  [ -e "$out/base" ] || ln -s "$(realpath $GRID/base)" "$out/base"
  [ -e "$out/classifier" ] || ln -s "$(realpath $GRID/classifier)" "$out/classifier"
  [ -e "$out/real_test_1000.npz" ] || cp "$GRID/real_test_1000.npz" "$out/"
}

one() {  # name, inductor cache (or -), then `sfd ablate` arguments
  local name=$1 cache=$2
  shift 2
  link_base "$SPEED/$name"
  local env=(OMP_NUM_THREADS=1)
  if [ "$cache" != - ]; then
    # a cold cache is a fresh directory: emptied unless this job already trained
    if [ "${COLD:-}" = "$name" ] && [ ! -e "$SPEED/$name/runs/sfd/seed0/checkpoints/step-0001000" ]; then
      rm -rf "$SPEED/$cache"
    fi
    env+=(TORCHINDUCTOR_CACHE_DIR="$(realpath -m $SPEED/$cache)")
  fi
  local t0=$SECONDS
  env "${env[@]}" "$SFD" ablate --out "$SPEED/$name" --rows sfd --seeds 1 "$@" \
    >"runs/logs/speed_$name.log" 2>&1
  echo "$name $((SECONDS - t0))" >>"$SPEED/wall_seconds.txt"
}

LOSS=(--set train.compile=true --set train.compile_scope=loss)
BLOCKS=(--set train.compile=true)
echo "$(date -u +%FT%TZ) pass 1"
COLD=loss one loss cache_loss "${LOSS[@]}" &
one eager - &
wait
echo "$(date -u +%FT%TZ) pass 2"
COLD=blocks one blocks cache_blocks "${BLOCKS[@]}" &
one loss_again cache_loss "${LOSS[@]}" &
wait
echo "$(date -u +%FT%TZ) pass 3"
one blocks_again cache_blocks "${BLOCKS[@]}" &
one eager_again - &
wait
echo "$(date -u +%FT%TZ) done"
