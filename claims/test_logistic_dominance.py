"""Claim: residual-stream activations are best described by the logistic family."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.evidence import TABLE_SEED, Evidence, fit_all
from harness.keys import source_fingerprint
from harness.planted import REALISTIC, Base
from harness.sources import BEYOND_GAUSSIAN_MODELS
from harness.stats.families import LOGISTIC_FAMILY
from harness.stats.fit_engine import CALIBRATION_CODE, ENGINE_VERSION
from harness.stats.geometry import zscore_dims
from harness.stats.inference import CrossedShare, crossed_bootstrap_share

SPEC = ClaimSpec(
    study_models=BEYOND_GAUSSIAN_MODELS,
    id="logistic-dominance",
    version=3,
    caveats=(
        (
            "The values of one sample are not independent (the same coordinates recur in each of "
            "the pair's sentences); families are fitted by maximum likelihood on the whole "
            "sample (the fit subsample setting only seeds the starts of families without a "
            "numpy density). The study fitted scipy's generic fit on a subsample and ranked by "
            "histogram SSE; here both criteria rank the same maximum-likelihood fits."
        ),
        (
            "Per-dimension scale differences make a pooled sample a scale mixture, which AIC "
            "at ~12,700 values tells from any single family even when every dimension is "
            "logistic; SSE on 150 bins is far less sensitive to it. That is why the criteria "
            "can disagree, and why the share with every dimension z-scored is shown: it asks "
            "the family question without the scale mixture."
        ),
        (
            "The source's thresholds are its own shares: a model exactly at the source's share "
            "reads INCONCLUSIVE (the interval straddles it); other models use 0.5 (a majority)."
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
        "at one layer) is fitted by maximum likelihood with every selected family, and the "
        "families are ranked twice: by the study's criterion (SSE between each fitted density "
        "and the sample's 150-bin density histogram, as its code bins) and by likelihood "
        "(AIC). Under each, the statistic is the share of samples whose winner is logistic, "
        "genlogistic or hypsecant (under SSE: best or within 10% of the best SSE, as SSE has "
        "no penalty for parameters and the 4-parameter johnsonsu and norminvgauss match an "
        "exactly logistic histogram to within ~4%, so a strict SSE ranking picks the logistic "
        "family in only ~25% of pure logistic samples; see SSE_TIE), with a 95% CI from a two-"
        "way bootstrap of subjects and attributes (a share of 0 or 1 gets the exact Clopper-"
        "Pearson interval over the pairs). A criterion puts the family above the threshold "
        "when the CI's lower bound exceeds it and the Gaussian wins less often than the "
        "logistic family, below it when the upper bound is under it or the Gaussian wins at "
        "least as often. The threshold is the source's share for its own models (Pythia 0.85; "
        "GPT-2 0.42 = 63% not t x 67% logistic family among them) and 0.5 elsewhere. SUPPORTED"
        " when both criteria put the family above; REFUTED when both put it below; "
        "INCONCLUSIVE ('criterion-dependent') when they disagree, or otherwise. The effect is "
        "the AIC share; the share on samples whose dimensions were z-scored first is reported "
        "beside. Version 2 decided by the run's criterion (AIC) alone, against 0.5 for every "
        "model."
    ),
    multiplicity=(
        "SUPPORTED needs both criteria's lower bounds: an intersection-union test at level "
        "0.025 each, no correction (p is the larger of the two). REFUTED needs both upper "
        "bounds, likewise. Per-layer shares and the z-scored share are reported, not tested."
    ),
    thresholds={"share": 0.5, "pythia": 0.85, "gpt2": 0.42, "min_pairs": 4, "zscored_pairs": 20},
    source_numbers={
        "pythia (160m-1b)": "logistic family best in 85% of samples",
        "gpt2 (small-large)": "t best in 37%; logistic family best in 67% of the rest (~42%)",
    },
    needs=("activations", "fits"),
)

CRITERIA = ("sse", "aic")
# Under SSE a family within 10% of the sample's best SSE counts as best. SSE has no penalty
# for parameters, and with maximum-likelihood fits the 4-parameter johnsonsu and
# norminvgauss match an exactly logistic 12,672-value histogram to within ~4%: ranked
# strictly, the logistic family then wins only ~25% of pure logistic samples (measured, 24
# samples). Measured ratios of the logistic family's best SSE to the best: 1.00-1.04 on
# logistic samples (1.00-1.04 with +-15% scale spread), 1.6-2.5 on Gaussian ones; the
# Gaussian's: 1.00-1.07 on Gaussian samples, 2.7-5.6 on logistic ones. The band is set at
# the reports' sample size: a smaller sample's SSE is more noise, and more families tie.
SSE_TIE = 0.10


def threshold(model: str, spec: ClaimSpec = SPEC) -> float:
    """The source's own share for its models (by name), 0.5 (a majority) for others."""
    name = model.lower().rsplit("/", 1)[-1]
    for prefix in ("pythia", "gpt2"):
        if name.startswith(prefix):
            return spec.thresholds[prefix]
    return spec.thresholds["share"]


