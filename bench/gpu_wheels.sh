#!/usr/bin/env bash
# Fill .whl/ with the wheels bench/gpu_bar_table.py needs on a GPU machine that reaches no package index.
#
# That machine's image (/work/.library/device/KINDS.md) has torch, tokenizers, safetensors, numpy, pandas, pyarrow,
# xxhash, jinja2 and the rest of the scientific stack, but not trl, datasets (with dill and multiprocess) or pydantic,
# and an older transformers (5.17) and accelerate (1.15). We carry the transformers, accelerate, trl and datasets
# this repo is tested with, the huggingface_hub 2.x (with httpx2) and regex that transformers 5.25 checks for at
# import, and pydantic with its parts. transformers' `kernels` stays behind: bench/gpu_bar_table.sh sets
# USE_HUB_KERNELS=0 (that machine cannot fetch hub kernels anyway). pydantic-settings and model-signing are not
# imported by the table's code path. Versions: this repo's tested environment (.venv). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF /.whl/ .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude  # travels as an ignored path
rm -rf .whl && mkdir -p .whl
WHEELS=(
  transformers==5.25.0 accelerate==1.16.0 huggingface_hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5
  regex==2026.12.2
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
du -sh .whl
