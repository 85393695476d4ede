"""Claim: heavy-tailed (logistic) mixtures detect anomalous inputs better than Gaussian
mixtures of the same size, on a model's residual stream."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from harness.calibration import planted
from harness.claim import ClaimResult, ClaimSpec, Verdict, claim_test
from harness.evidence import Evidence
from harness.keys import source_fingerprint
from harness.planted import REALISTIC, Base, Nuisances
from harness.stats import anomaly

# Attributes held out as anomalies (matched case-insensitively as substrings): two other
# languages and one other surface form. Every other attribute is "normal" English text.
ANOMALY_ATTRIBUTES = {"japanese": "japanese", "spanish": "spanish", "upper case": "upper case"}
DOMAIN = "held-out subject"
HEAVY, GAUSS, T = "logistic", "gaussian", "t"

SPEC = ClaimSpec(
    id="heavy-tailed-mixture-beats-gmm",
    version=3,
    title="Heavy-tailed (logistic) mixtures detect anomalous inputs better than Gaussian ones",
    source="Beyond Gaussian: Language Model Representations and Distributions (seed write-up)",
    quote=(
        "This suggests the common approach of using Gaussian mixture modeling for anomaly "
        "detection might not be the best. [...] one could certainly be more efficient, and "
        "likely more accurate, using mixture components that match the known shape of the "
        "target distribution better. [...] a model that leverages heavier tailed "
        "distributions and explicitly accounts for minor modes might better distinguish "
        "between normal variation and genuinely anomalous activations."
    ),
    statistic=(
        "Normal inputs are the sentences of every attribute except the anomalous ones: 'in "
        "japanese' and 'in spanish' (another language), 'in all upper case' (another surface "
        "form); a held-out subject is a fourth, 'different domain' anomaly. The subjects are "
        "split into up to 5 folds; in each fold the detector is trained on half of every "
        "normal pair's sentences of the other subjects (a quarter chooses the directions, a "
        "quarter fits the densities) and scores the other half (held-out normal), the fold's "
        "subjects' normal sentences (held-out subject) and all sentences of the anomalous "
        "attributes. Per layer (6 layers evenly spaced over depth, first and last included) "
        "the density quarter is rotated to the principal directions the direction quarter "
        "spans, each scaled to unit sd on the density quarter; each of the top 16 gets a "
        "3-component 1-D mixture (8 parameters), each other direction one component (2 "
        "parameters), in three families: Gaussian, logistic (the write-up's dominant family) "
        "and Student-t with 3 degrees of freedom (fixed), so all three have the same "
        "parameter count. EM runs every direction until its training log-likelihood gains "
        "less than 1e-6 nats per row in one iteration (budget 3000; the directions that hit "
        "it are counted in the notes), the same rule for every family. A sentence's score is "
        "its negative log-likelihood (sum over directions). Why all spanned directions: an "
        "input unlike the training text can sit near the centre of the top directions and "
        "far out in the small ones (a density on the top 16 alone gave Japanese AUROC ~0.2 "
        "on SmolLM2). Why only the spanned ones: version 2 also modelled the directions the "
        "direction quarter does not span (most of the space when a model is wider than that "
        "quarter), with directions and scales from the same rows, so their scales were too "
        "small and held-out sentences looked extreme there; a heavy-tailed density pays less "
        "for that, and on a planted Gaussian stream, where the Gaussian mixture is the right "
        "model, the logistic detector then won by +0.035 AUROC (a false SUPPORTED). "
        "The whole fit is repeated 3 times (refits: another permutation of the subjects into "
        "folds, other sentence splits, random EM starts at a random quantile in each "
        "component's stratum). Effect: AUROC(logistic) - AUROC(Gaussian) (Mann-Whitney: "
        "anomalous vs held-out normal), averaged over folds, refits, layers and anomaly "
        "types; beside it the held-out log-likelihood per normal sentence, logistic minus "
        "Gaussian. 95% percentile intervals from 1000 resamples, each drawing the (subject, "
        "attribute) pairs with replacement, stratified by attribute role (one weight per pair "
        "shared by all folds, layers and both detectors: paired), and the 3 refits with "
        "replacement, so the interval holds the variation from refitting as well as from "
        "other pairs. SUPPORTED when the AUROC difference's lower bound is > 0 and the "
        "log-likelihood difference's lower bound is > 0; REFUTED when the AUROC difference's "
        "upper bound is < 0, or its interval holds 0 and lies within +-0.001 (equivalent: "
        "the calibration shows the detector resolves a gain of that size, so an interval "
        "inside it is a real 'no difference'); INCONCLUSIVE otherwise (including a better "
        "AUROC with a log-likelihood that is not better). The t mixture is reported beside, "
        "not used in the verdict."
    ),
    multiplicity=(
        "SUPPORTED needs both lower bounds above 0 (AUROC gain, log-likelihood gain): an "
        "intersection-union test, at level 0.05 with no correction. Layers and anomaly types "
        "are averaged into one effect before the test, not tested one by one."
    ),
    thresholds={
        # Equivalence margin from the calibration (docs/calibration.md): the detector resolves
        # a gain of 0.001 with power > 0.8 at the reports' sizes, so an interval inside
        # +-0.001 is a real "no difference", and the planted heavy-tailed truths gain ~2x it.
        "auroc_margin": 0.001,
        "n_layers": 6,
        "n_projections": 16,
        "n_components": 3,  # primary mode plus a minor mode on each side (the write-up)
        "em_iterations": 3000,
        "em_tolerance": 1e-6,  # nats per row per direction; all families alike
        "refits": 3,
        "t_df": 3.0,  # the write-up's GPT-2 fits had t with df 2 to 3.7
        "max_folds": 5,
        "bootstrap_resamples": 1000,
        "min_normal_pairs": 4,
    },
    source_numbers={
        "no model (a proposal)": (
            "suggested as future work; no detector was built or measured in the write-up"
        ),
    },
    caveats=(
        (
            "Random-token inputs, which the issue also names, are not tested: the evidence "
            "holds only the dataset's sentences and a claim does not run the model. They "
            "would need a second extraction of random-token strings as an extra dataset."
        ),
        (
            "The 'anomalies' are whole attributes of the shipped dataset; Japanese and upper "
            "case are far from the training text, so both detectors may sit near AUROC 1 "
            "there and the difference is bounded by that ceiling (see the per-type table)."
        ),
        (
            "Each principal direction gets its own independent 1-D density (a product "
            "density), for all families alike; the write-up proposes no multivariate form, "
            "and a full-covariance mixture has far more parameters than the equal-size "
            "comparison allows. Only the top 16 directions get minor-mode components."
        ),
        (
            "Directions the direction quarter does not span (about 217 of SmolLM2's 576, "
            "more for wider models) are left out for every family: an anomaly that lives only "
            "there is missed by all three detectors alike."
        ),
        (
            "The refits are resampled with replacement from only 3, which estimates their "
            "variance with a factor 2/3 too small; the notes list the three refits' effects."
        ),
        (
            "Calibrated at one layer of planted streams whose principal directions are "
            "the coordinates (per-dimension scales log-normal, sd 1): heavy-tailed "
            "coordinates of equal scale have no principal axes, and their projections are "
            "nearly Gaussian, so no product-density detector gains there."
        ),
    ),
)

# Thresholds that act only on the verdict or the resampling, not on the cached fits.
VERDICT_ONLY = ("auroc_margin", "bootstrap_resamples", "min_normal_pairs")
EFFECT_NAME = "AUROC(logistic mixture) - AUROC(Gaussian mixture), mean over layers and types"


def _anomaly_type(attribute: str) -> str | None:
    lowered = attribute.lower()
    return next((name for name, key in ANOMALY_ATTRIBUTES.items() if key in lowered), None)


def chosen_layers(n_layers: int, k: int) -> np.ndarray:
    """Up to ``k`` layers evenly spaced over depth, first and last included."""
    return np.unique(np.round(np.linspace(0, n_layers - 1, min(k, n_layers))).astype(int))


def _folds(subjects: list[str], max_folds: int, refit: int) -> list[list[str]]:
    # Seeded by the refit, not by --lm-seed: the fits do not move with --lm-seed, which
    # changes only the bootstrap (and each refit's fits are cached).
    order = np.random.default_rng(refit).permutation(len(subjects))
    parts = np.array_split(order, min(max_folds, len(subjects)))
    return [[subjects[i] for i in part] for part in parts]


def evaluate(evidence: Evidence, spec: ClaimSpec = SPEC) -> ClaimResult:
    th = spec.thresholds
    pairs = evidence.pairs.reset_index(drop=True)
    kinds = [_anomaly_type(a) for a in pairs["attribute"]]
    normal = np.array([k is None for k in kinds])
    subjects = sorted(pairs["subject"].unique())
    types = sorted({k for k in kinds if k is not None}) + ([DOMAIN] if len(subjects) > 1 else [])
    n_sentences = int(sum(len(r) for r in pairs["rows"]))
    if not types or normal.sum() < th["min_normal_pairs"]:
        return spec.result(
            evidence.model,
            Verdict.NOT_APPLICABLE,
            EFFECT_NAME,
            n=n_sentences,
            notes=(
                f"{int(normal.sum())} normal pairs (at least {int(th['min_normal_pairs'])} "
                f"needed) and anomaly types {types or 'none'}: the claim needs normal text "
                f"and at least one of the attributes {', '.join(ANOMALY_ATTRIBUTES)} or two "
                "subjects",
            ),
        )

    resid = evidence.resid
    chosen = chosen_layers(evidence.n_layers, int(th["n_layers"]))
    # A layer whose sentences all share one vector has no density to fit: left out, said.
    flat = [int(li) for li in chosen if not np.any(np.ptp(np.asarray(resid[li]), axis=0) > 0)]
    layers = np.array([li for li in chosen if li not in flat], dtype=int)
    if layers.size == 0:
        return spec.result(
            evidence.model,
            Verdict.INCONCLUSIVE,
            EFFECT_NAME,
            n=n_sentences,
            notes=(
                f"every chosen layer ({', '.join(map(str, flat))}) has one vector for all "
                "sentences: there is nothing to detect anomalies in",
            ),
        )
    n_r = int(th["refits"])
    folds = [_folds(subjects, int(th["max_folds"]), r) for r in range(n_r)]
    families = (GAUSS, HEAVY, T)

    def fit_folds() -> dict[str, np.ndarray]:
        cells: dict[str, np.ndarray] = {}
        for r, refit_folds in enumerate(folds):
            for i, fold in enumerate(refit_folds):
                cells |= _run_fold(evidence, pairs, kinds, types, layers, fold, (r, i), th)
        return cells

    # The folds' fits and scores are not resampled, so they are cached: a warm run only
    # redoes the bootstrap below (the fits are nearly all of this claim's time).
    fields = {
        "claim": spec.id,
        "version": spec.version,
        "layers": layers.tolist(),
        "types": types,
        "folds": folds,
        "settings": {k: v for k, v in th.items() if k not in VERDICT_ONLY},
        "code": source_fingerprint(_run_fold, anomaly),
    }
    cells = evidence.cached_arrays("anomaly-detector", fields, fit_folds)
    weights = _pair_weights(pairs, kinds, int(th["bootstrap_resamples"]), evidence.seed)

    # auc[r, f, l, family, type] and its resamples; ll[r, f, l, family] likewise.
    n_f, n_l, n_t, n_b = len(folds[0]), len(layers), len(types), weights.shape[0]
    auc = np.full((n_r, n_f, n_l, len(families), n_t), np.nan)
    auc_b = np.full((n_r, n_f, n_l, len(families), n_t, n_b), np.nan)
    ll = np.zeros((n_r, n_f, n_l, len(families)))
    ll_b = np.zeros((n_r, n_f, n_l, len(families), n_b))
    explained = np.zeros((n_r, n_f, n_l))
    iterations, capped, directions = [], 0, []
    for r, f in np.ndindex(n_r, n_f):
        prefix = f"r{r}.f{f}"
        sizes, negatives = cells[f"{prefix}.sizes"], cells[f"{prefix}.negatives"]
        for li in range(n_l):
            explained[r, f, li] = cells[f"{prefix}.l{li}.explained"]
            directions.append(int(cells[f"{prefix}.l{li}.n_directions"]))
            for fi in range(len(families)):
                cell = f"{prefix}.l{li}.m{fi}"
                iterations.append(int(cells[f"{cell}.n_iter"]))
                capped += int(cells[f"{cell}.capped"])
                sums, counts = cells[f"{cell}.ll_sum"], cells[f"{cell}.ll_count"]
                ll[r, f, li, fi] = sums.sum() / counts.sum()
                ll_b[r, f, li, fi] = (weights @ sums) / (weights @ counts)
                for ti in range(n_t):
                    if f"{cell}.u{ti}" not in cells:
                        continue  # this fold has no anomalies of the type
                    u, pos = cells[f"{cell}.u{ti}"], cells[f"{prefix}.positives{ti}"]
                    auc[r, f, li, fi, ti] = u.sum() / (sizes[pos].sum() * sizes[negatives].sum())
                    auc_b[r, f, li, fi, ti] = anomaly.weighted_auroc(
                        u, sizes[pos], sizes[negatives], weights[:, pos], weights[:, negatives]
                    )

    fam = {name: i for i, name in enumerate(families)}
    # Each resample also redraws the refits (with replacement), so the interval holds the
    # variation from other folds, splits and EM starts as well as from other pairs.
    draws = np.random.default_rng([evidence.seed, 1]).integers(0, n_r, (n_b, n_r))
    auc_r = np.nanmean(auc, axis=1)  # (r, l, fam, t): folds averaged
    auc_fold = auc_r.mean(axis=0)
    auc_fold_b = _redraw(np.nanmean(auc_b, axis=1), draws)  # (l, fam, t, b)
    d_auc = auc_fold[:, fam[HEAVY]] - auc_fold[:, fam[GAUSS]]  # (l, t)
    d_auc_b = auc_fold_b[:, fam[HEAVY]] - auc_fold_b[:, fam[GAUSS]]  # (l, t, b)
    ll_fold, ll_fold_b = ll.mean(axis=(0, 1)), _redraw(ll_b.mean(axis=1), draws)
    d_ll = ll_fold[:, fam[HEAVY]] - ll_fold[:, fam[GAUSS]]
    d_ll_b = ll_fold_b[:, fam[HEAVY]] - ll_fold_b[:, fam[GAUSS]]
    # The refits' spread alone, beside the interval: how much refitting moves the effect.
    refit_effects = np.nanmean(auc_r[:, :, fam[HEAVY]] - auc_r[:, :, fam[GAUSS]], axis=(1, 2))

    effect = float(np.nanmean(d_auc))
    pooled_b = np.nanmean(d_auc_b, axis=(0, 1))
    ci = _percentile(pooled_b)
    ll_effect, ll_ci = float(d_ll.mean()), _percentile(d_ll_b.mean(axis=0))
    p_greater = float((1 + np.sum(pooled_b <= 0)) / (n_b + 1))
    margin = th["auroc_margin"]
    verdict = decide(ci, ll_ci, margin)

    tables = _tables(layers, types, families, auc_fold, d_auc, d_auc_b, ll_fold, d_ll, d_ll_b)
    t_delta = float(np.nanmean(auc_fold[:, fam[T]] - auc_fold[:, fam[GAUSS]]))
    t_ll = float((ll_fold[:, fam[T]] - ll_fold[:, fam[GAUSS]]).mean())
    per_type = tables["per_type"]
    notes = (
        f"AUROC difference (logistic - Gaussian) {effect:+.4f} [95% CI {ci[0]:+.4f}, "
        f"{ci[1]:+.4f}], one-sided bootstrap p(difference <= 0) = {p_greater:.3g}; equivalence "
        f"margin +-{margin}",
        "held-out log-likelihood per normal sentence (nats, all directions), logistic - "
        f"Gaussian: {ll_effect:+.3f} [95% CI {ll_ci[0]:+.3f}, "
        f"{ll_ci[1]:+.3f}]",
        "per anomaly type, mean AUROC Gaussian / logistic / t3: "
        + "; ".join(
            f"{r.type} {r.auroc_gaussian:.3f} / {r.auroc_logistic:.3f} / {r.auroc_t:.3f}"
            for r in per_type.itertuples()
        ),
        f"Student-t (df {th['t_df']:g}) mixture beside (not in the verdict): AUROC minus "
        f"Gaussian's {t_delta:+.4f}, held-out log-likelihood minus Gaussian's {t_ll:+.3f}",
        f"layers {', '.join(map(str, layers))} of {evidence.n_layers}; {n_f} folds of "
        f"subjects; {int(np.median(directions))} directions modelled (median), the top "
        f"{int(th['n_projections'])} (3-component mixtures) carry {explained.mean():.0%} of "
        f"the training variance; EM on them ran {int(np.median(iterations))} iterations "
        f"(median; to a gain below {th['em_tolerance']:g} nats per row in every direction, "
        f"budget {int(th['em_iterations'])}: {capped} of the fits' directions hit it)",
        f"{n_r} refits (fold permutations, sentence splits and EM starts) gave AUROC "
        "differences " + ", ".join(f"{e:+.4f}" for e in refit_effects) + "; the interval "
        "resamples them with the pairs",
        "random-token inputs are not in the evidence (no extra extraction), so not tested",
    ) + (
        (f"layers {', '.join(map(str, flat))} left out: every sentence has the same vector",)
        if flat
        else ()
    )
    return spec.result(
        evidence.model,
        verdict,
        EFFECT_NAME,
        n=n_sentences,
        effect=effect,
        ci=ci,
        pvalue=p_greater,
        notes=notes,
        tables=tables,
    )


def decide(auroc_ci: tuple[float, float], loglik_ci: tuple[float, float], margin: float) -> Verdict:
    """SUPPORTED: both gains' lower bounds above 0; REFUTED: the AUROC gain is negative, or
    equivalent to 0 (its interval holds 0 and lies within +-margin); else INCONCLUSIVE."""
    if auroc_ci[0] > 0 and loglik_ci[0] > 0:
        return Verdict.SUPPORTED
    if auroc_ci[1] < 0 or -margin < auroc_ci[0] <= 0 <= auroc_ci[1] < margin:
        return Verdict.REFUTED
    return Verdict.INCONCLUSIVE


def _redraw(per_refit: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Resample b of ``per_refit`` (r, ..., b): the mean over the refits ``draws[b]``."""
    picked = per_refit[draws, ..., np.arange(draws.shape[0])[:, None]]  # (b, r, ...)
    return np.moveaxis(np.nanmean(picked, axis=1), 0, -1)