def winners(fits: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """Per (layer, pair), among valid, converged fits: the winning family, and whether the
    logistic family and the Gaussian are best or tied with the best (within SSE_TIE of the
    best SSE; AIC is strict)."""
    usable = fits[fits["valid"].astype(bool) & fits["converged"].astype(bool)]
    usable = usable[np.isfinite(usable[criterion])]
    groups = usable.groupby(["layer", "pair"])[criterion]
    best = usable.loc[groups.idxmin()]
    lowest = groups.transform("min")
    tied = (
        usable[criterion] <= lowest * (1 + SSE_TIE)
        if criterion == "sse"
        else usable[criterion] <= lowest
    )
    ties = (
        usable.assign(
            logistic=tied & usable["family"].isin(LOGISTIC_FAMILY),
            norm=tied & (usable["family"] == "norm"),
        )
        .groupby(["layer", "pair"])[["logistic", "norm"]]
        .any()
    )
    columns = ["layer", "pair", "subject", "attribute", "family"]
    return best[columns].merge(ties.reset_index(), on=["layer", "pair"]).reset_index(drop=True)


class Side(NamedTuple):
    share: CrossedShare
    norm_share: float
    above: bool
    below: bool


def _side(won: pd.DataFrame, level: float, seed: int) -> Side:
    share = crossed_bootstrap_share(
        won["logistic"].to_numpy(),
        won["subject"].to_numpy(),
        won["attribute"].to_numpy(),
        null_value=level,
        seed=seed,
    )
    norm_share = float(won["norm"].mean())
    lo, hi = share.confidence_interval
    above = lo > level and norm_share < share.statistic
    below = hi < level or norm_share >= share.statistic
    return Side(share, norm_share, above, below)


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    fits = evidence.fits
    won = {c: winners(fits, c) for c in CRITERIA}
    n_pairs = won["aic"]["pair"].nunique()
    crossed = min(won["aic"]["subject"].nunique(), won["aic"]["attribute"].nunique()) >= 2
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
            n=len(won["aic"]),
            notes=(
                f"only {n_pairs} subject/attribute pairs; at least "
                f"{int(spec.thresholds['min_pairs'])} of two or more subjects and attributes "
                "are needed for a subject x attribute bootstrap",
            ),
            tables=tables,
        )
    level = threshold(evidence.model, spec)
    sides = {c: _side(won[c], level, evidence.seed) for c in CRITERIA}
    if all(side.above for side in sides.values()):
        verdict, why = Verdict.SUPPORTED, "both criteria put the logistic family above"
    elif all(side.below for side in sides.values()):
        verdict, why = Verdict.REFUTED, "both criteria put the logistic family below"
    elif any(side.above for side in sides.values()) and any(s.below for s in sides.values()):
        verdict, why = Verdict.INCONCLUSIVE, "criterion-dependent: SSE and AIC disagree"
    else:
        verdict, why = Verdict.INCONCLUSIVE, "an interval straddles the threshold"
    zscored = _zscored_winners(evidence, spec)
    z_shares = {c: float(zscored[c]["logistic"].mean()) for c in CRITERIA}
    tables["zscored_winners"] = _shares_by_family(zscored)

    def described(c: str) -> str:
        side = sides[c]
        lo, hi = side.share.confidence_interval
        top = won[c]["family"].value_counts(normalize=True)
        strict = float(won[c]["family"].isin(LOGISTIC_FAMILY).mean())
        tie = f" (best or within {SSE_TIE:.0%}; strictly best {strict:.1%})" if c == "sse" else ""
        return (
            f"{c.upper()}: logistic family {side.share.statistic:.1%} [{lo:.1%}, {hi:.1%}]{tie}, "
            f"Gaussian {side.norm_share:.1%}; most frequent winners: "
            + ", ".join(f"{name} {share:.1%}" for name, share in top.head(3).items())
        )

    source = "the source's share" if level != spec.thresholds["share"] else "a majority"
    notes = (
        f"threshold {level:g} ({source}); {why}; {len(won['aic'])} samples over {n_pairs} "
        f"pairs and {won['aic']['layer'].nunique()} layers",
        described("sse"),
        described("aic"),
        f"with every dimension z-scored first ({zscored['aic']['pair'].nunique()} pairs x "
        f"{zscored['aic']['layer'].nunique()} layers, not decided on): logistic family "
        f"{z_shares['sse']:.1%} by SSE, {z_shares['aic']:.1%} by AIC",
    )
    aic = sides["aic"].share
    return spec.result(
        evidence.model,
        verdict,
        "logistic-family share",
        n=len(won["aic"]),
        effect=aic.statistic,
        ci=aic.confidence_interval,
        pvalue=max(side.share.pvalue_greater for side in sides.values()),
        notes=notes,
        tables=tables,
    )


