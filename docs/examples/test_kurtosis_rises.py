"""Claim: the residual stream's kurtosis rises with depth (tails get heavier in later layers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.evidence import Evidence
from harness.stats.inference import bootstrap_mean, cluster_slopes

SPEC = ClaimSpec(
    id="kurtosis-rises",
    version=1,
    title="Residual kurtosis rises with depth",
    source="lmclaims tutorial (docs/writing-claims.md); a hypothesis, not a published finding",
    quote="The residual stream's distributions get heavier-tailed in later layers.",
    statistic=(
        "Per sample (all coordinates of one subject/attribute pair's sentences at one layer) "
        "the log of the Pearson kurtosis m4 / m2^2 (3 for a Gaussian; the log keeps a few "
        "huge values from deciding). Per pair, the OLS slope of log-kurtosis on normalized "
        "depth (0 = first layer, 1 = last); the effect is the mean slope over pairs, with a "
        "95 % CI from a bootstrap over pairs (a pair's layers share sentences). SUPPORTED "
        "when the CI lies above 0, REFUTED when it lies below 0, INCONCLUSIVE otherwise or "
        "with fewer than 4 pairs or 3 layers."
    ),
    thresholds={"min_pairs": 4, "min_layers": 3},
    needs=("activations",),
)
EFFECT = "log-kurtosis slope over depth"


def log_kurtosis(x: np.ndarray) -> float:
    """log(m4 / m2^2) of one sample; NaN for a constant sample."""
    centred = x - x.mean()
    m2 = float(np.mean(centred**2))
    return float(np.log(np.mean(centred**4) / m2**2)) if m2 > 0 else float("nan")


def kurtosis_table(evidence: Evidence) -> pd.DataFrame:
    """One row per (layer, pair): log-kurtosis and normalized depth."""
    depth = np.linspace(0.0, 1.0, evidence.n_layers)
    rows = [
        {"layer": layer, "pair": pair, "depth": depth[layer], "log_kurtosis": log_kurtosis(x)}
        for layer, pair, x in evidence.samples()
    ]
    return pd.DataFrame(rows)


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    n_pairs, n_layers = len(evidence.pairs), evidence.n_layers
    if n_pairs < spec.thresholds["min_pairs"] or n_layers < spec.thresholds["min_layers"]:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT,
            n=n_pairs,
            notes=(f"{n_pairs} pairs and {n_layers} layers; need at least 4 pairs, 3 layers",),
        )
    table = kurtosis_table(evidence).dropna()
    _, slopes = cluster_slopes(table["depth"], table["log_kurtosis"], table["pair"])
    slopes = slopes[np.isfinite(slopes)]
    boot = bootstrap_mean(slopes, seed=evidence.seed)
    lo, hi = boot.confidence_interval
    verdict = Verdict.SUPPORTED if lo > 0 else Verdict.REFUTED if hi < 0 else Verdict.INCONCLUSIVE
    per_layer = table.groupby("layer")["log_kurtosis"].mean()
    first, last = np.exp(per_layer.iloc[0]), np.exp(per_layer.iloc[-1])
    notes = (
        f"kurtosis (geometric mean over pairs) {first:.3g} at the first layer, "
        f"{last:.3g} at the last; highest {np.exp(per_layer.max()):.3g} at layer "
        f"{int(per_layer.idxmax())}",
        f"{np.mean(slopes > 0):.0%} of {len(slopes)} pairs have a rising slope",
    )
    return spec.result(
        evidence.model,
        verdict,
        EFFECT,
        n=len(slopes),
        effect=boot.statistic,
        ci=boot.confidence_interval,
        pvalue=boot.p_greater,
        notes=notes,
        tables={"per_layer": per_layer.reset_index()},
    )


test_kurtosis_rises = claim_test(SPEC, evaluate)
