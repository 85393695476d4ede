"""Benchmark: the study's distribution fitting (scipy's generic ``fit`` of each family on
the full sample) against the engine of harness.stats.distributions, on samples of the
reports' size (12,672 values: 22 sentences x SmolLM2's 576 dimensions) drawn from several
families plus, when an activation cache exists, real pooled residual-stream samples (one
pair's sentences at a layer). The engine fits as the reports run it: BATCH samples of a
kind together (``rank_many``; a layer's pairs in a report), its seconds per sample being
the batch's time over BATCH; the reference fits the batch's first sample. Prints
per-sample seconds, the ratio, and agreement on that first sample: the same winner (by
AIC) unless the reference's top two are within 2 AIC units, and each family's worst
log-likelihood deficit per value (engine minus reference, both evaluated with scipy's
logpdf on the full sample).

    .venv/bin/python bench/bench_fit.py [--quick] [--values N] [--families study]
                                        [--reference-cache DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
from scipy import stats

from harness.stats import distributions as dist
from harness.stats import fit_engine
from harness.stats.families import resolve_families

N_VALUES = 12_672
BATCH = 40  # evidence.FIT_BATCH
TIE_AIC = 2.0

Sampler = Callable[[np.random.Generator, int], np.ndarray]
SYNTHETIC: dict[str, Sampler] = {
    "norm": lambda rng, n: rng.normal(0.5, 2.0, n),
    "logistic": lambda rng, n: rng.logistic(0.3, 1.2, n),
    "t(3)": lambda rng, n: 1.5 * rng.standard_t(3, n),
    "laplace": lambda rng, n: rng.laplace(-0.2, 1.0, n),
    "genlogistic(0.5)": lambda rng, n: stats.genlogistic.rvs(0.5, size=n, random_state=rng),
    "gennorm(0.8)": lambda rng, n: stats.gennorm.rvs(0.8, size=n, random_state=rng),
    "skewnorm(4)": lambda rng, n: stats.skewnorm.rvs(4.0, size=n, random_state=rng),
    "hypsecant": lambda rng, n: stats.hypsecant.rvs(size=n, random_state=rng),
}
QUICK_SYNTHETIC = ("logistic", "t(3)", "skewnorm(4)")


def real_batches(limit: int, values: int, batch: int) -> dict[str, list[np.ndarray]]:
    """Batches of pooled samples (all coordinates of consecutive blocks of sentences, about
    ``values`` values each) from the largest cached activation set, at evenly spaced
    layers."""
    paths = glob.glob(".lmclaims-cache/activations/*/resid_post.npy")
    if not paths or limit <= 0:
        return {}
    arrays = [np.load(p, mmap_mode="r") for p in paths]
    arrays = [a for a in arrays if a.ndim == 3 and a.shape[1] >= 20]
    if not arrays:
        return {}
    acts = max(arrays, key=lambda a: a.size)
    n_layers, n_sent, d_model = acts.shape
    take = max(1, min(values // d_model, n_sent))
    count = max(1, min(batch, n_sent // take))
    layers = sorted({round(i * (n_layers - 1) / max(limit - 1, 1)) for i in range(limit)})
    return {
        f"real layer {layer}": [
            np.asarray(acts[layer, i * take : (i + 1) * take], dtype=np.float64).ravel()
            for i in range(count)
        ]
        for layer in layers
    }


def cached_reference(x: np.ndarray, name: str, cache: Path | None) -> dist.FamilyFit:
    """scipy's generic fit on the full sample; optionally kept on disk between runs."""
    key = hashlib.sha1(x.tobytes() + name.encode() + scipy.__version__.encode()).hexdigest()
    path = cache / f"{key}.json" if cache else None
    if path and path.exists():
        return dist.FamilyFit(**json.loads(path.read_text()))
    fit = dist.fit_reference(name, x)
    if path:
        cache.mkdir(parents=True, exist_ok=True)
        record = dataclasses.asdict(fit)
        path.write_text(json.dumps({**record, "params": list(record["params"])}))
    return fit


def exact_loglik(name: str, params: tuple[float, ...], x: np.ndarray) -> tuple[float, bool]:
    """Full-sample log-likelihood by scipy's logpdf; where scipy's underflows (it takes
    log(pdf) for some families, -inf beyond ~745 scale units) the engine's numpy
    log-density on the full sample, flagged."""
    if not params:
        return -np.inf, False
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fit_engine.FAMILIES[name].logpdf(x, *params).sum())
        if np.isfinite(value):
            return value, False
        return float(np.sum(fit_engine.logpdf(name, x, params))), True


def same_answer(ref: dist.Ranking, ours: dist.Ranking) -> tuple[bool, float]:
    """Winners equal, or the reference's top two within TIE_AIC (a tie by its own numbers)."""
    usable = sorted(f.aic for f in ref.fits if f.valid and f.converged and np.isfinite(f.aic))
    gap = usable[1] - usable[0] if len(usable) > 1 else np.inf
    return ref.winner() == ours.winner() or gap < TIE_AIC, gap


