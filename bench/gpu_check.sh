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
# On the first GPU. The llama.cpp checks run llama-cpp-python built for CUDA from $CUDA_SITE, ahead of the
# venv's own build (left as it is), and say SKIP without it. GPU_CHECK_MODEL=FILE.gguf adds a larger model
# to fit_vs_vram; HEARTH_LLAMA_SDIST=FILE.tar.gz builds from a local sdist instead of PyPI's.
CUDA_SITE="$WORK/cuda-site"
# llama-cpp-python 0.3.36 compiled with CUDA for this GPU (or the wheel kept in ~/.cache/hearth/gpu-check-wheel).
run_check cuda_build "$PYTHON" "$ROOT/bench/gpu_single.py" cuda_build --work "$WORK/cuda-build" --cuda-site "$CUDA_SITE"
# hearth hw with that build: each GPU's llama.cpp device and memory; fails when none runs on CUDA.
run_check hw "$PYTHON" "$ROOT/bench/gpu_single.py" hw --work "$WORK/hw" --cuda-site "$CUDA_SITE"
# The fit estimate's GPU bytes vs nvidia-smi at 2048, 8192 and 32768 tokens; fails on a >10% underestimate.
run_check fit_vs_vram "$PYTHON" "$ROOT/bench/gpu_single.py" fit_vs_vram --work "$WORK/fit" --cuda-site "$CUDA_SITE"
# 128 greedy tokens on the CPU vs fully offloaded to CUDA, prompt and decode tokens/s (medians of 3).
run_check chat_speed "$PYTHON" "$ROOT/bench/gpu_single.py" chat_speed --work "$WORK/speed" --cuda-site "$CUDA_SITE"
# 20-step LoRA and QLoRA (4-bit base, bitsandbytes) fine-tunes of the starter on CUDA through Hearth's job.
run_check lora_cuda "$PYTHON" "$ROOT/bench/gpu_single.py" lora_cuda --work "$WORK/lora"
run_check qlora_cuda "$PYTHON" "$ROOT/bench/gpu_single.py" qlora_cuda --work "$WORK/qlora"
# lora_cuda's adapter exported to a GGUF LoRA and chatted with, fully offloaded.
run_check adapter_chat "$PYTHON" "$ROOT/bench/gpu_single.py" adapter_chat --work "$WORK/adapter" \
  --cuda-site "$CUDA_SITE" --adapter-from "$WORK/lora"


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
