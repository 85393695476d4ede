"""The run's settings, fixed once from the command line and ini file."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOKEN_MODES = ("seed", "last", "mean", "all")
PROCESSING_MODES = ("tl-compat", "raw")
BASELINE_MODES = ("compare", "update", "off")
DTYPES = ("float32", "bfloat16", "float16")


# Every option's default lives here (the settings dataclasses below hold the rest); the
# pytest options, the ``lmclaims`` commands and ``export.export`` read them.
DEFAULT_MODELS = "smollm2-135m"
DEFAULT_FAMILIES = "study"
DEFAULT_CACHE_DIR = ".lmclaims-cache"
DEFAULT_REPORT_ROOT = "reports"
DEFAULT_BASELINE_DIR = "baselines"
DEFAULT_BASELINE = "compare"
DEFAULT_SEED = 0


class ConfigError(ValueError):
    """A setting that cannot be used; the message says which and what is allowed."""


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that changes the extracted activations (and so the cache key)."""

    tokens: str = "seed"
    processing: str = "tl-compat"
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "float32"  # the weights' dtype; activations are always stored float32
    # torch threads for the forward passes; None: every core (its share under xdist).
    threads: int | None = None
    # --lm-tokens all: token vectors kept per (subject, attribute) pair (a uniform sample).
    reservoir: int = 64

    def __post_init__(self) -> None:
        _check_choice("tokens", self.tokens, TOKEN_MODES)
        _check_choice("processing", self.processing, PROCESSING_MODES)
        _check_choice("dtype", self.dtype, DTYPES)
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.reservoir < 1:
            raise ConfigError(f"token reservoir must be >= 1, got {self.reservoir}")
        if self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"unknown device {self.device!r}; use cpu, cuda, cuda:N or mps")

    def key_fields(self) -> dict[str, Any]:
        # Batch size and device do not change the numbers beyond float noise, so they
        # stay out of the cache key: a CPU-extracted entry serves a later GPU run.
        fields: dict[str, Any] = {"tokens": self.tokens, "processing": self.processing}
        if self.dtype != "float32":
            # Half-precision weights change activations well beyond float noise. Added only
            # when not float32 so that existing float32 cache keys and baseline settings
            # (which hold this dict) stay byte-identical.
            fields["dtype"] = self.dtype
        if self.tokens == "all":
            # The sample size decides the values; the other modes ignore it, so their keys
            # stay as they were.
            fields["reservoir"] = self.reservoir
        return fields


@dataclass(frozen=True)
class FitSettings:
    """Everything that changes the distribution fits."""

    families: tuple[str, ...]
    subsample: int = 4000


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...]
    dataset: Path | None
    extraction: ExtractionSettings
    fit: FitSettings
    report_dir: Path
    cache_dir: Path
    baseline_dir: Path
    baseline: str = DEFAULT_BASELINE
    seed: int = DEFAULT_SEED
    sentences_per_pair: int | None = None
    # Activation-set folders (docs/activation-format.md) evaluated beside ``models``.
    activation_sets: tuple[str, ...] = ()
    # The folder of run reports (--lm-report-root), which holds the ``latest`` link; None
    # when --lm-report-dir names the run's own folder (no link is made outside it).
    report_root: Path | None = None

    def __post_init__(self) -> None:
        _check_choice("baseline", self.baseline, BASELINE_MODES)
        if self.sentences_per_pair is not None and self.sentences_per_pair < 1:
            raise ConfigError("--lm-sentences-per-pair must be >= 1")

    def baseline_settings(self, dataset_sha256: str) -> dict[str, Any]:
        """The settings that decide verdicts: a baseline holds only under the same ones."""
        return {
            **self.extraction.key_fields(),
            "families": list(self.fit.families),
            "subsample": self.fit.subsample,
            "dataset_sha256": dataset_sha256,
            "sentences_per_pair": self.sentences_per_pair,
            "seed": self.seed,
        }

    def describe(self) -> dict[str, Any]:
        """The method settings a report must record, as plain JSON values."""
        out = asdict(self)
        for key in ("dataset", "report_dir", "report_root", "cache_dir", "baseline_dir"):
            out[key] = None if out[key] is None else str(out[key])
        out["models"] = list(self.models)
        out["activation_sets"] = list(self.activation_sets)
        out["fit"]["families"] = list(self.fit.families)
        return out


def check_output_dir(path: Path | str, option: str) -> None:
    """Before any work: ``path`` is, or can be made, a folder this process can write in.
    An fsspec URL (``memory://``, ``s3://``) is checked by its filesystem when used."""
    if "://" in str(path):
        return
    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option} {path}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{option} {path}: cannot write in {probe} ({exc.strerror}); choose a writable folder"
        ) from exc


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


EXTRACTION_DEFAULTS = ExtractionSettings()
