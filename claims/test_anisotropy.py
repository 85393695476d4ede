"""Claim: unrelated sentences' residuals have high mean cosine similarity in middle and late
layers (anisotropy), and a few dimensions drive it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.evidence import Evidence
from harness.planted import REALISTIC, Base
from harness.stats.geometry import unrelated_cosine

SPEC = ClaimSpec(
    id="anisotropy",
    version=2,
    title="Residuals are anisotropic in middle and late layers, driven by a few dimensions",
    source=(
        "Ethayarajh (2019), 'How Contextual are Contextualized Word Representations?' "
        "(anisotropy); Timkey & van Schijndel (2021), 'All Bark and No Bite: Rogue Dimensions "
        "in Transformer Language Models Obscure Representational Quality' (a few dimensions)"
    ),
    quote=(
        "the contextualized representations of all words are not isotropic in any layer of "
        "the contextualizing model (Ethayarajh 2019); a small number of rogue dimensions, "
        "often just 1-3, dominate these measures (Timkey & van Schijndel 2021)"
    ),
    statistic=(
        "Per layer, the mean cosine similarity between residual vectors of sentences that "
        "share neither subject nor attribute (unrelated), and the share of it contributed by "
        "the 5 dimensions contributing most (chosen per layer on all pairs; for unit vectors "
        "cos = sum_d u_d v_d, so each dimension's mean product is its additive part). Both "
        "are averaged over the middle and late layers (normalized depth >= 1/3) with 95% "
        "percentile intervals from a two-way bootstrap of subjects and attributes (300 "
        "resamples; version 1 resampled the pairs as if independent). SUPPORTED when the mean "
        "cosine's lower bound exceeds 0.3 and the top-5 share's lower bound exceeds 0.5; "
        "REFUTED when the mean cosine's upper bound is below 0.3 (not anisotropic) or it is "
        "anisotropic but the top-5 share's upper bound is below 0.5 (spread over many "
        "dimensions); INCONCLUSIVE otherwise. The cosine after z-scoring every dimension over "
        "the layer's sentences is reported beside (it also removes the mean direction)."
    ),
    multiplicity=(
        "SUPPORTED needs both lower bounds (cosine > 0.3, top-5 share > 0.5): an "
        "intersection-union test, at level 0.05 with no correction. REFUTED rests on either "
        "of two one-sided 2.5% bounds: at most 0.05 together (Bonferroni). The per-layer "
        "values are reported, not tested one by one."
    ),
    thresholds={
        "high_cosine": 0.3,  # ours: the sources give no cut-off (isotropic ~ 0)
        "top_k": 5,  # ours: "a few"
        "top_share": 0.5,  # ours: the few dimensions carry most of the mean cosine
        "from_depth": 1 / 3,  # middle and late layers
        "min_pairs": 4,
    },
    source_numbers={
        "elmo, bert, gpt2 (Ethayarajh 2019)": (
            "not isotropic in any layer; GPT-2's upper layers the most (random words' mean "
            "cosine close to 1)"
        ),
        "gpt2, bert, ... (Timkey & van Schijndel 2021)": (
            "1-3 rogue dimensions dominate cosine similarity; standardization corrects it"
        ),
    },
    caveats=(
        (
            "Ethayarajh compared random words in context (all positions); here one vector per "
            "sentence at the run's token selection, and 'unrelated' means a different subject "
            "and a different attribute template."
        ),
        (
            "tl-compat processing centres the writing weights, so every vector has ~zero mean "
            "over its d_model coordinates: a shared offset along the all-ones direction is "
            "removed, which can lower the mean cosine relative to raw processing "
            "(--lm-processing raw keeps it). It does not remove per-dimension means."
        ),
        (
            "The 0.3 cosine and 0.5 share thresholds are ours (the sources give no cut-off); "
            "the per-layer values are in the table. Per-dimension z-scoring subtracts the mean "
            "vector, which removes a shared direction however many dimensions carry it, so "
            "the top-5 share, not the z-scored cosine, decides 'a few dimensions'."
        ),
    ),
    # top_dims has a layer column but no numbers to draw.
    plots={"top_dims": "none"},
)


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    th = spec.thresholds
    resid = evidence.resid
    n_layers, n, d_model = resid.shape
    frame = evidence.dataset.frame.reset_index(drop=True)
    subjects = frame["subject"].to_numpy()
    attributes = frame["attribute"].to_numpy()
    name = "mean cosine of unrelated sentences (middle and late layers)"
    n_pairs = len(evidence.pairs)
    if (
        n_pairs < th["min_pairs"]
        or frame["subject"].nunique() < 2
        or frame["attribute"].nunique() < 2
    ):
        return spec.result(
            evidence.model,
            Verdict.NOT_APPLICABLE if n_pairs >= th["min_pairs"] else Verdict.INCONCLUSIVE,
            name,
            n=n,
            notes=(
                f"{n_pairs} pairs, {frame['subject'].nunique()} subjects, "
                f"{frame['attribute'].nunique()} attributes: unrelated sentences need at least "
                f"two subjects and two attributes and {int(th['min_pairs'])} pairs",
            ),
        )
    depth = np.arange(n_layers) / max(n_layers - 1, 1)
    chosen = depth >= th["from_depth"] - 1e-9
    k = min(int(th["top_k"]), d_model)
    common = {"layers": chosen, "k": k, "seed": evidence.seed}
    raw = unrelated_cosine(resid, subjects, attributes, n_resamples=300, **common)
    # Only the point values are reported for the z-scored variant: few resamples suffice.
    z = unrelated_cosine(resid, subjects, attributes, standardize=True, n_resamples=20, **common)
    lo, hi = raw.pooled_cosine_ci
    share_lo, share_hi = raw.pooled_top_share_ci
    high = th["high_cosine"]
    if lo > high and share_lo > th["top_share"]:
        verdict = Verdict.SUPPORTED
    elif hi < high or (lo > high and share_hi < th["top_share"]):
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.INCONCLUSIVE
    # The share is a ratio to the mean cosine: where the cosine's interval reaches 0 the
    # ratio (and its interval) runs off to +-infinity and says nothing.
    defined = raw.cosine_ci[:, 0] > 0
    share = np.where(defined, raw.top_share, np.nan)
    share_ci = np.where(defined[:, None], raw.top_share_ci, np.nan)
    per_layer = pd.DataFrame(
        {
            "layer": np.arange(n_layers),
            "cosine": raw.cosine,
            "cosine_ci_low": raw.cosine_ci[:, 0],
            "cosine_ci_high": raw.cosine_ci[:, 1],
            f"top{k}_share": share,
            f"top{k}_share_ci_low": share_ci[:, 0],
            f"top{k}_share_ci_high": share_ci[:, 1],
            "zscored_cosine": z.cosine,
        }
    )
    dims = pd.DataFrame(
        {"layer": np.arange(n_layers), "top_dims": [",".join(map(str, d)) for d in raw.top_dims]}
    )
    used = np.flatnonzero(chosen)
    counts = pd.Series([d for layer in used for d in raw.top_dims[layer]]).value_counts()
    if lo > 0:
        share_note = (
            f"top-{k} dimensions' share {raw.pooled_top_share:.3f} [{share_lo:.3f}, {share_hi:.3f}]"
        )
    else:
        share_note = (
            f"top-{k} dimensions' share not reported: the mean cosine's interval reaches 0, "
            "and the share is a ratio to it"
        )
    undefined = np.flatnonzero(~defined)
    blank = (
        f"per-layer top-{k} share left blank at layer(s) {', '.join(map(str, undefined))}: "
        "the cosine's interval reaches 0 there"
    )
    notes = (
        f"layers {used[0]}-{used[-1]} of {n_layers}: mean cosine {raw.pooled_cosine:.3f} "
        f"[{lo:.3f}, {hi:.3f}]; {share_note}",
        f"z-scored per dimension: mean cosine {z.pooled_cosine:.3f} over the same layers",
        "dimensions most often among the top contributors: "
        + ", ".join(f"{d} ({c} layers)" for d, c in counts.head(5).items()),
        *([blank] if len(undefined) else []),
    )
    return spec.result(
        evidence.model,
        verdict,
        name,
        n=n,
        effect=raw.pooled_cosine,
        ci=raw.pooled_cosine_ci,
        notes=notes,
        tables={"per_layer": per_layer, "top_dims": dims},
    )


test_anisotropy = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Two layers: the claim reads the
# layers at normalized depth >= 1/3, so the second is the one decided on. A shared direction
# in a few dimensions (massive dims: fixed sign in every sentence) gives unrelated sentences
# a mean cosine ~ |m|^2 / (|m|^2 + the bulk's energy); with the nuisances below the bulk's
# energy is ~840 squared bulk units, so 3 massive dims at 3.3, 10 and 30 bulk units
# (|m|^2 ~ 1000) give ~0.55, SmolLM2-135M's 0.554. Crossed subject/attribute effects are
# not shared by unrelated sentences, so they add noise, not cosine.
TWO_LAYERS = {"n_layers": 2}
CALIBRATION = (
    planted(
        "shared direction in 3 dims, SmolLM2-sized",
        True,
        "3 massive dims at 3.3, 10 and 30 bulk units (mean cosine ~0.55, as SmolLM2-135M's "
        "0.554); per-dim log-scale sd 0.15, offsets 0.2, crossed effects 0.3/0.3/0.2",
        Base("logistic", **TWO_LAYERS),
        replace(REALISTIC, massive_dims=3, massive_scale=10.0),
    ),
    planted(
        "massive dims at full size",
        True,
        "3 massive dims at 100, 300 and 900 bulk units (mean cosine ~1); the same nuisances",
        Base("logistic", **TWO_LAYERS),
        replace(REALISTIC, massive_dims=3),
    ),
    planted(
        "shared offset spread over all dims",
        False,
        "no massive dims; per-dim offsets sd 1.2 bulk units (mean cosine ~0.5, carried by all "
        "576 dims, not a few); scale sd 0.15, crossed effects 0.3/0.3/0.2",
        Base("logistic", **TWO_LAYERS),
        replace(REALISTIC, offset_sd=1.2),
    ),
    planted(
        "isotropic bulk with scale spread and crossed effects",
        False,
        "no massive dims, no offsets; per-dim log-scale sd 0.3, crossed effects 0.3/0.3/0.2",
        Base("logistic", **TWO_LAYERS),
        replace(REALISTIC, offset_sd=0.0, scale_sigma=0.3),
    ),
)
