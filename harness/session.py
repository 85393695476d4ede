"""One pytest session's lmclaims state: the run's settings, evidence per model, results."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.claim import ClaimResult, ClaimSpec
from harness.config import RunConfig
from harness.dataset import Dataset
from harness.evidence import Evidence


@dataclass(frozen=True)
class Unfinished:
    """A (claim, model) of the run that has no verdict: ERROR (the one-line reason) or
    NOT RUN (the run stopped or was interrupted before it)."""

    claim_id: str
    model: str
    outcome: str  # "ERROR" or "NOT RUN"
    reason: str


@dataclass
class LmSession:
    config: RunConfig
    dataset: Dataset | None = None
    evidence: dict[str, Evidence] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    results: list[ClaimResult] = field(default_factory=list)
    specs: dict[str, ClaimSpec] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    report_path: Path | None = None
    # Results of claims a compare run found no baseline entry for: written at session end.
    unrecorded: list[ClaimResult] = field(default_factory=list)
    baselines_written: list[Path] = field(default_factory=list)
    # Models evaluated by xdist workers: their provenance, as shipped to the controller.
    remote_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    # --lm-activations: the sets read and checked at configure time, by model name.
    sets: dict[str, Any] = field(default_factory=dict)
    # Every (claim id, model) the run meant to decide, in run order; the failures of those
    # that crashed (one line each); both filled as items are collected and reported.
    planned: dict[tuple[str, str], None] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    unfinished: list[Unfinished] = field(default_factory=list)
    interrupted: bool = False

    def settle(self) -> None:
        """Every planned (claim, model) without a result becomes ERROR or NOT RUN."""
        decided = {(r.claim_id, r.model) for r in self.results}
        self.unfinished = [
            Unfinished(*key, "ERROR", self.failures[key])
            if key in self.failures
            else Unfinished(*key, "NOT RUN", "the run stopped before it")
            for key in self.planned
            if key not in decided
        ]
