"""The claim API: what a claim declares (ClaimSpec) and what evaluating it yields (ClaimResult)."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from harness.config import TOKEN_MODES
from harness.evidence import Evidence
from harness.keys import source_fingerprint
from harness.stats.errors import InsufficientDataError

# What a claim may declare in ``ClaimSpec.needs``: the Evidence tables it reads, listed by
# ``pytest --lm-list-claims``. Only kinds Evidence really provides: a similarity table would
# join here when Evidence computes one (distinctiveness builds its own from activations).
# "activations:<selection>" names a second token selection the claim reads through
# ``Evidence.under_tokens`` (extracted once more per model).
EVIDENCE_KINDS = (
    "activations",
    "fits",
    "modes",
    *(f"activations:{mode}" for mode in TOKEN_MODES),
)
_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class ClaimSpecError(ValueError):
    """A ClaimSpec that cannot be a claim (bad id, version or needs)."""


class Verdict(enum.StrEnum):
    SUPPORTED = "SUPPORTED"
    REFUTED = "REFUTED"
    INCONCLUSIVE = "INCONCLUSIVE"
    NOT_APPLICABLE = "NOT_APPLICABLE"


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    version: int
    title: str
    source: str  # citation of the statement
    quote: str  # the statement, in the source's words
    statistic: str  # the operational test, one paragraph
    thresholds: Mapping[str, float] = field(default_factory=dict)
    # Which tests the verdict rests on and how their family is corrected (Holm, Bonferroni,
    # an intersection-union test needing none), or that one test decides.
    multiplicity: str = ""
    # Per-model expected verdicts where the source says something model-specific.
    expectations: Mapping[str, Verdict] = field(default_factory=dict)
    # The source's own numbers, shown beside ours in the report.
    source_numbers: Mapping[str, str] = field(default_factory=dict)
    # What limits the test: confounds, power, departures from the source's method.
    caveats: tuple[str, ...] = ()
    needs: tuple[str, ...] = ("activations",)
    # Result table -> figure kind (harness.figures.KINDS; "none" for no figure). Tables
    # with a layer column that are not named here are drawn as lines.
    plots: Mapping[str, str] = field(default_factory=dict)
    # The models the source itself measured (registry names, matched case-insensitively on
    # the last path component): a result on one of them is a replication, on any other
    # model an extension of the claim beyond its evidence.
    study_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A bad spec fails where it is written (at import), not at the end of a model run.
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise ClaimSpecError(
                f"claim id {self.id!r} must be lower-case words joined by '-' (e.g. 'my-claim')"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ClaimSpecError(
                f"claim {self.id}: version must be an int >= 1, not {self.version!r}"
            )
        unknown = [n for n in self.needs if n not in EVIDENCE_KINDS]
        if isinstance(self.needs, str) or not self.needs or unknown:
            raise ClaimSpecError(
                f"claim {self.id}: needs must be a non-empty tuple of {', '.join(EVIDENCE_KINDS)}; "
                f"got {self.needs!r}"
            )

    @property
    def token_selections(self) -> tuple[str, ...]:
        """The second token selections the claim reads (its ``activations:<selection>``)."""
        return tuple(n.partition(":")[2] for n in self.needs if n.startswith("activations:"))

    def cache_fields(self, *code: object) -> dict[str, object]:
        """Key fields for a table this claim caches with ``Evidence.cached_table``: its id,
        version, thresholds and ``source_fingerprint`` of ``code`` (the functions or modules
        computing it), so that any of these changing retires the cached entry."""
        return {
            "claim": self.id,
            "version": self.version,
            "thresholds": dict(self.thresholds),
            "code": source_fingerprint(*code),
        }

    def scope(self, model: str) -> str:
        """'replication' for a model the source measured, 'extension' for any other."""
        name = model.strip().rstrip("/").rsplit("/", 1)[-1].lower()
        return "replication" if name in {m.lower() for m in self.study_models} else "extension"

    def result(
        self,
        model: str,
        verdict: Verdict,
        effect_name: str,
        *,
        n: int,
        effect: float | None = None,
        ci: tuple[float, float] | None = None,
        pvalue: float | None = None,
        notes: tuple[str, ...] = (),
        tables: Mapping[str, pd.DataFrame] | None = None,
    ) -> ClaimResult:
        """This claim's result for one model, with its id and version filled in."""
        return ClaimResult(
            self.id,
            self.version,
            model,
            verdict,
            effect_name,
            effect,
            ci,
            pvalue,
            n,
            notes,
            dict(tables or {}),
            self.scope(model),
        )