def time_fitter(x: np.ndarray, families: tuple[str, ...]) -> str:
    try:
        from fitter import Fitter  # type: ignore[import-not-found]
    except ImportError:
        return "fitter not installed: skipped"
    start = time.perf_counter()
    Fitter(x, distributions=list(families), timeout=600).fit()
    return f"fitter {time.perf_counter() - start:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 synthetic + 1 real sample")
    parser.add_argument("--families", default="study", help="names or study/core/all")
    parser.add_argument("--values", type=int, default=N_VALUES)
    parser.add_argument("--real", type=int, default=4, help="real samples (layers) at most")
    parser.add_argument("--repeats", type=int, default=3, help="engine timings per batch")
    parser.add_argument("--batch", type=int, default=BATCH, help="samples fitted together")
    parser.add_argument("--reference-cache", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    families = resolve_families(args.families)
    rng = np.random.default_rng(args.seed)
    chosen = QUICK_SYNTHETIC if args.quick else tuple(SYNTHETIC)
    batches = {
        name: [SYNTHETIC[name](rng, args.values) for _ in range(args.batch)] for name in chosen
    }
    batches.update(real_batches(1 if args.quick else args.real, args.values, args.batch))

    # One-time costs (the start tables each process builds once) are reported apart.
    start = time.perf_counter()
    dist.rank(rng.logistic(size=2000), families)
    warm_up = time.perf_counter() - start

    print(
        f"families: {len(families)} ({args.families}); engine warm-up {warm_up:.2f} s once; "
        f"engine: batches of {args.batch} samples, seconds per sample"
    )
    header = (
        f"{'sample':18s} {'n':>7s} {'reference s':>11s} {'engine s':>9s} {'ratio':>7s} "
        f"{'ref winner':>14s} {'engine winner':>14s} {'ref top-2 gap':>13s} agree"
    )
    print(header)
    print("-" * len(header))
    deficits: dict[str, float] = {}
    report_error = 0.0
    underflows: list[str] = []
    rows = []
    for label, batch in batches.items():
        x = batch[0]
        ref_fits = []
        ref_start = time.perf_counter()
        for name in families:
            ref_fits.append(cached_reference(x, name, args.reference_cache))
        ref_seconds = sum(f.seconds for f in ref_fits)
        if args.reference_cache is None:
            ref_seconds = time.perf_counter() - ref_start
        ref = dist.Ranking(len(x), tuple(ref_fits))
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fitted = dist.rank_many(batch, families)
            timings.append((time.perf_counter() - start) / len(batch))
        eng_seconds = statistics.median(timings)
        ours = fitted[0]
        if not isinstance(ours, dist.Ranking):
            raise ours
        agree, gap = same_answer(ref, ours)
        for fit, rfit in zip(ours.fits, ref.fits, strict=True):
            exact, underflow = exact_loglik(fit.name, fit.params, x)
            if underflow:
                underflows.append(f"{label}: {fit.name}")
            if np.isfinite(rfit.loglik):
                deficit = (exact - rfit.loglik) / len(x)
                deficits[fit.name] = min(deficits.get(fit.name, np.inf), deficit)
            if np.isfinite(exact) and np.isfinite(fit.loglik):
                report_error = max(report_error, abs(exact - fit.loglik) / len(x))
        rows.append((ref_seconds, eng_seconds, agree))
        print(
            f"{label:18s} {len(x):7d} {ref_seconds:11.2f} {eng_seconds:9.3f} "
            f"{ref_seconds / eng_seconds:7.0f} {ref.winner()!s:>14s} {ours.winner()!s:>14s} "
            f"{gap:13.1f} {'yes' if agree else 'NO'}"
        )

    total_ref = sum(r[0] for r in rows)
    total_eng = sum(r[1] for r in rows)
    print("-" * len(header))
    print(
        f"total: reference {total_ref:.1f} s, engine {total_eng:.2f} s, "
        f"ratio {total_ref / total_eng:.0f}x (per sample median "
        f"{statistics.median(r[0] / r[1] for r in rows):.0f}x)"
    )
    print(
        f"same winner (rule: equal unless the reference's top two are within {TIE_AIC:g} AIC): "
        f"{sum(r[2] for r in rows)}/{len(rows)}"
    )
    print(f"engine's reported log-likelihood vs scipy on the full sample: {report_error:.1e}/value")
    if underflows:
        print(f"scipy's logpdf underflowed (numpy log-density used): {', '.join(underflows)}")
    print("worst log-likelihood per value, engine minus reference (negative = engine worse):")
    for name in families:
        print(f"  {name:20s} {deficits.get(name, float('nan')):+.2e}")
    print(time_fitter(batches[chosen[0]][0], families))


if __name__ == "__main__":
    main()
