"""Resampling inference. Samples from the same sentences are correlated, so uncertainty
comes from resampling whole clusters (sentences or pairs), never individual values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BootstrapResult:
    statistic: float
    confidence_interval: tuple[float, float]
    pvalue: float  # one-sided, H0: statistic <= null_value (percentile-bootstrap test)
    n_clusters: int
    n_resamples: int


def cluster_bootstrap_share(
    hits: np.ndarray,
    clusters: np.ndarray,
    null_value: float = 0.5,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Share of True in ``hits`` with a CI from resampling clusters with replacement.

    The p-value inverts the percentile interval: the share of resampled statistics at or
    below ``null_value``, so "lower CI bound > null" and "p < (1 - confidence)/2" agree.
    """
    hits = np.asarray(hits, dtype=bool)
    labels, index = np.unique(np.asarray(clusters), return_inverse=True)
    if len(labels) < 2:
        raise ValueError("a cluster bootstrap needs at least two clusters")
    k = np.bincount(index, weights=hits, minlength=len(labels))
    n = np.bincount(index, minlength=len(labels)).astype(float)
    rng = np.random.default_rng(seed)
    # Multinomial counts = how often each cluster is drawn in each resample.
    draws = rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=n_resamples)
    shares = (draws @ k) / (draws @ n)
    alpha = 1 - confidence
    lo, hi = np.quantile(shares, [alpha / 2, 1 - alpha / 2])
    pvalue = (1 + np.sum(shares <= null_value)) / (n_resamples + 1)
    return BootstrapResult(
        statistic=float(k.sum() / n.sum()),
        confidence_interval=(float(lo), float(hi)),
        pvalue=float(pvalue),
        n_clusters=len(labels),
        n_resamples=n_resamples,
    )
