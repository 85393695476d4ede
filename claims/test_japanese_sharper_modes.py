"""Claim: Japanese sentences have clearer, more distinct secondary modes, clearest early."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from harness.calibration import Edit, Scenario, planted
from harness.claim import ClaimResult, ClaimSpec, InsufficientDataError, Verdict, claim_test
from harness.dataset import Dataset
from harness.evidence import Evidence, SelectionUnavailableError
from harness.extraction import seed_prefix
from harness.planted import REALISTIC, Base, Nuisances, bulk_unit, pair_rows
from harness.sources import BEYOND_GAUSSIAN_MODELS
from harness.stats import modes
from harness.stats.attribution import bulk_units
from harness.stats.inference import (
    RelabelTest,
    bootstrap_mean,
    randomization_pvalues,
    relabel_pvalues,
)

# Attribute names that mean "the sentence is in Japanese" (the shipped set and the seed's
# JSON use "in japanese"); matched case-insensitively.
JAPANESE = ("in japanese", "japanese")

# The study's token selection, and the token-matched control: 'last' reads every sentence
# whole at its final token (sentence-final punctuation in every language of the dataset).
STUDY_TOKENS = "seed"
MATCHED_TOKENS = "last"

SPEC = ClaimSpec(
    study_models=BEYOND_GAUSSIAN_MODELS,
    id="japanese-sharper-modes",
    version=3,
    needs=("activations", f"activations:{STUDY_TOKENS}", f"activations:{MATCHED_TOKENS}"),
    caveats=(
        (
            "Token selection: the study's 'seed' selection cuts the last word at the last "
            "space, so Japanese sentences (no spaces) are read whole at their final '。' while "
            "the others are read at a mid-sentence word. The verdict therefore also needs the "
            "effect under 'last', which reads every sentence at its final token; evidence read "
            "from an activation set has no model to extract that selection and stays "
            "INCONCLUSIVE. 'last' matches the token's place, not its identity: Japanese ends "
            "in '。' (one token type, its own), the others in '.', '!' or '?' by attribute, "
            "and this dataset cannot separate the final token's identity from the language."
        ),
        (
            "Each covariate (sentence length, sentence homogeneity, bulk spread) is regressed "
            "out with a straight slope fitted across the other attributes' pairs; where "
            "Japanese pairs lie beyond the others' range (SmolLM2-135M's Japanese sentences "
            "have 62 tokens against 20) it cannot be separated from language: INCONCLUSIVE "
            "naming it. A covariate whose effect on the score is strongly curved is removed "
            "only in part by the straight slope (a steep planted length effect left p < 0.05 "
            "in 5 of 50 reps before the attributes-as-units test was added, which now "
            "catches it), and another attribute that differs in the covariate and in its "
            "modes is read as a covariate effect."
        ),
        (
            "Massive dimensions stretch the KDE grid so that side modes a few dozen robust sd "
            "out merge into the primary (the massive-dims truth is a documented miss): on "
            "models with massive dims the test sees only far, well-separated modes."
        ),
    ),
    title="Japanese sentences have clearer, more distinct secondary modes",
    source="Beyond Gaussian: Language Model Representations and Distributions (seed write-up)",
    quote=(
        "Most strikingly, sentences in Japanese had clearer, more distinct secondary modes "
        "across models. This tended to be clearer in earlier layers, but mostly held "
        "throughout in the visual examinations I've done."
    ),
    statistic=(
        "Per sample (all residual coordinates of one subject/attribute pair at one layer) the "
        "distinctness score is the sum of the secondary KDE modes' prominences relative to "
        "the primary's height, counting only modes more prominent than three values stacked "
        "at one point would make (3 / (n h sqrt(2 pi))), so that one or two stray "
        "coordinates do not count. The samples of one (subject, layer) are compared on one "
        "footing: each is centred on its median and divided by its robust spread min(sd, "
        "IQR/1.349), then all are smoothed at one bandwidth (the study's 4.5 x Scott factor "
        "in those units) on one 1000-point grid (the common range padded by 4 bandwidths). "
        "J(subject, layer) = score(Japanese) - mean score(other attributes), averaged over "
        "layers per subject and tested by a stratified randomization test (within each "
        "subject Japanese is exchangeable with the other attributes under the null). The "
        "test runs under two token selections of the same sentences: the study's 'seed' "
        "and the token-matched 'last'. 'Most strikingly': attributes carry effects of their "
        "own, so the within-subject test rejects exchangeability for many of them; Japanese "
        "must also stand out among the attributes as units: each attribute's contrast D "
        "(its score minus the others' in the same subject and layer, averaged), Japanese's "
        "against the other attributes' as a normal sample, one-sided t prediction-interval "
        "test (t = (D_ja - mean D) / (sd D sqrt(1 + 1/k)), k - 1 df), p < 0.05 under both "
        "selections. Three "
        "pair-level covariates are regressed out in turn under 'last': sentence length "
        "(mean log tokens), sentence homogeneity (mean log of the sentences' median absolute "
        "deviation from their pair's centroid, in bulk units: near-identical sentences stack "
        "a coordinate's values into a mode) and bulk spread (mean log robust spread relative "
        "to the subject's median at each layer). For each, the pair scores (mean over layers) "
        "are regressed on it within subjects over the non-Japanese pairs (slope b), J becomes "
        "(score - b covariate) of Japanese minus the others' mean, and the randomization test "
        "refits b without the attribute playing Japanese in each relabeling (every candidate "
        "out of sample); this needs at least half of the Japanese pairs inside the other "
        "pairs' range of the covariate, widened by a quarter of its span each way. SUPPORTED "
        "when p(J > 0) < 0.05 under 'seed', under 'last' and under 'last' with each covariate "
        "regressed out, and Japanese stands out among the attributes under both (an "
        "intersection-union test: the p shown is the largest); REFUTED when p(J < 0) < 0.05 "
        "under both selections; "
        "otherwise INCONCLUSIVE, the note naming what explains the effect (token selection, "
        "another attribute as distinct, a covariate) or that none was found. Sub-verdict "
        "'clearer in earlier layers', on relative J (J over the two scores' sum, so that "
        "the scores' scale changing with depth does not decide): first third minus last "
        "third, with a subject-bootstrap 95% CI (expanded percentile) under each selection: "
        "SUPPORTED when both CIs lie above 0, REFUTED when both lie below, else INCONCLUSIVE "
        "(saying 'contradicted' when they lie on opposite sides). Reported beside: the same "
        "test with a shared data-unit bandwidth, token counts against scores, bulk spread "
        "and sentence dispersion ratios under each selection."
    ),
    multiplicity=(
        "An intersection-union test: the verdict needs all seven one-sided tests (two token "
        "selections, Japanese standing out among the attributes under each, three "
        "covariate-adjusted ones) at alpha each, which controls the error at alpha without "
        "correction "
        "(Berger 1982); the sub-verdict likewise needs both selections. The legs are not "
        "independent (the covariate-adjusted tests reuse the 'last' scores). Shared-bandwidth "
        "variant and token counts are reported, not tested."
    ),
    thresholds={
        "alpha": 0.05,
        "min_subjects": 4,
        "floor_values": 3,
        "grid_pad_bandwidths": 4,
        "bootstrap_resamples": 2000,
        "max_exact_relabelings": 1 << 20,
        "relabel_draws": 20_000,
        "length_extrapolation": 0.25,
        "min_length_overlap": 0.5,
    },
    source_numbers={
        "all six models (GPT-2 S/M/L, Pythia 160m/410m/1b)": (
            "Japanese secondary modes clearer and more distinct, by visual examination; "
            "clearer in earlier layers (no numbers given)"
        ),
    },
)

_J = "mean J (Japanese minus other attributes' secondary-mode distinctness)"
EFFECT_NAME = f"{_J} under the token-matched {MATCHED_TOKENS!r} selection"
UNMATCHED_EFFECT_NAME = f"{_J} under the study's {STUDY_TOKENS!r} selection (no control)"


# ------------------------------------------------------------------------------ the score


class Distinctness(NamedTuple):
    """One sample's secondary-mode distinctness among the samples it is compared with.

    A NamedTuple, not a dataclass: calibration tests load this module by path, where a
    dataclass with postponed annotations cannot find its module."""

    score: float  # sum of rel_prominence over the secondary modes above the floor
    n_secondary: int  # secondary modes the peak finder reports
    n_distinct: int  # of those, the ones above the floor
    bandwidth: float  # in the units the samples were compared in
    unit: float  # one of those units in data units: the robust spread, or 1 in data units


def distinctness(
    samples: Sequence[np.ndarray],
    floor_values: float = 3.0,
    pad_bandwidths: float = 4.0,
    units: str = "standardized",
) -> list[Distinctness]:
    """Scores of samples compared with each other: one bandwidth, one grid.

    ``units="standardized"`` (the claim's statistic): each sample is centred on its median
    and divided by its robust spread, then all are smoothed at the study's 4.5 x Scott
    factor in those units (4.5 n^-1/5, median n). A fixed bandwidth in data units is not
    used because a wider bulk has a lower primary peak, so the same side modes score higher
    relative to it (a pure scale effect), and the sd-based ``modes.common_bandwidth`` is
    inflated by the side modes of the samples carrying them: where most compared samples
    carry modes it smooths them away, while a lone sample with modes among clean ones keeps
    them, so "Japanese sharper" would be detectable and "Japanese flatter" not.
    ``units="data"``: ``modes.common_bandwidth`` in data units, kept as a sensitivity check.

    The grid spans the samples' common range padded by ``pad_bandwidths`` bandwidths:
    find_peaks never reports a grid end, so on a bare min..max grid a cluster of values at
    the range's end (where a far side mode's values lie) loses its peak.
    """
    raw = [np.asarray(s, dtype=np.float64).ravel() for s in samples]
    if units == "standardized":
        standardized = [bulk_units(x) for x in raw]
        arrays = [u for u, _, _ in standardized]
        units_in_data = [spread for _, _, spread in standardized]
        h = float(np.median([modes.BW_FACTOR * x.size ** (-1 / 5) for x in arrays]))
    elif units == "data":
        arrays = raw
        units_in_data = [1.0] * len(raw)
        h = modes.common_bandwidth(arrays)
    else:
        raise ValueError(f"units must be 'standardized' or 'data', got {units!r}")
    lo = min(float(x.min()) for x in arrays) - pad_bandwidths * h
    hi = max(float(x.max()) for x in arrays) + pad_bandwidths * h
    out = []
    summaries = modes.summarize_each(arrays, bandwidth=h, grid=(lo, hi))
    for x, summary, unit in zip(arrays, summaries, units_in_data, strict=True):
        # The prominence that floor_values values at one point give: the KDE of k coinciding
        # values peaks at k / (n h sqrt(2 pi)) above whatever lies beneath it.
        floor = floor_values / (x.size * h * math.sqrt(2 * math.pi))
        kept = [m for m in summary.secondary if m.prominence >= floor]
        out.append(
            Distinctness(
                score=float(sum(m.rel_prominence for m in kept)),
                n_secondary=len(summary.secondary),
                n_distinct=len(kept),
                bandwidth=h,
                unit=unit,
            )
        )
    return out


def is_japanese(attribute: str) -> bool:
    return attribute.strip().lower() in JAPANESE


def sample_scores(evidence: Evidence, spec: ClaimSpec = SPEC) -> pd.DataFrame:
    """One row per (layer, pair): the pair's distinctness among its subject's pairs, in
    standardized units (``score``, the statistic) and in data units (``score_data_units``)."""
    floor, pad = spec.thresholds["floor_values"], spec.thresholds["grid_pad_bandwidths"]
    rows = []
    for layer in range(evidence.n_layers):
        for subject, group in evidence.pairs.groupby("subject", sort=False):
            values = [evidence.values(layer, int(p)) for p in group["pair"]]
            # A constant sample (a dead or flat layer) has no density to find modes in: it
            # is left out, and contrasts() drops a subject-layer left without both sides.
            varied = [bool(np.ptp(x) > 0) for x in values]
            group = group[varied]
            values = [x for x, keep in zip(values, varied, strict=True) if keep]
            if not values:
                continue
            found = distinctness(values, floor, pad, units="standardized")
            in_data_units = distinctness(values, floor, pad, units="data")
            block = evidence.layer(layer)
            for pair, attribute, rows_, d, dd in zip(
                group["pair"],
                group["attribute"],
                group["rows"],
                found,
                in_data_units,
                strict=True,
            ):
                sentences = np.asarray(block[rows_], dtype=np.float64)
                spread = d.unit
                rows.append(
                    {
                        "layer": layer,
                        "pair": int(pair),
                        "subject": subject,
                        "attribute": attribute,
                        "japanese": is_japanese(attribute),
                        "score": d.score,
                        "n_secondary": d.n_secondary,
                        "n_distinct": d.n_distinct,
                        "score_data_units": dd.score,
                        "spread": spread,
                        # How far sentences sit from their pair's centroid, in bulk units:
                        # near-identical sentences stack a coordinate's values into a mode.
                        "dispersion": float(
                            np.median(np.abs(sentences - sentences.mean(axis=0))) / spread
                        ),
                    }
                )
    return pd.DataFrame(rows)


def contrasts(scores: pd.DataFrame, column: str = "score") -> pd.DataFrame:
    """J per (subject, layer) for subjects with Japanese and at least one other attribute."""
    if scores.empty:
        raise InsufficientDataError("no sample has values enough for a KDE to score its modes")
    japanese = scores[scores["japanese"]].groupby(["subject", "layer"])[column].mean()
    others = scores[~scores["japanese"]].groupby(["subject", "layer"])[column].mean()
    both = pd.concat({"japanese": japanese, "others": others}, axis=1).dropna()
    both["J"] = both["japanese"] - both["others"]
    return both.reset_index()


# ---------------------------------------------------------------------------- inference


def relabel_test(
    scores: pd.DataFrame,
    column: str = "score",
    seed: int = 0,
    max_exact: int = 1 << 20,
    draws: int = 20_000,
) -> RelabelTest:
    """Stratified randomization test of mean J over subjects.

    Null: within each subject, Japanese is exchangeable with the other attributes. Each
    relabeling picks, per subject independently, one attribute to play Japanese; J is then
    its score minus the mean of the rest (layer means: J is linear in them), averaged over
    subjects. Why not a signed-rank or t test on the per-subject J: J compares one sample
    with the mean of several, so with skewed scores (mostly small, a few large sums of
    prominences) J is skewed under the null and a test assuming symmetry about 0 is not
    calibrated (iid squared-exponential scores, 8 subjects x 4 attributes: the signed-rank
    test gives p(J < 0) < 0.05 in 13% of nulls and p(J > 0) < 0.05 in 0.8%, the t test 12%
    and 0.8%); this test is exact whatever the scores' shape.
    """
    rows = []
    for _, group in scores.groupby("subject", sort=False):
        japanese, others = group[group["japanese"]], group[~group["japanese"]]
        if japanese.empty or others.empty:
            continue
        # Layer means per attribute, Japanese first.
        v = np.concatenate(
            [[japanese[column].mean()], others.groupby("attribute")[column].mean().to_numpy()]
        )
        rows.append(v)
    return relabel_pvalues(rows, seed, max_exact, draws)


def thirds(n_layers: int) -> tuple[list[int], list[int]]:
    """First and last third of the layers (at least one layer each)."""
    k = max(1, n_layers // 3)
    return list(range(k)), list(range(n_layers - k, n_layers))


# ----------------------------------------------------------------------------- evaluate


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    attributes = list(dict.fromkeys(evidence.pairs["attribute"]))
    if not any(is_japanese(a) for a in attributes):
        return spec.result(
            evidence.model,
            Verdict.NOT_APPLICABLE,
            EFFECT_NAME,
            n=0,
            notes=(
                f"the dataset has no {JAPANESE[0]!r} attribute (attributes: "
                f"{', '.join(attributes)}); the claim compares Japanese with other attributes",
            ),
        )
    study = analyse(evidence.under_tokens(STUDY_TOKENS), spec)
    pairs = _pairs(study.scores, study.evidence)
    tables = {
        "per_layer": _per_layer(study.j),
        "per_subject": study.per_subject,
        "per_attribute": _per_attribute(pairs),
        "pairs": pairs,
    }
    n = len(study.per_subject)
    if n < spec.thresholds["min_subjects"]:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=n,
            notes=(
                f"only {n} subjects have Japanese and at least one other attribute; at least "
                f"{int(spec.thresholds['min_subjects'])} are needed for a test across subjects",
            ),
            tables=tables,
        )
    try:
        matched: Selection | None = analyse(evidence.under_tokens(MATCHED_TOKENS), spec)
    except SelectionUnavailableError as exc:
        matched, unavailable = None, str(exc)
    else:
        unavailable = ""
    controls = [] if matched is None else covariate_controls(matched, spec)
    selections = [study] if matched is None else [study, matched]
    standings = {s.tokens: standing(s.scores) for s in selections}

    alpha = spec.thresholds["alpha"]
    verdict, reason = decide_verdict(study, matched, standings, controls, alpha, unavailable)
    shown = matched or study
    per_j = shown.per_subject["J"].to_numpy()
    tests = [study.test.p_greater]
    if matched is not None:
        tests.append(matched.test.p_greater)
    tests += [c.test.p_greater if c.test is not None else 1.0 for c in controls]
    tests += [st.pvalue for st in standings.values()]
    tables["early_late"] = study.early_late
    if matched is not None:
        tables["matched_per_layer"] = _per_layer(matched.j)
        tables["matched_per_subject"] = matched.per_subject
        tables["matched_early_late"] = matched.early_late
    tables["selections"] = _selection_table(selections, controls, standings)
    earlier, earlier_note = clearer_early(selections, evidence.n_layers)
    tables["sub_verdicts"] = pd.DataFrame(
        [
            {"part": "Japanese modes clearer (the verdict)", "verdict": str(verdict)},
            {"part": "clearer in earlier layers", "verdict": str(earlier), "note": earlier_note},
        ]
    )
    notes = [
        reason,
        *(_selection_note(s) for s in selections),
        *(_control_note(c, spec) for c in controls),
        f"clearer in earlier layers (sub-verdict): {earlier} ({earlier_note}); "
        + "; ".join(f"{s.tokens!r}: {s.early_note}" for s in selections),
        _data_units_note(study.scores, study.evidence, spec),
        *(_spread_note(s) for s in selections),
        _count_note(pairs),
    ]
    if study.test.smallest_p >= alpha:
        notes.append(
            f"with {n} subjects and these attributes the test cannot reach p < {alpha}: "
            f"there are only {round(1 / study.test.smallest_p)} relabelings, so its "
            f"smallest one-sided p is {study.test.smallest_p:.3g}"
        )
    return spec.result(
        evidence.model,
        verdict,
        EFFECT_NAME if matched is not None else UNMATCHED_EFFECT_NAME,
        n=n,
        effect=float(per_j.mean()),
        ci=shown.ci,
        # The p against the claim: the intersection-union test's, the largest of its parts.
        pvalue=max(tests),
        notes=tuple(notes),
        tables=tables,
    )


class Selection(NamedTuple):
    """One token selection's test: scores per sample, J per subject and layer, the
    randomization test, the subject-bootstrap CI and the early/late comparison."""

    tokens: str
    evidence: Evidence
    scores: pd.DataFrame
    j: pd.DataFrame
    per_subject: pd.DataFrame
    test: RelabelTest
    ci: tuple[float, float]
    early_late: pd.DataFrame
    early_note: str


def analyse(evidence: Evidence, spec: ClaimSpec = SPEC) -> Selection:
    """The claim's test on one token selection's evidence."""
    # Seed-independent, so cached: a warm run reads it (KDEs of every sample, ~10 s).
    fields = spec.cache_fields(sample_scores, modes, bulk_units)
    scores = evidence.cached_table(
        "japanese-samples", fields, lambda: sample_scores(evidence, spec)
    )
    j = contrasts(scores)
    per_subject = _per_subject(j, evidence.n_layers)
    if per_subject.empty:
        raise InsufficientDataError("no subject has Japanese and another attribute to compare")
    resamples = int(spec.thresholds["bootstrap_resamples"])
    test = relabel_test(scores, "score", evidence.seed, **_relabel_settings(spec))
    ci = _mean_ci(per_subject["J"].to_numpy(), evidence.seed, resamples)
    early_late, note = _early_late(per_subject, evidence.n_layers, evidence.seed, resamples)
    return Selection(
        evidence.config.extraction.tokens,
        evidence,
        scores,
        j,
        per_subject,
        test,
        ci,
        early_late,
        note,
    )


# ------------------------------------------------------------------ sentence length


class Control(NamedTuple):
    """The test with one pair-level covariate regressed out (under the token-matched
    selection)."""

    name: str
    overlap: float  # share of Japanese pairs inside the other pairs' covariate range
    slope: float  # score per unit of the covariate, across non-Japanese pairs
    shift: float  # what the slope takes off mean J (b x Japanese's excess covariate)
    test: RelabelTest | None  # None: not separable (too little overlap)


# What besides being Japanese could make a pair's modes score higher, each a pair-level
# covariate regressed out in turn: longer sentences; sentences that sit close to their
# pair's centroid (near-identical sentences stack a coordinate's values into a mode, and
# reading one token type makes sentences alike); a narrower bulk (the score divides by it).
CONTROLS = ("sentence length", "sentence homogeneity", "bulk spread")


def pair_covariates(selection: Selection) -> pd.DataFrame:
    """Per pair: its score (mean over layers) and the CONTROLS' covariates: mean log token
    count, mean log dispersion (sentences around the centroid, in bulk units) and mean log
    spread relative to the median of its subject's samples at each layer."""
    evidence, scores = selection.evidence, selection.scores
    log_tokens = np.log(np.asarray(evidence.activations.n_tokens, dtype=np.float64))
    tokens = evidence.pairs.assign(
        length=[float(log_tokens[r].mean()) for r in evidence.pairs["rows"]]
    )[["pair", "length"]]
    per_sample = scores.assign(
        homogeneity=np.log(scores["dispersion"].clip(lower=1e-12)),
        spread_rel=np.log(
            scores["spread"] / scores.groupby(["subject", "layer"])["spread"].transform("median")
        ),
    )
    per_pair = (
        per_sample.groupby(["pair", "subject", "japanese"])[["score", "homogeneity", "spread_rel"]]
        .mean()
        .reset_index()
        .merge(tokens, on="pair")
    )
    return per_pair.rename(
        columns={
            "length": "sentence length",
            "homogeneity": "sentence homogeneity",
            "spread_rel": "bulk spread",
        }
    )


