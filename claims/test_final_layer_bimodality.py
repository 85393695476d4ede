"""Claim: Pythia-160m's final layer is (almost perfectly symmetrically) bimodal; no other
model's final layer, and no other layer, is."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.dataset import Dataset
from harness.evidence import Evidence
from harness.planted import REALISTIC, Base, SideModes, constant
from harness.sources import BEYOND_GAUSSIAN_MODELS
from harness.stats import modes
from harness.stats.attribution import bulk_units
from harness.stats.inference import cluster_bootstrap_share

# The property the study reports per model; every model not named is expected unimodal
# ("The only outlier is the final layer of the Pythia-160m model").
EXPECTED_BIMODAL: dict[str, bool] = {"pythia-160m": True}

SPEC = ClaimSpec(
    study_models=BEYOND_GAUSSIAN_MODELS,
    id="final-layer-bimodality",
    version=2,
    caveats=(
        (
            "Bandwidth: Silverman's rule on robustly scaled samples, not the study's 4.5 x Scott "
            "(which merges two modes at these sample sizes); the study's KDE is reported as a "
            "sensitivity."
        ),
        (
            "No per-sample significance test: a sample's values are not independent, so "
            "bimodality is judged by effect size (height ratio, valley depth, minor mass) and "
            "decided over pairs."
        ),
        (
            "Pythia-160m, the one model the study names bimodal, is not available offline here; "
            "its expectation is tested only where its weights are provided."
        ),
    ),
    title="Only Pythia-160m's final layer is bimodal",
    source="Beyond Gaussian: Language Model Representations and Distributions (seed write-up)",
    quote=(
        "The only outlier is the final layer of the Pythia-160m model, where the "
        "post-residual activations were almost perfectly symmetrically bimodal!"
    ),
    statistic=(
        "Per sample (all residual coordinates of all sentences of one subject/attribute pair "
        "at one layer), centred on its median and divided by its robust spread min(sd, "
        "IQR/1.349), a Gaussian KDE at Silverman's robust bandwidth 0.9 n^-1/5 on 1000 points "
        "spanning the 0.1-99.9 % quantiles padded by 3 bandwidths, peaks as the study "
        "(find_peaks, prominence 1e-4 of the maximum, distance 31). Not the study's 4.5 x "
        "Scott bandwidth: at a few thousand values it is about one sd wide and smooths any "
        "two-component mixture into one mode (it is reported beside, as a sensitivity). A "
        "sample is bimodal when it has two MAJOR modes: the second-highest peak is at least "
        "0.25 of the highest, the valley between them is at least 20 % below the lower one, "
        "and at least 10 % of the values lie on the lower mode's side of the valley (the "
        "1e-4-prominence bumps of a few outlier coordinates fail all three; in 100 unimodal "
        "logistic, normal, t3, Gumbel and lognormal samples each, of 768 to 12,672 values, no "
        "valley between two peaks of that height ratio was deeper than 4 %). Symmetric: "
        "bimodal with height ratio >= 0.8, >= 40 % of the values on the lower mode's side "
        "and the modes' midpoint within 10 % of their separation from the median. Per "
        "layer, the share of pairs that are bimodal, with an exact (Clopper-Pearson) 95 % CI "
        "over pairs: the final layer has one sample per pair, so "
        "the pair bootstrap is the ordinary bootstrap of a proportion, whose percentile "
        "interval collapses to a point at share 0 or 1, the expected cases here (it is "
        "reported beside). The KDE's grid is fixed in bulk units, -10 to +10 robust sd "
        "(version 1 spanned the 0.1-99.9 % quantiles, which one massive coordinate, 0.17 % "
        "of a sample's values, stretched until the peak distance merged the two modes); "
        "values beyond it are left out of the KDE and counted. The write-up's 'bimodal "
        "layer' is a layer most of whose pairs are symmetric bimodal: per layer, the share "
        "of symmetric-bimodal pairs with an exact interval at level 1 - 0.05 / L "
        "(Bonferroni over the L layers); a layer is bimodal when its lower bound exceeds "
        "0.5, not bimodal when its upper bound is below 0.5. No per-sample significance test "
        "(mixture likelihood ratio, Silverman's critical bandwidth): the values of one "
        "sample are not independent (the same coordinates recur in every sentence) and at "
        "150k values any bump is 'significant', so bimodality is judged by effect size and "
        "the model's decision by the pairs. The whole statement is decided: for pythia-160m, "
        "SUPPORTED when the final layer is bimodal and every other layer is shown not to "
        "be, REFUTED when the final layer is shown not bimodal or another layer is bimodal; "
        "for every other model, SUPPORTED when every layer is shown not bimodal, REFUTED "
        "when some layer is bimodal; INCONCLUSIVE otherwise or with fewer than 4 pairs."
    ),
    multiplicity=(
        "One interval per layer, each at level 1 - 0.05 / L (Bonferroni over the L layers): "
        "'some layer is bimodal' is a union of L tests, which the correction holds at 0.05; "
        "'every layer is not bimodal' is an intersection of them, which needs none (the "
        "correction only makes it more conservative). p is the intersection-union p of the "
        "statement: the largest of the layers' one-sided exact binomial p's."
    ),
    thresholds={
        "min_height_ratio": 0.25,
        "min_dip_depth": 0.2,
        "min_minor_mass": 0.1,
        "symmetric_height_ratio": 0.8,
        "symmetric_minor_mass": 0.4,
        "symmetric_centre_offset": 0.1,
        "share": 0.5,
        "confidence": 0.95,
        "min_pairs": 4,
        "silverman_factor": 0.9,
        "grid_reach": 10.0,  # bulk units: the two modes and their valley lie well inside
    },
    # Every study model is expected to match the study's per-model statement.
    expectations=dict.fromkeys(BEYOND_GAUSSIAN_MODELS, Verdict.SUPPORTED),
    plots={"final_layer_density": "density"},
    source_numbers={
        "pythia-160m": "final layer 'almost perfectly symmetrically bimodal' (no numbers given)",
        "gpt2, gpt2-medium, gpt2-large, pythia-410m, pythia-1b": (
            "no bimodal layer: Pythia-160m's final layer is 'the only outlier'"
        ),
    },
)

EFFECT_NAME = "share of final-layer pairs that are symmetric bimodal"


def expected_bimodal(model: str) -> bool:
    """The study's statement for a model, by registry name or HF id (case-insensitive)."""
    name = model.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    return EXPECTED_BIMODAL.get(name, False)


