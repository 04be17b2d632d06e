#!/usr/bin/env bash
# The GPU benchmark in one command (make bench-gpu): install what the machine lacks from the
# carried wheels (gpu-wheels/, made by benchmarks/gpu_wheels.sh) without the internet, the
# project itself --no-deps, then run python -m benchmarks.gpu, which generates its corpus
# and measures everything within 5 minutes. Results: DIR/gpu-bench.json and gpu-bench.md.
#
#   benchmarks/gpu.sh [--out DIR] [--device cuda|cpu] [--tiny] [--wheels DIR] [--no-install]
#
# --device cpu --tiny rehearses every stage on a CPU. Every stage that fails is recorded in
# the JSON and the rest goes on; this script exits 0 once the JSON is written.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=gpu-wheels
INSTALL=1
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

log() { echo "[gpu.sh] $*" >&2; }

has() { "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" >/dev/null 2>&1; }

pip_install() {
  # A system Python may refuse (PEP 668): then into the user's site-packages.
  "$PYTHON" -m pip install -q --no-index --no-deps "$@" \
    || "$PYTHON" -m pip install -q --no-index --no-deps --user "$@" \
    || "$PYTHON" -m pip install -q --no-index --no-deps --user --break-system-packages "$@" \
    || log "could not install $*"
}

if [ "$INSTALL" = 1 ]; then
  # module name : wheel name
  for pair in av:av decord:decord prettytable:prettytable wcwidth:wcwidth skops:skops \
              pluggy:pluggy iniconfig:iniconfig pygments:pygments pytest:pytest \
              torchcodec:torchcodec; do
    module=${pair%%:*}; wheel=${pair#*:}
    if has "$module"; then continue; fi
    found=$(ls "$WHEELS"/"$wheel"-*.whl 2>/dev/null | head -1)
    if [ -z "$found" ]; then log "$module: missing, and no wheel in $WHEELS/"; continue; fi
    log "installing $found"
    pip_install "$found"
  done
  if ! "$PYTHON" -c "import c3d_extract, importlib.metadata as m; m.version('c3d-extract')" \
      >/dev/null 2>&1; then
    log "installing the project (--no-deps: openvino is not needed on CUDA)"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
      || "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --user -e . \
      || log "pip install -e . failed: the benchmark runs from the source tree"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The benchmark keeps to its own budget (300 s); this is the backstop.
timeout 420 "$PYTHON" -m benchmarks.gpu ${ARGS[@]+"${ARGS[@]}"}
status=$?
if [ $status -ne 0 ]; then log "benchmarks.gpu exited with $status"; fi
exit $status
