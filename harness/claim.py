"""The claim API: what a claim declares (ClaimSpec) and what evaluating it yields (ClaimResult)."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd


# What a claim may declare in ``ClaimSpec.needs``: the evidence it reads (see
# harness.evidence.Evidence); listed by ``pytest --lm-list-claims``.
EVIDENCE_KINDS = ("activations", "fits", "modes", "similarity")
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

    def __post_init__(self) -> None:
        # A bad spec fails where it is written (at import), not at the end of a model run.
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise ClaimSpecError(
                f"claim id {self.id!r} must be lower-case words joined by '-' (e.g. 'my-claim')"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ClaimSpecError(f"claim {self.id}: version must be an int >= 1, not {self.version!r}")
        unknown = [n for n in self.needs if n not in EVIDENCE_KINDS]
        if isinstance(self.needs, str) or not self.needs or unknown:
            raise ClaimSpecError(
                f"claim {self.id}: needs must be a non-empty tuple of {', '.join(EVIDENCE_KINDS)}; "
                f"got {self.needs!r}"
            )

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

    def summary(self) -> str:
        parts = [f"{self.claim_id} on {self.model}: {self.verdict}"]
        if self.effect is not None:
            # A non-finite effect was not computed; the notes say why.
            value = f"{self.effect:.3g}" if math.isfinite(self.effect) else "not computed"
            parts.append(f"{self.effect_name} = {value}")
        if self.ci is not None:
            parts.append(f"95% CI [{self.ci[0]:.3g}, {self.ci[1]:.3g}]")
        if self.pvalue is not None:
            parts.append(f"p = {self.pvalue:.3g}")
        parts.append(f"n = {self.n}")
        return ", ".join(parts)