# ------------------------------------------------------------------ per-sample statistic


class Bimodality(NamedTuple):
    """The two highest KDE modes of one sample. A NamedTuple, not a dataclass: calibration
    tests load this module by path, where a dataclass with postponed annotations cannot
    find its module."""

    n_modes: int
    n_major: int  # modes at least min_height_ratio of the highest
    height_ratio: float  # second-highest / highest peak; 0 with a single mode
    dip_depth: float  # 1 - (lowest density between the two) / second-highest peak
    minor_mass: float  # share of values on the second mode's side of the valley
    separation: float  # distance between the two modes / the sample's robust spread
    centre_offset: float  # |midpoint of the two modes - median| / their distance
    bimodal: bool
    symmetric: bool


def two_main_modes(
    summary: modes.ModeSummary, x: np.ndarray, spread: float, thresholds: dict[str, float]
) -> Bimodality:
    """Height ratio, valley depth, mass and symmetry of a sample's two highest modes.

    ``x`` and ``spread`` are in the units of ``summary`` (its KDE was fitted to ``x``)."""
    t = thresholds
    found = sorted(summary.modes, key=lambda m: m.height, reverse=True)
    if len(found) < 2:
        return Bimodality(len(found), len(found), 0.0, 0.0, 0.0, 0.0, math.nan, False, False)
    first, second = found[0], found[1]
    step = (summary.grid_hi - summary.grid_lo) / (summary.grid_points - 1)
    i, j = sorted(round((m.position - summary.grid_lo) / step) for m in (first, second))
    valley = i + int(np.argmin(summary.density[i : j + 1]))
    antimode = summary.grid_lo + valley * step
    height_ratio = second.height / first.height
    dip_depth = 1.0 - float(summary.density[valley]) / second.height
    side = x < antimode if second.position < first.position else x > antimode
    minor_mass = float(np.mean(side))
    distance = abs(first.position - second.position)
    centre_offset = abs(0.5 * (first.position + second.position) - float(np.median(x))) / distance
    bimodal = (
        height_ratio >= t["min_height_ratio"]
        and dip_depth >= t["min_dip_depth"]
        and minor_mass >= t["min_minor_mass"]
    )
    symmetric = (
        bimodal
        and height_ratio >= t["symmetric_height_ratio"]
        and minor_mass >= t["symmetric_minor_mass"]
        and centre_offset <= t["symmetric_centre_offset"]
    )
    return Bimodality(
        n_modes=len(found),
        n_major=sum(m.height >= t["min_height_ratio"] * first.height for m in found),
        height_ratio=float(height_ratio),
        dip_depth=float(dip_depth),
        minor_mass=minor_mass,
        separation=float(distance / spread),
        centre_offset=float(centre_offset),
        bimodal=bool(bimodal),
        symmetric=bool(symmetric),
    )


