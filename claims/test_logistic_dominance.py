"""Claim: residual-stream activations are best described by the logistic family."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.evidence import Evidence
from harness.planted import REALISTIC, Base
from harness.stats.distributions import LOGISTIC_FAMILY
from harness.stats.inference import crossed_bootstrap_share

SPEC = ClaimSpec(
    id="logistic-dominance",
    version=2,
    caveats=(
        (
            "The values of one sample are not independent (the same coordinates recur in each of "
            "the pair's sentences); families are fitted by maximum likelihood on the whole "
            "sample and ranked by AIC (the fit subsample setting only seeds the starts of "
            "families without a numpy density), and the study's histogram SSE ranking is shown "
            "beside."
        ),
        (
            "Heavy tails from a few massive-activation dimensions favour t and Johnson SU over "
            "every logistic-family member; the claim is about the whole pooled sample, as in the "
            "study."
        ),
        (
            "The study's GPT-2 and Pythia weights cannot be fetched offline here: its own models "
            "are not re-measured in the committed reports."
        ),
    ),
    title="Residual activations are logistic-dominated, not Gaussian",
    source="Beyond Gaussian: Language Model Representations and Distributions (seed write-up)",
    quote=(
        "For the Pythia models, the logistic and related distributions (generalized logistic "
        "and hyperbolic secant) dominated with the best fit 85% of the time [...] For the GPT2 "
        "models, the heavy tails of the t-distribution with low degrees of freedom was much "
        "more common, representing 37% of distributions."
    ),
    statistic=(
        "Each sample (all residual coordinates of all sentences of one subject/attribute pair "
        "at one layer) is fitted by maximum likelihood with every selected family and the "
        "families are ranked by the run's criterion (AIC by default). The statistic is the "
        "share of samples whose winner is logistic, genlogistic or hypsecant, with a 95% CI "
        "from a two-way bootstrap of subjects and attributes (samples of one pair are "
        "correlated across layers, and pairs sharing a subject or an attribute with each "
        "other; version 1 resampled the pairs as if independent); a share of 0 or 1 gets "
        "the exact Clopper-Pearson interval over the pairs. SUPPORTED when the CI's lower "
        "bound exceeds 0.5 and the "
        "Gaussian wins less often than the logistic family; REFUTED when the upper bound is "
        "below 0.5 or the Gaussian wins at least as often; INCONCLUSIVE otherwise."
    ),
    multiplicity=(
        "One interval decides (the logistic-family share), together with a count comparison "
        "that is not a test (the Gaussian wins less often). Per-layer shares are reported, "
        "not tested."
    ),
    thresholds={"share": 0.5, "min_pairs": 4},
    source_numbers={
        "pythia (160m-1b)": "logistic family best in 85% of samples",
        "gpt2 (small-large)": "t best in 37%; logistic family best in 67% of the rest",
    },
    needs=("activations", "fits"),
)


def winners(fits: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """The winning family per (layer, pair) among valid, converged fits."""
    usable = fits[fits["valid"].astype(bool) & fits["converged"].astype(bool)]
    usable = usable[np.isfinite(usable[criterion])]
    best = usable.loc[usable.groupby(["layer", "pair"])[criterion].idxmin()]
    return best[["layer", "pair", "subject", "attribute", "family"]].reset_index(drop=True)


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    criterion = evidence.config.fit.criterion
    fits = evidence.fits
    won = winners(fits, criterion)
    n_pairs = won["pair"].nunique()
    crossed = min(won["subject"].nunique(), won["attribute"].nunique()) >= 2
    tables = {
        "winners": _winner_table(fits),
        "per_layer": _per_layer(won),
        "invalid": _invalid_table(fits),
    }
    if n_pairs < spec.thresholds["min_pairs"] or not crossed:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            "logistic-family share",
            n=len(won),
            notes=(
                f"only {n_pairs} subject/attribute pairs; at least "
                f"{int(spec.thresholds['min_pairs'])} of two or more subjects and attributes "
                "are needed for a subject x attribute bootstrap",
            ),
            tables=tables,
        )
    hits = won["family"].isin(LOGISTIC_FAMILY).to_numpy()
    boot = crossed_bootstrap_share(
        hits,
        won["subject"].to_numpy(),
        won["attribute"].to_numpy(),
        null_value=spec.thresholds["share"],
        seed=evidence.seed,
    )
    norm_share = float((won["family"] == "norm").mean())
    lo, hi = boot.confidence_interval
    if lo > spec.thresholds["share"] and norm_share < boot.statistic:
        verdict = Verdict.SUPPORTED
    elif hi < spec.thresholds["share"] or norm_share >= boot.statistic:
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.INCONCLUSIVE
    top = won["family"].value_counts(normalize=True)
    notes = (
        f"criterion {criterion}; {len(won)} samples over {n_pairs} pairs and "
        f"{won['layer'].nunique()} layers",
        f"Gaussian wins {norm_share:.1%}; most frequent winners: "
        + ", ".join(f"{name} {share:.1%}" for name, share in top.head(4).items()),
    )
    return spec.result(
        evidence.model,
        verdict,
        "logistic-family share",
        n=len(won),
        effect=boot.statistic,
        ci=boot.confidence_interval,
        pvalue=boot.pvalue_greater,
        notes=notes,
        tables=tables,
    )


def _winner_table(fits: pd.DataFrame) -> pd.DataFrame:
    """Share of samples won by each family, under AIC and under the study's SSE."""
    columns = {c: winners(fits, c)["family"].value_counts(normalize=True) for c in ("aic", "sse")}
    table = pd.DataFrame(columns).fillna(0.0).rename_axis("family").reset_index()
    return table.sort_values("aic", ascending=False).reset_index(drop=True)


def _per_layer(won: pd.DataFrame) -> pd.DataFrame:
    won = won.assign(
        logistic_family=won["family"].isin(LOGISTIC_FAMILY), norm=won["family"] == "norm"
    )
    return won.groupby("layer")[["logistic_family", "norm"]].mean().reset_index()


def _invalid_table(fits: pd.DataFrame) -> pd.DataFrame:
    bad = fits[~fits["valid"].astype(bool)]
    return bad.groupby("family").size().rename("invalid_samples").reset_index()


test_logistic_dominance = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). One layer: the share does not
# depend on depth. The nuisances are what a real residual stream adds to its bulk: unequal
# per-dimension scales and offsets, crossed subject/attribute/pair effects on the centroids.
ONE_LAYER = {"n_layers": 1}
CALIBRATION = (
    planted("logistic bulk", True, "iid logistic coordinates", Base("logistic", **ONE_LAYER)),
    planted(
        "logistic bulk with nuisances",
        True,
        "logistic; per-dim log-scale sd 0.15, offsets 0.2, crossed effects 0.3/0.3/0.2",
        Base("logistic", **ONE_LAYER),
        REALISTIC,
        known_miss=(
            "Logistic dimensions with unequal scales and offsets pool into a scale mixture "
            "that AIC at 12,672 values tells from one logistic (norminvgauss, johnsonsu or t "
            "win): 0 of the first 30 reps SUPPORTED. The test detects exactly homoscedastic "
            "logistic data; issue 20 adds the study's SSE criterion and standardized samples."
        ),
    ),
    planted(
        "gaussian bulk with nuisances and massive dims",
        False,
        "normal; the same nuisances and 3 massive dims (100-900 bulk units)",
        Base("normal", **ONE_LAYER),
        replace(REALISTIC, massive_dims=3),
    ),
    planted("t3 bulk", False, "iid Student t(3) coordinates", Base("t3", **ONE_LAYER)),
)