def covariate_controls(selection: Selection, spec: ClaimSpec = SPEC) -> list[Control]:
    per_pair = pair_covariates(selection)
    return [control(per_pair, name, selection.evidence.seed, spec) for name in CONTROLS]


def control(per_pair: pd.DataFrame, covariate: str, seed: int, spec: ClaimSpec = SPEC) -> Control:
    """One covariate regressed out: the slope is fitted within subjects over the non-Japanese
    pairs only (fitted over all, it would absorb a Japanese effect into the covariate); see
    ``covariate_adjusted_test``. Japanese pairs must lie inside the other pairs' range of the
    covariate, widened by ``length_extrapolation`` of its span each way."""
    japanese, others = per_pair[per_pair["japanese"]], per_pair[~per_pair["japanese"]]
    lo, hi = others[covariate].min(), others[covariate].max()
    reach = spec.thresholds["length_extrapolation"] * (hi - lo)
    overlap = float(japanese[covariate].between(lo - reach, hi + reach).mean())
    subjects = []
    for _, group in per_pair.groupby("subject", sort=False):
        ja, rest = group[group["japanese"]], group[~group["japanese"]]
        if ja.empty or rest.empty:
            continue
        y = np.concatenate([[ja["score"].mean()], rest["score"].to_numpy()])
        x = np.concatenate([[ja[covariate].mean()], rest[covariate].to_numpy()])
        subjects.append((y, x))
    test, slope, shift = covariate_adjusted_test(subjects, seed, **_relabel_settings(spec))
    separable = overlap >= spec.thresholds["min_length_overlap"]
    return Control(covariate, overlap, slope, shift, test if separable else None)