def resolving_modes(x: np.ndarray, thresholds: dict[str, float]) -> Bimodality:
    """The claim's statistic on one sample: standardized, Silverman bandwidth, trimmed grid."""
    summary, z, _ = resolving_kde(x, thresholds)
    return two_main_modes(summary, z, 1.0, thresholds)


def resolving_kde(
    x: np.ndarray, thresholds: dict[str, float]
) -> tuple[modes.ModeSummary, np.ndarray, float]:
    """The claim's KDE of one sample, the standardized values it was fitted to and the
    sample's robust spread (the unit they are in)."""
    z, _, spread = bulk_units(x)
    h = thresholds["silverman_factor"] * z.size ** (-1 / 5)
    # The grid is fixed in bulk units: a few massive-activation values far out would
    # otherwise stretch it so that the peak distance (31 of 1000 points) merges the two
    # main modes. Values beyond it are left out of the KDE (their kernels would not reach).
    reach = thresholds["grid_reach"]
    inner = z[np.abs(z) <= reach]
    return modes.find_modes(inner, bandwidth=h, grid=(-reach, reach)), inner, spread


def density_curves(
    evidence: Evidence, layer_pairs: pd.DataFrame, spec: ClaimSpec = SPEC, points: int = 250
) -> pd.DataFrame:
    """The claim's KDE of three of a layer's pairs, for the figure: the pair whose second
    mode is the highest, the median one and the lowest. Columns curve, x (robust sd from
    the median), density (scaled to its maximum) and mode (a detected mode's grid point)."""
    ranked = layer_pairs.sort_values("height_ratio", ascending=False, kind="stable")
    picks = ranked.iloc[sorted({0, len(ranked) // 2, len(ranked) - 1})]
    parts = []
    for row in picks.itertuples(index=False):
        x = evidence.values(int(row.layer), int(row.pair))
        summary, _, _ = resolving_kde(x, dict(spec.thresholds))
        grid = np.linspace(summary.grid_lo, summary.grid_hi, summary.grid_points)
        keep = np.unique(np.linspace(0, grid.size - 1, points).round().astype(int))
        step = (summary.grid_hi - summary.grid_lo) / (summary.grid_points - 1)
        at_mode = {round((m.position - summary.grid_lo) / step) for m in summary.modes}
        # int dtype even when no mode was found (an empty list would make it float).
        keep = np.union1d(keep, np.asarray(sorted(at_mode), dtype=int))
        peak = float(summary.density.max())
        parts.append(
            pd.DataFrame(
                {
                    "curve": f"{row.subject} / {row.attribute} (ratio {row.height_ratio:.2f})",
                    "x": grid[keep],
                    "density": summary.density[keep] / peak,
                    "mode": np.isin(keep, sorted(at_mode)),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def sample_table(evidence: Evidence, spec: ClaimSpec = SPEC) -> pd.DataFrame:
    """One row per (layer, pair): the claim's statistic and the study-KDE sensitivity."""
    t = dict(spec.thresholds)
    rows = []
    for layer in range(evidence.n_layers):
        values = [evidence.values(layer, int(p)) for p in evidence.pairs["pair"]]
        # A constant sample (a dead or flat layer) has no density to find modes in: it is
        # left out, and evaluate says how many were.
        varied = [bool(np.ptp(x) > 0) for x in values]
        pairs = evidence.pairs[["pair", "subject", "attribute"]][varied]
        values = [x for x, keep in zip(values, varied, strict=True) if keep]
        if not values:
            continue
        # The study's own KDE (4.5 x Scott on the sample's sd, its own min..max grid).
        study = modes.summarize_each(values)
        for (pair, subject, attribute), x, s in zip(
            pairs.itertuples(index=False),
            values,
            study,
            strict=True,
        ):
            summary, z, spread = resolving_kde(x, t)
            ours = two_main_modes(summary, z, 1.0, t)
            theirs = two_main_modes(s, x, spread, t)
            rows.append(
                {
                    "layer": layer,
                    "pair": int(pair),
                    "subject": subject,
                    "attribute": attribute,
                    "n_values": int(x.size),
                    **ours._asdict(),
                    "bimodal_study_kde": theirs.bimodal,
                    "height_ratio_study_kde": theirs.height_ratio,
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- decision


def share_interval(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for k of n pairs."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def layer_state(lo: float, hi: float, share: float) -> str:
    if lo > share:
        return "bimodal"
    if hi < share:
        return "unimodal"
    return "undetermined"


def per_layer(samples: pd.DataFrame, spec: ClaimSpec = SPEC) -> pd.DataFrame:
    t = spec.thresholds
    n_layers = samples["layer"].nunique()
    # Bonferroni over the layers: "some layer is bimodal" is a union of their tests.
    level = 1 - (1 - t["confidence"]) / n_layers
    rows = []
    for layer, group in samples.groupby("layer"):
        k, n = int(group["bimodal"].sum()), len(group)
        lo, hi = share_interval(k, n, t["confidence"])
        k_sym = int(group["symmetric"].sum())
        sym_lo, sym_hi = share_interval(k_sym, n, level)
        rows.append(
            {
                "layer": int(layer),
                "share_bimodal": k / n,
                "ci_lo": lo,
                "ci_hi": hi,
                "share_symmetric": k_sym / n,
                "symmetric_ci_lo": sym_lo,
                "symmetric_ci_hi": sym_hi,
                "state": layer_state(sym_lo, sym_hi, t["share"]),
                "median_height_ratio": float(group["height_ratio"].median()),
                # Tiny tail bumps have deep valleys too: count a depth only where the
                # second mode is major, so the column reads as "how clear a second hump".
                "median_major_dip_depth": float(
                    group["dip_depth"]
                    .where(group["height_ratio"] >= t["min_height_ratio"], 0.0)
                    .median()
                ),
                "share_bimodal_study_kde": float(group["bimodal_study_kde"].mean()),
            }
        )
    return pd.DataFrame(rows)


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    t = spec.thresholds
    expected = expected_bimodal(evidence.model)
    n_pairs = len(evidence.pairs)
    expect_note = f"expectation for {evidence.model}: " + (
        "a bimodal final layer (the study's Pythia-160m)"
        if expected
        else "a unimodal final layer (the study: Pythia-160m's final layer is the only bimodal one)"
    )
    if n_pairs < t["min_pairs"]:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=n_pairs,
            notes=(
                f"only {n_pairs} subject/attribute pairs; at least {int(t['min_pairs'])} are "
                "needed to decide a layer's share of bimodal pairs",
                expect_note,
            ),
        )

    # Seed-independent, so cached: a warm run reads it (KDEs of every sample, ~10 s).
    fields = spec.cache_fields(sample_table, modes, bulk_units)
    samples = evidence.cached_table(
        "bimodality-samples", fields, lambda: sample_table(evidence, spec)
    )
    final = evidence.n_layers - 1
    constant = n_pairs * evidence.n_layers - len(samples)
    constant_note = (
        f"{constant} constant (layer, pair) samples left out: a KDE needs values that differ"
    )
    n_final = int((samples["layer"] == final).sum()) if len(samples) else 0
    if n_final < t["min_pairs"]:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=n_final,
            notes=(
                f"only {n_final} final-layer pairs have values that differ; at least "
                f"{int(t['min_pairs'])} are needed",
                constant_note,
                expect_note,
            ),
        )
    layers = per_layer(samples, spec)
    last = samples[samples["layer"] == final]
    k, n = int(last["symmetric"].sum()), len(last)
    share = k / n
    final_row = layers[layers["layer"] == final].iloc[0]
    lo, hi = float(final_row["symmetric_ci_lo"]), float(final_row["symmetric_ci_hi"])
    verdict, reason = decide_layers(layers, final, expected)
    pvalue = statement_pvalue(samples, final, expected, t["share"])
    boot = cluster_bootstrap_share(
        last["symmetric"].to_numpy(), last["pair"].to_numpy(), seed=evidence.seed
    )
    notes = [
        f"{reason} ({expect_note})",
        _final_note(last, (lo, hi), boot.confidence_interval, str(final_row["state"])),
        _other_layers_note(layers, final),
        _study_kde_note(last, t["share"], t["confidence"]),
        *([constant_note] if constant else []),
    ]
    columns = [
        "subject",
        "attribute",
        "n_modes",
        "n_major",
        "height_ratio",
        "dip_depth",
        "minor_mass",
        "separation",
        "centre_offset",
        "bimodal",
        "symmetric",
        "bimodal_study_kde",
    ]
    tables = {
        "per_layer": layers,
        "final_layer_pairs": last[columns].reset_index(drop=True),
        "final_layer_density": density_curves(evidence, last, spec),
    }
    return spec.result(
        evidence.model,
        verdict,
        EFFECT_NAME,
        n=n,
        effect=share,
        ci=(lo, hi),
        pvalue=pvalue,
        notes=tuple(notes),
        tables=tables,
    )


def decide_layers(layers: pd.DataFrame, final: int, expected: bool) -> tuple[Verdict, str]:
    """The whole statement from the layers' states (bimodal, unimodal, undetermined): for a
    model expected bimodal, the final layer bimodal and only it; otherwise no layer."""
    state = dict(zip(layers["layer"], layers["state"], strict=True))
    others = [layer for layer in state if layer != final]
    bimodal_others = [layer for layer in others if state[layer] == "bimodal"]
    if bimodal_others:
        return Verdict.REFUTED, f"layers {bimodal_others} are bimodal (symmetric)"
    if expected:
        if state[final] == "unimodal":
            return Verdict.REFUTED, "the final layer is shown not to be symmetric bimodal"
        if state[final] == "bimodal" and all(state[layer] == "unimodal" for layer in others):
            return Verdict.SUPPORTED, "the final layer is symmetric bimodal and no other layer"
    else:
        if state[final] == "bimodal":
            return Verdict.REFUTED, "the final layer is symmetric bimodal"
        if all(s == "unimodal" for s in state.values()):
            return Verdict.SUPPORTED, "every layer is shown not to be symmetric bimodal"
    undetermined = [layer for layer, s in state.items() if s == "undetermined"]
    return Verdict.INCONCLUSIVE, f"layers {undetermined} are neither shown bimodal nor not"


def statement_pvalue(samples: pd.DataFrame, final: int, expected: bool, share: float) -> float:
    """The p of the whole statement, an intersection-union test: the largest of the layers'
    one-sided exact binomial p's in the direction the study predicts for each (the final
    layer's symmetric share above ``share`` for pythia-160m, every other share below)."""
    worst = 0.0
    for layer, group in samples.groupby("layer"):
        k, n = int(group["symmetric"].sum()), len(group)
        direction = "greater" if (expected and layer == final) else "less"
        worst = max(worst, float(stats.binomtest(k, n, share, alternative=direction).pvalue))
    return worst


def _final_note(
    last: pd.DataFrame,
    ci: tuple[float, float],
    boot_ci: tuple[float, float],
    state: str,
) -> str:
    n = len(last)
    k_sym, k_bi = int(last["symmetric"].sum()), int(last["bimodal"].sum())
    bimodal = last[last["bimodal"]]
    shape = ""
    if len(bimodal):
        shape = (
            f"; the {k_bi} pairs with two major modes have median height ratio "
            f"{bimodal['height_ratio'].median():.2f}, valley depth "
            f"{bimodal['dip_depth'].median():.2f}, lower-side mass "
            f"{bimodal['minor_mass'].median():.2f}, centre offset "
            f"{bimodal['centre_offset'].median():.2f}, separation "
            f"{bimodal['separation'].median():.2f} robust sd"
        )
    return (
        f"final layer: {k_sym} of {n} pairs symmetric bimodal (share {k_sym / n:.2f}, exact CI "
        f"[{ci[0]:.2f}, {ci[1]:.2f}] at the Bonferroni level, pair-bootstrap 95% CI "
        f"[{boot_ci[0]:.2f}, {boot_ci[1]:.2f}]): {state}; {k_bi} with two major modes{shape}"
    )


def _other_layers_note(layers: pd.DataFrame, final: int) -> str:
    others = layers[layers["layer"] != final]
    if others.empty:
        return "only one layer: no other layer to compare with the final one"
    counts = others["state"].value_counts()
    text = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("bimodal", "unimodal", "undetermined"))
    top = others.loc[others["share_symmetric"].idxmax()]
    return (
        f"the {len(others)} other layers: {text} (symmetric-bimodal share; highest "
        f"{top['share_symmetric']:.2f} at layer {int(top['layer'])}; highest share with two "
        f"major modes {others['share_bimodal'].max():.2f})"
    )


def _study_kde_note(last: pd.DataFrame, share: float, confidence: float) -> str:
    k = int(last["bimodal_study_kde"].sum())
    lo, hi = share_interval(k, len(last), confidence)
    theirs = layer_state(lo, hi, share)
    ours = layer_state(*share_interval(int(last["bimodal"].sum()), len(last), confidence), share)
    same = "the same" if theirs == ours else f"not the same (ours: {ours})"
    n = float(last["n_values"].median())
    return (
        f"sensitivity, the study's KDE (4.5 x Scott on each sample's sd, its min..max grid): "
        f"{k} of {len(last)} final-layer pairs with two major modes ({theirs}), "
        f"{same}; at n = {n:.0f} values per "
        f"sample that bandwidth is {modes.BW_FACTOR * n**-0.2:.2f} sd (the claim's: "
        f"{0.9 * n**-0.2:.2f} robust sd), and two equal modes less than about two "
        "bandwidths apart merge into one"
    )


test_final_layer_bimodality = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Four layers: the claim reads the
# final layer and notes the others. The expectation depends on the model name the Evidence
# carries: a bimodal final layer is the truth for "pythia-160m" and the null for any other
# model, a unimodal one the reverse. The nuisances are what a real residual stream adds to
# its bulk: unequal per-dimension scales and offsets, crossed subject/attribute/pair effects.
FOUR_LAYERS = Base("logistic", n_layers=4)
# The study's "almost perfectly symmetrically bimodal": as synthetic.bimodal_activations,
# half the coordinates shifted by +3 logistic scale units and half by -3 (1.84 bulk units
# each way), the same coordinates in every sentence, in the final layer only.
SPLIT = {"layer": -1, "shift": 3.0, "balance": 0.5}
# Mixture modes (30 coordinates each, ~5 % of a sample's values, 15-35 bulk units out),
# ~1.5 per side per pair at every layer: side humps that are neither high nor heavy.
SIDE_HUMPS = SideModes(constant(1.5, 4), constant(1.5, 4), dims_per_mode=30)


def split_final_layer(data: Dataset, resid: np.ndarray, rng: np.random.Generator) -> None:
    """Shift a fixed random half of the final layer's coordinates by +SPLIT['shift'] and the
    others by -SPLIT['shift'] (the sampler's units), in every sentence."""
    d = resid.shape[2]
    signs = np.where(rng.permutation(d) < round(SPLIT["balance"] * d), 1.0, -1.0)
    resid[SPLIT["layer"]] += (SPLIT["shift"] * signs).astype(resid.dtype)


def split_middle_layer(data: Dataset, resid: np.ndarray, rng: np.random.Generator) -> None:
    """The final layer split as ``split_final_layer``, and layer 1 of 4 as well."""
    split_final_layer(data, resid, rng)
    d = resid.shape[2]
    signs = np.where(rng.permutation(d) < round(SPLIT["balance"] * d), 1.0, -1.0)
    resid[1] += (SPLIT["shift"] * signs).astype(resid.dtype)


CALIBRATION = (
    planted(
        "pythia-160m: symmetric bimodal final layer",
        True,
        "final layer: half the coordinates +3, half -3 logistic scale units (1.84 bulk units "
        "each way); per-dim log-scale sd 0.15, offsets 0.2, crossed effects 0.3/0.3/0.2",
        FOUR_LAYERS,
        REALISTIC,
        model="pythia-160m",
        edit=split_final_layer,
        edit_params=SPLIT,
    ),
    planted(
        "other model: unimodal, all nuisances",
        True,
        "logistic, no layer bimodal; per-dim log-scale sd 0.3, offsets 0.2, crossed effects "
        "0.3/0.3/0.2, 3 massive dims (100-900 bulk units), ~1.5 side humps per side "
        "(30 dims each at 15-35 bulk units)",
        FOUR_LAYERS,
        replace(REALISTIC, scale_sigma=0.3, massive_dims=3),
        SIDE_HUMPS,
    ),
    planted(
        "pythia-160m: symmetric bimodal final layer, massive dims",
        True,
        "the pythia-160m truth plus 3 massive dims (100-900 bulk units) in every layer",
        FOUR_LAYERS,
        replace(REALISTIC, massive_dims=3),
        model="pythia-160m",
        edit=split_final_layer,
        edit_params=SPLIT,
    ),
    planted(
        "other model: bimodal final layer, massive dims",
        False,
        "another model whose final layer is split as pythia-160m's truth, plus 3 massive "
        "dims (100-900 bulk units) in every layer",
        FOUR_LAYERS,
        replace(REALISTIC, massive_dims=3),
        edit=split_final_layer,
        edit_params=SPLIT,
    ),
    planted(
        "pythia-160m: unimodal, all nuisances",
        False,
        "no layer bimodal; per-dim log-scale sd 0.3, offsets 0.2, crossed effects "
        "0.3/0.3/0.2, 3 massive dims (100-900 bulk units), ~1.5 side humps per side "
        "(30 dims each at 15-35 bulk units)",
        FOUR_LAYERS,
        replace(REALISTIC, scale_sigma=0.3, massive_dims=3),
        SIDE_HUMPS,
        model="pythia-160m",
    ),
    planted(
        "pythia-160m: unimodal t3, side humps",
        False,
        "Student t(3) bulk, no massive dims (the grid then spans the bulk and resolves "
        "tail bumps); per-dim log-scale sd 0.3, offsets 0.2, crossed effects 0.3/0.3/0.2, "
        "~1.5 side humps per side (30 dims each at 15-35 bulk units)",
        Base("t3", n_layers=4),
        replace(REALISTIC, scale_sigma=0.3),
        SIDE_HUMPS,
        model="pythia-160m",
    ),
    planted(
        "pythia-160m: a middle layer bimodal too",
        False,
        "pythia-160m's truth plus layer 1 of 4 split the same way: not 'the only' bimodal layer",
        FOUR_LAYERS,
        REALISTIC,
        model="pythia-160m",
        edit=split_middle_layer,
        edit_params=SPLIT | {"also": 1},
    ),
    planted(
        "other model: bimodal final layer",
        False,
        "another model whose final layer is split as pythia-160m's truth; the same "
        "nuisances, no massive dims",
        FOUR_LAYERS,
        REALISTIC,
        edit=split_final_layer,
        edit_params=SPLIT,
    ),
)
