"""Planted-truth activation sets: the claims' statistics are checked on these before models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from harness.cache import Cache, key_for
from harness.config import ExtractionSettings, FitSettings, RunConfig
from harness.dataset import Dataset
from harness.evidence import Evidence
from harness.extraction import ActivationSet
from harness.progress import silent
from harness.stats.distributions import CORE_FAMILIES

# (rng, shape) -> values; one call per (layer, sentence block)
Sampler = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]

SAMPLERS: dict[str, Sampler] = {
    "logistic": lambda rng, shape: rng.logistic(0.0, 1.0, shape),
    "normal": lambda rng, shape: rng.normal(0.0, 1.0, shape),
    "t3": lambda rng, shape: rng.standard_t(3, shape),
}


def dataset(n_subjects: int = 4, n_attributes: int = 3, per_pair: int = 4) -> Dataset:
    rows = [
        {
            "id": f"s{s}-a{a}-{i}",
            "subject": f"subject {s}",
            "attribute": f"in attribute {a}",
            "text": f"synthetic sentence {i} about subject {s} in attribute {a}",
        }
        for s in range(n_subjects)
        for a in range(n_attributes)
        for i in range(per_pair)
    ]
    return Dataset(pd.DataFrame(rows), "synthetic")


def activations(
    data: Dataset,
    sampler: Sampler | str,
    n_layers: int = 3,
    d_model: int = 64,
    seed: int = 0,
) -> ActivationSet:
    draw = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    rng = np.random.default_rng(seed)
    resid = np.stack([draw(rng, (len(data), d_model)) for _ in range(n_layers)]).astype(np.float32)
    meta = {"model": "synthetic", "n_layers": n_layers, "d_model": d_model, "seed": seed}
    return ActivationSet(resid, np.full(len(data), 8), meta)


def evidence(
    data: Dataset,
    acts: ActivationSet,
    cache_dir: Path,
    families: tuple[str, ...] = CORE_FAMILIES,
    seed: int = 0,
    model: str = "synthetic",
) -> Evidence:
    config = RunConfig(
        models=(model,),
        dataset=None,
        extraction=ExtractionSettings(),
        fit=FitSettings(families=families),
        report_dir=cache_dir / "report",
        cache_dir=cache_dir,
        baseline_dir=cache_dir / "baselines",
        seed=seed,
    )
    # Keyed by content so two different planted sets never share cached tables.
    key = key_for(
        {
            "synthetic": acts.meta,
            "shape": acts.resid.shape,
            "sum": float(np.asarray(acts.resid, dtype=np.float64).sum()),
        }
    )
    return Evidence(model, acts, data, config, Cache(cache_dir), key, progress=silent)
