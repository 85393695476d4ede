"""Claim: the residual stream's norm grows roughly geometrically (exponentially) with depth."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd

from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.dataset import Dataset
from harness.evidence import Evidence
from harness.planted import REALISTIC, Base
from harness.stats.geometry import norm_growth

SPEC = ClaimSpec(
    id="residual-norm-growth",
    version=4,
    title="Residual-stream norm grows geometrically with depth",
    source=(
        "Heimersheim & Turner (2023), 'Residual stream norms grow exponentially over the "
        "forward pass', LessWrong / AI Alignment Forum"
    ),
    quote=(
        "the norm of each residual stream grows exponentially over the forward pass, with "
        "average per-layer growth rate of about 1.045 in GPT2-XL"
    ),
    statistic=(
        "Per layer, the mean log L2 norm of the residual vectors (one per sentence at the "
        "selected token; a geometric mean); a straight line through it against the layer "
        "index gives the growth factor per layer, exp(slope). The shape is tested apart: "
        "geometric growth multiplies the norm by the same factor at every layer, so the "
        "median per-layer log growth of the early half of the layers and of the late half "
        "should agree; their relative difference, 2 (late - early) / (late + early), is the "
        "acceleration (0 geometric; +-2/3 when one half grows twice as fast, in log, as the "
        "other; medians, so one outsized step does not set a half's rate). Both get 95% "
        "percentile intervals from a two-way bootstrap of subjects and attributes (2,000 "
        "resamples; everything refitted). SUPPORTED when the growth factor's lower bound "
        "exceeds 1.011 (a quarter of the source's log rate, 1.045: slower is not growth worth "
        "the name) and the acceleration's interval lies within +-2/3 (an equivalence test); "
        "REFUTED when the factor's upper bound is below 1.011 (flat or shrinking) or the "
        "acceleration's interval lies wholly outside +-2/3 (not geometric); INCONCLUSIVE "
        "otherwise. p is the p against the whole claim, the larger of the bootstrap p's for "
        "no growth (factor <= 1.011) and for an acceleration beyond the margin. Version 3 decided "
        "the shape by R^2 >= 0.9 of the straight line, which a U-shaped curve (growth that "
        "speeds up late) passes; R^2 is now reported beside, not decided on."
    ),
    multiplicity=(
        "SUPPORTED needs the growth and both sides of the equivalence test: p is the largest "
        "of three one-sided bootstrap p's, an intersection-union test at level 0.025 each "
        "(the 95% intervals) with no correction. REFUTED rests on one of two one-sided 2.5% "
        "bounds: at most 0.05 together (Bonferroni)."
    ),
    thresholds={"min_rate": 1.011, "acceleration_margin": 2 / 3, "min_pairs": 4, "min_layers": 5},
    source_numbers={
        "gpt2-xl (48 layers)": "norm grows ~1.045x per layer (Heimersheim & Turner 2023)",
        "EleutherAI models (same post)": "the norm decreases over some layers, to the authors' "
        "surprise",
    },
    caveats=(
        (
            "The source measured norms at every token position of OpenWebText text; here one "
            "vector per sentence at the run's token selection (the source excluded position 0, "
            "whose norm behaves differently), so token-specific norms are not seen."
        ),
        (
            "The +-2/3 acceleration margin (one half of the layers growing at most twice as "
            "fast, in log, as the other) is our reading of 'roughly exponential'; the source "
            "gives no margin and judged straightness by eye on a log plot. R^2 of the straight "
            "line in log-norm and in the norm itself are shown for contrast, not decided on, "
            "and so is the largest single step."
        ),
        (
            "tl-compat processing centres the writing weights (each write has zero mean over "
            "the d_model coordinates), which removes one direction from every vector and can "
            "only lower norms slightly; raw processing keeps it."
        ),
    ),
    plots={"norms": "none"},
)


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    th = spec.thresholds
    resid = evidence.resid
    n_layers = resid.shape[0]
    n_pairs = len(evidence.pairs)
    norms = np.stack(
        [
            np.linalg.norm(np.asarray(resid[layer], dtype=np.float64), axis=1)
            for layer in range(n_layers)
        ]
    )
    name = "growth factor per layer"
    subjects, attributes = evidence.dataset.frame["subject"], evidence.dataset.frame["attribute"]
    crossed = min(subjects.nunique(), attributes.nunique()) >= 2
    if n_pairs < th["min_pairs"] or n_layers < th["min_layers"] or not crossed:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            name,
            n=norms.shape[1],
            notes=(
                f"{n_pairs} pairs and {n_layers} layers; at least {int(th['min_pairs'])} pairs "
                f"of two or more subjects and attributes, and {int(th['min_layers'])} layers "
                "are needed for a trend with a subject x attribute bootstrap",
            ),
        )
    fit = norm_growth(norms, subjects.to_numpy(), attributes.to_numpy(), seed=evidence.seed)
    lo, hi = fit.confidence_interval
    acc_lo, acc_hi = fit.acceleration_ci
    margin = th["acceleration_margin"]
    if lo > th["min_rate"] and -margin < acc_lo and acc_hi < margin:
        verdict = Verdict.SUPPORTED
    elif hi < th["min_rate"] or acc_lo > margin or acc_hi < -margin:
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.INCONCLUSIVE
    layers = np.arange(n_layers)
    intercept = fit.layer_mean_log_norm.mean() - np.log(fit.rate) * layers.mean()
    per_layer = pd.DataFrame(
        {
            "layer": layers,
            "mean_log_norm": fit.layer_mean_log_norm,
            "mean_log_norm_ci_low": fit.layer_ci[:, 0],
            "mean_log_norm_ci_high": fit.layer_ci[:, 1],
            "geometric_fit": intercept + np.log(fit.rate) * layers,
        }
    )
    geo = np.exp(fit.layer_mean_log_norm)
    table = pd.DataFrame(
        {
            "layer": layers,
            "median_norm": np.median(norms, axis=1),
            "geometric_mean_norm": geo,
            "ratio_to_previous": np.concatenate([[np.nan], geo[1:] / geo[:-1]]),
        }
    )
    step_at, step = fit.largest_step
    notes = (
        f"growth x{fit.rate:.4g} per layer over {n_layers} layers "
        f"(x{fit.rate ** (n_layers - 1):.3g} from first to last); source: x1.045 for GPT-2 XL",
        f"median step x{fit.early_rate:.3g} per layer in the early half, x{fit.late_rate:.3g} "
        f"in the late half: acceleration {fit.acceleration:+.2f} "
        f"[{acc_lo:+.2f}, {acc_hi:+.2f}] (geometric within +-{margin:.2f})",
        f"largest step x{step:.3g} into layer {step_at}; R^2 of the log-linear fit "
        f"{fit.r2_log:.3f} [{fit.r2_log_ci[0]:.3f}, {fit.r2_log_ci[1]:.3f}], of a linear fit "
        f"to the norm {fit.r2_linear:.3f} (not decided on)",
        f"median norm {table['median_norm'].iloc[0]:.3g} at layer 0, "
        f"{table['median_norm'].iloc[-1]:.3g} at layer {n_layers - 1}; "
        f"{fit.n_clusters} pairs resampled {fit.n_resamples} times",
    )
    return spec.result(
        evidence.model,
        verdict,
        name,
        n=norms.shape[1],
        effect=fit.rate,
        ci=fit.confidence_interval,
        pvalue=max(fit.p_below(th["min_rate"]), *_p_beyond_margin(fit.acceleration_draws, margin)),
        notes=notes,
        tables={"per_layer": per_layer, "norms": table},
    )


def _p_beyond_margin(draws: np.ndarray, margin: float) -> tuple[float, float]:
    """One-sided bootstrap p's of the acceleration at or beyond +margin and -margin."""
    n = draws.size + 1
    return float((1 + np.sum(draws >= margin)) / n), float((1 + np.sum(draws <= -margin)) / n)


