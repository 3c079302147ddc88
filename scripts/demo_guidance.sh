#!/usr/bin/env bash
# The demo's guidance scale, chosen on FD_FMNIST: 1,000 samples of the demo's model (the same
# seeds and balanced labels as its samples stage) at each scale, scored like the demo's metrics
# stage against its 1,000 real test images (runs/demo/real_test.npz). Samples go to
# runs/demo_cfg/ (cached: a rerun skips finished scales); the metrics to
# experiments/demo_cfg/cfg<S>.json.
#
#   bash scripts/demo_guidance.sh 1.5 2 2.5 3      # after `make demo` (or sfd demo --out runs/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
SFD=${SFD:-.venv/bin/sfd}
RUN=${RUN:-runs/demo}
mkdir -p experiments/demo_cfg runs/demo_cfg
for s in "$@"; do
  samples=runs/demo_cfg/cfg$s
  result=experiments/demo_cfg/cfg$s.json
  [ -f "$result" ] && { echo "cfg $s: done ($result)"; continue; }
  "$SFD" sample "$RUN/run" --num "${NUM:-1000}" --batch-size 50 --seed 0 --out "$samples" --device cpu \
    --set sample.cfg_scale_tex="$s" --set sample.cfg_scale_sem="$s"
  "$SFD" eval "$samples/samples.npz" --ref "$RUN/real_test.npz" --feature-space fashion-mnist \
    --device cpu --no-progress --out "$result.tmp"
  mv "$result.tmp" "$result"
  echo "cfg $s: $(cat "$result")"
done
