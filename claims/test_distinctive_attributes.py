"""Claim: the attributes 'in an angry tone', 'in all lower case' and 'in a childish style'
attract or repulse their sentences most consistently (the largest |D|)."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import combinations

import numpy as np
import pandas as pd

from harness.calibration import Scenario, planted
from harness.claim import ClaimResult, ClaimSpec, InsufficientDataError, Verdict, claim_test
from harness.dataset import Dataset
from harness.evidence import Evidence
from harness.planted import REALISTIC, Base, Nuisances, bulk_unit
from harness.sources import BEYOND_GAUSSIAN_SIMILARITY_MODELS
from harness.stats import similarity

NAMED = ("in an angry tone", "in all lower case", "in a childish style")
N_BOOT = 200
EFFECT_NAME = "mean rank of the named attributes by mean |D| (1 = most distinctive)"

SPEC = ClaimSpec(
    study_models=BEYOND_GAUSSIAN_SIMILARITY_MODELS,
    id="distinctive-attributes",
    version=1,
    title="Angry, lower-case and childish attributes are the most distinctive",
    source="Beyond Gaussian: Language Model Representations and Distributions (seed write-up)",
    quote=(
        "you'll see that the attributes in an angry tone, in all lower case, and in a childish "
        "style most consistently attract or repulse."
    ),
    statistic=(
        "D(s1,a1) = mean over s2≠s1, a2≠a1 of [cos(c(s1,a1), c(s1,a2)) − cos(c(s1,a1), "
        "c(s2,a1))], c = a pair's centroid, on residuals reduced by PCA to 90% of the variance "
        "per layer (the standardized variant where PCA keeps one component in most layers), "
        "as in distinctiveness-shrinks. An attribute's score is its mean |D| over subjects and "
        "the layers up to 2/3 depth (where the write-up's structure is clearest); the "
        "attributes are ranked by it (1 = largest). The statistic is the named attributes' "
        "mean rank. p is exact: the share of all attribute triples whose mean rank is at most "
        "the named ones' (a permutation test of 'the named attributes are a random triple'). "
        "The interval of the mean rank (95% percentile) resamples sentences within cells "
        "(200 resamples) and subjects, together. SUPPORTED when p < 0.05 (the named "
        "attributes rank significantly high); REFUTED when the interval's best end is still "
        "below the top third (its lower bound above the A/3-th rank, 4 of 12); INCONCLUSIVE "
        "otherwise."
    ),
    multiplicity=(
        "One test decides SUPPORTED (the exact permutation p); REFUTED rests on one one-sided "
        "2.5% bound of the mean rank. The per-attribute scores and each named attribute's "
        "rank are reported, not tested."
    ),
    # 7 attributes: the fewest whose 35 triples let an exact p fall below 0.05 (6 give 1/20).
    thresholds={"alpha": 0.05, "min_attributes": 7, "min_subjects": 3},
    source_numbers={
        "write-up's figures (GPT-2, Pythia)": (
            "angry, lower case and childish attract or repulse most consistently (read from "
            "heatmaps; no numbers)"
        ),
    },
    caveats=(
        (
            "D is a cosine between noisy centroids: attributes whose sentences vary less "
            "between themselves (a homogeneous surface form) have less noise in their "
            "centroids, which moves |D| apart from any structure. The calibration plants "
            "that nuisance; issue 20 asks for a noise-unbiased D."
        ),
        (
            "The write-up read 'most consistently' from heatmaps over its own dataset; the "
            "shipped dataset's 12 attributes and 10 subjects are the ones ranked here."
        ),
    ),
)


def _early_layers(n_layers: int) -> np.ndarray:
    return np.arange(n_layers) <= (2 * (n_layers - 1)) // 3


def _scores(abs_d: np.ndarray, subject_weights: np.ndarray) -> np.ndarray:
    """Attribute scores (..., A) from per-subject mean |D| (..., S, A) and subject weights
    (..., S): the weighted mean over subjects."""
    total = subject_weights.sum(axis=-1, keepdims=True)
    return np.einsum("...s,...sa->...a", subject_weights, abs_d) / total


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Rank 1 = largest score, along the last axis (ties by order: moot for continuous)."""
    return np.argsort(np.argsort(-scores, axis=-1), axis=-1) + 1


