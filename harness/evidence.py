"""Per-model evidence: activations extracted once, derived tables computed lazily and cached.

A claim asks for what it needs (``evidence.fits``, ...) and pays only for that.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__, models
from harness.cache import Cache, key_for
from harness.config import RunConfig
from harness.dataset import Dataset
from harness.extraction import ActivationSet
from harness.progress import ProgressFactory, tqdm_bar
from harness.stats import distributions


@dataclass
class Evidence:
    model: str
    activations: ActivationSet
    dataset: Dataset
    config: RunConfig
    cache: Cache
    activation_key: str
    timings: dict[str, float] = field(default_factory=dict)
    progress: ProgressFactory = tqdm_bar

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def n_layers(self) -> int:
        return self.activations.n_layers

    @functools.cached_property
    def pairs(self) -> pd.DataFrame:
        """One row per (subject, attribute) pair with the dataset rows it owns."""
        frame = self.dataset.frame.reset_index(drop=True)
        grouped = frame.groupby(["subject", "attribute"], sort=False).indices
        return pd.DataFrame(
            [
                {"pair": i, "subject": s, "attribute": a, "rows": np.asarray(idx)}
                for i, ((s, a), idx) in enumerate(grouped.items())
            ]
        )

    def samples(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(layer, pair, pooled values): all coordinates of all the pair's sentences."""
        for layer in range(self.n_layers):
            block = np.asarray(self.activations.resid[layer])
            for pair, rows in zip(self.pairs["pair"], self.pairs["rows"], strict=True):
                yield layer, int(pair), block[rows].ravel().astype(np.float64)

    def values(self, layer: int, pair: int) -> np.ndarray:
        """One sample: all coordinates of all the pair's sentences at one layer."""
        rows = self.pairs["rows"].iloc[pair]
        return np.asarray(self.activations.resid[layer][rows], dtype=np.float64).ravel()

    def _cached_table(self, kind: str, fields: dict[str, Any], compute: Any) -> pd.DataFrame:
        """A derived table from the cache, or computed, timed and stored under its key."""
        key = key_for(
            {"activations": self.activation_key, "seed": self.seed, "harness": __version__} | fields
        )
        cached = self.cache.get_table(kind, key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        table = compute().merge(self.pairs[["pair", "subject", "attribute"]], on="pair")
        self.timings[kind] = round(time.perf_counter() - started, 2)
        self.cache.put_table(kind, key, table, {"model": self.model})
        return table

    @functools.cached_property
    def fits(self) -> pd.DataFrame:
        """One row per (layer, pair, family): log-likelihood, AIC, BIC, SSE, validity."""
        settings = self.config.fit
        # The engine's own version keys the fits: a new engine refits without re-extracting.
        fields = {
            "families": settings.families,
            "subsample": settings.subsample,
            "engine": distributions.ENGINE_VERSION,
        }
        return self._cached_table(
            "fits",
            fields,
            lambda: fit_all(
                list(self.samples()),
                settings.families,
                settings.subsample,
                self.seed,
                progress=self.progress,
                label=self.model,
            ),
        )

    @functools.cached_property
    def modes(self) -> pd.DataFrame:
        """One row per (layer, pair, KDE mode) at the study's settings (Scott x 4.5 on each
        sample's own range); sample-level columns n_left / n_right repeat on each row."""

        def compute() -> pd.DataFrame:
            from harness.stats.modes import summarize_many

            parts = []
            with self.progress(self.n_layers, f"modes {self.model}", "layer") as bar:
                for layer in range(self.n_layers):
                    table = summarize_many({p: self.values(layer, p) for p in self.pairs["pair"]})
                    parts.append(table.rename(columns={"sample": "pair"}).assign(layer=layer))
                    bar.update(1)
            return pd.concat(parts, ignore_index=True)

        return self._cached_table("modes", {"kde": "scott*4.5, 1000 points"}, compute)


def _rank_one(
    layer: int, pair: int, x: np.ndarray, families: tuple[str, ...], subsample: int, seed: int
) -> pd.DataFrame:
    try:
        table = distributions.rank(x, families, subsample, seed).table()
    except distributions.DegenerateSampleError as exc:
        # One constant sample is a finding about that sample, not a reason to stop the run.
        table = pd.DataFrame(
            [
                {
                    "family": name,
                    "loglik": np.nan,
                    "aic": np.inf,
                    "bic": np.inf,
                    "sse": np.inf,
                    "converged": False,
                    "valid": False,
                    "seconds": 0.0,
                    "note": f"degenerate: {exc}",
                }
                for name in families
            ]
        )
    return table.assign(layer=layer, pair=pair, n=len(x))


def fit_all(
    samples: list[tuple[int, int, np.ndarray]],
    families: tuple[str, ...],
    subsample: int,
    seed: int,
    progress: ProgressFactory = tqdm_bar,
    label: str = "",
    n_jobs: int = -1,
) -> pd.DataFrame:
    """Rank every sample on all cores; the result does not depend on the worker count."""
    from joblib import Parallel, delayed

    jobs = (
        delayed(_rank_one)(layer, pair, x, families, subsample, seed) for layer, pair, x in samples
    )
    parts = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    tables = []
    with progress(len(samples), f"fit {label}", "sample") as bar:
        for table in parts:
            tables.append(table)
            bar.update(1)
    return pd.concat(tables, ignore_index=True)


def activation_key(model_identity: dict[str, Any], dataset: Dataset, config: RunConfig) -> str:
    return key_for(
        {
            "model": model_identity,
            "dataset": dataset.sha256,
            "extraction": config.extraction.key_fields(),
            "harness": __version__,
        }
    )


def build(
    model_name: str, dataset: Dataset, config: RunConfig, progress: ProgressFactory = tqdm_bar
) -> Evidence:
    """Activations from the cache, or one extraction pass when they are not there yet."""
    from harness import extraction

    cache = Cache(config.cache_dir)
    cache.sweep_stale()
    spec = models.resolve(model_name)
    key = activation_key(models.identity(spec), dataset, config)
    timings: dict[str, float] = {}
    acts = cache.get_activations(key)
    if acts is None:
        started = time.perf_counter()
        loaded = models.load(spec, config.cache_dir)
        timings["load"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        acts = extraction.extract(
            loaded, list(dataset.frame["text"]), config.extraction, progress=progress
        )
        timings["extract"] = round(time.perf_counter() - started, 2)
        cache.put_activations(key, acts, dataset.frame)
        del loaded
    else:
        timings["extract"] = 0.0
    return Evidence(model_name, acts, dataset, config, cache, key, timings, progress)
