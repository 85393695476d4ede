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
from typing import Any, Literal

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


class BaselineError(ValueError):
    """A baseline file that cannot be read as one: the message names the file, the entry
    and the fix."""


_FIX = "fix or delete it, or rewrite it with --lm-baseline=update"


def _number(value: Any) -> bool:
    """A JSON number (Python's json reads and writes NaN and +-Infinity too)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _entry(path: Path, claim_id: str, raw: Any) -> BaselineEntry:
    def bad(what: str) -> BaselineError:
        return BaselineError(f"{path}: entry {claim_id!r}: {what}; {_FIX}")

    if not isinstance(raw, dict):
        raise bad(f"expected an object, got {type(raw).__name__}")
    missing = [k for k in ("claim_version", "verdict", "effect", "ci") if k not in raw]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    version = raw["claim_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"claim_version must be an integer >= 1, got {version!r}")
    if raw["verdict"] not in set(Verdict):
        raise bad(f"verdict must be one of {', '.join(Verdict)}, got {raw['verdict']!r}")
    effect = raw["effect"]
    if effect is not None and not _number(effect):
        raise bad(f"effect must be a number or null, got {effect!r}")
    ci = raw["ci"]
    # An interval may be unbounded (+-Infinity) where the design cannot bound it.
    if ci is not None and not (
        isinstance(ci, list) and len(ci) == 2 and all(map(_number, ci)) and ci[0] <= ci[1]
    ):
        raise bad(f"ci must be null or [low, high] with low <= high, got {ci!r}")
    tolerance = raw.get("tolerance", 0.0)
    if not _number(tolerance) or not tolerance >= 0:
        raise bad(f"tolerance must be a number >= 0, got {tolerance!r}")
    return BaselineEntry(
        claim_id,
        version,
        Verdict(raw["verdict"]),
        None if effect is None else float(effect),
        None if ci is None else (float(ci[0]), float(ci[1])),
        float(tolerance),
    )


@dataclass(frozen=True)
class Baseline:
    """One model's stored verdicts and the settings they were made under."""

    path: Path
    settings: dict[str, Any] | None
    entries: dict[str, BaselineEntry]


def read(directory: Path, model: str) -> Baseline | None:
    """A model's baseline, checked whole; None when there is none. Raises BaselineError
    naming the file (and the entry) for anything that is not a valid baseline."""
    path = path_for(directory, model)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{path}: not UTF-8 text ({exc.reason}); {_FIX}") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise BaselineError(f"{path}: not valid JSON ({exc.msg} at {where}); {_FIX}") from exc
    if not isinstance(data, dict):
        raise BaselineError(f"{path}: expected a JSON object, got {type(data).__name__}; {_FIX}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BaselineError(
            f"{path}: schema_version must be {SCHEMA_VERSION}, got "
            f"{data.get('schema_version')!r}; {_FIX}"
        )
    claims, settings = data.get("claims"), data.get("settings")
    if not isinstance(claims, dict):
        raise BaselineError(f"{path}: 'claims' must be an object of entries; {_FIX}")
    if settings is not None and not isinstance(settings, dict):
        raise BaselineError(f"{path}: 'settings' must be an object; {_FIX}")
    entries = {claim_id: _entry(path, claim_id, raw) for claim_id, raw in claims.items()}
    return Baseline(path, settings, entries)


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
    try:
        stored = read(directory, model)
    except BaselineError:
        stored = None  # an unreadable file is what update is asked to replace
    if stored is None or settings_mismatch(stored.settings, settings):
        existing: dict[str, BaselineEntry] = {}  # none, or other settings: start afresh
    else:
        existing = stored.entries
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


@dataclass(frozen=True)
class Decision:
    """What one claim result means for its test: ``outcome`` and the message pytest shows;
    ``unrecorded``: the result has no baseline entry yet and one should be written."""

    outcome: Literal["pass", "fail", "xfail", "skip"]
    message: str = ""
    unrecorded: bool = False


def evidence_message(result: ClaimResult) -> str:
    return "; ".join((result.summary(), *result.notes))


def decide(
    mode: str, stored: Baseline | None, settings: dict[str, Any], result: ClaimResult
) -> Decision:
    """The test outcome of ``result`` under baseline ``mode`` (compare, update, off), given
    the model's stored baseline (read only in compare mode) and the run's settings.

    A stored entry must match (same settings, verdict, effect within tolerance) or the test
    fails. Without one, a REFUTED verdict fails unless the run updates baselines: the run
    then answers "does the claim hold?". What passes maps by verdict: a recorded
    refutation is an expected failure, INCONCLUSIVE and NOT APPLICABLE are skips.
    """
    entry = stored.entries.get(result.claim_id) if stored is not None else None
    unrecorded = False
    if stored is not None and entry is not None:
        mismatch = settings_mismatch(stored.settings, settings)
        if mismatch:
            return Decision(
                "fail",
                f"baselines/{result.model} was made under other settings ({mismatch}); "
                "compare under the same settings, or pass --lm-baseline=off or "
                "--lm-baseline=update",
            )
        comparison = compare(entry, result)
        if not comparison.matches:
            return Decision("fail", comparison.message)
    else:
        # Written at session end and reported, never passed over in silence.
        unrecorded = mode == "compare" and not settings_mismatch(
            stored.settings if stored is not None else None, settings
        )
        if mode != "update" and result.verdict == Verdict.REFUTED:
            return Decision("fail", evidence_message(result), unrecorded)
    if result.verdict == Verdict.REFUTED:
        # Recorded refutation: an expected failure, not a broken build.
        return Decision("xfail", f"recorded in baseline: {evidence_message(result)}", unrecorded)
    if result.verdict in (Verdict.INCONCLUSIVE, Verdict.NOT_APPLICABLE):
        return Decision("skip", evidence_message(result), unrecorded)
    return Decision("pass", "", unrecorded)
