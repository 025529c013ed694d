#!/usr/bin/env bash
# What runs on the GPU machine: install the wheels bench/gpu_wheels.sh put in .whl/ (that machine reaches no package
# index), build the BAR table at the `gpu` scale with bench/gpu_bar_table.py, and leave the table, the log and the
# scores in $OUT. Through the device tool: command `bash bench/gpu_bar_table.sh`, carry [".whl"], timeout_s 600.
# LIMIT_S (default 550) stops the build in time to copy what it reached: the report is rewritten after every score.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bar-table}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# Offline, no hub kernels (transformers 5.25 would fetch some for CUDA and needs the `kernels` package we leave behind).
export CUBLAS_WORKSPACE_CONFIG=:4096:8 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 USE_HUB_KERNELS=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
WORK=.barfed/gpu-bench
timeout --signal=INT --kill-after=10 "${LIMIT_S:-550}" \
  python3 bench/gpu_bar_table.py --scale gpu --work "$WORK" --out "$OUT/bar_table.md" "$@" 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
cp "$WORK"/gpu/gpu_scores.json "$OUT/" 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv,noheader
exit "$rc"
