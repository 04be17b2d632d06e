#!/usr/bin/env bash
# Download, on a machine with internet, the wheels that benchmarks/gpu.sh installs on a GPU
# machine without it (whose Python has torch, torchvision, h5py, opencv, safetensors, click,
# scikit-learn, tqdm and matplotlib, but not these): PyAV, decord, skops (and its
# prettytable, wcwidth), pytest (pluggy, iniconfig, pygments) for the CUDA tests, and
# torchcodec (NVDEC) if it fits. Into gpu-wheels/ (ignored by
# git); the repository and the wheels must travel within 64 MiB together. openvino (about
# 50 MiB) stays behind: the CUDA path never imports it.
#
#   benchmarks/gpu_wheels.sh [--python-version 3.11] [--torchcodec VERSION|none] [--out DIR]
#
# --python-version must be the GPU machine's (python3 -c 'import sys; print(sys.version)').
# torchcodec must match the machine's torch (0.10 for torch 2.10, >= 0.12 for >= 2.11; see
# its README) and needs FFmpeg 4-9 libraries installed there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_VERSION=3.11
TORCHCODEC=torchcodec
OUT=gpu-wheels
LIMIT_MIB=64
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PY_VERSION=$2; shift 2 ;;
    --torchcodec) [ "$2" = none ] && TORCHCODEC="" || TORCHCODEC="torchcodec==$2"; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
PIP="${PYTHON:-python3} -m pip"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux2010_x86_64"

download() {
  # shellcheck disable=SC2086
  $PIP download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    $PLATFORMS -d "$OUT" "$@"
}

mkdir -p "$OUT"
download "av>=11" "decord>=0.6" "skops>=0.9" prettytable wcwidth
# pytest for the CUDA tests, with what it needs beyond the machine's packages.
download pytest pluggy iniconfig pygments

mib() { du -cm "$@" 2>/dev/null | tail -1 | cut -f1; }
repo_mib=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) / 1048576 + 1 ))
if [ -n "$TORCHCODEC" ]; then
  download "$TORCHCODEC"
  total=$(( $(mib "$OUT") + repo_mib ))
  if [ "$total" -gt "$LIMIT_MIB" ]; then
    echo "torchcodec does not fit ($total MiB with the repository): left out" >&2
    rm -f "$OUT"/torchcodec-*.whl
  fi
fi
ls -l "$OUT"
total=$(( $(mib "$OUT") + repo_mib ))
echo "wheels: $(mib "$OUT") MiB; with the repository (${repo_mib} MiB): $total MiB of $LIMIT_MIB"
if [ "$total" -gt "$LIMIT_MIB" ]; then
  echo "over $LIMIT_MIB MiB" >&2
  exit 1
fi
