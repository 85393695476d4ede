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
from harness.evidence import Evidence
from harness.extraction import seed_prefix
from harness.planted import REALISTIC, Base, Nuisances, bulk_unit
from harness.sources import BEYOND_GAUSSIAN_MODELS
from harness.stats import modes
from harness.stats.attribution import robust_spread

# Attribute names that mean "the sentence is in Japanese" (the shipped set and the seed's
# JSON use "in japanese"); matched case-insensitively.
JAPANESE = ("in japanese", "japanese")

SPEC = ClaimSpec(
    study_models=BEYOND_GAUSSIAN_MODELS,
    id="japanese-sharper-modes",
    version=2,
    caveats=(
        (
            "Token selection: the study's seed mode cuts the last word at the last space, so "
            "Japanese sentences (no spaces) keep their last token while others lose it; the "
            "effect is shown under --lm-tokens last too."
        ),
        (
            "Japanese sentences tokenize to more tokens; the statistic against token count is "
            "reported beside, and a token-count effect cannot be separated from a language effect"
            " with this dataset."
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
        "at one point would make (3 / (n h sqrt(2 pi))): one or two stray coordinates make "
        "the 1e-4-scale bumps the peak finder keeps, and this floor, unlike a fixed relative "
        "threshold, follows the sample size n and bandwidth h. A sum, so that more modes and "
        "taller modes both count and the score is continuous. The samples of one (subject, "
        "layer) are compared on one footing: each is centred on its median and divided by "
        "its robust spread min(sd, IQR/1.349), then all are smoothed at one bandwidth (the "
        "study's 4.5 x Scott factor in those units) on one 1000-point grid (the common range "
        "padded by 4 bandwidths, so that a cluster at the range's end keeps its peak). Why: "
        "the study's own-sd bandwidth is widened by a sample's own far modes; a shared "
        "bandwidth in data units makes a wider bulk's side modes look taller relative to its "
        "lower primary, and a shared sd-based bandwidth hides the modes when most compared "
        "samples carry them. J(subject, layer) = score(Japanese) - mean score(other "
        "attributes); subjects are the units: J is averaged over layers per subject and "
        "tested by a stratified randomization test: under the null, Japanese is "
        "exchangeable with the other attributes within each subject, so the null "
        "distribution of mean J comes from letting each subject's attributes in turn play "
        "Japanese (all relabelings, or 20,000 seeded draws when there are more than 2^20); "
        "a signed-rank or t test assumes J symmetric about 0, which J, one sample minus the "
        "mean of several, is not when scores are skewed. A 95% percentile-bootstrap CI over "
        "subjects for the mean J. SUPPORTED when p(J > 0) < "
        "0.05, REFUTED when p(J < 0) < 0.05, INCONCLUSIVE otherwise or with fewer than 4 "
        "subjects having Japanese and another attribute, NOT_APPLICABLE without a Japanese "
        "attribute. Reported beside the verdict: early vs late (mean J over the first third "
        "of layers minus the last third, subject-bootstrap CI); the same test with a shared "
        "data-unit bandwidth (modes.common_bandwidth); the token-selection confound (under "
        "'seed' Japanese sentences, having no space, are read whole while others lose their "
        "last word; '--lm-tokens last' is the control); token counts and their correlation "
        "with the score across pairs; the bulk's spread, Japanese vs others."
    ),
    multiplicity=(
        "One randomization test on mean J (layers averaged per subject before testing). Early "
        "versus late, the shared-bandwidth variant and the token controls are reported, not "
        "tested."
    ),
    thresholds={
        "alpha": 0.05,
        "min_subjects": 4,
        "floor_values": 3,
        "grid_pad_bandwidths": 4,
        "bootstrap_resamples": 2000,
        "max_exact_relabelings": 1 << 20,
        "relabel_draws": 20_000,
    },
    source_numbers={
        "all six models (GPT-2 S/M/L, Pythia 160m/410m/1b)": (
            "Japanese secondary modes clearer and more distinct, by visual examination; "
            "clearer in earlier layers (no numbers given)"
        ),
    },
)

EFFECT_NAME = "mean J (Japanese minus other attributes' secondary-mode distinctness)"


# ------------------------------------------------------------------------------ the score


class Distinctness(NamedTuple):
    """One sample's secondary-mode distinctness among the samples it is compared with.

    A NamedTuple, not a dataclass: calibration tests load this module by path, where a
    dataclass with postponed annotations cannot find its module."""

    score: float  # sum of rel_prominence over the secondary modes above the floor
    n_secondary: int  # secondary modes the peak finder reports
    n_distinct: int  # of those, the ones above the floor
    bandwidth: float  # in the units the samples were compared in


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
        arrays = [(x - np.median(x)) / robust_spread(x) for x in raw]
        h = float(np.median([modes.BW_FACTOR * x.size ** (-1 / 5) for x in arrays]))
    elif units == "data":
        arrays = raw
        h = modes.common_bandwidth(arrays)
    else:
        raise ValueError(f"units must be 'standardized' or 'data', got {units!r}")
    lo = min(float(x.min()) for x in arrays) - pad_bandwidths * h
    hi = max(float(x.max()) for x in arrays) + pad_bandwidths * h
    out = []
    summaries = modes.summarize_each(arrays, bandwidth=h, grid=(lo, hi))
    for x, summary in zip(arrays, summaries, strict=True):
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
            for pair, attribute, x, d, dd in zip(
                group["pair"], group["attribute"], values, found, in_data_units, strict=True
            ):
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
                        "spread": robust_spread(x),
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


class RelabelTest(NamedTuple):
    p_greater: float  # one-sided p for mean J > 0
    p_less: float  # one-sided p for mean J < 0
    smallest_p: float  # the least p any data could give: 1 / number of relabelings
    exact: bool  # every relabeling enumerated, or a seeded Monte Carlo sample of them


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


def relabel_pvalues(
    subjects: Sequence[np.ndarray], seed: int = 0, max_exact: int = 1 << 20, draws: int = 20_000
) -> RelabelTest:
    """``relabel_test`` on one array of attribute scores per subject, Japanese first."""
    rows = []
    for attribute_scores in subjects:
        v = np.asarray(attribute_scores, dtype=np.float64)
        rows.append(v - (v.sum() - v) / (len(v) - 1))  # J if each attribute were Japanese
    observed = float(np.mean([r[0] for r in rows]))
    total = math.prod(len(r) for r in rows)
    exact = total <= max_exact
    if exact:
        sums = np.zeros(1)
        for r in rows:
            sums = (sums[:, None] + r[None, :]).ravel()
        null = sums / len(rows)
    else:
        rng = np.random.default_rng(seed)
        null = np.mean([r[rng.integers(0, len(r), draws)] for r in rows], axis=0)
    # Ties (e.g. all scores 0) count as at least as extreme: they give p = 1, not 0. A
    # Monte Carlo p counts the observed labelling once more, so that it is never 0.
    tol = 1e-12 * max(1.0, abs(observed))
    extra = 0 if exact else 1
    ge, le = np.sum(null >= observed - tol), np.sum(null <= observed + tol)
    return RelabelTest(
        p_greater=float((ge + extra) / (null.size + extra)),
        p_less=float((le + extra) / (null.size + extra)),
        smallest_p=1 / total,
        exact=exact,
    )


def bootstrap_mean_ci(
    x: np.ndarray, seed: int, n_resamples: int = 2000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile CI for the mean, resampling the units (subjects) with replacement."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def thirds(n_layers: int) -> tuple[list[int], list[int]]:
    """First and last third of the layers (at least one layer each)."""
    k = max(1, n_layers // 3)
    return list(range(k)), list(range(n_layers - k, n_layers))


# ----------------------------------------------------------------------------- evaluate


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    alpha = spec.thresholds["alpha"]
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

    # Seed-independent, so cached: a warm run reads it (KDEs of every sample, ~10 s).
    fields = spec.cache_fields(sample_scores, modes)
    scores = evidence.cached_table(
        "japanese-samples", fields, lambda: sample_scores(evidence, spec)
    )
    j = contrasts(scores)
    per_subject = _per_subject(j, evidence.n_layers)
    n = len(per_subject)
    pairs = _pairs(scores, evidence)
    tables = {
        "per_layer": _per_layer(j),
        "per_subject": per_subject,
        "per_attribute": _per_attribute(pairs),
        "pairs": pairs,
    }
    confounds = _confound_notes(evidence, pairs)
    if n < spec.thresholds["min_subjects"]:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=n,
            notes=(
                f"only {n} subjects have Japanese and at least one other attribute; at least "
                f"{int(spec.thresholds['min_subjects'])} are needed for a test across subjects",
                *confounds,
            ),
            tables=tables,
        )

    per_j = per_subject["J"].to_numpy()
    test = relabel_test(scores, "score", evidence.seed, **_relabel_settings(spec))
    p_greater, p_less = test.p_greater, test.p_less
    resamples = int(spec.thresholds["bootstrap_resamples"])
    ci = bootstrap_mean_ci(per_j, evidence.seed, resamples)
    # The reported p is always the one against the claim (J > 0), whatever the verdict:
    # version 1 gave p(J < 0) beside a REFUTED verdict, so a small p meant opposite things.
    if p_greater < alpha:
        verdict = Verdict.SUPPORTED
    elif p_less < alpha:
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.INCONCLUSIVE
    pvalue = p_greater

    early_late, early_note = _early_late(per_subject, evidence.n_layers, evidence.seed, resamples)
    tables["early_late"] = early_late
    jp, other = scores[scores["japanese"]], scores[~scores["japanese"]]
    notes = [
        f"{int((per_j > 0).sum())} of {n} subjects have J > 0 (J averaged over "
        f"{evidence.n_layers} layers); randomization test over which attribute is Japanese "
        f"in each subject ({'all relabelings' if test.exact else 'Monte Carlo'}): one-sided "
        f"p(J > 0) = {p_greater:.3g}, p(J < 0) = {p_less:.3g}",
        f"mean distinctness score: Japanese {jp['score'].mean():.3g}, other attributes "
        f"{other['score'].mean():.3g}; secondary modes above the floor per sample: Japanese "
        f"{jp['n_distinct'].mean():.2f}, others {other['n_distinct'].mean():.2f}",
        early_note,
        _data_units_note(scores, evidence, spec),
        f"bulk spread (robust sd): Japanese samples' median is "
        f"{jp['spread'].median() / other['spread'].median():.2f} x the others' (the "
        "standardized score does not depend on it; a data-unit bandwidth would)",
        *confounds,
    ]
    if test.smallest_p >= alpha:
        notes.append(
            f"with {n} subjects and these attributes the test cannot reach p < {alpha}: "
            f"there are only {round(1 / test.smallest_p)} relabelings, so its smallest "
            f"one-sided p is {test.smallest_p:.3g}"
        )
    return spec.result(
        evidence.model,
        verdict,
        EFFECT_NAME,
        n=n,
        effect=float(per_j.mean()),
        ci=ci,
        pvalue=pvalue,
        notes=tuple(notes),
        tables=tables,
    )


def _per_subject(j: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    early, late = thirds(n_layers)
    rows = []
    for subject, group in j.groupby("subject", sort=False):
        by_layer = group.set_index("layer")["J"]
        j_early = float(by_layer.reindex(early).mean())
        j_late = float(by_layer.reindex(late).mean())
        rows.append(
            {
                "subject": subject,
                "J": float(by_layer.mean()),
                "J_first_third": j_early,
                "J_last_third": j_late,
                "early_minus_late": j_early - j_late,
                "layers_with_J_positive": int((by_layer > 0).sum()),
                "layers": len(by_layer),
            }
        )
    columns = ["subject", "J", "J_first_third", "J_last_third", "early_minus_late"]
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
        ("first third", "J_first_third", f"{early[0]}-{early[-1]}"),
        ("last third", "J_last_third", f"{late[0]}-{late[-1]}"),
        ("first minus last", "early_minus_late", ""),
    ):
        x = per_subject[column].to_numpy()
        lo, hi = bootstrap_mean_ci(x, seed, resamples)
        rows.append({"part": part, "layers": span, "mean_J": x.mean(), "ci_lo": lo, "ci_hi": hi})
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
        f"early > late (the claim's secondary part): {said}; mean J first third "
        f"{table.iloc[0]['mean_J']:.3g}, last third {table.iloc[1]['mean_J']:.3g}, "
        f"difference {diff['mean_J']:.3g} [95% CI {diff['ci_lo']:.3g}, {diff['ci_hi']:.3g}]"
    )


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


def _confound_notes(evidence: Evidence, pairs: pd.DataFrame) -> tuple[str, ...]:
    mode = evidence.config.extraction.tokens
    jp, other = pairs[pairs["japanese"]], pairs[~pairs["japanese"]]
    if mode == "seed":
        token_note = (
            "confound, token selection 'seed' (cut at the last space, read the last token): "
            f"{jp['share_read_whole_by_seed'].mean():.0%} of Japanese sentences have no space "
            "and are read whole, while "
            f"{1 - other['share_read_whole_by_seed'].mean():.0%} of the others lose their "
            "last word; the control is a re-run with `--lm-tokens last`, which reads every "
            "sentence whole"
        )
    elif mode == "last":
        token_note = (
            "token selection 'last': every sentence is read whole at its last token, so this "
            "run is the control for the 'seed' selection's Japanese confound"
        )
    else:
        token_note = (
            f"token selection {mode!r}: no sentence is cut at a space, so the 'seed' "
            "selection's Japanese confound does not apply; Japanese sentences average over "
            "more tokens"
        )
    count_note = (
        f"confound, token count: Japanese sentences average {jp['mean_tokens'].mean():.1f} "
        f"tokens, the others {other['mean_tokens'].mean():.1f}; Spearman correlation across "
        "pairs of mean tokens with the score: "
        f"{_shown_rho(pairs)} over all pairs, {_shown_rho(other)} over non-Japanese pairs "
        "(pairs of one subject are not independent: descriptive)"
    )
    return token_note, count_note


test_japanese_sharper_modes = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). Six layers: the verdict averages
# J over layers, and "clearest early" is read off thirds of two layers each. Side modes are
# planted by an edit (harness.planted.SideModes has one jitter for every attribute): one
# coordinate per mode, the same coordinates in every sentence, mode j of a side at
# -/+ (15 + 10 j) bulk units from the coordinate's median with N(0, jitter) spread across
# sentences; every pair carries them. A single-coordinate mode holds 22 of a sample's 12,672
# values, so its relative prominence is ~1e-3, the scale of SmolLM2-135M's scores (0.002-0.006).
JA = "in japanese"
SIX_LAYERS = 6
MODE_POSITION, MODE_SPACING = 15.0, 10.0