class Standing(NamedTuple):
    """Japanese among the attributes: its contrast against every other attribute's."""

    rank: int  # by mean contrast, 1: the most distinct
    n_attributes: int
    statistic: float  # Japanese's contrast in sds of the other attributes' contrasts
    pvalue: float  # one-sided, from the t prediction interval


def standing(scores: pd.DataFrame) -> Standing:
    """Does Japanese stand out among the attributes? Each attribute's contrast D_a is its
    score minus the mean of the other attributes' in the same subject and layer, averaged
    over subjects and layers (D of Japanese is mean J). Attributes carry effects of their own
    (a style's sentences share directions in every subject), so the within-subject
    randomization test rejects exchangeability for many attributes at once; whether Japanese
    stands out is a question about attributes as units: Japanese's D against the others' as a
    normal sample, t = (D_ja - mean D) / (sd D sqrt(1 + 1/k)) with k - 1 degrees of freedom
    (the one-sided prediction-interval test). With 12 attributes a rank alone can give no p
    below 1/12."""
    per = scores.groupby(["subject", "layer", "attribute"])["score"].mean().unstack("attribute")
    k = per.shape[1]
    contrast = per.sub((per.sum(axis=1).to_numpy()[:, None] - per) / (k - 1)).mean()
    names = [a for a in contrast.index if is_japanese(a)]
    if not names or k < 4:
        return Standing(k, k, math.nan, 1.0)
    japanese = float(contrast[names[0]])
    others = contrast.drop(names).to_numpy(dtype=np.float64)
    rank = 1 + int(np.sum(others > japanese))
    sd = float(np.std(others, ddof=1))
    if sd == 0:
        return Standing(rank, k, math.nan, 1.0 if japanese <= others.mean() else 0.0)
    t = (japanese - float(others.mean())) / (sd * math.sqrt(1 + 1 / others.size))
    return Standing(rank, k, t, float(stats.t.sf(t, others.size - 1)))