def _spans(layers: np.ndarray) -> str:
    """Layer indices as ranges: 0-19, 22, 24-25."""
    runs = np.split(layers, np.flatnonzero(np.diff(layers) > 1) + 1)
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs if len(r))


def triple_p(ranks: np.ndarray, named: list[int]) -> float:
    """Exact permutation p: the share of all same-size attribute sets whose mean rank is at
    most the named set's."""
    observed = ranks[named].mean()
    means = np.array([ranks[list(c)].mean() for c in combinations(range(len(ranks)), len(named))])
    return float(np.mean(means <= observed + 1e-12))


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    th = spec.thresholds
    frame = evidence.dataset.frame.reset_index(drop=True)
    subject, subjects = similarity.codes(frame["subject"])
    attribute, attributes = similarity.codes(frame["attribute"])
    named = [attributes.index(a) for a in NAMED if a in attributes]
    if len(named) < len(NAMED):
        missing = ", ".join(a for a in NAMED if a not in attributes)
        return spec.result(
            evidence.model,
            Verdict.NOT_APPLICABLE,
            EFFECT_NAME,
            n=len(frame),
            notes=(f"the dataset lacks the named attribute(s): {missing}",),
        )
    if len(attributes) < th["min_attributes"] or len(subjects) < th["min_subjects"]:
        raise InsufficientDataError(
            f"{len(attributes)} attributes and {len(subjects)} subjects; ranking needs at "
            f"least {int(th['min_attributes'])} and {int(th['min_subjects'])}"
        )
    if frame.groupby(["subject", "attribute"]).size().min() < 2:
        raise InsufficientDataError("a pair with 1 sentence has no variability to resample")
    boot = similarity.bootstrap_distinctiveness(
        evidence.resid, subject, attribute, "pca", n_boot=N_BOOT, seed=evidence.seed
    )
    variant = "pca"
    early = _early_layers(evidence.n_layers)
    use = early & ~boot.estimate.degenerate
    if use.sum() < max(1, early.sum() / 2):
        variant = "standardized"
        boot = similarity.bootstrap_distinctiveness(
            evidence.resid, subject, attribute, variant, n_boot=N_BOOT, seed=evidence.seed
        )
        use = early
    S, A = len(subjects), len(attributes)
    point_abs = np.abs(boot.estimate.D[use]).mean(axis=0)  # (S, A)
    ranks = _ranks(_scores(point_abs, np.ones(S)))
    mean_rank = float(ranks[named].mean())
    pvalue = triple_p(ranks, named)
    rng = np.random.default_rng([evidence.seed, 11])
    weights = rng.multinomial(S, np.full(S, 1 / S), size=N_BOOT).astype(np.float64)
    rep_abs = np.abs(boot.replicates[:, use]).mean(axis=1, dtype=np.float64)  # (B, S, A)
    rep_ranks = _ranks(_scores(rep_abs, weights))
    rep_mean = rep_ranks[:, named].mean(axis=1)
    lo, hi = (float(v) for v in np.quantile(rep_mean, [0.025, 0.975]))
    top = A / 3
    if pvalue < th["alpha"]:
        verdict = Verdict.SUPPORTED
    elif lo > top:
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.INCONCLUSIVE
    scores = _scores(point_abs, np.ones(S))
    table = pd.DataFrame(
        {
            "rank": ranks,
            "attribute": attributes,
            "mean_abs_D": scores,
            "named": [i in named for i in range(A)],
            "top_third_share": (rep_ranks <= top).mean(axis=0),
        }
    ).sort_values("rank")
    layers = np.flatnonzero(use)
    notes = (
        f"{variant} variant, layers {_spans(layers)} (up to 2/3 depth"
        + (", PCA-degenerate ones left out" if variant == "pca" and use.sum() < early.sum() else "")
        + ")",
        "named attributes' ranks: "
        + ", ".join(f"{attributes[i]} {ranks[i]}" for i in named)
        + f" of {A} (mean {mean_rank:.2f}, interval [{lo:.2f}, {hi:.2f}]); top third: ranks "
        f"1-{math.floor(top)}",
        f"exact permutation p = {pvalue:.3g} over all {math.comb(A, len(named))} attribute "
        f"triples; most distinctive: " + ", ".join(table["attribute"].head(3)),
    )
    return spec.result(
        evidence.model,
        verdict,
        EFFECT_NAME,
        n=len(frame),
        effect=mean_rank,
        ci=(lo, hi),
        pvalue=pvalue,
        notes=notes,
        tables={"attribute_ranking": table.reset_index(drop=True)},
    )


