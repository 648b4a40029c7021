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
	$(PY) -c 'from dsv4 import kernels; kernels.enable()'  # the C++ CPU kernels, built once (cached by torch)
	touch $@

# Harbor's side (PyPI `harbor`, which needs Python >= 3.12; dsv4 runs on 3.11) in a venv of its own: harbor and dsv4
# (editable, its dependencies but torch: the agent loop and the sandbox never import it). Python 3.12 is python3.12
# on PATH, else pyenv's, else one that uv (pip-installed into $(VENV)) downloads. A set-up that fails is written to
# $(HARBOR_VENV)/.failed, which the tests that need Harbor give as their reason to skip, and `make test` goes on.
HARBOR_VENV ?= .venv-harbor
HARBOR_PY := $(HARBOR_VENV)/bin/python
DEPS_BUT_TORCH := import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	print(' '.join(repr(d) for d in p['dependencies'] + p['optional-dependencies']['harbor'] if d.split('=')[0] != 'torch'))

$(HARBOR_VENV)/.installed: pyproject.toml $(VENV)/.installed
	rm -rf $(HARBOR_VENV) && mkdir -p $(HARBOR_VENV)
	( for p in python3.12 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python; do \
	    if $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then py=$$p; break; fi; done; \
	  if [ -z "$$py" ]; then $(PY) -m pip install -q uv && $(VENV)/bin/uv python install 3.12 && \
	    py=$$($(VENV)/bin/uv python find 3.12); fi && \
	  $$py -m venv $(HARBOR_VENV) && \
	  $(HARBOR_PY) -m pip install -q --upgrade pip && \
	  $(HARBOR_PY) -m pip install -q --no-deps -e . && \
	  eval $(HARBOR_PY) -m pip install -q $$($(HARBOR_PY) -c "$(DEPS_BUT_TORCH)") && \
	  $(HARBOR_PY) -c 'import harbor, dsv4.agent.harbor_agent, dsv4.agent.harbor_environment' \
	) > $(HARBOR_VENV)/install.log 2>&1 && touch $@ || \
	  { echo "its set-up failed (see $(HARBOR_VENV)/install.log): $$(tail -n 3 $(HARBOR_VENV)/install.log | tr '\n' ' ')" > $(HARBOR_VENV)/.failed; \
	    cat $(HARBOR_VENV)/.failed; }

# An agent episode on the built-in model (it lists settings/, reads the right file in the sandbox, answers), then a
# 10K-token passkey question.
run: $(VENV)/.installed
	$(VENV)/bin/dsv4 agent "Find the tango file in settings and tell me its port." --upload examples/workspace \
	  --trajectory build/make-run-trajectory.json
	$(VENV)/bin/dsv4 chat --request examples/passkey_request.json --max-tokens 16

test: $(VENV)/.installed $(HARBOR_VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest

# The built-in trained model from scratch: ~2 hours on a 2-core CPU (the checkpoint files land in build/builtin).
model: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/dsv4 train --out build/builtin --minutes 110 --threads 2

bench: $(VENV)/.installed
	$(PY) benchmarks/encoding.py
