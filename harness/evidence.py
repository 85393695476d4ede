"""Per-model evidence: activations extracted once, derived tables computed lazily and cached.

A claim asks for what it needs (``evidence.fits``, ...) and pays only for that.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import pandas as pd

from harness import __version__, activations, extraction, models
from harness import dataset as dataset_module
from harness.cache import Cache
from harness.config import RunConfig
from harness.dataset import Dataset
from harness.environment import cpu_share
from harness.extraction import ActivationSet
from harness.keys import key_for, source_fingerprint
from harness.progress import ProgressFactory, tqdm_bar
from harness.stats import attribution, distributions, fit_engine
from harness.stats.errors import InsufficientDataError
from harness.stats.geometry import top_energy_dims
from harness.stats.modes import summarize_many

# Seed of the derived tables' own subsampling (fit starts on a subsample): fixed, because
# --lm-seed must change the resampled quantities (bootstraps, permutations) and nothing else.
TABLE_SEED = 0


class SelectionUnavailableError(LookupError):
    """Another token selection of the same sentences was asked for where none can be made:
    evidence read from an activation set has no model to extract it with."""


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
    # (token selection) -> the same model's sentences read under it; None where there is no
    # model to extract them with (an activation set).
    reselect: Callable[[str], Evidence] | None = field(default=None, repr=False)
    _kept_layer: tuple[int, np.ndarray] | None = field(default=None, init=False, repr=False)
    _selections: dict[str, Evidence] = field(default_factory=dict, init=False, repr=False)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def n_layers(self) -> int:
        return self.activations.n_layers

    def under_tokens(self, tokens: str) -> Evidence:
        """The same model and sentences read under another token selection (``--lm-tokens``
        values): extracted once and cached on disk like the run's own selection, and kept
        here for every claim of the session that asks. Raises SelectionUnavailableError
        where no model is at hand."""
        if tokens == self.config.extraction.tokens:
            return self
        if tokens not in self._selections:
            if self.reselect is None:
                raise SelectionUnavailableError(
                    f"{self.model}: no {tokens!r} token selection (evidence read from an "
                    "activation set has no model to extract one with)"
                )
            self._selections[tokens] = self.reselect(tokens)
        return self._selections[tokens]

    @functools.cached_property
    def pairs(self) -> pd.DataFrame:
        """One row per (subject, attribute) pair with the dataset rows it owns."""
        frame = self.dataset.frame.reset_index(drop=True)
        grouped = frame.groupby(["subject", "attribute"], sort=False).indices
        # Grouped by two columns: every key is a (subject, attribute) tuple.
        by_pair = cast("dict[tuple[str, str], np.ndarray]", grouped)
        return pd.DataFrame(
            [
                {"pair": i, "subject": s, "attribute": a, "rows": np.asarray(idx)}
                for i, ((s, a), idx) in enumerate(by_pair.items())
            ]
        )

    def pair_subset(self, size: int) -> np.ndarray:
        """Positions (into ``pairs``) of a fixed seeded subset of ``size`` pairs, sorted: a
        subsample of what is measured, not a resample, so --lm-seed does not move it."""
        rng = np.random.default_rng(TABLE_SEED)
        return np.sort(rng.choice(len(self.pairs), size=size, replace=False))

    @functools.cached_property
    def sentence_pairs(self) -> np.ndarray:
        """The pair of each sentence (row of the activations): the usual resampling unit."""
        labels = np.empty(len(self.dataset.frame), dtype=np.int64)
        for pair, rows in zip(self.pairs["pair"], self.pairs["rows"], strict=True):
            labels[rows] = pair
        return labels

    def layer(self, layer: int) -> np.ndarray:
        """One layer's activations, (n_sentences, d_model) float32, in memory and read-only
        (the last one read is kept: samples and values walk the layers in order)."""
        if self._kept_layer is None or self._kept_layer[0] != layer:
            block = _read_layer(self.activations.resid, layer)
            block.flags.writeable = False  # shared by every caller until the next layer
            self._kept_layer = (layer, block)
        return self._kept_layer[1]

    @property
    def resid(self) -> LayerStack:
        """The activations for statistics that loop over layers (``resid[layer]``): each
        layer read on its own, so memory holds one layer, not the whole set."""
        return LayerStack(self)

    def samples(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(layer, pair, pooled values): all coordinates of all the pair's sentences."""
        for layer in range(self.n_layers):
            for pair, rows in zip(self.pairs["pair"], self.pairs["rows"], strict=True):
                yield layer, int(pair), self.layer(layer)[rows].ravel().astype(np.float64)

    def values(self, layer: int, pair: int) -> np.ndarray:
        """One sample: all coordinates of all the pair's sentences at one layer."""
        rows = self.pairs["rows"].iloc[pair]
        return np.asarray(self.layer(layer)[rows], dtype=np.float64).ravel()

    def _key(self, fields: dict[str, Any]) -> str:
        # The tables are not resampled, so --lm-seed stays out of their key: every run seed
        # shares one entry. The constant is the default run seed, so the keys (and the
        # numbers) of default-seed runs made before this change stay valid.
        return key_for(
            {"activations": self.activation_key, "seed": TABLE_SEED, "harness": __version__}
            | fields
        )

    def cached_table(
        self, kind: str, fields: dict[str, Any], compute: Callable[[], pd.DataFrame]
    ) -> pd.DataFrame:
        """A derived table from the cache, or computed, timed and stored under its key.

        ``fields``: everything besides these activations that decides the table (settings,
        thresholds, ``keys.source_fingerprint`` of the computing code). Only what does not
        depend on ``--lm-seed`` belongs in a cached table. A table with a ``pair`` column
        gains the pair's subject and attribute.
        """

        def labelled() -> pd.DataFrame:
            table = compute()
            missing = [c for c in ("subject", "attribute") if c not in table.columns]
            if "pair" in table.columns and missing:
                table = table.merge(self.pairs[["pair", *missing]], on="pair")
            return table

        return self._cached(kind, fields, labelled, self.cache.get_table, self.cache.put_table)

    def cached_arrays(
        self, kind: str, fields: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Like ``cached_table``, for named numeric arrays (a claim's intermediate results)."""
        return self._cached(kind, fields, compute, self.cache.get_arrays, self.cache.put_arrays)

    def _cached(
        self, kind: str, fields: dict[str, Any], compute: Callable[[], Any], get: Any, put: Any
    ) -> Any:
        """``get`` the entry under its key, or ``compute``, time and ``put`` it."""
        key = self._key(fields)
        cached = get(kind, key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        value = compute()
        self.timings[kind] = round(time.perf_counter() - started, 2)
        put(kind, key, value, {"model": self.model})
        return value

    @functools.cached_property
    def fits(self) -> pd.DataFrame:
        """One row per (layer, pair, family): log-likelihood, AIC, BIC, SSE, validity."""
        settings = self.config.fit
        # The engine's own version keys the fits: a new engine refits without re-extracting.
        fields = {
            "families": settings.families,
            "subsample": settings.subsample,
            "engine": fit_engine.ENGINE_VERSION,
        }
        return self.cached_table(
            "fits",
            fields,
            lambda: fit_all(
                # Lazily: joblib draws a few samples ahead of its workers, so the float64
                # copies never all exist at once (a list of them was 2x the activations).
                self.samples(),
                settings.families,
                settings.subsample,
                TABLE_SEED,
                progress=self.progress,
                label=self.model,
                total=self.n_layers * len(self.pairs),
            ),
        )

    @functools.cached_property
    def modes(self) -> pd.DataFrame:
        """One row per (layer, pair, KDE mode) at the study's settings (Scott x 4.5 on each
        sample's own range); sample-level columns n_left / n_right repeat on each row."""

        def compute() -> pd.DataFrame:
            parts = []
            with self.progress(self.n_layers, f"modes {self.model}", "layer") as bar:
                for layer in range(self.n_layers):
                    samples = {p: self.values(layer, p) for p in self.pairs["pair"]}
                    # A constant sample (a dead dimension set, a flat layer) has no density
                    # to find modes in: it gets no rows, and the claims, which count pairs
                    # from the rows present, see fewer pairs instead of a crash.
                    varied = {p: x for p, x in samples.items() if np.ptp(x) > 0}
                    if varied:
                        table = summarize_many(varied).rename(columns={"sample": "pair"})
                        parts.append(table.assign(layer=layer))
                    bar.update(1)
            if not parts:
                raise fit_engine.DegenerateSampleError(f"{self.model}: every sample is constant")
            return pd.concat(parts, ignore_index=True)

        return self.cached_table("modes", {"kde": "scott*4.5, 1000 points"}, compute)

    @functools.cached_property
    def attributed_modes(self) -> pd.DataFrame:
        """One row per (layer, pair): secondary modes in bulk units (``stats.attribution``
        at its defaults), counted per side as mixture or outlier-dimension modes, far-tail
        groups, and the mixture counts again without the layer's highest-energy dimensions
        (ATTRIBUTION_REMOVED_DIMS)."""

        def compute() -> pd.DataFrame:
            rows = []
            with self.progress(self.n_layers, f"attributed modes {self.model}", "layer") as bar:
                for layer in range(self.n_layers):
                    block = self.layer(layer).astype(np.float64)
                    removed = top_energy_dims(block, ATTRIBUTION_REMOVED_DIMS)
                    for pair, sentence_rows in zip(
                        self.pairs["pair"], self.pairs["rows"], strict=True
                    ):
                        sample = block[np.asarray(sentence_rows)]
                        if not np.ptp(sample) > 0:
                            continue  # a constant sample has no modes (as in ``modes``)
                        found = attribution.attribute_modes(sample)
                        without = attribution.attribute_modes(sample, drop_dims=removed)
                        rows.append(_attributed_row(layer, int(pair), found, without))
                    bar.update(1)
            if not rows:
                raise InsufficientDataError(f"{self.model}: every sample is constant")
            return pd.DataFrame(rows)

        fields = {
            "code": source_fingerprint(attribution, _attributed_row),
            "removed_dims": ATTRIBUTION_REMOVED_DIMS,
        }
        return self.cached_table("attributed-modes", fields, compute)


# The attributed-mode table also counts mixture modes without each layer's 3 highest-energy
# dimensions: a mode that vanishes with them belonged to those few coordinates.
ATTRIBUTION_REMOVED_DIMS = 3


def _attributed_row(
    layer: int, pair: int, found: attribution.ModeAttribution, without: attribution.ModeAttribution
) -> dict[str, Any]:
    return {
        "layer": layer,
        "pair": pair,
        "left_mixture": found.count("left"),
        "right_mixture": found.count("right"),
        "left_outlier_dim": found.count("left", "outlier-dimension"),
        "right_outlier_dim": found.count("right", "outlier-dimension"),
        "far_groups": sum(m.far for m in found.modes),
        "left_mixture_without_top": without.count("left"),
        "right_mixture_without_top": without.count("right"),
    }


def _degenerate_table(families: tuple[str, ...], exc: Exception) -> pd.DataFrame:
    return pd.DataFrame(
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


def _rank_batch(
    batch: list[tuple[int, int, np.ndarray]],
    families: tuple[str, ...],
    subsample: int,
    seed: int,
) -> pd.DataFrame:
    rankings = distributions.rank_many([x for _, _, x in batch], families, subsample, seed)
    tables = []
    for (layer, pair, x), ranking in zip(batch, rankings, strict=True):
        if isinstance(ranking, fit_engine.DegenerateSampleError):
            # One constant sample is a finding about that sample, not a reason to stop.
            table = _degenerate_table(families, ranking)
        elif isinstance(ranking, ValueError):
            raise ranking
        else:
            table = ranking.table()
        tables.append(table.assign(layer=layer, pair=pair, n=len(x)))
    return pd.concat(tables, ignore_index=True)


# Samples fitted together by the engine (rank_many): enough to spread numpy's per-call
# overhead, few enough that a batch's float64 copies stay small (40 SmolLM2 pairs: 4 MB).
# A sample's fit does not depend on its batch, so this sets only speed and memory.
FIT_BATCH = 40


def _batches(
    samples: Iterable[tuple[int, int, np.ndarray]], size: int
) -> Iterator[list[tuple[int, int, np.ndarray]]]:
    batch: list[tuple[int, int, np.ndarray]] = []
    for item in samples:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class LayerStack:
    """(n_layers, n_sentences, d_model) activations indexed one layer at a time.

    ``stack[layer]`` is a read-only in-memory copy of that layer (``Evidence.layer``).
    Reading layers through the set's own long-lived memory map instead leaves every page
    read in the process's RSS, so a statistic looping over the layers ended up holding the
    whole set (peak RSS grew with the number of sentences: 1.16 GB at 4x the dataset).
    """

    ndim = 3

    def __init__(self, evidence: Evidence) -> None:
        self._evidence = evidence
        self.shape: tuple[int, int, int] = tuple(evidence.activations.resid.shape)
        self.dtype = evidence.activations.resid.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, layer: int) -> np.ndarray:
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
            raise TypeError(f"index one layer at a time, got {layer!r}")
        index = int(layer) + (self.shape[0] if layer < 0 else 0)
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"layer {layer} of {self.shape[0]}")
        return self._evidence.layer(index)


def _read_layer(resid: np.ndarray, layer: int) -> np.ndarray:
    """A copy of ``resid[layer]``. A whole memory-mapped .npy is read through a mapping of
    its own, closed after the copy: pages read through one long-lived mapping stay in the
    process's RSS, which would then grow to the whole set as the layers are walked."""
    filename = getattr(resid, "filename", None)
    if isinstance(resid, np.memmap) and filename and resid.flags.c_contiguous:
        mapped = np.load(filename, mmap_mode="r")
        if mapped.shape == resid.shape and mapped.dtype == resid.dtype:
            block = np.array(mapped[layer])
            del mapped  # unmapped: its pages leave this process's RSS
            return block
    return np.array(resid[layer])


def fit_all(
    samples: Iterable[tuple[int, int, np.ndarray]],
    families: tuple[str, ...],
    subsample: int,
    seed: int,
    progress: ProgressFactory = tqdm_bar,
    label: str = "",
    n_jobs: int | None = None,
    total: int | None = None,
) -> pd.DataFrame:
    """Rank every sample on all cores (this process's share of them under pytest-xdist),
    FIT_BATCH samples at a time; the result depends neither on the worker count nor on
    the batches."""
    from joblib import Parallel, delayed

    jobs = (
        delayed(_rank_batch)(batch, families, subsample, seed)
        for batch in _batches(samples, FIT_BATCH)
    )
    parts = Parallel(n_jobs=cpu_share() if n_jobs is None else n_jobs, return_as="generator")(jobs)
    tables = []
    count = total if total is not None else len(samples)  # type: ignore[arg-type]  # then sized
    with progress(count, f"fit {label}", "sample") as bar:
        for table in parts:
            tables.append(table)
            bar.update(int(table["family"].size // len(families)))
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
    cache = Cache(config.cache_dir)
    cache.sweep_stale()
    spec = models.resolve(model_name)
    key = activation_key(models.identity(spec), dataset, config)
    timings: dict[str, float] = {}
    acts = cache.get_activations(key)
    if acts is None:
        started = time.perf_counter()
        # cache.root: a local folder even when the cache is a URL (weights need one).
        loaded = models.load(spec, cache.root, config.extraction.dtype)
        timings["load"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()

        latch = _InterruptLatch()

        def checked(after_batch: Callable[[], None]) -> Callable[[], None]:
            def call() -> None:
                after_batch()
                latch.check()

            return call

        def run(allocate: extraction.Allocate, after_batch: Callable[[], None]) -> ActivationSet:
            return extraction.extract(
                loaded,
                list(dataset.frame["text"]),
                config.extraction,
                progress=progress,
                allocate=allocate,
                after_batch=checked(after_batch),
                pairs=list(zip(dataset.frame["subject"], dataset.frame["attribute"], strict=True)),
            )

        # Written into the cache entry batch by batch: RAM does not grow with sentences.
        with latch:
            acts = cache.put_extracted(key, dataset.frame, run)
        timings["extract"] = round(time.perf_counter() - started, 2)
        del loaded
        # Continue from the published entry, read like any cached one.
        acts = cache.get_activations(key) or acts
    else:
        timings["extract"] = 0.0

    sentences = dataset  # "all" below swaps in one row per sampled token

    def reselect(tokens: str) -> Evidence:
        extraction_settings = replace(config.extraction, tokens=tokens)
        settings = replace(config, extraction=extraction_settings)
        return build(model_name, sentences, settings, progress)

    if config.extraction.tokens == "all":
        acts, dataset = _sampled_tokens(cache, key, dataset, acts)
    return Evidence(model_name, acts, dataset, config, cache, key, timings, progress, reselect)


class _InterruptLatch:
    """Ctrl-C during extraction stops it at the next batch at the latest. SIGINT raises
    KeyboardInterrupt as usual and is also remembered: an interrupt that lands inside a
    destructor or callback is printed as "Exception ignored" and lost, and the run then went
    on to the fits (the SIGINT reliability test saw exit status 1 instead of 2)."""

    def __init__(self) -> None:
        self.hit = False
        self._previous: Any = None

    def __enter__(self) -> _InterruptLatch:
        # A run started with SIGINT ignored (nohup, a background job of a script) asked not
        # to be interrupted by it: that stays so.
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self.hit = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt("interrupted during extraction")


def _sampled_tokens(
    cache: Cache, key: str, dataset: Dataset, acts: ActivationSet
) -> tuple[ActivationSet, Dataset]:
    """Token selection "all": the evidence's table has one row per sampled token (so that
    ``Evidence.pairs`` groups the reservoir rows by pair), the cache entry's own rows; built
    from the extraction only where the entry could not be read back."""
    stored = cache.get_activation_set(key)
    if stored is not None:
        return stored.activations, stored.dataset
    if acts.source_rows is None:
        raise RuntimeError(f"activation cache entry {key} vanished while in use")
    assert acts.positions is not None  # set together with source_rows
    rows = activations.token_rows(dataset.frame, acts.source_rows, acts.positions)
    return acts, Dataset(rows, dataset.source)


def from_activation_set(
    source: Any, config: RunConfig, progress: ProgressFactory = tqdm_bar
) -> Evidence:
    """Evidence from an activation set on disk (docs/activation-format.md): no model loaded.

    ``source``: the set's folder or an already read ``activations.StoredSet``. The dataset
    is the set's own sentences.jsonl; ``--lm-sentences-per-pair`` takes the same seeded
    subset a model run would, with the matching rows of the array. Derived tables are cached
    under a key from the set's content hash, so a changed set never reuses old fits.
    """
    stored = source if isinstance(source, activations.StoredSet) else activations.read(source)
    acts, data = stored.activations, stored.dataset
    if config.sentences_per_pair is not None:
        frame = dataset_module.subset(
            data.frame, config.sentences_per_pair, dataset_module.SUBSET_SEED
        )
        rows = frame.index.to_numpy()
        # The subset's rows are copied out of the memory map: small by construction.
        acts = ActivationSet(acts.resid[:, rows], acts.n_tokens[rows], dict(acts.meta))
        data = Dataset(frame.reset_index(drop=True), data.source)
    key = key_for(
        {"activation_set": stored.content_hash, "sentences_per_pair": config.sentences_per_pair}
    )
    cache = Cache(config.cache_dir)
    return Evidence(stored.model, acts, data, config, cache, key, {"extract": 0.0}, progress)
