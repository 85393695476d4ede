"""The pytest entry point: lmclaims' options, and the claims plugin, registered only when
a run asks for it (an ``--lm-*`` option or ini key, or a collected claim module).

Every pytest start in an environment with lmclaims installed loads this module, so it
imports nothing heavy: the claims plugin (``harness.claims_plugin``: evidence, statistics,
scipy, pandas) is imported when it is registered.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from harness.config import (
    BASELINE_MODES,
    DEFAULT_BASELINE,
    DEFAULT_BASELINE_DIR,
    DEFAULT_CACHE_DIR,
    DEFAULT_FAMILIES,
    DEFAULT_MODELS,
    DEFAULT_REPORT_ROOT,
    DEFAULT_SEED,
    EXTRACTION_DEFAULTS,
    PROCESSING_MODES,
    TOKEN_MODES,
)

_EXTRACTION = EXTRACTION_DEFAULTS
_OPTIONS: list[tuple[str, str, str | None]] = [
    # (name, help, ini default)
    ("models", "comma-separated models: registered names, HF ids or local folders", DEFAULT_MODELS),
    ("dataset", "sentence dataset (.jsonl, .csv or the seed's .json); default: shipped set", None),
    ("tokens", f"token selection: {', '.join(TOKEN_MODES)}", _EXTRACTION.tokens),
    (
        "token-reservoir",
        "token vectors kept per subject/attribute pair with --lm-tokens all",
        str(_EXTRACTION.reservoir),
    ),
    ("processing", f"model processing: {', '.join(PROCESSING_MODES)}", _EXTRACTION.processing),
    ("families", "distribution families: names or the sets study, core, all", DEFAULT_FAMILIES),
    ("report-dir", "directory for this run's report (default <report root>/<models>)", None),
    ("report-root", "parent directory of run reports", DEFAULT_REPORT_ROOT),
    ("cache-dir", "activation and table cache directory", DEFAULT_CACHE_DIR),
    ("baseline", f"baseline mode: {', '.join(BASELINE_MODES)}", DEFAULT_BASELINE),
    ("baseline-dir", "directory of stored baselines", DEFAULT_BASELINE_DIR),
    ("seed", "seed for resampling (bootstraps, permutation tests) only", str(DEFAULT_SEED)),
    ("batch-size", "sentences per forward pass", str(_EXTRACTION.batch_size)),
    ("device", "torch device for extraction: cpu, cuda, cuda:N, mps", _EXTRACTION.device),
    (
        "dtype",
        "model weights' dtype: float32, bfloat16, float16 (stored float32)",
        _EXTRACTION.dtype,
    ),
    ("threads", "torch threads for extraction (default: all cores; 1 on a busy machine)", None),
    ("sentences-per-pair", "use a seeded subset of N sentences per subject/attribute pair", None),
    ("claims", "comma-separated claim ids to run (default: every collected claim)", None),
    (
        "activations",
        "comma-separated activation-set folders (docs/activation-format.md) to run the claims "
        "on, without loading their models; mixes with --lm-models",
        None,
    ),
]

# What a test module that is a claim (or uses the claims' fixtures) says in its source.
_CLAIM_MARKERS = (b"claim_test", b"lm_evidence", b"lm_verdict")
_NAME = "lmclaims"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lmclaims", "lmclaims: claims about language-model internals")
    for name, help_text, default in _OPTIONS:
        ini = "lm_" + name.replace("-", "_")
        group.addoption(f"--lm-{name}", dest=ini, default=None, help=f"{help_text} (ini: {ini})")
        parser.addini(ini, help_text, default=default)
    group.addoption(
        "--lm-list-claims",
        action="store_true",
        dest="lm_list_claims",
        help="list every claim (id, version, needs, source) and exit without running",
    )


def asked(config: pytest.Config) -> bool:
    """A run asks for lmclaims with any --lm-* option, or an lm_* ini key set to other than
    its default."""
    for name, _, default in _OPTIONS:
        ini = "lm_" + name.replace("-", "_")
        if config.getoption(ini) is not None or config.getini(ini) not in (None, "", default):
            return True
    return bool(config.getoption("lm_list_claims"))


def activate(config: pytest.Config) -> None:
    """Register the claims plugin (once). Registered after configure, its pytest_configure
    still runs: pytest calls that hook for late plugins too."""
    if not config.pluginmanager.has_plugin(_NAME):
        config.pluginmanager.register(importlib.import_module("harness.claims_plugin"), _NAME)


def pytest_cmdline_main(config: pytest.Config) -> int | pytest.ExitCode | None:
    if config.getoption("lm_list_claims"):
        activate(config)
        return importlib.import_module("harness.claim_selection").list_claims(config)
    return None


def pytest_configure(config: pytest.Config) -> None:
    if asked(config):
        activate(config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> None:
    """A claim module collected by a run that named no --lm-* option: the claims plugin
    joins before the module is imported, so its fixtures and parametrization apply."""
    if file_path.suffix == ".py" and not parent.config.pluginmanager.has_plugin(_NAME):
        try:
            source = file_path.read_bytes()
        except OSError:
            return
        if any(marker in source for marker in _CLAIM_MARKERS):
            activate(parent.config)