test_distinctive_attributes = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Three layers: the claim reads the
# first two (up to 2/3 depth). The planted structure is distinctiveness-shrinks' (one random
# vector per subject and one per attribute, 0.4 bulk units per coordinate, attribute
# strengths lognormal with log-sd `spread`), held constant over the layers; a truth makes the
# named attributes' strengths `boost` times the others' median. An attribute of strength 1
# balances its subject's pull (D ~ 0).
THREE_LAYERS = 3
WEIGHT = 0.4


def _structure(
    data: Dataset,
    resid: np.ndarray,
    rng: np.random.Generator,
    spread: float,
    boost: float,
    named_noise: float,
) -> None:
    frame = data.frame.reset_index(drop=True)
    subject = pd.factorize(frame["subject"])[0]
    attribute, names = pd.factorize(frame["attribute"])
    named = np.isin(np.asarray(names), NAMED)
    d = resid.shape[2]
    u = rng.standard_normal((subject.max() + 1, d))
    v = rng.standard_normal((len(names), d))
    strength = np.exp(rng.normal(0.0, spread, len(names)))
    if boost:
        strength[named] = boost * np.median(strength[~named])
    if named_noise != 1.0:
        # The named attributes' sentences vary less around their pair's mean (a homogeneous
        # surface form), with no change to the structure.
        rows = named[attribute]
        pair = pd.factorize((frame["subject"] + "\x1f" + frame["attribute"])[rows])[0]
        for layer in range(resid.shape[0]):
            block = resid[layer, rows]
            means = np.zeros((pair.max() + 1, d))
            np.add.at(means, pair, block)
            means /= np.bincount(pair)[:, None]
            resid[layer, rows] = (means[pair] + named_noise * (block - means[pair])).astype(
                np.float32
            )
    structure = (
        WEIGHT * bulk_unit("logistic") * (u[subject] + strength[attribute, None] * v[attribute])
    )
    resid += structure.astype(np.float32)[None]


def _scenario(
    name: str,
    truth: bool,
    description: str,
    *,
    spread: float = 0.5,
    boost: float = 0.0,
    named_noise: float = 1.0,
    nuisances: Nuisances = REALISTIC,
    known_miss: str = "",
) -> Scenario:
    def edit(data: Dataset, resid: np.ndarray, rng: np.random.Generator) -> None:
        _structure(data, resid, rng, spread, boost, named_noise)

    return planted(
        name,
        truth,
        description,
        Base("logistic", n_layers=THREE_LAYERS),
        nuisances,
        edit=edit,
        edit_params={
            "weight": WEIGHT,
            "spread": spread,
            "boost": boost,
            "named_noise": named_noise,
        },
        known_miss=known_miss,
    )


CALIBRATION = (
    _scenario(
        "named attributes 3x stronger",
        True,
        "attribute strengths lognormal (log-sd 0.5), the named three at 3x the others' "
        "median; per-dim log-scale sd 0.15, offsets 0.2, crossed effects 0.3/0.3/0.2",
        boost=3.0,
    ),
    _scenario(
        "named attributes 3x stronger, massive dims",
        True,
        "as above, with 3 massive dims (100-900 bulk units)",
        boost=3.0,
        nuisances=replace(REALISTIC, massive_dims=3),
    ),
    _scenario(
        "named attributes 2x stronger",
        True,
        "attribute strengths lognormal (log-sd 0.5), the named three at 2x the others' "
        "median; the same nuisances",
        boost=2.0,
        known_miss=(
            "|D| is large for an attribute that repulses (stronger than its subject's pull) "
            "and for one that attracts (weaker): at 2x the named three share the top ranks "
            "with the weakest others, and their mean rank is significantly high in 72% "
            "[66%, 79%] of 200 reps (at 3x in all)."
        ),
    ),
    _scenario(
        "no attribute singled out",
        False,
        "attribute strengths lognormal (log-sd 0.5) for all 12, the named ones included; the "
        "same nuisances",
    ),
    _scenario(
        "named attributes less noisy, no stronger",
        False,
        "strengths as the null above; the named attributes' sentences vary half as much "
        "around their pair's mean (a homogeneous surface form)",
        named_noise=0.5,
    ),
)