def covariate_adjusted_test(
    subjects: Sequence[tuple[np.ndarray, np.ndarray]],
    seed: int = 0,
    max_exact: int = 1 << 20,
    draws: int = 20_000,
) -> tuple[RelabelTest, float, float]:
    """The randomization test of mean J with a pair-level covariate (sentence length, ...)
    regressed out, and the observed slope and what it takes off mean J.

    ``subjects``: per subject, pair scores ``y`` and covariates ``x`` (e.g. mean log tokens) of its
    attributes, Japanese first. Under a relabeling, the attribute playing Japanese in each
    subject is held out: the slope b is fitted within subjects on the other attributes only
    (pooled over subjects), and J = (y_c - mean y_others) - b (x_c - mean x_others). Refitting
    per relabeling keeps every candidate out of sample, as Japanese is in the observed
    statistic; adjusting once with the observed slope would compare Japanese's out-of-sample
    residual with the others' fitted ones, whose spread the fit shrinks (a planted pure length
    effect then read SUPPORTED in 10% of 50 reps at alpha 0.05)."""
    dy, dx, sxx, sxy = [], [], [], []
    for y, x in subjects:
        k = len(y)
        held = ~np.eye(k, dtype=bool)  # row c: the attributes other than candidate c
        ox, oy = np.where(held, x[None, :], np.nan), np.where(held, y[None, :], np.nan)
        mx, my = np.nanmean(ox, axis=1), np.nanmean(oy, axis=1)
        sxx.append(np.nansum((ox - mx[:, None]) ** 2, axis=1))
        sxy.append(np.nansum((ox - mx[:, None]) * (oy - my[:, None]), axis=1))
        dy.append(y - my)
        dx.append(x - mx)

    def statistic(choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean J and slope for each row of candidate indices (one per subject)."""
        columns = range(len(subjects))
        total_xx = sum(sxx[s][choice[:, s]] for s in columns)
        total_xy = sum(sxy[s][choice[:, s]] for s in columns)
        slope = np.divide(total_xy, total_xx, out=np.zeros_like(total_xy), where=total_xx > 0)
        j = np.mean([dy[s][choice[:, s]] - slope * dx[s][choice[:, s]] for s in columns], axis=0)
        return j, slope

    observed_choice = np.zeros((1, len(subjects)), dtype=np.int64)
    observed, slope = (float(v[0]) for v in statistic(observed_choice))
    total = math.prod(len(y) for y, _ in subjects)
    exact = total <= max_exact
    if exact:
        grids = np.meshgrid(*[np.arange(len(y)) for y, _ in subjects], indexing="ij")
        choices = np.stack([g.ravel() for g in grids], axis=1)
    else:
        rng = np.random.default_rng(seed)
        choices = np.stack([rng.integers(0, len(y), draws) for y, _ in subjects], axis=1)
    null, _ = statistic(choices)
    test = randomization_pvalues(observed, null, exact, smallest_p=1 / total)
    shift = slope * float(np.mean([d[0] for d in dx]))
    return test, slope, shift


# ------------------------------------------------------------------------ the verdict


def decide_verdict(
    study: Selection,
    matched: Selection | None,
    standings: dict[str, Standing],
    controls: Sequence[Control],
    alpha: float,
    unavailable: str = "",
) -> tuple[Verdict, str]:
    """The verdict and the reason it gives, from the tests under both token selections,
    Japanese's rank among the attributes and the covariate-adjusted tests (a pure function
    of them)."""
    shown_study = f"{study.tokens!r} p(J > 0) = {study.test.p_greater:.3g}"
    if matched is None:
        return Verdict.INCONCLUSIVE, (
            f"token-matched control not run ({unavailable}): the study's selection alone "
            f"({shown_study}) cannot separate Japanese from the token it is read at"
        )
    shown_matched = f"{matched.tokens!r} p(J > 0) = {matched.test.p_greater:.3g}"
    both = f"significant under both selections ({shown_study}, {shown_matched})"
    if study.test.p_less < alpha and matched.test.p_less < alpha:
        return Verdict.REFUTED, (
            f"Japanese modes less distinct under both token selections ({study.tokens!r} "
            f"p(J < 0) = {study.test.p_less:.3g}, {matched.tokens!r} "
            f"{matched.test.p_less:.3g})"
        )
    up_study, up_matched = study.test.p_greater < alpha, matched.test.p_greater < alpha
    if up_study and not up_matched:
        return Verdict.INCONCLUSIVE, (
            f"confound: token selection; the effect under {shown_study} is not significant "
            f"when every sentence is read at its last token ({shown_matched})"
        )
    if up_matched and not up_study:
        return Verdict.INCONCLUSIVE, (
            f"significant under {shown_matched} but not under the study's selection ({shown_study})"
        )
    if not up_study:
        return Verdict.INCONCLUSIVE, (
            f"no significant difference in either direction ({shown_study}, {shown_matched})"
        )
    behind = {tokens: st for tokens, st in standings.items() if not st.pvalue < alpha}
    if behind:
        shown = ", ".join(
            f"under {t!r} it ranks {st.rank} of {st.n_attributes}, p = {st.pvalue:.3g}"
            for t, st in behind.items()
        )
        return Verdict.INCONCLUSIVE, (
            f"{both}, but Japanese does not stand out among the attributes ({shown}; "
            "prediction-interval test of its contrast against the other attributes'): other "
            "attributes differ from the rest comparably, so the test does not single out "
            "Japanese, which 'most strikingly' does"
        )
    for c in controls:
        if c.test is None:
            return Verdict.INCONCLUSIVE, (
                f"confound: {c.name}; {both}, but only {c.overlap:.0%} of Japanese pairs lie "
                f"inside the other pairs' range of {c.name}, so it cannot be regressed out"
            )
        if c.test.p_greater >= alpha:
            return Verdict.INCONCLUSIVE, (
                f"confound: {c.name}; {both} but not once {c.name} is regressed out "
                f"(p(J > 0) = {c.test.p_greater:.3g})"
            )
    adjusted = ", ".join(f"{c.name} {c.test.p_greater:.3g}" for c in controls if c.test)
    return Verdict.SUPPORTED, (
        f"{both}, Japanese standing out among the attributes under both ("
        + ", ".join(f"{t!r} p = {st.pvalue:.3g}" for t, st in standings.items())
        + f"), and with each covariate regressed out (p(J > 0): {adjusted})"
    )


def clearer_early(selections: Sequence[Selection], n_layers: int) -> tuple[Verdict, str]:
    """'Clearer in earlier layers': first-third minus last-third mean relative J (J over the
    two scores' sum, so that a depth-dependent scale of the scores does not decide), its CI
    above 0 under every selection (SUPPORTED), below 0 under every one (REFUTED), else
    INCONCLUSIVE, saying when the selections significantly disagree; a single selection (no
    token-matched control) decides nothing."""
    if n_layers < 3:
        return Verdict.INCONCLUSIVE, f"{n_layers} layers do not split into thirds"
    if len(selections) < 2:
        return Verdict.INCONCLUSIVE, "no token-matched selection to confirm it"
    diffs = [s.early_late.iloc[2] for s in selections]
    if all(d["ci_lo"] > 0 for d in diffs):
        return Verdict.SUPPORTED, "earlier under every selection"
    if all(d["ci_hi"] < 0 for d in diffs):
        return Verdict.REFUTED, "later under every selection"
    earlier = [s.tokens for s, d in zip(selections, diffs, strict=True) if d["ci_lo"] > 0]
    later = [s.tokens for s, d in zip(selections, diffs, strict=True) if d["ci_hi"] < 0]
    if earlier and later:
        return Verdict.INCONCLUSIVE, (
            f"contradicted: earlier under {', '.join(map(repr, earlier))}, later under "
            f"{', '.join(map(repr, later))}"
        )
    return Verdict.INCONCLUSIVE, "not resolved under every selection"


def _selection_table(
    selections: Sequence[Selection],
    controls: Sequence[Control],
    standings: dict[str, Standing],
) -> pd.DataFrame:
    rows = []
    for s in selections:
        diff, place = s.early_late.iloc[2], standings[s.tokens]
        rows.append(
            {
                "test": f"tokens {s.tokens!r}",
                "mean_J": float(s.per_subject["J"].mean()),
                "ci_lo": s.ci[0],
                "ci_hi": s.ci[1],
                "p_J_greater": s.test.p_greater,
                "p_J_less": s.test.p_less,
                "subjects_J_positive": int((s.per_subject["J"] > 0).sum()),
                "japanese_rank": f"{place.rank} of {place.n_attributes}",
                "p_stands_out": place.pvalue,
                "first_minus_last_third_relative": float(diff["mean_relative_J"]),
            }
        )
    for c in controls:
        if c.test is not None:
            rows.append(
                {
                    "test": f"tokens {selections[-1].tokens!r}, {c.name} regressed out",
                    "mean_J": float(selections[-1].per_subject["J"].mean()) - c.shift,
                    "p_J_greater": c.test.p_greater,
                    "p_J_less": c.test.p_less,
                }
            )
    return pd.DataFrame(rows)


def _selection_note(s: Selection) -> str:
    per_j = s.per_subject["J"].to_numpy()
    jp, other = s.scores[s.scores["japanese"]], s.scores[~s.scores["japanese"]]
    return (
        f"tokens {s.tokens!r}: mean J {per_j.mean():.3g} [95% CI {s.ci[0]:.3g}, "
        f"{s.ci[1]:.3g}], {int((per_j > 0).sum())} of {len(per_j)} subjects J > 0; "
        f"randomization test ({'all relabelings' if s.test.exact else 'Monte Carlo'}) "
        f"p(J > 0) = {s.test.p_greater:.3g}, p(J < 0) = {s.test.p_less:.3g}; mean score "
        f"Japanese {jp['score'].mean():.3g}, others {other['score'].mean():.3g}; modes above "
        f"the floor per sample {jp['n_distinct'].mean():.2f} against "
        f"{other['n_distinct'].mean():.2f}"
    )


def _control_note(c: Control, spec: ClaimSpec) -> str:
    head = (
        f"{c.name} (tokens {MATCHED_TOKENS!r}): {c.overlap:.0%} of Japanese pairs lie inside "
        f"the other pairs' range widened by {spec.thresholds['length_extrapolation']:.0%} of "
        f"its span each way (at least {spec.thresholds['min_length_overlap']:.0%} needed); "
        f"slope across non-Japanese pairs within subjects {c.slope:.3g}, taking "
        f"{c.shift:.3g} off mean J"
    )
    if c.test is None:
        return head + "; not regressed out (the slope would be extrapolated)"
    return head + (
        f"; regressed out: p(J > 0) = {c.test.p_greater:.3g}, p(J < 0) = {c.test.p_less:.3g}"
    )


def _spread_note(s: Selection) -> str:
    jp, other = s.scores[s.scores["japanese"]], s.scores[~s.scores["japanese"]]
    spread = jp["spread"].median() / other["spread"].median()
    dispersion = jp["dispersion"].median() / other["dispersion"].median()
    return (
        f"tokens {s.tokens!r}: Japanese samples' bulk spread (robust sd) is {spread:.2f} x "
        f"the others' (medians), their sentences' dispersion around the pair centroid "
        f"{dispersion:.2f} x"
    )


def _per_subject(j: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """Per subject: J over layers and its thirds, and the relative J (J over the two scores'
    sum, in [-1, 1]) of the first and last thirds, on which 'clearer early' is decided."""
    early, late = thirds(n_layers)
    total = j["japanese"] + j["others"]
    j = j.assign(relative=(j["J"] / total.where(total > 0)).fillna(0.0))
    rows = []
    for subject, group in j.groupby("subject", sort=False):
        by_layer = group.set_index("layer")["J"]
        relative = group.set_index("layer")["relative"]
        r_early = float(relative.reindex(early).mean())
        r_late = float(relative.reindex(late).mean())
        rows.append(
            {
                "subject": subject,
                "J": float(by_layer.mean()),
                "J_first_third": float(by_layer.reindex(early).mean()),
                "J_last_third": float(by_layer.reindex(late).mean()),
                "relative_first_third": r_early,
                "relative_last_third": r_late,
                "early_minus_late": r_early - r_late,
                "layers_with_J_positive": int((by_layer > 0).sum()),
                "layers": len(by_layer),
            }
        )
    columns = [
        "subject",
        "J",
        "J_first_third",
        "J_last_third",
        "relative_first_third",
        "relative_last_third",
        "early_minus_late",
    ]
    return pd.DataFrame(rows, columns=[*columns, "layers_with_J_positive", "layers"])


def _per_layer(j: pd.DataFrame) -> pd.DataFrame:
    """Per layer: mean J, the share of subjects with J > 0, and J relative to the two
    scores' sum (in [-1, 1]; J itself is on the scale of relative prominences, ~1e-3 in
    real models, too small to see beside a share on one plot)."""
    total = j["japanese"] + j["others"]
    relative = (j["J"] / total.where(total > 0)).fillna(0.0)
    grouped = j.assign(relative=relative, positive=j["J"] > 0).groupby("layer")
    return pd.DataFrame(
        {
            "mean_J": grouped["J"].mean(),
            "share_subjects_J_positive": grouped["positive"].mean(),
            "mean_relative_J": grouped["relative"].mean(),
        }
    ).reset_index()


def _early_late(
    per_subject: pd.DataFrame, n_layers: int, seed: int, resamples: int
) -> tuple[pd.DataFrame, str]:
    early, late = thirds(n_layers)
    rows = []
    for part, column, span in (
        ("first third", "relative_first_third", f"{early[0]}-{early[-1]}"),
        ("last third", "relative_last_third", f"{late[0]}-{late[-1]}"),
        ("first minus last", "early_minus_late", ""),
    ):
        x = per_subject[column].to_numpy()
        lo, hi = _mean_ci(x, seed, resamples)
        rows.append(
            {"part": part, "layers": span, "mean_relative_J": x.mean(), "ci_lo": lo, "ci_hi": hi}
        )
    table = pd.DataFrame(rows)
    diff = table.iloc[2]
    if n_layers < 3:
        return table, f"early vs late not assessed: {n_layers} layers do not split into thirds"
    if diff["ci_lo"] > 0:
        said = "yes, the CI excludes 0"
    elif diff["ci_hi"] < 0:
        said = "no, the effect is larger in the last third (the CI excludes 0)"
    else:
        said = "not resolved, the CI includes 0"
    return table, (
        f"early > late: {said}; mean relative J first third "
        f"{table.iloc[0]['mean_relative_J']:.3g}, last third "
        f"{table.iloc[1]['mean_relative_J']:.3g}, difference {diff['mean_relative_J']:.3g} "
        f"[95% CI {diff['ci_lo']:.3g}, {diff['ci_hi']:.3g}]"
    )


def _mean_ci(x: np.ndarray, seed: int, resamples: int) -> tuple[float, float]:
    """The subject-bootstrap CI of a mean (inference.bootstrap_mean's expanded percentile
    interval) over the subjects that have the value; not defined below two."""
    finite = x[np.isfinite(x)]
    if finite.size < 2:
        return math.nan, math.nan
    return bootstrap_mean(finite, seed=seed, n_resamples=resamples).confidence_interval


def _relabel_settings(spec: ClaimSpec) -> dict[str, int]:
    return {
        "max_exact": int(spec.thresholds["max_exact_relabelings"]),
        "draws": int(spec.thresholds["relabel_draws"]),
    }


def _data_units_note(scores: pd.DataFrame, evidence: Evidence, spec: ClaimSpec) -> str:
    """The same test with one shared bandwidth in data units: does the verdict survive?"""
    alpha = spec.thresholds["alpha"]
    per_subject = _per_subject(contrasts(scores, "score_data_units"), evidence.n_layers)
    per_j = per_subject["J"].to_numpy()
    test = relabel_test(scores, "score_data_units", evidence.seed, **_relabel_settings(spec))
    direction = "J > 0" if test.p_greater < alpha else "J < 0" if test.p_less < alpha else "neither"
    return (
        f"sensitivity, one data-unit bandwidth per (subject, layer) (modes.common_bandwidth, "
        f"no standardization): mean J {per_j.mean():.3g}, {int((per_j > 0).sum())} of "
        f"{len(per_j)} subjects J > 0, p(J > 0) = {test.p_greater:.3g}, p(J < 0) = "
        f"{test.p_less:.3g}: significant for {direction}; first third minus last third "
        f"{per_subject['early_minus_late'].mean():.3g}"
    )


def _pairs(scores: pd.DataFrame, evidence: Evidence) -> pd.DataFrame:
    """Per pair: mean scores over layers, mean tokens, and the share 'seed' reads whole."""
    frame = evidence.dataset.frame.reset_index(drop=True)
    tokens = np.asarray(evidence.activations.n_tokens, dtype=np.float64)
    whole = np.array([seed_prefix(t) == t for t in frame["text"]])
    rows = evidence.pairs["rows"]
    info = evidence.pairs.assign(
        mean_tokens=[float(tokens[r].mean()) for r in rows],
        share_read_whole_by_seed=[float(whole[r].mean()) for r in rows],
    )[["pair", "mean_tokens", "share_read_whole_by_seed"]]
    columns = ["score", "score_data_units", "n_distinct", "spread"]
    mean_score = scores.groupby("pair")[columns].mean().reset_index()
    keep = scores[["pair", "subject", "attribute", "japanese"]].drop_duplicates("pair")
    return keep.merge(mean_score, on="pair").merge(info, on="pair").drop(columns="pair")


def _per_attribute(pairs: pd.DataFrame) -> pd.DataFrame:
    columns = ["score", "score_data_units", "n_distinct", "spread", "mean_tokens"]
    table = pairs.groupby("attribute", sort=False)[[*columns, "share_read_whole_by_seed"]].mean()
    return table.sort_values("score", ascending=False).reset_index()


def _spearman(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return math.nan, math.nan
    rho, p = stats.spearmanr(x, y)
    return float(rho), float(p)


def _shown_rho(pairs: pd.DataFrame) -> str:
    rho, p = _spearman(pairs["mean_tokens"], pairs["score"])
    if math.isnan(rho):
        return "not defined (fewer than 3 pairs, or token counts or scores that do not vary)"
    return f"{rho:.2f} (p {p:.2g})"


def _count_note(pairs: pd.DataFrame) -> str:
    jp, other = pairs[pairs["japanese"]], pairs[~pairs["japanese"]]
    return (
        f"token counts under {STUDY_TOKENS!r}: Japanese sentences average "
        f"{jp['mean_tokens'].mean():.1f} tokens, the others {other['mean_tokens'].mean():.1f}; "
        f"{jp['share_read_whole_by_seed'].mean():.0%} of Japanese sentences have no space and "
        f"are read whole by 'seed', {other['share_read_whole_by_seed'].mean():.0%} of the "
        "others; Spearman correlation across pairs of mean tokens with the score: "
        f"{_shown_rho(pairs)} over all pairs, {_shown_rho(other)} over non-Japanese pairs "
        "(pairs of one subject are not independent: descriptive)"
    )


test_japanese_sharper_modes = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Six layers: the verdict averages
# J over layers, and "clearest early" is read off thirds of two layers each. Side modes are
# planted by an edit (harness.planted.SideModes has one jitter for every attribute): one
# coordinate per mode, the same coordinates in every sentence, mode j of a side at
# -/+ (15 + 10 j) bulk units from the coordinate's median with N(0, jitter) spread across
# sentences; every pair carries them. A single-coordinate mode holds 22 of a sample's 12,672
# values, so its relative prominence is ~1e-3, the scale of SmolLM2-135M's scores (0.002-0.006).
# Every scenario also plants the token-matched selection of the same sentences: the same
# edit over a fresh bulk whose homogeneous attribute (if any) keeps its length but loses its
# tightening and shift, as reading every sentence at its final token removes them.
JA = "in japanese"
SIX_LAYERS = 6
MODE_POSITION, MODE_SPACING = 15.0, 10.0


def side_modes(
    jitter_japanese: Sequence[float],
    jitter_others: Sequence[float],
    modes_japanese: tuple[int, int] = (2, 1),
    modes_others: tuple[int, int] = (2, 1),
    follow: bool = True,
    sampler: str = "logistic",
) -> Edit:
    """An edit planting (left, right) side modes in every pair, with per-layer jitters (bulk
    units) for the Japanese pairs and the others. Mode coordinates avoid massive dims (any
    coordinate whose median reaches 20 bulk units in some layer). ``follow``: a sentence's
    mode values vary as much as its other coordinates do (its median absolute deviation
    from its pair's centroid, relative to the layer's median sentence), so a sentence
    tightened by its token or its length is tightened in its modes too."""
    ja_jitter = np.asarray(jitter_japanese, dtype=np.float64)
    other_jitter = np.asarray(jitter_others, dtype=np.float64)

    def edit(data: Dataset, resid: np.ndarray, rng: np.random.Generator) -> None:
        unit = bulk_unit(sampler)
        japanese = data.frame["attribute"].map(is_japanese).to_numpy()
        left = max(modes_japanese[0], modes_others[0])
        right = max(modes_japanese[1], modes_others[1])
        medians = np.median(resid, axis=1)  # (layers, d)
        free = np.flatnonzero(np.abs(medians).max(axis=0) < 20 * unit)
        coords = rng.choice(free, left + right, replace=False)
        slots = [(-1.0, j, 0) for j in range(left)] + [(1.0, j, 1) for j in range(right)]
        for layer in range(resid.shape[0]):
            jitter = np.where(japanese, ja_jitter[layer], other_jitter[layer]) * unit
            if follow:
                jitter = jitter * _sentence_spread(data, resid[layer])
            for coord, (sign, j, side) in zip(coords, slots, strict=True):
                count = np.where(japanese, modes_japanese[side], modes_others[side])
                rows = np.flatnonzero(count > j)
                centre = medians[layer, coord]
                offset = sign * (MODE_POSITION + MODE_SPACING * j) * unit
                values = centre + offset + jitter[rows] * rng.standard_normal(rows.size)
                resid[layer, rows, coord] = values.astype(np.float32)

    return edit


def _sentence_spread(data: Dataset, block: np.ndarray) -> np.ndarray:
    """Each sentence's median absolute deviation from its pair's centroid over all
    coordinates, relative to the median sentence's."""
    spread = np.empty(block.shape[0])
    for rows in pair_rows(data):
        deviation = block[rows] - block[rows].mean(axis=0)
        spread[rows] = np.median(np.abs(deviation), axis=1)
    return spread / np.median(spread)


