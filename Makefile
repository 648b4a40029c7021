# The two set-up commands: `make run` (the main job) and `make test` (the whole suite).
# Each creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench model

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/dsv4 chat

test: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest

# The built-in trained model from scratch: ~2 hours on a 2-core CPU (the checkpoint files land in build/builtin).
model: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/dsv4 train --out build/builtin --minutes 110 --threads 2

bench: $(VENV)/.installed
	$(PY) benchmarks/encoding.py
