"""Claim: subject/attribute distinctiveness shrinks through the layers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from harness.calibration import Edit, Scenario, planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.dataset import Dataset
from harness.evidence import Evidence
from harness.planted import REALISTIC, Base, Nuisances, bulk_unit
from harness.stats import similarity

NAMED = ("in an angry tone", "in all lower case", "in a childish style")
N_BOOT = 200
EFFECT_NAME = "late/early mean |D|"

SPEC = ClaimSpec(
    id="distinctiveness-shrinks",
    version=1,
    caveats=(
        (
            "D depends on the number of sentences per (subject, attribute) cell: fewer sentences "
            "make noisier centroids and larger |D| (PCA mean |D| 0.33 / 0.39 / 0.44 at 6 / 11 / "
            "22 sentences on SmolLM2); compare models only at equal cell sizes."
        ),
        (
            "Basic bootstrap intervals correct the noise bias of resampled centroids and can "
            "exclude their own estimate; the baseline check accepts the estimate beside its "
            "interval."
        ),
        ("Layers where PCA-90% keeps one component (massive activations) are excluded and listed."),
    ),
    title="Subject/attribute distinctiveness shrinks with depth",
    source="Beyond Gaussian: Language Model Representations and Distributions (seed write-up)",
    quote=(
        "you'll see that the attributes in an angry tone, in all lower case, and in a childish "
        "style most consistently attract or repulse. You can also see a systematic decrease "
        "in subject/attribute distinctiveness as we traverse through the model."
    ),
    statistic=(
        "D(s1,a1) = mean over s2≠s1, a2≠a1 of [cos(c(s1,a1), c(s1,a2)) − cos(c(s1,a1), "
        "c(s2,a1))], c = a pair's centroid (positive = the subject attracts), per layer, on "
        "residuals reduced by PCA to 90% of the variance (fitted per layer; the study trusted "
        "this variant), with raw and per-dimension standardized residuals beside it. The "
        "statistic is mean |D| over cells per layer; its trend with normalized depth (OLS "
        "slope) and the ratio of its mean over the last third of layers to the first third "
        "get basic-bootstrap CIs from resampling sentences within pairs. Layers where PCA "
        "keeps one component (massive-activation dimensions) make D constant: they are "
        "excluded and listed, and if fewer than half the layers remain the standardized "
        "variant decides instead, said in the notes. SUPPORTED when the slope's CI is below "
        "0 and the ratio's CI below 1; REFUTED when either CI lies entirely on the other "
        "side (0 or 1); INCONCLUSIVE otherwise. The sub-claim (the three named attributes "
        "rank in the top third by mean |D| over layers up to 2/3 depth) is reported, not "
        "decided on."
    ),
    multiplicity=(
        "SUPPORTED needs both intervals below (slope < 0, ratio < 1): an intersection-union "
        "test, at level 0.05 with no correction. REFUTED rests on either of two one-sided "
        "2.5% bounds: at most 0.05 together (Bonferroni). Per-layer values, the raw and "
        "standardized variants and the named-attributes sub-claim are reported, not tested."
    ),
    thresholds={"ratio": 1.0, "min_subjects": 3, "min_attributes": 3, "min_layers": 3},
    source_numbers={
        "gpt2-small, PCA": "mean |D| 0.750 at layer 0, 0.135 at layer 3, ~0.055 at layers 7-11",
        "most distinctive attributes": ", ".join(NAMED),
    },
    needs=("activations",),
    plots={"D_cells": "heatmap", "pca_diagnostics": "none"},
)


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    names = list(dict.fromkeys(values))
    lookup = {name: i for i, name in enumerate(names)}
    return values.map(lookup).to_numpy(), names


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    frame = evidence.dataset.frame.reset_index(drop=True)
    subject, subjects = _codes(frame["subject"])
    attribute, attributes = _codes(frame["attribute"])
    L = evidence.n_layers
    short = [
        f"{len(subjects)} subjects" if len(subjects) < spec.thresholds["min_subjects"] else "",
        f"{len(attributes)} attributes"
        if len(attributes) < spec.thresholds["min_attributes"]
        else "",
        f"{L} layers" if spec.thresholds["min_layers"] > L else "",
        # The intervals resample sentences within pairs: a pair of one sentence has no
        # variability to resample, and the interval would shrink to a point.
        "a pair with 1 sentence"
        if frame.groupby(["subject", "attribute"]).size().min() < 2
        else "",
    ]
    if any(short):
        why = ", ".join(s for s in short if s)
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=len(frame),
            effect=None,
            ci=None,
            pvalue=None,
            notes=(f"too few for a depth trend: {why}",),
        )
    boots = {
        variant: similarity.bootstrap_distinctiveness(
            evidence.resid,
            subject,
            attribute,
            variant,
            n_boot=N_BOOT,
            seed=evidence.seed,
        )
        for variant in ("pca", "raw", "standardized")
    }
    notes: list[str] = []
    deciding = "pca"
    usable = ~boots["pca"].estimate.degenerate
    if usable.sum() < max(3, L / 2):
        deciding = "standardized"
        notes.append(
            f"PCA-90% is degenerate in {int((~usable).sum())} of {L} layers (one component "
            "kept: massive-activation dimensions); the standardized variant decides"
        )
    trends = {v: _trend(b) for v, b in boots.items()}
    trend = trends[deciding]
    if trend is None:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=len(frame),
            effect=None,
            ci=None,
            pvalue=None,
            notes=(*notes, "fewer than 3 usable layers"),
            tables=_tables(boots, trends, subjects, attributes, deciding),
        )
    if trend.slope_ci[1] < 0 and trend.ratio_ci[1] < spec.thresholds["ratio"]:
        verdict = Verdict.SUPPORTED
    elif trend.slope_ci[0] > 0 or trend.ratio_ci[0] > spec.thresholds["ratio"]:
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.INCONCLUSIVE
    notes.append(
        f"{deciding} decides: slope {trend.slope:.3g} [{trend.slope_ci[0]:.3g}, "
        f"{trend.slope_ci[1]:.3g}], late/early ratio {trend.ratio:.3g}; layers used "
        f"{len(trend.layers_used)} of {L}"
    )
    notes.extend(_agreement(trends, deciding))
    notes.append(_named_note(boots[deciding], attributes))
    return spec.result(
        evidence.model,
        verdict,
        EFFECT_NAME,
        n=len(frame),
        effect=trend.ratio,
        ci=trend.ratio_ci,
        pvalue=trend.ratio_pvalue,
        notes=tuple(notes),
        tables=_tables(boots, trends, subjects, attributes, deciding),
    )


def _trend(boot: similarity.DistinctivenessBootstrap) -> similarity.TrendResult | None:
    usable = ~boot.estimate.degenerate
    return boot.trend() if usable.sum() >= 3 else None


def _agreement(trends: dict, deciding: str) -> list[str]:
    """Say when the variants disagree on the direction of the trend."""
    signs = {v: np.sign(t.slope) for v, t in trends.items() if t is not None}
    if len(set(signs.values())) > 1:
        listed = ", ".join(f"{v} {trends[v].slope:+.3g}" for v in signs)
        return [f"variants disagree on the trend's direction (slopes: {listed})"]
    return []


def _early_layers(L: int) -> np.ndarray:
    return np.arange(L) <= (2 * (L - 1)) // 3


def _named_note(boot: similarity.DistinctivenessBootstrap, attributes: list[str]) -> str:
    table = _ranking(boot, attributes)
    top = set(table.head(max(1, len(attributes) // 3))["name"])
    present = [a for a in NAMED if a in attributes]
    if not present:
        return "sub-claim not applicable: the dataset has none of the named attributes"
    inside = [a for a in present if a in top]
    return (
        f"sub-claim: {len(inside)} of {len(present)} named attributes rank in the top third "
        f"by mean |D| up to 2/3 depth ({', '.join(inside) or 'none'}); top: "
        + ", ".join(table.head(3)["name"])
    )


def _ranking(boot: similarity.DistinctivenessBootstrap, attributes: list[str]) -> pd.DataFrame:
    use = _early_layers(boot.estimate.n_layers) & ~boot.estimate.degenerate
    if not use.any():
        use = _early_layers(boot.estimate.n_layers)
    table = similarity.ranking(
        boot.estimate.D,
        boot.replicates,
        by="attribute",
        names=attributes,
        use=use,
        top_k=max(1, len(attributes) // 3),
    )
    return table.sort_values("mean_abs_D", ascending=False).reset_index(drop=True)


def _tables(
    boots: dict, trends: dict, subjects: list[str], attributes: list[str], deciding: str
) -> dict[str, pd.DataFrame]:
    per_layer = pd.DataFrame({"layer": np.arange(boots["pca"].estimate.n_layers)})
    for variant, boot in boots.items():
        per_layer[f"{variant}_mean_abs_D"] = boot.estimate.mean_abs
    per_layer["pca_mean_abs_D_ci_low"] = boots["pca"].mean_abs_ci[:, 0]
    per_layer["pca_mean_abs_D_ci_high"] = boots["pca"].mean_abs_ci[:, 1]
    diagnostics = boots["pca"].estimate.table()[
        ["layer", "components_kept", "top_pc_share", "top_dim_share", "degenerate", "reason"]
    ]
    trend_rows = [t.table().assign(variant=v) for v, t in trends.items() if t is not None]
    tables = {
        "mean_abs_D": per_layer,
        "trend": pd.concat(trend_rows, ignore_index=True) if trend_rows else pd.DataFrame(),
        "attribute_ranking": _ranking(boots["pca"], attributes),
        "pca_diagnostics": diagnostics,
        "D_cells": _cells(boots[deciding], subjects, attributes),
    }
    return tables


def _cells(
    boot: similarity.DistinctivenessBootstrap, subjects: list[str], attributes: list[str]
) -> pd.DataFrame:
    cells = boot.estimate.cells()
    return pd.DataFrame(
        {
            "layer": cells["layer"],
            "row": [subjects[i] for i in cells["subject"]],
            "column": [attributes[i] for i in cells["attribute"]],
            "value": cells["D"],
        }
    )


test_distinctiveness_shrinks = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Six layers: the claim is a trend
# with depth, its thirds are two layers each. The planted truth is crossed structure on the
# sentence centroids, one random vector per subject and one per attribute (sd `weight` bulk
# units per coordinate; attribute strengths lognormal with log-sd `spread`, so some cells
# are pulled by their subject and others by their attribute), scaled per layer by `gain`:
# weight 0.4 / spread 1.2 gives PCA mean |D| ~0.40 and PCA-90% ~190 components at full gain,
# SmolLM2-135M's layer 0 (0.39, 168 components). The structure grows with the bulk
# (Base.growth), so norm growth alone changes no cosine.
STRUCTURE = {"weight": 0.4, "spread": 1.2}
SIX_LAYERS = 6


def fading_structure(
    gain: np.ndarray,
    weight: float = STRUCTURE["weight"],
    spread: float = STRUCTURE["spread"],
    growth: float = 1.0,
    sampler: str = "logistic",
) -> Edit:
    """An edit adding gain[l] x growth**l x (subject vector + strength x attribute vector)
    to every sentence of layer l, in bulk units of ``sampler``."""
    gains = np.asarray(gain, dtype=np.float64)

    def edit(data: Dataset, resid: np.ndarray, rng: np.random.Generator) -> None:
        frame = data.frame.reset_index(drop=True)
        subject = pd.factorize(frame["subject"])[0]
        attribute = pd.factorize(frame["attribute"])[0]
        d = resid.shape[2]
        u = rng.standard_normal((subject.max() + 1, d))
        v = rng.standard_normal((attribute.max() + 1, d))
        strength = np.exp(rng.normal(0.0, spread, attribute.max() + 1))
        structure = (
            weight * bulk_unit(sampler) * (u[subject] + strength[attribute, None] * v[attribute])
        )
        for layer in range(resid.shape[0]):
            resid[layer] += (gains[layer] * growth**layer * structure).astype(np.float32)

    return edit


def _structure_scenario(
    name: str,
    truth: bool,
    description: str,
    gain: np.ndarray,
    nuisances: Nuisances,
    growth: float = 1.0,
    known_miss: str = "",
) -> Scenario:
    base = Base("logistic", n_layers=SIX_LAYERS, growth=growth)
    return planted(
        name,
        truth,
        description,
        base,
        nuisances,
        edit=fading_structure(gain, growth=growth),
        edit_params={**STRUCTURE, "gain": np.round(gain, 6).tolist(), "growth": growth},
        known_miss=known_miss,
    )


MOVING = replace(REALISTIC, massive_dims=3, massive_moving=True)
# The nulls for one nuisance each keep the structure fixed across layers: no crossed
# effects, whose per-layer redraw is the drift the first null plants.
STILL = Nuisances(scale_sigma=0.15, offset_sd=0.2)
FADES = np.linspace(1.0, 0.3, SIX_LAYERS)
FADES_TENFOLD = np.geomspace(1.0, 0.1, SIX_LAYERS)
CONSTANT = np.ones(SIX_LAYERS)
# Real-data nulls (`python -m harness.calibration --permute SET`): the claim contrasts
# same-subject with same-attribute centroids; with either label permuted that structure is
# gone on one side, which shows how much of a verdict the other side alone makes.
PERMUTATION_NULLS = ("attribute", "subject")
MASSIVE_COSINES = (
    "Massive dims that move with depth change every cosine between centroids while the "
    "subject/attribute structure stays the same: SUPPORTED in 10% (17% when their values "
    "vary between sentences) of 200 reps, and REFUTED about as often. The rework (issue 20) "
    "must hold these nulls at 5%."
)
CALIBRATION = (
    _structure_scenario(
        "structure fades 1 -> 0.3",
        True,
        "subject/attribute structure (PCA |D| ~0.40 at layer 0) scaled by a gain falling "
        "linearly 1 -> 0.3 over 6 layers (|D| -> ~0.22); per-dim log-scale sd 0.15, offsets "
        "0.2, crossed effects 0.3/0.3/0.2",
        FADES,
        REALISTIC,
    ),
    _structure_scenario(
        "structure fades tenfold",
        True,
        "the same structure, gain falling geometrically 1 -> 0.1 (|D| ~0.40 -> ~0.08, near "
        "the source's fall); the same nuisances",
        FADES_TENFOLD,
        REALISTIC,
    ),
    _structure_scenario(
        "structure fades 1 -> 0.3 with massive dims moving",
        True,
        "gain 1 -> 0.3 as above; the same nuisances and 3 massive dims (100-900 bulk units) "
        "that halve in the middle third while a 4th grows to 900",
        FADES,
        MOVING,
    ),
    _structure_scenario(
        "constant structure drifting between layers",
        False,
        "structure at full gain in every layer; the nuisances' crossed subject/attribute/pair "
        "effects (0.3/0.3/0.2) are redrawn in part at each layer (layer correlation 0.5), as "
        "structure drifts through a real model, with no trend in its strength",
        CONSTANT,
        REALISTIC,
        known_miss=(
            "The interval resamples sentences within cells and holds each layer's cell means "
            "fixed, so any realized difference between layers (late/early ~0.98 here) is "
            "significant and the rule has no minimum effect: SUPPORTED in 10 and REFUTED in 7 "
            "of the first 30 reps. The rework (issue 20) needs a stated minimum fall and an "
            "interval over subjects and attributes."
        ),
    ),
    _structure_scenario(
        "constant structure with massive dims moving",
        False,
        "structure at full gain in every layer, the same in each (no crossed effects); 3 "
        "massive dims (100-900 bulk units) that halve in the middle third while a 4th grows "
        "to 900; per-dim log-scale sd 0.15, offsets 0.2",
        CONSTANT,
        replace(STILL, massive_dims=3, massive_moving=True),
        known_miss=MASSIVE_COSINES,
    ),
    _structure_scenario(
        "constant structure with noisy massive dims moving",
        False,
        "as above with the massive values' per-sentence sd 15 % of their size (one dim holds "
        "most of the variance, as SmolLM2's layers 2-8)",
        CONSTANT,
        replace(STILL, massive_dims=3, massive_moving=True, massive_jitter=0.15),
        known_miss=MASSIVE_COSINES,
    ),
    _structure_scenario(
        "constant structure with scale spread and norm growth",
        False,
        "structure at full gain, the same in each layer (no crossed effects); per-dim "
        "log-scale sd 0.3, offsets 0.2, and the whole residual (structure included) x 1.25 "
        "per layer (x 3 over 6 layers)",
        CONSTANT,
        replace(STILL, scale_sigma=0.3),
        growth=1.25,
    ),
)
