"""Stored verdicts per model: the regression check when a method changes.

With a baseline the question a run answers becomes "did anything change?": a verdict equal
to the recorded one passes (a recorded refutation is an expected failure), a different
verdict, a changed claim version or an effect outside its recorded interval fails.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.claim import ClaimResult, Verdict

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BaselineEntry:
    claim_id: str
    claim_version: int
    verdict: Verdict
    effect: float | None
    ci: tuple[float, float] | None
    # How far the effect may leave the recorded interval, in the effect's units.
    tolerance: float = 0.0


# A rerun under the same settings and seed reproduces the effect to float noise; a method
# change that moves it by more than a tenth of the interval's width is worth a look.
TOLERANCE_OF_WIDTH = 0.1


def default_tolerance(effect: float | None, ci: tuple[float, float] | None) -> float:
    """A tenth of the interval's width, at least float noise around the effect."""
    if ci is None or effect is None or not math.isfinite(effect):
        return 0.0
    width = abs(ci[1] - ci[0]) if all(map(math.isfinite, ci)) else 0.0
    return max(TOLERANCE_OF_WIDTH * width, 1e-9 * max(1.0, abs(effect)))


@dataclass(frozen=True)
class Comparison:
    matches: bool
    message: str


def path_for(directory: Path, model: str) -> Path:
    return Path(directory) / f"{model.replace('/', '__')}.json"


def load(directory: Path, model: str) -> dict[str, BaselineEntry]:
    path = path_for(directory, model)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {
        claim_id: BaselineEntry(
            claim_id,
            int(entry["claim_version"]),
            Verdict(entry["verdict"]),
            entry.get("effect"),
            tuple(entry["ci"]) if entry.get("ci") is not None else None,
            float(entry.get("tolerance", 0.0)),
        )
        for claim_id, entry in data["claims"].items()
    }


def load_settings(directory: Path, model: str) -> dict[str, Any] | None:
    path = path_for(directory, model)
    return json.loads(path.read_text()).get("settings") if path.is_file() else None


def settings_mismatch(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str:
    """Empty when a baseline was made under these settings, else which ones differ."""
    if recorded is None:
        return ""
    differing = [
        f"{key}: baseline {recorded.get(key)!r}, now {current.get(key)!r}"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]
    return "; ".join(differing)


def save(directory: Path, model: str, results: list[ClaimResult], settings: dict[str, Any]) -> Path:
    """Write (or merge into) a model's baseline; claims not re-run keep their entries.

    A baseline is only meaningful under the settings it was made with; they are stored with
    it and a compare under other settings is refused.
    """
    if settings_mismatch(load_settings(directory, model), settings):
        existing: dict[str, BaselineEntry] = {}  # other settings: start afresh
    else:
        existing = load(directory, model)
    path = path_for(directory, model)
    entries = {k: asdict(v) for k, v in existing.items()}
    for r in results:
        entries[r.claim_id] = asdict(
            BaselineEntry(
                r.claim_id,
                r.claim_version,
                r.verdict,
                r.effect,
                r.ci,
                default_tolerance(r.effect, r.ci),
            )
        )
    for entry in entries.values():
        entry["verdict"] = str(entry["verdict"])
        entry.pop("claim_id")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "settings": settings,
        "claims": dict(sorted(entries.items())),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def compare(entry: BaselineEntry, result: ClaimResult) -> Comparison:
    if entry.claim_version != result.claim_version:
        return Comparison(
            False,
            f"claim {result.claim_id} is now version {result.claim_version} but the baseline "
            f"records version {entry.claim_version}; review the change and rerun with "
            "--lm-baseline=update",
        )
    if entry.verdict != result.verdict:
        return Comparison(
            False,
            f"verdict changed for {result.claim_id} on {result.model}: baseline "
            f"{entry.verdict}, now {result.verdict} ({result.summary()})",
        )
    if entry.ci is not None and result.effect is not None and math.isfinite(result.effect):
        # A bias-corrected (basic bootstrap) interval need not contain its own estimate;
        # the recorded range is the interval widened to include the recorded effect.
        lo, hi = entry.ci
        if entry.effect is not None:
            lo, hi = min(lo, entry.effect), max(hi, entry.effect)
        if not lo - entry.tolerance <= result.effect <= hi + entry.tolerance:
            return Comparison(
                False,
                f"effect for {result.claim_id} on {result.model} left its recorded interval: "
                f"{result.effect:.4g} not in [{lo:.4g}, {hi:.4g}] ± tolerance "
                f"{entry.tolerance:.3g} (verdict {result.verdict} unchanged)",
            )
    return Comparison(True, f"matches baseline: {entry.verdict}")