test_residual_norm_growth = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md), over 18 layers (Gemma-3-270M's
# count, the fewest of the embedded models: each half's median then rests on 8-9 steps).
# The nuisances are what a real residual stream adds (3 massive dims at 100-900 bulk units,
# which dominate the norm, unequal per-dimension scales, offsets, crossed
# subject/attribute/pair effects).
WITH_MASSIVE_DIMS = replace(REALISTIC, massive_dims=3)
LAYERS = 18
LINEAR_SLOPE = 2.0
FIRST_JUMP = 9.0
SPEEDING_UP = (1.03, 1.12)  # log rates ~1:4, well beyond the margin
WITHIN_MARGIN = (1.06, 1.10)  # log rates ~1:1.6, acceleration ~+0.48 (SmolLM2-135M's)


def _linear_growth(data: Dataset, resid: np.ndarray, rng: np.random.Generator) -> None:
    """Norm proportional to 1 + 2 x layer: it grows, but not geometrically (the per-layer
    ratio falls from 3 to 1.06)."""
    resid *= (1.0 + LINEAR_SLOPE * np.arange(resid.shape[0], dtype=np.float32))[:, None, None]


def _first_jump(data: Dataset, resid: np.ndarray, rng: np.random.Generator) -> None:
    """Every layer after the first x9 (Gemma-3-270M's step into layer 1)."""
    resid[1:] *= np.float32(FIRST_JUMP)


def _two_rates(
    rates: tuple[float, float], data: Dataset, resid: np.ndarray, rng: np.random.Generator
) -> None:
    """One growth factor per layer up to the middle layer, another after it."""
    into = np.arange(1, resid.shape[0])
    steps = np.where(into <= resid.shape[0] // 2, *rates)
    resid *= np.concatenate([[1.0], np.cumprod(steps)]).astype(np.float32)[:, None, None]


CALIBRATION = (
    planted(
        "geometric growth 1.085 with nuisances",
        True,
        f"norm x1.085 per layer over {LAYERS} layers (SmolLM2-135M's fitted rate); 3 massive "
        "dims, per-dim log-scale sd 0.15, offsets 0.2, crossed effects 0.3/0.3/0.2",
        Base("logistic", n_layers=LAYERS, growth=1.085),
        WITH_MASSIVE_DIMS,
    ),
    planted(
        "geometric growth 1.045 with nuisances",
        True,
        f"norm x1.045 per layer over {LAYERS} layers (the source's GPT-2 XL rate); the same "
        "nuisances",
        Base("logistic", n_layers=LAYERS, growth=1.045),
        WITH_MASSIVE_DIMS,
    ),
    planted(
        "geometric growth after a x9 first step",
        True,
        f"x{FIRST_JUMP:g} into layer 1, then x1.045 per layer (Gemma-3-270M steps x9.3 into "
        "layer 1); the same nuisances",
        Base("logistic", n_layers=LAYERS, growth=1.045),
        WITH_MASSIVE_DIMS,
        edit=_first_jump,
        edit_params={"first_jump": FIRST_JUMP},
    ),
    planted(
        "flat norm with moving massive dims",
        False,
        "no growth; 3 massive dims that halve over the middle third while a fourth grows to "
        "900 bulk units (the norm dips ~8%, then ends ~7% above layer 0); the same other "
        "nuisances",
        Base("logistic", n_layers=LAYERS),
        replace(WITH_MASSIVE_DIMS, massive_moving=True),
    ),
    planted(
        "flat norm with scale spread",
        False,
        "no growth; per-dim log-scale sd 0.3, offsets 0.2, crossed effects 0.3/0.3/0.2, no "
        "massive dims",
        Base("logistic", n_layers=LAYERS),
        replace(WITH_MASSIVE_DIMS, massive_dims=0, scale_sigma=0.3),
    ),
    planted(
        "linear growth with nuisances",
        False,
        f"norm proportional to 1 + 2 x layer over {LAYERS} layers (grows x35, not "
        "geometrically); the same nuisances",
        Base("logistic", n_layers=LAYERS),
        WITH_MASSIVE_DIMS,
        edit=_linear_growth,
        edit_params={"linear_growth_slope": LINEAR_SLOPE},
    ),
    planted(
        "growth speeding up within the margin",
        True,
        f"x{WITHIN_MARGIN[0]:g} per layer in the early half, x{WITHIN_MARGIN[1]:g} in the late "
        "half (acceleration ~+0.48, as SmolLM2-135M reads; margin +-2/3); the same nuisances",
        Base("logistic", n_layers=LAYERS),
        WITH_MASSIVE_DIMS,
        edit=partial(_two_rates, WITHIN_MARGIN),
        edit_params={"early_rate": WITHIN_MARGIN[0], "late_rate": WITHIN_MARGIN[1]},
    ),
    planted(
        "growth speeding up beyond the margin",
        False,
        f"x{SPEEDING_UP[0]:g} per layer in the early half, x{SPEEDING_UP[1]:g} in the late "
        "half (log rates ~1:4, acceleration ~+1.2); the same nuisances",
        Base("logistic", n_layers=LAYERS),
        WITH_MASSIVE_DIMS,
        edit=partial(_two_rates, SPEEDING_UP),
        edit_params={"early_rate": SPEEDING_UP[0], "late_rate": SPEEDING_UP[1]},
    ),
)