@dataclass(frozen=True, eq=False)
class ClaimResult:
    claim_id: str
    claim_version: int
    model: str
    verdict: Verdict
    effect_name: str
    effect: float | None
    ci: tuple[float, float] | None
    pvalue: float | None
    n: int
    notes: tuple[str, ...] = ()
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    scope: str = "extension"  # or "replication": ClaimSpec.scope

    def summary(self) -> str:
        parts = [f"{self.claim_id} on {self.model}: {self.verdict}"]
        if self.effect is not None:
            # A non-finite effect was not computed; the notes say why.
            value = f"{self.effect:.3g}" if math.isfinite(self.effect) else "not computed"
            parts.append(f"{self.effect_name} = {value}")
        if self.ci is not None:
            ends = ", ".join(_shown(end) for end in self.ci)
            parts.append(f"95% CI [{ends}]")
        if self.pvalue is not None:
            parts.append(f"p = {_shown(self.pvalue)}")
        parts.append(f"n = {self.n}")
        return ", ".join(parts)


def _shown(value: float) -> str:
    # Never a bare "nan"/"inf" in a summary: a non-finite number was not computed.
    return f"{value:.3g}" if math.isfinite(value) else "not computed"


# A claim's evaluate function: (evidence for one model, its spec) -> its result.
Evaluate = Callable[["Evidence", ClaimSpec], ClaimResult]


def decide(spec: ClaimSpec, evaluate: Evaluate, evidence: Evidence) -> ClaimResult:
    """Run a claim on one model's evidence. Data too few or too flat for a statistic the
    claim needs (InsufficientDataError, e.g. a 100-value minimum for a fit, a mixture with
    fewer rows than it has parameters) make the verdict INCONCLUSIVE with that reason: the
    data cannot decide, which is not the claim's or the run's failure."""
    try:
        return evaluate(evidence, spec)
    except InsufficientDataError as exc:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            "",
            n=0,
            notes=(f"not enough data to decide: {exc}",),
        )


def claim_test(spec: ClaimSpec, evaluate: Evaluate) -> Callable[..., None]:
    """The pytest test of one claim; bind it to a ``test_*`` name in the claim module::

        test_my_claim = claim_test(SPEC, evaluate)

    The plugin parametrizes it over ``--lm-models``; ``lm_verdict`` records the result for
    the report and baselines and turns the verdict into the outcome. The spec rides on the
    function, so ``--lm-claims`` selects tests by claim id.
    """
    if not isinstance(spec, ClaimSpec):
        raise ClaimSpecError(f"claim_test needs a ClaimSpec, got {type(spec).__name__}")
    if not callable(evaluate):
        raise ClaimSpecError(f"claim {spec.id}: evaluate must be callable")

    def test(lm_evidence: Evidence, lm_verdict: Callable[[ClaimSpec, ClaimResult], None]) -> None:
        lm_verdict(spec, decide(spec, evaluate, lm_evidence))

    test.__name__ = test.__qualname__ = "test_" + spec.id.replace("-", "_")
    test.__doc__ = spec.title
    test.lm_claim = spec  # type: ignore[attr-defined]  # read back by the plugin
    test.lm_evaluate = evaluate  # type: ignore[attr-defined]  # read back by the plugin
    return test
