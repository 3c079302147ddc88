#!/usr/bin/env bash
# Side-by-side timings of this tree against the SFD release, each in a fresh process, repeated
# (one process's ratio can sit 5-10% off; docs/PERFORMANCE.md). Resumable: a run whose JSON
# exists is skipped. Pool the results with scripts/bench_release_pool.py.
#
#   RELEASE=/path/to/SFD DEPS=/path/to/timm-einops bash scripts/bench_release_campaign.sh OUT
set -euo pipefail
out=${1:?usage: RELEASE=... DEPS=... bash scripts/bench_release_campaign.sh OUT}
: "${RELEASE:?set RELEASE to a checkout of github.com/yuemingPAN/SFD}"
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=${DEPS:-}
py=${PYTHON:-python}
run() {  # name repeats args...
  local name=$1 n=$2
  shift 2
  for i in $(seq 1 "$n"); do
    local f="$out/${name}_$i.json"
    [ -s "$f" ] && continue
    "$py" scripts/bench_release.py --release-dir "$RELEASE" --json "$f.part" "$@" \
      > "$out/${name}_$i.log" 2>&1 && mv "$f.part" "$f"
  done
}
run demo_eager 6 --preset demo --batch-size 64 --iters 7 --ceiling
run S_eager 3 --preset S --batch-size 8 --iters 5 --ceiling
run demo_best_loss 5 --preset demo --batch-size 64 --iters 7 --mode best --scope loss
run S_best_loss 2 --preset S --batch-size 8 --iters 5 --mode best --scope loss --ceiling
run demo_best_blocks 2 --preset demo --batch-size 64 --iters 7 --mode best
run S_best_blocks 1 --preset S --batch-size 8 --iters 5 --mode best
