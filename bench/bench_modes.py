"""Benchmark: the study's KDE (scipy gaussian_kde on the full sample, evaluated on the
1000-point grid) against the binned FFT KDE of harness.stats.modes, on one 153,600-value
sample (the size of one GPT-2-small (subject, attribute, layer) sample: 200 sentences x
768 coordinates), plus the many-sample path the claims use.

    .venv/bin/python bench/bench_modes.py [--many 3600] [--values 10000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import stats

from harness.stats import modes

N_VALUES = 153_600


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time over repeats: the least disturbed run on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def study_kde(x: np.ndarray) -> np.ndarray:
    # As the study: Scott's factor x 4.5 on the full sample, 1000 points from min to max.
    kde = stats.gaussian_kde(x)
    kde.set_bandwidth(kde.scotts_factor() * modes.BW_FACTOR)
    return kde(np.linspace(x.min(), x.max(), modes.GRID_POINTS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--many", type=int, default=3600, help="samples for the batch timing")
    parser.add_argument("--values", type=int, default=10_000, help="values per batch sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    # A logistic bulk with two small secondary modes, like the samples the study shows.
    x = np.concatenate(
        [
            rng.logistic(0.0, 1.0, N_VALUES - 3_000),
            rng.normal(-12.0, 0.5, 1_500),
            rng.normal(12.0, 0.5, 1_500),
        ]
    )

    ref = study_kde(x)
    t_scipy = best_of(lambda: study_kde(x), repeats=3)
    _, ours, _ = modes.kde_grid(x)
    t_fft = best_of(lambda: modes.kde_grid(x), repeats=20)
    t_find = best_of(lambda: modes.find_modes(x), repeats=20)
    diff = float(np.max(np.abs(ours - ref)) / ref.max())
    found = modes.find_modes(x)

    print(f"sample: {x.size} values, bandwidth {found.bandwidth:.4g}, {len(found.modes)} modes")
    print(f"scipy gaussian_kde (study): {t_scipy:.3f} s")
    print(f"binned FFT KDE:             {t_fft * 1e3:.2f} ms")
    print(f"find_modes (KDE + peaks):   {t_find * 1e3:.2f} ms")
    print(f"speed-up (scipy / FFT KDE): {t_scipy / t_fft:.0f}x")
    print(f"max |FFT - scipy| / peak:   {diff:.2e}")

    many = rng.logistic(size=(args.many, args.values)).astype(np.float32)
    t_many = best_of(lambda: modes.summarize_many(many), repeats=1)
    print(
        f"summarize_many: {args.many} samples x {args.values} values in {t_many:.2f} s "
        f"({t_many / args.many * 1e3:.2f} ms per sample; the study's method would take "
        f"~{args.many * t_scipy * args.values / x.size / 60:.0f} min)"
    )


if __name__ == "__main__":
    main()
