"""Claim: secondary modes left of the primary thin out with depth; right-side ones stay."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import stats

from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.evidence import Evidence
from harness.planted import (
    REALISTIC,
    Base,
    SideModes,
    constant,
    falling,
    rise_then_cliff,
    rising,
)
from harness.sources import BEYOND_GAUSSIAN_MODELS
from harness.stats.inference import CrossedMean, cluster_slopes, crossed_bootstrap_mean

SPEC = ClaimSpec(
    study_models=BEYOND_GAUSSIAN_MODELS,
    id="left-modes-decline",
    version=3,
    needs=("activations", "modes"),
    title="Left-side secondary modes decline with depth; right-side ones stay",
    source="Beyond Gaussian: Language Model Representations and Distributions (seed write-up)",
    quote=(
        "There was a general pattern of a fairly constant number of nodes on the right, while "
        "the number of left modes tended to decrease as you got deeper into the model."
    ),
    statistic=(
        "Per sample (the residual vectors of one subject/attribute pair at one layer, pooled) "
        "the secondary modes are found in bulk units and attributed to dimensions "
        "(harness.stats.attribution, as in minor-modes-both-sides: a KDE of 0.5 robust "
        "spreads on a fixed grid, so a few far coordinates cannot set the grid or the kernel); "
        "the counts are of mixture modes (less than three quarters of a mode's values from its "
        "top 3 dimensions), left and right of the primary. Two parts, each one value per pair "
        "(a pair's layers share its sentences), pooled by a two-way (subject x attribute) "
        "bootstrap (2000 resamples, the same draws for both): (1) the left count's monotone "
        "trend with depth, Kendall's tau-b of the count on the layer (0 for a count that "
        "never changes); (2) the right count's change over the whole depth, the OLS slope "
        "of the count on normalized depth layer / (L - 1). SUPPORTED when the left tau's "
        "interval lies below 0 (the left count falls) and the right slope's interval lies "
        "within +-0.5 modes (fairly constant: an equivalence test); REFUTED when the left "
        "tau's interval lies above -0.1 (no decline of even a weak monotone size) or the "
        "right slope's interval lies wholly outside +-0.5 (the right count demonstrably "
        "changes); INCONCLUSIVE otherwise, or with fewer than 4 pairs or 3 layers. Beside "
        "it: the same two parts on the study's KDE counts (4.5 x Scott on each sample's own "
        "min-to-max grid), outlier-dimension mode counts, and the shape of the left count "
        "over depth (its peak layer and its largest one-layer drop), so that a rise followed "
        "by a cliff is visible."
    ),
    multiplicity=(
        "Both parts are required (left tau < 0, right slope within the margin): an "
        "intersection-union test at level 0.05 with no correction; p is the larger of the "
        "left tau's one-sided p and the right slope's equivalence p (the larger of its two "
        "one-sided p's against -0.5 and +0.5)."
    ),
    thresholds={
        "min_pairs": 4,
        "min_layers": 3,
        # The write-up gives no numbers for "fairly constant". Its figures show 0-3 modes per
        # side; a change of half a mode per sample over the whole depth is less than a third
        # of the left decline the calibration plants (1.6 modes) and within what a reader of
        # such figures calls constant.
        "right_margin": 0.5,
        # A pooled tau above -0.1 is no monotone decline worth the word "decrease" (a steady
        # fall of 1.6 modes over 8 layers gives ~-0.4 per pair with binomial noise).
        "tau_margin": 0.1,
        "bootstrap_resamples": 2000,
    },
    source_numbers={
        "all six models (GPT-2 S/M/L, Pythia 160m/410m/1b)": (
            "left count 'tended to decrease' with depth, right count 'fairly constant' (no "
            "numbers given); some models had more left, others more right modes"
        ),
    },
    caveats=(
        (
            "Counts are of mixture modes in bulk units; the write-up counted every peak of "
            "its KDE, whose grid and bandwidth far coordinates set. Its counts are reported "
            "beside with the same two-part test, not decided on."
        ),
        (
            "The margins (0.5 modes for the right count, -0.1 for the left tau) are ours; "
            "the write-up states the pattern in words only."
        ),
    ),
)

EFFECT_NAME = "mean per-pair Kendall tau of the left mixture-mode count on layer"


def _taus(counts: pd.DataFrame, column: str) -> pd.Series:
    """Kendall's tau-b of ``column`` on layer within each pair; 0 where the count never
    changes (no trend) ."""

    def tau(group: pd.DataFrame) -> float:
        if group[column].nunique() < 2:
            return 0.0
        return float(stats.kendalltau(group["layer"], group[column]).statistic)

    return counts.groupby("pair")[[column, "layer"]].apply(tau)


class Parts:
    """The claim's two parts on one set of counts, one value per pair, bootstrapped over
    subjects and attributes with shared draws. A plain class, not a dataclass: calibration
    tests load this module by path, where a dataclass cannot find its module."""

    def __init__(
        self, counts: pd.DataFrame, left: str, right: str, thresholds: dict, seed: int
    ) -> None:
        self.thresholds = thresholds
        depth = counts["layer"] / counts["layer"].max()
        labels, slope_right = cluster_slopes(depth, counts[right], counts["pair"].to_numpy())
        taus = _taus(counts, left).reindex(labels)
        names = counts.drop_duplicates("pair").set_index("pair").loc[labels]
        self.pairs = labels
        self.tau_left = taus.to_numpy(dtype=float)
        self.slope_right = slope_right
        resamples = int(thresholds["bootstrap_resamples"])
        subjects, attributes = names["subject"], names["attribute"]
        self.left: CrossedMean = crossed_bootstrap_mean(
            self.tau_left, subjects, attributes, 0.0, resamples, seed=seed
        )
        margin = thresholds["right_margin"]
        self.right: CrossedMean = crossed_bootstrap_mean(
            self.slope_right, subjects, attributes, margin, resamples, seed=seed
        )
        self.right_low: CrossedMean = crossed_bootstrap_mean(
            self.slope_right, subjects, attributes, -margin, resamples, seed=seed
        )

    @property
    def pvalue(self) -> float:
        equivalence = max(self.right.p_less, self.right_low.p_greater)
        return max(self.left.p_less, equivalence)

    def decide(self) -> tuple[Verdict, str]:
        """The verdict rule, with the reason in words."""
        t_lo, t_hi = self.left.confidence_interval
        r_lo, r_hi = self.right.confidence_interval
        margin, tau_margin = self.thresholds["right_margin"], self.thresholds["tau_margin"]
        if t_lo > -tau_margin:
            return Verdict.REFUTED, (
                f"the left count does not decrease (tau CI [{t_lo:.2f}, {t_hi:.2f}] lies "
                f"above -{tau_margin:g})"
            )
        if r_lo > margin or r_hi < -margin:
            return Verdict.REFUTED, (
                f"the right count changes by more than {margin:g} modes over depth (slope CI "
                f"[{r_lo:.2f}, {r_hi:.2f}])"
            )
        left_falls, right_flat = t_hi < 0, -margin < r_lo and r_hi < margin
        if left_falls and right_flat:
            return Verdict.SUPPORTED, (
                f"the left count falls (tau CI [{t_lo:.2f}, {t_hi:.2f}]) and the right one "
                f"stays within +-{margin:g} modes (slope CI [{r_lo:.2f}, {r_hi:.2f}])"
            )
        missing = []
        if not left_falls:
            missing.append(f"no decline of the left count shown (tau CI [{t_lo:.2f}, {t_hi:.2f}])")
        if not right_flat:
            missing.append(
                f"the right count not shown constant within +-{margin:g} (slope CI "
                f"[{r_lo:.2f}, {r_hi:.2f}])"
            )
        return Verdict.INCONCLUSIVE, "; ".join(missing)

    def table(self) -> pd.DataFrame:
        rows = []
        for name, boot in (("left tau", self.left), ("right slope", self.right)):
            lo, hi = boot.confidence_interval
            rows.append({"part": name, "mean": boot.statistic, "ci_lo": lo, "ci_hi": hi})
        return pd.DataFrame(rows)


def counts_table(evidence: Evidence) -> pd.DataFrame:
    """One row per (layer, pair): attributed mixture and outlier-dimension counts and the
    study's KDE counts, with the pair's subject and attribute."""
    attributed = evidence.attributed_modes
    study = evidence.modes.drop_duplicates(["layer", "pair"])
    study = study[["layer", "pair", "n_left", "n_right"]]
    return attributed.merge(study, on=["layer", "pair"], how="left").fillna(
        {"n_left": 0, "n_right": 0}
    )


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    t = dict(spec.thresholds)
    n_pairs, n_layers = len(evidence.pairs), evidence.n_layers
    if n_pairs < t["min_pairs"] or n_layers < t["min_layers"]:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=n_pairs,
            notes=(
                f"{n_pairs} subject/attribute pairs and {n_layers} layers; a trend over depth "
                f"with a pair bootstrap needs at least {int(t['min_pairs'])} pairs and "
                f"{int(t['min_layers'])} layers",
            ),
        )
    counts = counts_table(evidence)
    parts = Parts(counts, "left_mixture", "right_mixture", t, evidence.seed)
    bounds = [*parts.left.confidence_interval, *parts.right.confidence_interval]
    if not np.all(np.isfinite(bounds)):
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=len(parts.pairs),
            notes=(
                f"{counts['subject'].nunique()} subjects and {counts['attribute'].nunique()} "
                "attributes: a two-way interval over so few is unbounded, so neither part can "
                "be decided",
            ),
        )
    verdict, reason = parts.decide()
    study = Parts(counts, "n_left", "n_right", t, evidence.seed)
    study_verdict, study_reason = study.decide()
    per_layer = _per_layer(counts)
    left, right = parts.left, parts.right
    notes = (
        f"{reason}: left tau {left.statistic:.3f} [95% CI {left.confidence_interval[0]:.3f}, "
        f"{left.confidence_interval[1]:.3f}], right slope {right.statistic:.3f} "
        f"[{right.confidence_interval[0]:.3f}, {right.confidence_interval[1]:.3f}] modes over "
        f"the whole depth ({len(parts.pairs)} pairs x {n_layers} layers, mixture modes)",
        f"mean mixture-mode counts per sample: left {_shape(per_layer, 'left_mixture')}; "
        f"right {_shape(per_layer, 'right_mixture')}",
        "outlier-dimension modes per sample (not counted): left "
        f"{per_layer['left_outlier_dim'].mean():.2f}, right "
        f"{per_layer['right_outlier_dim'].mean():.2f} (mean over layers)",
        f"the study's KDE counts (not decided on): {study_verdict}, {study_reason}; left "
        f"{_shape(per_layer, 'n_left')}; right {_shape(per_layer, 'n_right')}",
    )
    tables = {
        "per_layer": per_layer,
        "parts": pd.concat(
            [parts.table().assign(counts="mixture"), study.table().assign(counts="study KDE")],
            ignore_index=True,
        ),
        "pairs": _pair_table(parts, evidence),
    }
    return spec.result(
        evidence.model,
        verdict,
        EFFECT_NAME,
        n=len(parts.pairs),
        effect=left.statistic,
        ci=left.confidence_interval,
        pvalue=parts.pvalue,
        notes=notes,
        tables=tables,
    )


def _shape(per_layer: pd.DataFrame, column: str) -> str:
    """First and last layer's mean, the peak, and the largest one-layer drop: a steady fall
    and a rise followed by a cliff have the same slope sign but not the same shape."""
    values = per_layer[column].to_numpy(dtype=float)
    layers = per_layer["layer"].to_numpy()
    text = (
        f"{values[0]:.2f} -> {values[-1]:.2f}, highest {values.max():.2f} at layer "
        f"{int(layers[int(np.argmax(values))])}"
    )
    if values.size > 1:
        drops = values[:-1] - values[1:]
        k = int(np.argmax(drops))
        if drops[k] > 0:
            text += (
                f", largest drop {drops[k]:.2f} from layer {int(layers[k])} to {int(layers[k + 1])}"
            )
    return text


def _per_layer(counts: pd.DataFrame) -> pd.DataFrame:
    columns = [
        "left_mixture",
        "right_mixture",
        "left_outlier_dim",
        "right_outlier_dim",
        "n_left",
        "n_right",
    ]
    table = counts.groupby("layer")[columns].mean().reset_index()
    table.insert(1, "depth", table["layer"] / table["layer"].max())
    return table


def _pair_table(parts: Parts, evidence: Evidence) -> pd.DataFrame:
    table = pd.DataFrame(
        {"pair": parts.pairs, "tau_left": parts.tau_left, "slope_right": parts.slope_right}
    )
    names = evidence.pairs[["pair", "subject", "attribute"]]
    return names.merge(table, on="pair").drop(columns="pair")


test_left_modes_decline = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Eight layers: the claim is a
# trend over depth (>= 3 layers; the per-pair trends need several). Side modes are mixture
# modes (10 coordinates each, at 15, 25 and 35 bulk units); a pair's count per side is
# Binomial(3, expected / 3). The nuisances are what a real residual stream adds to its bulk:
# unequal per-dimension scales and offsets, crossed subject/attribute/pair effects.
N_LAYERS = 8
EIGHT_LAYERS = Base("logistic", n_layers=N_LAYERS)


def _sides(left: np.ndarray, right: np.ndarray) -> SideModes:
    return SideModes(tuple(left), tuple(right), dims_per_mode=10)


# The source's shape ("a fairly constant number of nodes on the right, while the number of
# left modes tended to decrease").
DECLINE = _sides(falling(1.8, 0.2, N_LAYERS), constant(1.0, N_LAYERS))
CALIBRATION = (
    planted(
        "left falls, right constant",
        True,
        "left mixture modes 1.8 -> 0.2 per pair (linear in depth), right 1.0 at every layer; "
        "per-dim log-scale sd 0.15, offsets 0.2, crossed effects 0.3/0.3/0.2",
        EIGHT_LAYERS,
        REALISTIC,
        DECLINE,
    ),
    planted(
        "constant side modes, moving massive dims",
        False,
        "left 1.0 and right 1.0 mixture modes at every layer; 3 massive dims (100-900 bulk "
        "units) that shrink to half over the middle third of the layers while a 4th grows "
        "to 900 (SmolLM2's late dim 17); the same nuisances",
        EIGHT_LAYERS,
        replace(REALISTIC, massive_dims=3, massive_moving=True),
        _sides(constant(1.0, N_LAYERS), constant(1.0, N_LAYERS)),
    ),
    planted(
        "left falls, right constant, massive dims",
        True,
        "the same side modes and nuisances plus 3 static massive dims (100-900 bulk units), "
        "which set each sample's range and the study's bandwidth",
        EIGHT_LAYERS,
        replace(REALISTIC, massive_dims=3),
        DECLINE,
    ),
    planted(
        "left falls, right rising",
        False,
        "left mixture modes 1.8 -> 0.2, right 0.2 -> 1.8 (the right count is not constant); "
        "the same nuisances",
        EIGHT_LAYERS,
        REALISTIC,
        _sides(falling(1.8, 0.2, N_LAYERS), rising(0.2, 1.8, N_LAYERS)),
    ),
    planted(
        "left rises then falls off a cliff, right rising",
        False,
        "SmolLM2's shape in the study's counts: left 0 -> 2.4 by 60 % depth, 0 from 85 % "
        "depth on; right 0.2 -> 1.8; the same nuisances",
        EIGHT_LAYERS,
        REALISTIC,
        _sides(rise_then_cliff(2.4, n_layers=N_LAYERS), rising(0.2, 1.8, N_LAYERS)),
    ),
    planted(
        "left constant, right constant",
        False,
        "left 1.0 and right 1.0 mixture modes at every layer; the same nuisances",
        EIGHT_LAYERS,
        REALISTIC,
        _sides(constant(1.0, N_LAYERS), constant(1.0, N_LAYERS)),
    ),
    planted(
        "both sides fall equally",
        False,
        "left and right mixture modes both 1.8 -> 0.2; the same nuisances",
        EIGHT_LAYERS,
        REALISTIC,
        _sides(falling(1.8, 0.2, N_LAYERS), falling(1.8, 0.2, N_LAYERS)),
    ),
)