def side_modes(
    jitter_japanese: Sequence[float],
    jitter_others: Sequence[float],
    modes_japanese: tuple[int, int] = (2, 1),
    modes_others: tuple[int, int] = (2, 1),
    sampler: str = "logistic",
) -> Edit:
    """An edit planting (left, right) side modes in every pair, with per-layer jitters (bulk
    units) for the Japanese pairs and the others. Mode coordinates avoid massive dims (any
    coordinate whose median reaches 20 bulk units in some layer)."""
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
            for coord, (sign, j, side) in zip(coords, slots, strict=True):
                count = np.where(japanese, modes_japanese[side], modes_others[side])
                rows = np.flatnonzero(count > j)
                centre = medians[layer, coord]
                offset = sign * (MODE_POSITION + MODE_SPACING * j) * unit
                values = centre + offset + jitter[rows] * rng.standard_normal(rows.size)
                resid[layer, rows, coord] = values.astype(np.float32)

    return edit


def _modes_scenario(
    name: str,
    truth: bool,
    description: str,
    nuisances: Nuisances,
    jitter_japanese: Sequence[float],
    jitter_others: Sequence[float],
    modes_japanese: tuple[int, int] = (2, 1),
    modes_others: tuple[int, int] = (2, 1),
    known_miss: str = "",
) -> Scenario:
    return planted(
        name,
        truth,
        description,
        Base("logistic", n_layers=SIX_LAYERS),
        nuisances,
        edit=side_modes(jitter_japanese, jitter_others, modes_japanese, modes_others),
        edit_params={
            "jitter_japanese": np.round(jitter_japanese, 6).tolist(),
            "jitter_others": np.round(jitter_others, 6).tolist(),
            "modes_japanese": list(modes_japanese),
            "modes_others": list(modes_others),
            "position": MODE_POSITION,
            "spacing": MODE_SPACING,
        },
        known_miss=known_miss,
    )


