"""The claim API: what a claim declares (ClaimSpec) and what evaluating it yields (ClaimResult)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd


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
    needs: tuple[str, ...] = ("activations",)
    # Result table -> figure kind (harness.figures.KINDS; "none" for no figure). Tables
    # with a layer column that are not named here are drawn as lines.
    plots: Mapping[str, str] = field(default_factory=dict)

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
            parts.append(f"{self.effect_name} = {self.effect:.3g}")
        if self.ci is not None:
            parts.append(f"95% CI [{self.ci[0]:.3g}, {self.ci[1]:.3g}]")
        if self.pvalue is not None:
            parts.append(f"p = {self.pvalue:.3g}")
        parts.append(f"n = {self.n}")
        return ", ".join(parts)