def _percentile(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanquantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def _pair_weights(pairs: pd.DataFrame, kinds: list[str | None], n_b: int, seed: int) -> np.ndarray:
    """(n_b, n_pairs) bootstrap counts: pairs drawn with replacement within their stratum
    (normal attributes; each anomalous attribute), so every resample keeps each role."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_b, len(pairs)))
    strata = pd.Series(
        [a if k else "normal" for a, k in zip(pairs["attribute"], kinds, strict=True)]
    )
    for _, members in strata.groupby(strata).groups.items():
        members = np.asarray(members)
        draws = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), n_b)
        weights[:, members] = draws
    return weights


def _run_fold(
    evidence: Evidence,
    pairs: pd.DataFrame,
    kinds: list[str | None],
    types: list[str],
    layers: np.ndarray,
    held_out: list[str],
    fold: tuple[int, int],
    th: dict,
) -> dict[str, np.ndarray]:
    """Fit and score every layer of one fold (refit r, fold f): named arrays
    ``r<r>.f<f>.l<layer>.m<family>.*`` (per-pair log-likelihood sums and counts, U
    statistics per anomaly type, EM iterations) and the fold's pair roles
    ``r<r>.f<f>.sizes``, ``.negatives``, ``.positives<type>``."""
    rng = np.random.default_rng(fold)
    n_pairs = len(pairs)
    rotation_rows, train_rows, test_rows, test_group = [], [], [], []
    for p, (subject, rows, kind) in enumerate(
        zip(pairs["subject"], pairs["rows"], kinds, strict=True)
    ):
        rows = np.asarray(rows)
        if kind is None and subject not in held_out:
            shuffled = rng.permutation(rows)
            half, quarter = len(rows) // 2, len(rows) // 4
            rotation_rows.append(shuffled[:quarter])
            train_rows.append(shuffled[quarter:half])
            rows = shuffled[half:]
        test_rows.append(rows)
        test_group.append(np.full(len(rows), p))
    rotation, train = np.concatenate(rotation_rows), np.concatenate(train_rows)
    test, group = np.concatenate(test_rows), np.concatenate(test_group)
    sizes = np.bincount(group, minlength=n_pairs).astype(float)
    held = pairs["subject"].isin(held_out).to_numpy()
    is_normal = np.array([k is None for k in kinds])
    negatives = np.flatnonzero(is_normal & ~held)
    positives = {
        ti: np.flatnonzero(is_normal & held)
        if t == DOMAIN
        else np.flatnonzero([k == t for k in kinds])
        for ti, t in enumerate(types)
    }
    local = np.full(n_pairs, -1)
    prefix = f"r{fold[0]}.f{fold[1]}"
    out = {f"{prefix}.sizes": sizes, f"{prefix}.negatives": negatives} | {
        f"{prefix}.positives{ti}": pos for ti, pos in positives.items()
    }
    resid = evidence.resid
    for li, layer in enumerate(layers):
        block = np.asarray(resid[layer], dtype=np.float64)
        projection = anomaly.split_projection(block[rotation], block[train], rest=False)
        out[f"{prefix}.l{li}.explained"] = np.float64(
            (projection.sd[: int(th["n_projections"])] ** 2).sum() / (projection.sd**2).sum()
        )
        out[f"{prefix}.l{li}.n_directions"] = np.int64(projection.sd.size)
        for fi, family in enumerate((GAUSS, HEAVY, T)):
            detector = anomaly.fit_detector(
                block[train],
                family,
                int(th["n_projections"]),
                int(th["n_components"]),
                int(th["em_iterations"]),
                df=float(th["t_df"]),
                projection=projection,
                tol=float(th["em_tolerance"]),
                start=np.random.default_rng([*fold, li, fi]),
            )
            loglik = detector.logpdf(block[test])
            score = -loglik
            neg_mask = np.isin(group, negatives)
            cell = f"{prefix}.l{li}.m{fi}"
            out[f"{cell}.n_iter"] = np.int64(detector.head.n_iter)
            out[f"{cell}.capped"] = np.int64(
                detector.head.capped + (detector.tail.capped if detector.tail else 0)
            )
            out[f"{cell}.ll_sum"] = np.bincount(
                group[neg_mask], weights=loglik[neg_mask], minlength=n_pairs
            )
            out[f"{cell}.ll_count"] = np.bincount(group[neg_mask], minlength=n_pairs).astype(float)
            for ti, pos in positives.items():
                if pos.size == 0:
                    continue
                pos_mask = np.isin(group, pos)
                local[:] = -1
                local[pos] = np.arange(pos.size)
                pl = local[group[pos_mask]]
                local[:] = -1
                local[negatives] = np.arange(negatives.size)
                nl = local[group[neg_mask]]
                out[f"{cell}.u{ti}"] = anomaly.pair_u(score[pos_mask], pl, score[neg_mask], nl)
    return out


def _tables(
    layers: np.ndarray,
    types: list[str],
    families: tuple[str, ...],
    auc: np.ndarray,
    d_auc: np.ndarray,
    d_auc_b: np.ndarray,
    ll: np.ndarray,
    d_ll: np.ndarray,
    d_ll_b: np.ndarray,
) -> dict[str, pd.DataFrame]:
    per_layer_auroc = pd.DataFrame(
        {"layer": layers}
        | {f"auroc_{f}": np.nanmean(auc[:, i], axis=1) for i, f in enumerate(families)}
    )
    layer_ci = np.nanquantile(np.nanmean(d_auc_b, axis=1), [0.025, 0.975], axis=1)
    ll_ci = np.nanquantile(d_ll_b, [0.025, 0.975], axis=1)
    per_layer_delta = pd.DataFrame(
        {
            "layer": layers,
            "delta_auroc": np.nanmean(d_auc, axis=1),
            "delta_auroc_ci_low": layer_ci[0],
            "delta_auroc_ci_high": layer_ci[1],
        }
    )
    per_layer_loglik = pd.DataFrame(
        {
            "layer": layers,
            "delta_heldout_loglik": d_ll,
            "delta_heldout_loglik_ci_low": ll_ci[0],
            "delta_heldout_loglik_ci_high": ll_ci[1],
        }
    )
    per_layer_heldout = pd.DataFrame(
        {"layer": layers} | {f"heldout_loglik_{f}": ll[:, i] for i, f in enumerate(families)}
    )
    type_ci = np.nanquantile(np.nanmean(d_auc_b, axis=0), [0.025, 0.975], axis=1)
    per_type = pd.DataFrame(
        {"type": types}
        | {f"auroc_{f}": np.nanmean(auc[:, i], axis=0) for i, f in enumerate(families)}
        | {
            "delta_auroc": np.nanmean(d_auc, axis=0),
            "ci_low": type_ci[0],
            "ci_high": type_ci[1],
        }
    )
    return {
        "per_layer_auroc": per_layer_auroc,
        "per_layer_delta": per_layer_delta,
        "per_layer_loglik_delta": per_layer_loglik,
        "per_layer_heldout_loglik": per_layer_heldout,
        "per_type": per_type,
    }


test_heavy_tailed_mixture_beats_gmm = claim_test(SPEC, evaluate)


# Calibration at the reports' sizes (docs/calibration.md). One layer (the claim averages over
# up to 6). Two kinds of anomaly: the anomalous attributes' sentences spread wider than the
# normal ones, or shifted off them along one direction per attribute. Under a heavy-tailed
# (t3) bulk the logistic detector should win; under a Gaussian bulk the Gaussian mixture is
# the right model and a SUPPORTED verdict is a false positive. The Gaussian nulls' anomalies
# are milder than the truths' (a 1.4x spread over 576 Gaussian coordinates is found with AUROC
# 1.000 by both detectors, which leaves no room for a difference either way).
SPREAD, SPREAD_NULL, SHIFT = 1.4, 1.05, 4.0
# Per-dimension scales spread wide enough (log-sd 1) that the principal directions are the
# coordinates: i.i.d. heavy-tailed coordinates of equal scale have no preferred axes, and
# their projections on the (arbitrary) principal directions are sums of many coordinates,
# nearly Gaussian, so a "t3 bulk" of equal scales is no heavy-tailed truth for a detector
# that works in principal directions.
SPECTRUM = Nuisances(scale_sigma=1.0)


def _anomalous(data) -> np.ndarray:
    return np.array([_anomaly_type(a) is not None for a in data.frame["attribute"]])


def spread_anomalies(data, resid: np.ndarray, rng: np.random.Generator, factor: float) -> None:
    """Sentences of the anomalous attributes spread ``factor`` x wider about the normal
    sentences' per-dimension mean, at every layer."""
    odd = _anomalous(data)
    for layer in resid:
        centre = layer[~odd].mean(axis=0)
        layer[odd] = centre + factor * (layer[odd] - centre)


def shift_anomalies(data, resid: np.ndarray, rng: np.random.Generator) -> None:
    """Each anomalous attribute's sentences shifted by SHIFT normal-sentence sds along one
    random direction of its own (the same at every layer)."""
    attributes = data.frame["attribute"].to_numpy()
    odd = _anomalous(data)
    for attribute in sorted(set(attributes[odd])):
        direction = rng.standard_normal(resid.shape[-1])
        direction /= np.linalg.norm(direction)
        rows = attributes == attribute
        for layer in resid:
            layer[rows] += SHIFT * layer[~odd].std(axis=0).mean() * direction


def _spread(factor: float) -> dict:
    def edit(data, resid: np.ndarray, rng: np.random.Generator) -> None:
        spread_anomalies(data, resid, rng, factor)

    return {"edit": edit, "edit_params": {"spread_anomalies": factor}}


_SHIFT = {"edit": shift_anomalies, "edit_params": {"shift_anomalies": SHIFT}}
CALIBRATION = (
    planted(
        "t3 bulk, anomalies 1.4x wider",
        True,
        "t3 coordinates, per-dim log-scale sd 1; Japanese, Spanish, upper case spread 1.4x",
        Base("t3", n_layers=1),
        SPECTRUM,
        **_spread(SPREAD),
    ),
    planted(
        "gaussian bulk, anomalies 1.05x wider",
        False,
        "normal coordinates, per-dim log-scale sd 1, anomalies spread 1.05x: the Gaussian "
        "mixture is the right model",
        Base("normal", n_layers=1),
        SPECTRUM,
        **_spread(SPREAD_NULL),
    ),
    planted(
        "t3 bulk, anomalies shifted",
        True,
        f"t3, per-dim log-scale sd 1; each anomalous attribute shifted {SHIFT:g} sd along "
        "its own direction",
        Base("t3", n_layers=1),
        SPECTRUM,
        **_SHIFT,
        known_miss=(
            "Shift-type anomalies give the heavy-tailed detector nothing to gain here: its "
            "AUROC gain was -0.00001 (sd 0.0003 over 200 reps; the spread truth's is "
            "+0.0016), and the verdict is REFUTED (equivalent within +-0.001) in 132 of 200 "
            "reps, SUPPORTED in 5. A "
            "shift along one random direction moves every coordinate a little, which both "
            "detectors score alike; the write-up's reason (heavier tails) helps against "
            "anomalies that spread, not ones that shift."
        ),
    ),
    planted(
        "gaussian bulk, anomalies shifted",
        False,
        f"normal, per-dim log-scale sd 1; each anomalous attribute shifted {SHIFT:g} sd",
        Base("normal", n_layers=1),
        SPECTRUM,
        **_SHIFT,
    ),
    planted(
        "t3 bulk, 1536 dims (rows << dims), anomalies 1.4x wider",
        True,
        "t3, per-dim log-scale sd 1, d_model 1536: ~360 rotation rows per fold",
        Base("t3", n_layers=1, d_model=1536),
        SPECTRUM,
        **_spread(SPREAD),
        known_miss=(
            "The miss is the rule's second condition, not the detector: in 200 reps 156 "
            "were SUPPORTED and 44 INCONCLUSIVE, none REFUTED, and every INCONCLUSIVE rep "
            "had its AUROC gain's interval above 0 (one-sided p <= 0.002) while the "
            "held-out log-likelihood gain's interval over pairs held 0 (seed 1: "
            "+0.54 [-0.28, +1.47] nats); at 576 dimensions both intervals cleared 0 in 199 "
            "of 200 reps (the first truth). On a wide model an INCONCLUSIVE "
            "with a clear AUROC gain says the likelihood did not separate the families; read "
            "both intervals in the notes."
        ),
    ),
    planted(
        "t3 bulk with nuisances, anomalies 1.4x wider",
        True,
        "t3; per-dim log-scale sd 1, offsets 0.2, crossed effects 0.3/0.3/0.2; anomalies 1.4x",
        Base("t3", n_layers=1),
        replace(REALISTIC, scale_sigma=1.0),
        **_spread(SPREAD),
    ),
    planted(
        "gaussian bulk with nuisances and massive dims, anomalies 1.05x wider",
        False,
        "normal; the same nuisances, 3 massive dims; anomalies 1.05x",
        Base("normal", n_layers=1),
        replace(REALISTIC, scale_sigma=1.0, massive_dims=3),
        **_spread(SPREAD_NULL),
    ),
)