# Japanese read at one token type: sentence noise x 0.5, a shared shift of 0.5 bulk units,
# 3x the tokens. Its samples' robust spread is then ~0.78x the others' (SmolLM2-135M 0.68,
# Gemma-3-270M 0.79).
TIGHTNESS = 0.5
HOMOGENEOUS = replace(
    REALISTIC,
    homogeneous_attribute=JA,
    homogeneous_tightness=TIGHTNESS,
    homogeneous_shift=0.5,
    homogeneous_length_factor=3.0,
)
OTHERS_JITTER = np.full(SIX_LAYERS, 2.0)
SHARPER_EARLY = np.linspace(1.0, 1.5, SIX_LAYERS)
HOMOGENEITY = (
    "Reading every Japanese sentence at the same token type tightens its sentences, mode "
    "coordinates included, which is exactly what the standardized score calls sharper modes: "
    "SUPPORTED in 30 of the first 30 reps with no side-mode difference (tightening only the "
    "bulk reads REFUTED instead). The score is scale-free only when the modes scale with the "
    "bulk; the rework (issue 19) decides under a token-matched selection too."
)
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
        "~1.3 late; SmolLM2's is ~3.3); per-dim log-scale sd 0.15, offsets 0.2, crossed "
        "effects 0.3/0.3/0.2",
        REALISTIC,
        SHARPER_EARLY,
        OTHERS_JITTER,
    ),
    _modes_scenario(
        "Japanese has one more mode",
        True,
        "others 1 left + 1 right side mode, Japanese 2 left + 1 right (SmolLM2: ~2 vs ~3 "
        "distinct modes per sample), all jitter 2.0; the same nuisances",
        REALISTIC,
        OTHERS_JITTER,
        OTHERS_JITTER,
        modes_japanese=(2, 1),
        modes_others=(1, 1),
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
    # Two readings of "the same side modes" under token homogeneity: reading one token type
    # tightens every coordinate's spread across sentences, the side-mode coordinates' too
    # (first), or only the bulk's, the modes keeping their width in data units (second, as
    # harness.planted.SideModes plants them after the tightening).
    _modes_scenario(
        "token-homogeneous Japanese with shared modes tightened",
        False,
        "the same side modes (jitter 2.0) in every pair, then Japanese sentences tightened "
        "about their pair's centroid (x 0.5, side-mode coordinates included, so Japanese "
        "mode jitter 1.0), a shared 0.5 shift and 3x tokens: no side-mode difference but "
        "token homogeneity",
        HOMOGENEOUS,
        TIGHTNESS * OTHERS_JITTER,
        OTHERS_JITTER,
        known_miss=HOMOGENEITY,
    ),
    _modes_scenario(
        "token-homogeneous Japanese with shared modes",
        False,
        "the same side modes (jitter 2.0 bulk units) in every pair; Japanese sentence noise "
        "x 0.5 (side-mode coordinates untouched), a shared 0.5 shift and 3x tokens",
        HOMOGENEOUS,
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