def token_matched(nuisances: Nuisances) -> Nuisances:
    """The same sentences read at their final token: a homogeneous attribute keeps its token
    counts (they belong to the sentences) and loses its tightening and shared shift."""
    return replace(nuisances, homogeneous_tightness=1.0, homogeneous_shift=0.0)


def _modes_scenario(
    name: str,
    truth: bool,
    description: str,
    nuisances: Nuisances,
    jitter_japanese: Sequence[float],
    jitter_others: Sequence[float],
    modes_japanese: tuple[int, int] = (2, 1),
    modes_others: tuple[int, int] = (2, 1),
    follow: bool = True,
    known_miss: str = "",
    matched: Nuisances | None = None,
) -> Scenario:
    """``matched``: the nuisances under the token-matched selection (default: these, less
    any token homogeneity, ``token_matched``)."""
    return planted(
        name,
        truth,
        description,
        Base("logistic", n_layers=SIX_LAYERS),
        nuisances,
        edit=side_modes(jitter_japanese, jitter_others, modes_japanese, modes_others, follow),
        edit_params={
            "jitter_japanese": np.round(jitter_japanese, 6).tolist(),
            "jitter_others": np.round(jitter_others, 6).tolist(),
            "modes_japanese": list(modes_japanese),
            "modes_others": list(modes_others),
            "position": MODE_POSITION,
            "spacing": MODE_SPACING,
            "follow": follow,
        },
        known_miss=known_miss,
        tokens={MATCHED_TOKENS: matched or token_matched(nuisances)},
    )


