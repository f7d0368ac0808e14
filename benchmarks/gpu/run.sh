#!/usr/bin/env bash
# The whole GPU check in one command, on a machine with torch but no diffusers and no network.
#   benchmarks/gpu/run.sh --out DIR [run.py options]     (from anywhere; run.py --help lists the options)
# Installs the wheels carried in .whl/ (benchmarks/gpu/fetch_wheels.sh fills it) into /tmp/tc-site, puts
# that and this checkout's src/ on PYTHONPATH, and runs benchmarks/gpu/run.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tc-site .whl/*.whl
  export PYTHONPATH=/tmp/tc-site${PYTHONPATH:+:$PYTHONPATH}
elif ! "$PY" -c "import diffusers" 2>/dev/null; then
  echo "run.sh: diffusers is not installed and .whl/ is empty; run benchmarks/gpu/fetch_wheels.sh first" >&2
  exit 2
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu/run.py "$@"
