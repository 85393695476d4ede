"""Claim: activations are nearly Gaussian with outliers: a Gaussian fits the bulk once the
few outlier dimensions are removed."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import stats

from harness.cache import source_fingerprint
from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.evidence import TABLE_SEED, Evidence
from harness.planted import REALISTIC, Base
from harness.stats.distributions import ENGINE_VERSION, DegenerateSampleError, rank
from harness.stats.geometry import top_energy_dims
from harness.stats.inference import cluster_bootstrap_share

# The Gaussian against heavier- and lighter-tailed rivals; t and gennorm contain it as a
# limit / special case, so they win on a Gaussian sample only by chance (AIC's penalty).
FAMILIES = ("norm", "logistic", "t", "gennorm")

SPEC = ClaimSpec(
    id="gaussian-with-outliers",
    version=1,
    title="Activations are nearly Gaussian apart from a few outlier dimensions",
    source=(
        "beren & Eric Winsor (2023), 'Basic facts about language model internals' "
        "(LessWrong / Conjecture)"
    ),
    quote="Activations Are Nearly Gaussian With Outliers",  # the post's section heading
    statistic=(
        "At each layer the k = ceil(1% of d_model) dimensions with the largest mean squared "
        "RMS-normalized value over all sentences (those carrying most of the vectors' norm: "
        "the outlier dimensions) are removed. Each sample (all remaining coordinates of all "
        "sentences of one (subject, attribute) pair at one layer, as in the write-up) is "
        "fitted by maximum likelihood with norm, logistic, t and gennorm and ranked by AIC. "
        "The statistic is the share of samples the Gaussian wins after the removal, with a "
        "95% CI from a bootstrap over pairs. SUPPORTED when the lower bound exceeds 0.5; "
        "REFUTED when the upper bound is below 0.5; INCONCLUSIVE otherwise. The share before "
        "the removal, the excess kurtosis before/after and the share with every dimension "
        "z-scored first (so unequal variances across dimensions cannot explain a misfit) are "
        "reported beside. To bound the cost, all layers but a seeded subset of at most 20 "
        "pairs are fitted."
    ),
    multiplicity=(
        "One test decides: the share's interval. The share before the removal and with "
        "z-scored dimensions are reported, not tested."
    ),
    thresholds={
        "share": 0.5,
        "removed_share": 0.01,  # ours: "a few" outlier dimensions = 1% of d_model
        "max_pairs": 20,
        "min_pairs": 4,
    },
    source_numbers={
        "write-up (seed)": (
            "logistic-family best fit in 85% of Pythia samples, t in 37% of GPT-2 samples: "
            "predicts REFUTED"
        ),
        "beren & Winsor 2023": "histograms of residual activations look Gaussian with outliers",
    },
    caveats=(
        (
            "The pooled sample mixes dimensions with different variances even after removing "
            "the outliers; a mixture of Gaussians with unequal variances is heavy-tailed, so a "
            "per-dimension Gaussian bulk could still lose here. The claim is tested, like the "
            "write-up's, on the pooled sample; the z-scored diagnostic shows whether the "
            "misfit survives equalizing the dimensions."
        ),
        (
            "Which dimensions are removed is chosen on all sentences of the layer (not per "
            "pair), as an outlier dimension is a property of the model."
        ),
        (
            "A subset of pairs bounds the run time (the fits dominate it); the bootstrap is "
            "over those pairs, so the interval reflects the subset's size."
        ),
    ),
    needs=("activations",),
)


def _winner(x: np.ndarray, seed: int) -> str | None:
    try:
        return rank(x, FAMILIES, 4000, seed).winner("aic")
    except DegenerateSampleError:
        return None


def _refits(evidence: Evidence, take: int, k: int) -> pd.DataFrame:
    """Per (layer, chosen pair): the AIC winners before and after removing the ``k``
    highest-energy dimensions of the layer, and the excess kurtosis of both samples."""
    resid = evidence.resid
    n_layers, _, d_model = resid.shape
    pairs = evidence.pairs
    # The fitted pairs are a subsample of what is measured, not a resample: a fixed seed, so
    # --lm-seed moves only the bootstrap.
    rng = np.random.default_rng(TABLE_SEED)
    chosen = np.sort(rng.choice(len(pairs), size=take, replace=False))
    rows = []
    with evidence.progress(n_layers, f"gaussian refits {evidence.model}", "layer") as bar:
        for layer in range(n_layers):
            block = np.asarray(resid[layer], dtype=np.float64)
            removed = top_energy_dims(block, k)
            keep = np.setdiff1d(np.arange(d_model), removed)
            # Diagnostic: each dimension z-scored over the layer's sentences, so unequal
            # variances across dimensions (a scale mixture, heavy-tailed when pooled) cannot
            # be what the Gaussian misses.
            sd = block.std(axis=0)
            zscored = (block - block.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
            for pair in chosen:
                sentences = block[pairs["rows"].iloc[pair]]
                before = sentences.ravel()
                after = sentences[:, keep].ravel()
                rows.append(
                    {
                        "layer": layer,
                        "pair": int(pairs["pair"].iloc[pair]),
                        "winner_before": _winner(before, TABLE_SEED),
                        "winner_after": _winner(after, TABLE_SEED),
                        "winner_zscored": _winner(
                            zscored[pairs["rows"].iloc[pair]][:, keep].ravel(), TABLE_SEED
                        ),
                        "kurtosis_before": float(stats.kurtosis(before)),
                        "kurtosis_after": float(stats.kurtosis(after)),
                        "removed": ",".join(map(str, removed)),
                    }
                )
            bar.update(1)
    return pd.DataFrame(rows)


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    th = spec.thresholds
    resid = evidence.resid
    n_layers, _, d_model = resid.shape
    pairs = evidence.pairs
    name = "Gaussian share after removing outlier dimensions"
    if len(pairs) < th["min_pairs"]:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            name,
            n=0,
            notes=(
                f"only {len(pairs)} subject/attribute pairs; at least "
                f"{int(th['min_pairs'])} are needed for a pair bootstrap",
            ),
        )
    take = min(len(pairs), int(th["max_pairs"]))
    k = max(1, math.ceil(th["removed_share"] * d_model))
    # Not resampled, so cached: a warm run skips the refits (most of this claim's time).
    fields = {
        "claim": spec.id,
        "version": spec.version,
        "pairs": take,
        "removed_dims": k,
        "families": FAMILIES,
        "engine": ENGINE_VERSION,
        "code": source_fingerprint(_refits, top_energy_dims),
    }
    table = evidence.cached_table("gaussian-refits", fields, lambda: _refits(evidence, take, k))
    usable = table.dropna(subset=["winner_after"])
    usable = usable.assign(
        norm_before=usable["winner_before"] == "norm",
        norm_after=usable["winner_after"] == "norm",
        norm_after_zscored=usable["winner_zscored"] == "norm",
    )
    boot = cluster_bootstrap_share(
        usable["norm_after"].to_numpy(),
        usable["pair"].to_numpy(),
        null_value=th["share"],
        seed=evidence.seed,
    )
    lo, hi = boot.confidence_interval
    if lo > th["share"]:
        verdict = Verdict.SUPPORTED
    elif hi < th["share"]:
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.INCONCLUSIVE
    shares = ["norm_before", "norm_after", "norm_after_zscored"]
    per_layer = usable.groupby("layer")[shares].mean().reset_index()
    kurtosis = (
        usable.groupby("layer")
        .agg(
            kurtosis_before=("kurtosis_before", "median"),
            kurtosis_after=("kurtosis_after", "median"),
            removed=("removed", "first"),
        )
        .reset_index()
    )
    winners = (
        pd.DataFrame(
            {
                "before": usable["winner_before"].value_counts(normalize=True),
                "after": usable["winner_after"].value_counts(normalize=True),
                "after_zscored": usable["winner_zscored"].value_counts(normalize=True),
            }
        )
        .fillna(0.0)
        .rename_axis("family")
        .reset_index()
    )
    top_after = usable["winner_after"].value_counts(normalize=True)
    notes = (
        f"{k} dimensions removed per layer; {len(usable)} samples ({take} of {len(pairs)} "
        f"pairs x {n_layers} layers), AIC over {', '.join(FAMILIES)}",
        f"Gaussian wins {usable['norm_before'].mean():.1%} before and "
        f"{usable['norm_after'].mean():.1%} after the removal; winners after: "
        + ", ".join(f"{f} {s:.1%}" for f, s in top_after.items()),
        f"median excess kurtosis {usable['kurtosis_before'].median():.3g} before, "
        f"{usable['kurtosis_after'].median():.3g} after (0 for a Gaussian)",
        f"diagnostic, each dimension z-scored over the layer's sentences before pooling: "
        f"Gaussian wins {usable['norm_after_zscored'].mean():.1%} after the removal",
    )
    return spec.result(
        evidence.model,
        verdict,
        name,
        n=len(usable),
        effect=boot.statistic,
        ci=boot.confidence_interval,
        pvalue=boot.pvalue,
        notes=notes,
        tables={"per_layer": per_layer, "kurtosis": kurtosis, "winners": winners},
    )


test_gaussian_with_outliers = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Two layers: the claim is decided
# per (layer, pair) sample and needs no depth, but one layer gives only 20 samples, and a
# Gaussian wins AIC against its nesting rivals (t, gennorm) in only ~80% of pure Gaussian
# samples, so 20 samples often leave the share's lower bound at 0.5. The truth is what the
# claim states: a Gaussian bulk with a few massive outlier dims, plus the nuisances a real
# residual stream adds (unequal per-dimension scales, offsets, crossed subject/attribute/pair
# effects). The per-dimension scale spread makes the pooled sample a scale mixture of
# Gaussians (excess kurtosis ~ 3 (exp(4 sigma^2) - 1), 0.28 at sigma 0.15), which AIC tells
# from a Gaussian at 12,672 values: the truths with scale spread miss for that reason (the
# claim tests the pooled sample); the equal-scales truth checks the plant itself.
WITH_MASSIVE_DIMS = replace(REALISTIC, massive_dims=3)
TWO_LAYERS = {"n_layers": 2}
SCALE_MIXTURE = (
    "Gaussian dimensions with unequal scales pool into a scale mixture (excess kurtosis "
    "~0.25 at log-scale sd 0.15), which AIC at 12,672 values tells from one Gaussian: t or "
    "gennorm wins and the claim reads REFUTED on its own realistic truth. The rework "
    "(issue 20) decides by effect size instead."
)
CALIBRATION = (
    planted(
        "gaussian bulk with nuisances and massive dims",
        True,
        "normal; 3 massive dims (100-900 bulk units), per-dim log-scale sd 0.15, offsets 0.2, "
        "crossed effects 0.3/0.3/0.2",
        Base("normal", **TWO_LAYERS),
        WITH_MASSIVE_DIMS,
        known_miss=SCALE_MIXTURE,
    ),
    planted(
        "gaussian bulk with small scale spread",
        True,
        "normal; 3 massive dims, per-dim log-scale sd 0.1, offsets 0.2, crossed effects "
        "0.3/0.3/0.2",
        Base("normal", **TWO_LAYERS),
        replace(WITH_MASSIVE_DIMS, scale_sigma=0.1),
        known_miss=SCALE_MIXTURE,
    ),
    planted(
        "gaussian bulk with equal scales",
        True,
        "normal; 3 massive dims, offsets 0.2, crossed effects 0.3/0.3/0.2, no scale spread",
        Base("normal", **TWO_LAYERS),
        replace(WITH_MASSIVE_DIMS, scale_sigma=0.0),
    ),
    planted(
        "logistic bulk with nuisances and massive dims",
        False,
        "logistic; the same nuisances and 3 massive dims as the first truth",
        Base("logistic", **TWO_LAYERS),
        WITH_MASSIVE_DIMS,
    ),
    planted("t3 bulk", False, "iid Student t(3) coordinates", Base("t3", **TWO_LAYERS)),
)