# Japanese read at one token type: sentence noise x 0.5, a shared shift of 0.5 bulk units.
# Its samples' robust spread is then ~0.78x the others' (SmolLM2-135M 0.68, Gemma-3-270M
# 0.79). Tokens 1.2x the others' (Gemma-3: 21 against 19): lengths overlap, so what decides
# a homogeneity null is the token-matched selection, not the length rule.
TIGHTNESS = 0.5
# Attributes differ in length (log-sd 0.2 of their median tokens), as the dataset's do.
VARIED_LENGTHS = replace(REALISTIC, attribute_length_sd=0.2)
HOMOGENEOUS = replace(
    VARIED_LENGTHS,
    homogeneous_attribute=JA,
    homogeneous_tightness=TIGHTNESS,
    homogeneous_shift=0.5,
    homogeneous_length_factor=1.2,
)
# Pure length effects: Japanese longer (and nothing else about it), every sentence's noise
# shrinking with its length. 3x the tokens (SmolLM2-135M's 62 against 20) at exponent 0.63
# tighten Japanese sentences x 0.5; 1.3x (lengths overlap) tighten them x 0.85 at the same
# exponent and x 0.59 at exponent 2.
LONG_APART = replace(
    VARIED_LENGTHS,
    homogeneous_attribute=JA,
    homogeneous_tightness=1.0,
    homogeneous_length_factor=3.0,
    length_tightening=0.63,
)
LONG_OVERLAPPING = replace(LONG_APART, homogeneous_length_factor=1.3)
LONG_OVERLAPPING_STEEP = replace(LONG_OVERLAPPING, length_tightening=2.0)
OTHERS_JITTER = np.full(SIX_LAYERS, 2.0)
SHARPER_EARLY = np.linspace(1.0, 1.5, SIX_LAYERS)
MASSIVE_GRID = (
    "With massive dims the KDE grid spans their range, so the 31-point peak-merge distance is "
    "~50 robust sd and side modes at 13-30 sd merge into the main peak: the planted Japanese "
    "difference is invisible (scores identical with and without it)."
)
# Real-data nulls (`python -m harness.calibration --permute SET`): the claim compares
# Japanese with the other attributes of each subject, so a model's own activations with
# these labels permuted must not read SUPPORTED.
PERMUTATION_NULLS = ("attribute",)
CALIBRATION = (
    _modes_scenario(
        "Japanese modes sharper and clearest early",
        True,
        "2 left + 1 right single-coordinate side modes in every pair; Japanese jitter 1.0 "
        "(first layer) -> 1.5 (last) bulk units, the others' 2.0 (score ratio ~1.6 early, "
        "~1.3 late; SmolLM2's is ~3.3), under both token selections; per-dim log-scale sd "
        "0.15, offsets 0.2, crossed effects 0.3/0.3/0.2, attributes' lengths log-sd 0.2",
        VARIED_LENGTHS,
        SHARPER_EARLY,
        OTHERS_JITTER,
    ),
    _modes_scenario(
        "Japanese has one more mode",
        True,
        "others 1 left + 1 right side mode, Japanese 2 left + 1 right (SmolLM2: ~2 vs ~3 "
        "distinct modes per sample), all jitter 2.0; the same nuisances",
        VARIED_LENGTHS,
        OTHERS_JITTER,
        OTHERS_JITTER,
        modes_japanese=(2, 1),
        modes_others=(1, 1),
    ),
    _modes_scenario(
        "Japanese modes sharper, read token-homogeneous",
        True,
        "Japanese jitter 1.0 -> 1.5 against 2.0 as the first truth; under 'seed' Japanese "
        "sentences are also tightened x 0.5 about their pair's centroid (modes included), "
        "shifted 0.5 and 1.2x longer, under 'last' only 1.2x longer",
        HOMOGENEOUS,
        SHARPER_EARLY,
        OTHERS_JITTER,
    ),
    _modes_scenario(
        "Japanese modes sharper with massive dims",
        True,
        "Japanese jitter 1.0 -> 1.5 against 2.0 as the first truth; the same nuisances and 3 "
        "massive dims (100-900 bulk units) in every sentence",
        replace(REALISTIC, massive_dims=3),
        SHARPER_EARLY,
        OTHERS_JITTER,
        known_miss=MASSIVE_GRID,
    ),
    _modes_scenario(
        "token-homogeneous Japanese with shared modes tightened",
        False,
        "the same side modes (jitter 2.0) in every pair; under 'seed' Japanese sentences "
        "tightened x 0.5 about their pair's centroid (side-mode coordinates included), a "
        "shared 0.5 shift and 1.2x tokens; under 'last' only the 1.2x tokens",
        HOMOGENEOUS,
        OTHERS_JITTER,
        OTHERS_JITTER,
    ),
    _modes_scenario(
        "token-homogeneous Japanese with shared modes",
        False,
        "as above with the side-mode coordinates left untightened (jitter 2.0 bulk units in "
        "every sentence)",
        HOMOGENEOUS,
        OTHERS_JITTER,
        OTHERS_JITTER,
        follow=False,
    ),
    _modes_scenario(
        "Japanese sentences alike under both selections",
        False,
        "the same side modes (jitter 2.0) in every pair; Japanese sentences tightened about "
        "their pair's centroid (side-mode coordinates included) x 0.5 under 'seed' and x 0.7 "
        "under 'last' (sentences alike whatever token is read), 1.2x tokens: no side-mode "
        "difference, a homogeneity that survives the token-matched selection",
        HOMOGENEOUS,
        OTHERS_JITTER,
        OTHERS_JITTER,
        matched=replace(HOMOGENEOUS, homogeneous_tightness=0.7, homogeneous_shift=0.0),
    ),
    _modes_scenario(
        "Japanese longer, length tightens, lengths apart",
        False,
        "the same side modes (jitter 2.0) in every pair; Japanese sentences 3x longer (no "
        "overlap, as SmolLM2-135M's), every sentence's noise (modes included) x (tokens / "
        "median)^-0.63 under both selections: Japanese x 0.5 tighter",
        LONG_APART,
        OTHERS_JITTER,
        OTHERS_JITTER,
    ),
    _modes_scenario(
        "Japanese longer, length tightens, lengths overlapping",
        False,
        "as above with Japanese 1.3x longer (lengths overlap: attributes' lengths differ, "
        "log-sd 0.2), exponent 0.63 (Japanese x 0.85 tighter)",
        LONG_OVERLAPPING,
        OTHERS_JITTER,
        OTHERS_JITTER,
    ),
    _modes_scenario(
        "Japanese longer, length tightens steeply, lengths overlapping",
        False,
        "as above with exponent 2 (Japanese x 0.59 tighter; inside a pair the longest "
        "sentences ~0.6x the median's spread)",
        LONG_OVERLAPPING_STEEP,
        OTHERS_JITTER,
        OTHERS_JITTER,
    ),
    _modes_scenario(
        "identical attributes with massive dims",
        False,
        "the same side modes (jitter 2.0) in every pair; 3 massive dims (100-900 bulk units) "
        "and the realistic nuisances",
        replace(REALISTIC, massive_dims=3),
        OTHERS_JITTER,
        OTHERS_JITTER,
    ),
)