def _zscored_fits(evidence: Evidence, take: int) -> pd.DataFrame:
    """Fits of a seeded subset of pairs at every layer, each dimension z-scored over the
    layer's sentences first (so unequal scales across dimensions cannot decide the family)."""
    pairs = evidence.pairs
    chosen = evidence.pair_subset(take)

    def samples() -> Iterator[tuple[int, int, np.ndarray]]:
        for layer in range(evidence.n_layers):
            block = np.asarray(evidence.layer(layer), dtype=np.float64)
            z = zscore_dims(block)
            for pair in chosen:
                yield layer, int(pairs["pair"].iloc[pair]), z[pairs["rows"].iloc[pair]].ravel()

    settings = evidence.config.fit
    return fit_all(
        samples(),
        settings.families,
        settings.subsample,
        TABLE_SEED,
        progress=evidence.progress,
        label=f"{evidence.model} z-scored",
        total=evidence.n_layers * take,
    )


def _zscored_winners(evidence: Evidence, spec: ClaimSpec) -> dict[str, pd.DataFrame]:
    take = min(len(evidence.pairs), int(spec.thresholds["zscored_pairs"]))
    settings = evidence.config.fit
    fields = {
        "claim": spec.id,
        "pairs": take,
        "families": settings.families,
        "subsample": settings.subsample,
        "engine": ENGINE_VERSION,
        "code": source_fingerprint(_zscored_fits, zscore_dims),
    }
    fits = evidence.cached_table("zscored-fits", fields, lambda: _zscored_fits(evidence, take))
    return {c: winners(fits, c) for c in CRITERIA}


def _shares_by_family(won: dict[str, pd.DataFrame]) -> pd.DataFrame:
    columns = {c: won[c]["family"].value_counts(normalize=True) for c in CRITERIA}
    table = pd.DataFrame(columns).fillna(0.0).rename_axis("family").reset_index()
    return table.sort_values("sse", ascending=False).reset_index(drop=True)


def _winner_table(fits: pd.DataFrame) -> pd.DataFrame:
    """Share of samples won by each family, under the study's SSE and under AIC."""
    return _shares_by_family({c: winners(fits, c) for c in CRITERIA})


def _per_layer(won: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per layer, the logistic family's and the Gaussian's shares under each criterion."""
    parts = []
    for c in CRITERIA:
        w = won[c].rename(columns={"logistic": f"logistic_family_{c}", "norm": f"norm_{c}"})
        parts.append(w.groupby("layer")[[f"logistic_family_{c}", f"norm_{c}"]].mean())
    return pd.concat(parts, axis=1).reset_index()


def _invalid_table(fits: pd.DataFrame) -> pd.DataFrame:
    bad = fits[~fits["valid"].astype(bool)]
    return bad.groupby("family").size().rename("invalid_samples").reset_index()


test_logistic_dominance = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). One layer: the share does not
# depend on depth. The nuisances are what a real residual stream adds to its bulk: unequal
# per-dimension scales and offsets, crossed subject/attribute/pair effects on the centroids.
ONE_LAYER = {"n_layers": 1}
CALIBRATION = (
    planted(
        "logistic bulk",
        True,
        "iid logistic coordinates",
        Base("logistic", **ONE_LAYER),
        code=CALIBRATION_CODE,
    ),
    planted(
        "logistic bulk with nuisances",
        True,
        "logistic; per-dim log-scale sd 0.15, offsets 0.2, crossed effects 0.3/0.3/0.2",
        Base("logistic", **ONE_LAYER),
        REALISTIC,
        known_miss=(
            "Logistic dimensions with unequal scales and offsets pool into a scale mixture: "
            "SSE still finds the logistic family, but AIC at 12,672 values gives about half "
            "the samples to norminvgauss, johnsonsu or t (AIC share 0.44-0.58 in the first 8 "
            "reps), so its interval straddles 0.5 and the verdict is INCONCLUSIVE. The "
            "z-scored share, reported beside, removes the scale mixture."
        ),
        code=CALIBRATION_CODE,
    ),
    planted(
        "gaussian bulk with nuisances",
        False,
        "normal; the same nuisances, no massive dims",
        Base("normal", **ONE_LAYER),
        REALISTIC,
        code=CALIBRATION_CODE,
    ),
    planted(
        "gaussian bulk with nuisances and massive dims",
        False,
        "normal; the same nuisances and 3 massive dims (100-900 bulk units): the study's "
        "histogram spans the massive values, so its 150 bins cannot resolve the bulk's shape "
        "and SSE ties every family (INCONCLUSIVE, not SUPPORTED)",
        Base("normal", **ONE_LAYER),
        replace(REALISTIC, massive_dims=3),
        code=CALIBRATION_CODE,
    ),
    planted(
        "t3 bulk",
        False,
        "iid Student t(3) coordinates",
        Base("t3", **ONE_LAYER),
        code=CALIBRATION_CODE,
    ),
)
