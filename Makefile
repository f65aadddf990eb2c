# The two README commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is installed before the package: a bare `torch` requirement in an empty venv would pull a
# multi-GB CUDA build. Users with GPUs may install their own torch into .venv first; pip keeps it.
TORCH ?= torch==2.13.0
# Allocator settings that make long CPU runs steady (see README, "Performance notes").
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
export MALLOC_TOP_PAD_ ?= 1073741824

.PHONY: venv test lint demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

test: venv
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests
	$(VENV)/bin/ruff check headstart tests $(wildcard bench)

lint: venv
	$(VENV)/bin/ruff check headstart tests $(wildcard bench)
	$(VENV)/bin/ruff format --check headstart tests $(wildcard bench)

demo: venv
	$(VENV)/bin/headstart demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
