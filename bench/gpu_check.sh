#!/usr/bin/env bash
# Hearth's checks that need an NVIDIA GPU, prepared for a machine that has one (this project's own
# machines have none). Each issue that adds GPU-only behaviour adds its checks as a section below.
#
#   bash bench/gpu_check.sh            (from anywhere; PYTHON=... picks the Python, default .venv/bin/python)
#
# Prints one line per check: "PASS <check>: <figures>", "SKIP <check>: <why>" or "FAIL <check>: <why>",
# and exits 1 when a check failed. Each check's full output is kept in $GPU_CHECK_LOGS (default
# .hearth-test/gpu-check/). Without an NVIDIA GPU it prints the one line "no NVIDIA GPU: skipped".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "no NVIDIA GPU: skipped"
  exit 0
fi
GPUS="$(nvidia-smi -L | grep -c '^GPU')"
LOGS="${GPU_CHECK_LOGS:-$ROOT/.hearth-test/gpu-check}"
mkdir -p "$LOGS"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/hearth-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# Every check gets its own Hearth folders: the user's own library and adapters are never touched.
export HEARTH_HOME="$WORK/home" TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
FAILED=0

# run_check NAME COMMAND...: the command prints one line (figures, or "SKIP why") and exits 0, or
# prints why it failed and exits non-zero; everything else it writes goes to $LOGS/NAME.log.
run_check() {
  local name="$1" line code
  shift
  line="$("$@" 2>"$LOGS/$name.log" | tail -n 1)"
  code="${PIPESTATUS[0]}"
  if [ "$code" -ne 0 ]; then
    echo "FAIL $name: ${line:-exit code $code} (log: $LOGS/$name.log)"
    FAILED=1
  elif [ "${line#SKIP }" != "$line" ]; then
    echo "SKIP $name: ${line#SKIP }"
  else
    echo "PASS $name: $line"
  fi
}

echo "GPUs: $GPUS x $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1)"

# ==== Section: one GPU (the GPU issue adds its single-GPU checks here) ====================================


# ==== Section: issue 23, many processes: NCCL DDP, the exported accelerate launch, FSDP ====================
# hearth finetune --nproc N on CUDA (NCCL), a 20-step LoRA of the starter model (needs 2 GPUs).
run_check ddp_nccl "$PYTHON" "$ROOT/bench/gpu_distributed.py" ddp --gpus "$GPUS" --work "$WORK/ddp"
# hearth finetune --export-launch, then the written launch.sh (accelerate launch) on every GPU here.
run_check export_launch "$PYTHON" "$ROOT/bench/gpu_distributed.py" launch --gpus "$GPUS" --work "$WORK/launch"
# The exported FSDP config (planned for a pretend small GPU) with accelerate on the GPUs: decoder layers
# sharded with FSDP2 over NCCL, the same losses as DDP, peak memory per GPU (needs 2 GPUs).
run_check fsdp_launch "$PYTHON" "$ROOT/bench/gpu_distributed.py" fsdp --gpus "$GPUS" --work "$WORK/fsdp"
# The pytest that needs CUDA (skips without it): NCCL collectives, the exported launch, FSDP vs DDP.
run_check pytest_gpu_distributed "$PYTHON" "$ROOT/bench/gpu_distributed.py" pytest --gpus "$GPUS" --work "$WORK/pytest"

exit "$FAILED"
