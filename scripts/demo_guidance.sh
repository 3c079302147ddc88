#!/usr/bin/env bash
# The demo's guidance scale, chosen on FD_FMNIST: 1,000 samples of the demo's model (the same
# seeds and balanced labels as its samples stage, so the demo's own scale reproduces its
# metrics.json) at each scale, scored against the demo's 1,000 real test images
# (runs/demo/real_test.npz: test images 0-999) and against 1,000 other real test images
# (5000-5999, runs/demo_cfg/val_ref.npz) on which a scale can be chosen without choosing on the
# reported set. Samples go to runs/demo_cfg/ (cached: a rerun skips finished scales); the
# metrics to experiments/demo_cfg/cfg<S>.json and cfg<S>.val.json.
#
#   bash scripts/demo_guidance.sh 1.5 1.75 2 2.5   # after `make demo` (or sfd demo --out runs/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
SFD=${SFD:-.venv/bin/sfd}
RUN=${RUN:-runs/demo}
mkdir -p experiments/demo_cfg runs/demo_cfg
VAL=runs/demo_cfg/val_ref.npz
[ -f "$VAL" ] || "${PYTHON:-.venv/bin/python}" - "$VAL" <<'PY'
import os, sys
import numpy as np, torch
from sfd.data.fashion_mnist import FashionMNIST
from sfd.generate import to_uint8
test = FashionMNIST(split="test")
x, y = zip(*(test[i] for i in range(5000, 6000)))
tmp = sys.argv[1] + ".tmp.npz"
np.savez(tmp, arr_0=to_uint8(torch.stack(x)).numpy(), arr_1=np.array([int(v) for v in y]))
os.replace(tmp, sys.argv[1])
PY
score() {  # samples, reference, result
  [ -f "$3" ] && return
  "$SFD" eval "$1" --ref "$2" --feature-space fashion-mnist --device cpu --no-progress \
    --out "$3.tmp" >/dev/null
  mv "$3.tmp" "$3"
}
for s in "$@"; do
  samples=runs/demo_cfg/cfg$s
  [ -f "$samples/samples.npz" ] || "$SFD" sample "$RUN/run" --num "${NUM:-1000}" \
    --batch-size 50 --seed 0 --out "$samples" --device cpu \
    --set sample.cfg_scale_tex="$s" --set sample.cfg_scale_sem="$s"
  score "$samples/samples.npz" "$RUN/real_test.npz" "experiments/demo_cfg/cfg$s.json"
  score "$samples/samples.npz" "$VAL" "experiments/demo_cfg/cfg$s.val.json"
  echo "cfg $s: test $(grep fd_fashion experiments/demo_cfg/cfg$s.json)" \
    "val $(grep fd_fashion experiments/demo_cfg/cfg$s.val.json)"
done
