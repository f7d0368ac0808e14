#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels the GPU machine lacks, for Python 3.12 on x86-64 Linux.
#   benchmarks/gpu/fetch_wheels.sh            (needs the package registry; run where pip works)
# The H200 image has torch, transformers, huggingface_hub, safetensors, numpy, pillow, regex, requests,
# pyyaml, rich, matplotlib, scikit-learn and torchmetrics (/work/.library/device/KINDS.md); it lacks
# diffusers and the peers. Versions follow the development venv (override: DIFFUSERS=0.42.1 etc.).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/work/main/.venv/bin/python}
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "$2"; }
DIFFUSERS=${DIFFUSERS:-$(ver diffusers 0.42.1)}
DEEPCACHE=${DEEPCACHE:-$(ver DeepCache 0.1.1)}
TOMESD=${TOMESD:-$(ver tomesd 0.1.3)}
CACHE_DIT=${CACHE_DIT:-$(ver cache-dit 1.5.3)}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "diffusers==$DIFFUSERS" "DeepCache==$DEEPCACHE" "tomesd==$TOMESD" "cache-dit==$CACHE_DIT"
ls -l .whl
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "wheels: $((total / 1024 / 1024)) MiB (the device call carries at most 64 MiB with the working tree)"
if [ "$total" -gt $((48 * 1024 * 1024)) ]; then echo "fetch_wheels.sh: .whl/ is over 48 MiB" >&2; exit 1; fi
