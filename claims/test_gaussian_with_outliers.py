"""Claim: activations are nearly Gaussian with outliers: a Gaussian fits the bulk once the
few outlier dimensions are removed."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import stats

from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.evidence import TABLE_SEED, Evidence
from harness.keys import source_fingerprint
from harness.planted import REALISTIC, Base
from harness.stats.distributions import Ranking, rank_many
from harness.stats.fit_engine import CALIBRATION_CODE, ENGINE_VERSION, DegenerateSampleError
from harness.stats.geometry import top_energy_dims, zscore_dims
from harness.stats.inference import crossed_bootstrap_mean

# The Gaussian against heavier- and lighter-tailed rivals; t and gennorm contain it as a
# limit / special case, so they win on a Gaussian sample only by chance (AIC's penalty).
FAMILIES = ("norm", "logistic", "t", "gennorm")

SPEC = ClaimSpec(
    id="gaussian-with-outliers",
    version=2,
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
        "fitted by maximum likelihood with norm, logistic, t and gennorm. How far from "
        "Gaussian a sample is, is the log-likelihood per value the best of them gains over "
        "the best Gaussian: an estimate of the KL divergence (nats per value) from the best "
        "fit to the Gaussian. The statistic is its mean over samples (each pair's layers "
        "averaged first), with a 95% interval from a two-way bootstrap of subjects and "
        "attributes. 'Nearly Gaussian' is an equivalence statement: SUPPORTED when the upper "
        "bound is below the margin of 0.005 nats per value, REFUTED when the lower bound is "
        "above it, INCONCLUSIVE otherwise. The margin separates what the words allow from "
        "the write-up's alternative: on planted sets at the reports' sizes (22 sentences x "
        "~570 dimensions per sample, offsets and crossed effects) a Gaussian bulk whose "
        "dimensions' log-scales have sd 0.15 reads 0.001, sd 0.2 (+-20%) 0.003, a logistic "
        "bulk 0.008 (0.013 with sd 0.15), a t(3) bulk 0.18; 0.005 is the geometric middle "
        "of the sd 0.2 Gaussian and the equal-scale logistic. The same distance "
        "before the removal and with every dimension z-scored first, and the AIC winners, "
        "are reported beside. To bound the cost, all layers but a seeded subset of at most "
        "20 pairs are fitted. Version 1 decided by the share of samples the Gaussian wins "
        "by AIC: exact normality at 12,672 values, which realistic scale differences alone "
        "defeat."
    ),
    multiplicity=(
        "One test decides: the mean distance's interval against the margin (its 2.5% bounds). "
        "The distances before the removal and with z-scored dimensions, and the AIC winners, "
        "are reported, not tested."
    ),
    thresholds={
        "margin_nats": 0.005,  # see the statistic: between realistic Gaussian and logistic
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
            "the outliers, and such a mixture of Gaussians is heavier-tailed than one: the "
            "margin admits realistic scale differences (log-scale sd up to ~0.2-0.25), not "
            "arbitrary ones (sd 0.3 reads about as far from Gaussian as a logistic bulk). "
            "The z-scored distance shows how much of a misfit survives equalizing the "
            "dimensions."
        ),
        (
            "The 0.005 margin is ours: the source ('nearly Gaussian') gives no number. It is "
            "set from planted bulks at the reports' sample size, so it means the same only "
            "for samples of about that size; the log-likelihood gain is biased upwards by "
            "~1/n per extra parameter (~0.0001 here)."
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


def _summary(ranking: Ranking | ValueError, n: int) -> tuple[str | None, float]:
    """The AIC winner, and the log-likelihood per value the best family gains over the
    Gaussian (NaN for a degenerate sample)."""
    if isinstance(ranking, DegenerateSampleError):
        return None, math.nan
    if isinstance(ranking, ValueError):
        raise ranking
    loglik = {fit.name: fit.loglik for fit in ranking.fits if np.isfinite(fit.loglik)}
    if "norm" not in loglik:
        return ranking.winner("aic"), math.nan
    return ranking.winner("aic"), (max(loglik.values()) - loglik["norm"]) / n


def _pair_samples(
    block: np.ndarray, zscored: np.ndarray, keep: np.ndarray, sentences: np.ndarray
) -> tuple[tuple[str, np.ndarray], ...]:
    """A pair's pooled values before and after removing the high-energy dimensions, and
    after with every dimension z-scored."""
    mine = block[sentences]
    return (
        ("before", mine.ravel()),
        ("after", mine[:, keep].ravel()),
        ("zscored", zscored[sentences][:, keep].ravel()),
    )


def _refits(evidence: Evidence, take: int, k: int) -> pd.DataFrame:
    """Per (layer, chosen pair): the AIC winners and distances from Gaussian before and
    after removing the ``k`` highest-energy dimensions of the layer, with the dimensions
    z-scored, and the excess kurtosis before and after."""
    resid = evidence.resid
    n_layers, _, d_model = resid.shape
    pairs = evidence.pairs
    chosen = evidence.pair_subset(take)
    rows = []
    with evidence.progress(n_layers, f"gaussian refits {evidence.model}", "layer") as bar:
        for layer in range(n_layers):
            block = np.asarray(resid[layer], dtype=np.float64)
            removed = top_energy_dims(block, k)
            keep = np.setdiff1d(np.arange(d_model), removed)
            # Diagnostic: each dimension z-scored over the layer's sentences, so unequal
            # variances across dimensions (a scale mixture, heavy-tailed when pooled) cannot
            # be what the Gaussian misses.
            zscored = zscore_dims(block)
            samples = {
                (pair, when): x
                for pair in chosen
                for when, x in _pair_samples(block, zscored, keep, pairs["rows"].iloc[pair])
            }
            # All of a layer's samples fitted together (the engine's batches).
            rankings = rank_many(list(samples.values()), FAMILIES, 4000, TABLE_SEED)
            summary = {
                key: _summary(ranking, len(x))
                for (key, x), ranking in zip(samples.items(), rankings, strict=True)
            }
            for pair in chosen:
                before = samples[pair, "before"]
                after = samples[pair, "after"]
                fits = {when: summary[pair, when] for when in ("before", "after", "zscored")}
                rows.append(
                    {
                        "layer": layer,
                        "pair": int(pairs["pair"].iloc[pair]),
                        **{f"winner_{when}": fit[0] for when, fit in fits.items()},
                        **{f"gap_{when}": fit[1] for when, fit in fits.items()},
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
    name = "distance from Gaussian after removing outlier dimensions (nats per value)"
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
        "code": source_fingerprint(_refits, _pair_samples, _summary, top_energy_dims, zscore_dims),
    }
    table = evidence.cached_table("gaussian-refits", fields, lambda: _refits(evidence, take, k))
    usable = table.dropna(subset=["gap_after"])
    usable = usable.assign(
        norm_before=usable["winner_before"] == "norm",
        norm_after=usable["winner_after"] == "norm",
        norm_after_zscored=usable["winner_zscored"] == "norm",
    )
    margin = th["margin_nats"]
    per_pair = usable.groupby("pair")[["gap_before", "gap_after", "gap_zscored"]].mean()
    labels = pairs.set_index("pair").loc[per_pair.index]
    boot = crossed_bootstrap_mean(
        per_pair["gap_after"].to_numpy(),
        labels["subject"].to_numpy(),
        labels["attribute"].to_numpy(),
        null_value=margin,
        seed=evidence.seed,
    )
    lo, hi = boot.confidence_interval
    if hi < margin:
        verdict = Verdict.SUPPORTED
    elif lo > margin:
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.INCONCLUSIVE
    columns = ["gap_before", "gap_after", "gap_zscored"]  # nats per value; shares in winners
    per_layer = usable.groupby("layer")[columns].mean().reset_index()
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
        f"pairs x {n_layers} layers), fitted with {', '.join(FAMILIES)}",
        f"distance from Gaussian (log-likelihood per value the best fit gains): "
        f"{per_pair['gap_after'].mean():.4f} after the removal [{lo:.4f}, {hi:.4f}], "
        f"{per_pair['gap_before'].mean():.4f} before, {per_pair['gap_zscored'].mean():.4f} "
        f"with dimensions z-scored; margin {margin:g} (a logistic bulk ~0.008)",
        f"AIC winners after the removal (Gaussian {usable['norm_after'].mean():.1%}): "
        + ", ".join(f"{f} {s:.1%}" for f, s in top_after.items()),
        f"median excess kurtosis {usable['kurtosis_before'].median():.3g} before, "
        f"{usable['kurtosis_after'].median():.3g} after (0 for a Gaussian)",
    )
    return spec.result(
        evidence.model,
        verdict,
        name,
        n=len(usable),
        effect=boot.statistic,
        ci=boot.confidence_interval,
        pvalue=boot.p_less,
        notes=notes,
        tables={"per_layer": per_layer, "kurtosis": kurtosis, "winners": winners},
    )


test_gaussian_with_outliers = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Two layers: the claim is decided
# per (layer, pair) sample and needs no depth, and two give 40 samples. The truth is what the
# claim states: a Gaussian bulk with a few massive outlier dims, plus the nuisances a real
# residual stream adds (unequal per-dimension scales, offsets, crossed subject/attribute/pair
# effects). The per-dimension scale spread makes the pooled sample a scale mixture of
# Gaussians (excess kurtosis ~ 3 (exp(4 sigma^2) - 1), 0.28 at sigma 0.15), which AIC tells
# from a Gaussian at 12,672 values (version 1 read REFUTED on these truths); the distance
# from Gaussian stays well inside the margin. The nulls are the write-up's alternative (a
# logistic bulk, with and without the scale spread, the latter the closest to the margin)
# and a heavy-tailed bulk.
WITH_MASSIVE_DIMS = replace(REALISTIC, massive_dims=3)
TWO_LAYERS = {"n_layers": 2}
CALIBRATION = (
    planted(
        "gaussian bulk with nuisances and massive dims",
        True,
        "normal; 3 massive dims (100-900 bulk units), per-dim log-scale sd 0.15, offsets 0.2, "
        "crossed effects 0.3/0.3/0.2",
        Base("normal", **TWO_LAYERS),
        WITH_MASSIVE_DIMS,
        code=CALIBRATION_CODE,
    ),
    planted(
        "gaussian bulk with +-20% scale spread",
        True,
        "normal; 3 massive dims, per-dim log-scale sd 0.2, offsets 0.2, crossed effects "
        "0.3/0.3/0.2",
        Base("normal", **TWO_LAYERS),
        replace(WITH_MASSIVE_DIMS, scale_sigma=0.2),
        code=CALIBRATION_CODE,
    ),
    planted(
        "gaussian bulk with equal scales",
        True,
        "normal; 3 massive dims, offsets 0.2, crossed effects 0.3/0.3/0.2, no scale spread",
        Base("normal", **TWO_LAYERS),
        replace(WITH_MASSIVE_DIMS, scale_sigma=0.0),
        code=CALIBRATION_CODE,
    ),
    planted(
        "logistic bulk with nuisances and massive dims",
        False,
        "logistic; the same nuisances and 3 massive dims as the first truth",
        Base("logistic", **TWO_LAYERS),
        WITH_MASSIVE_DIMS,
        code=CALIBRATION_CODE,
    ),
    planted(
        "logistic bulk with equal scales",
        False,
        "logistic; 3 massive dims, offsets 0.2, crossed effects 0.3/0.3/0.2, no scale spread "
        "(~0.008 nats per value, the null closest to the margin)",
        Base("logistic", **TWO_LAYERS),
        replace(WITH_MASSIVE_DIMS, scale_sigma=0.0),
        code=CALIBRATION_CODE,
    ),
    planted(
        "t3 bulk",
        False,
        "iid Student t(3) coordinates",
        Base("t3", **TWO_LAYERS),
        code=CALIBRATION_CODE,
    ),
)
