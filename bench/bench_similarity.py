"""Benchmark: vectorized distinctiveness against a naive loop over cells and cell pairs.

Shape of a SmolLM2-135M run: 30 layers x 10 subjects x 12 attributes x 20 sentences x 576
dims. The reference is the definition written out literally (mask-mean centroids, then the
double mean over (s2, a2) with one cosine per term); it is the ground truth for the
vectorized code, which uses the separable form of the same double mean.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_similarity.py

On a machine whose cores are shared with other work, OpenBLAS' threads wait on each other:
here a 576 x 576 eigvalsh went from 29 ms to 4.5 s and small batched matmuls 50x slower, so
pin BLAS to one thread for timings that mean anything (both sides use BLAS/LAPACK).
"""

from __future__ import annotations

import os
import time

import numpy as np

from harness.stats import similarity

L, S, A, PER, D_MODEL = 30, 10, 12, 20, 576


def synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subject + attribute directions plus noise, with one massive offset dimension as in
    SmolLM2 so the raw cosines are all close to 1 (the hard case for float precision)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((S, D_MODEL))
    v = rng.standard_normal((A, D_MODEL))
    subject = np.repeat(np.arange(S), A * PER)
    attribute = np.tile(np.repeat(np.arange(A), PER), S)
    resid = np.empty((L, len(subject), D_MODEL), dtype=np.float32)
    for layer in range(L):
        x = 0.5 * u[subject] + 0.4 * v[attribute] + rng.standard_normal((len(subject), D_MODEL))
        x[:, 7] += 50.0 + 20.0 * rng.standard_normal(len(subject))
        resid[layer] = x
    return resid, subject, attribute


def naive_centroids(x: np.ndarray, subject: np.ndarray, attribute: np.ndarray) -> np.ndarray:
    out = np.empty((S, A, x.shape[1]))
    for s in range(S):
        for a in range(A):
            out[s, a] = x[(subject == s) & (attribute == a)].astype(np.float64).mean(axis=0)
    return out


def cos(p: np.ndarray, q: np.ndarray) -> float:
    return float(p @ q / (np.linalg.norm(p) * np.linalg.norm(q)))


def naive_d(c: np.ndarray) -> np.ndarray:
    out = np.empty((S, A))
    for s1 in range(S):
        for a1 in range(A):
            terms = [
                cos(c[s1, a1], c[s1, a2]) - cos(c[s1, a1], c[s2, a1])
                for s2 in range(S)
                if s2 != s1
                for a2 in range(A)
                if a2 != a1
            ]
            out[s1, a1] = np.mean(terms)
    return out


def naive_transform(x: np.ndarray, variant: str) -> np.ndarray:
    """Per-layer transform the textbook way: SVD of the centred matrix, z-scores."""
    x = x.astype(np.float64)
    if variant == "raw":
        return x
    z = x - x.mean(axis=0)
    if variant == "standardized":
        return z / z.std(axis=0)
    _, sing, vt = np.linalg.svd(z, full_matrices=False)
    share = np.cumsum(sing**2) / np.sum(sing**2)
    k = int(np.searchsorted(share, 0.9, side="right")) + 1
    return z @ vt[:k].T


def naive(resid: np.ndarray, subject: np.ndarray, attribute: np.ndarray, variant: str):
    return np.stack(
        [
            naive_d(naive_centroids(naive_transform(resid[layer], variant), subject, attribute))
            for layer in range(L)
        ]
    )


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    resid, subject, attribute = synthetic()
    print(f"shape: {L} layers x {S}x{A} cells x {PER} sentences x {D_MODEL} dims (float32)")
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}")
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    cents = np.stack([similarity.centroids(resid[i], subject, attribute, S, A) for i in range(L)])
    t_core, fast = timed(lambda: similarity.distinctiveness_from_centroids(cents), repeat=5)
    t_loop, slow = timed(lambda: np.stack([naive_d(cents[i]) for i in range(L)]))
    print(
        f"D from centroids, all {L} layers: vectorized {t_core * 1e3:.1f} ms, "
        f"naive loop {t_loop:.2f} s, ratio {t_loop / t_core:.0f}x, "
        f"max |diff| {np.max(np.abs(fast - slow)):.2e}"
    )

    for variant in similarity.VARIANTS:
        t_fast, res = timed(
            lambda v=variant: similarity.distinctiveness(resid, subject, attribute, v), repeat=3
        )
        t_ref, ref = timed(lambda v=variant: naive(resid, subject, attribute, v))
        diff = float(np.max(np.abs(res.D - ref)))
        kept = f"{res.components_kept.min()}-{res.components_kept.max()}"
        print(
            f"end to end {variant:>12}: vectorized {t_fast:.2f} s (with the per-layer PCA "
            f"diagnostics), naive {t_ref:.2f} s, ratio {t_ref / t_fast:.1f}x, "
            f"max |diff| {diff:.2e}, PCA components kept {kept}"
        )

    for variant in ("raw", "pca"):
        n_boot = 200
        t_boot, _ = timed(
            lambda v=variant, b=n_boot: similarity.bootstrap_distinctiveness(
                resid, subject, attribute, v, n_boot=b, seed=0
            )
        )
        print(f"bootstrap {variant:>4}, {n_boot} resamples: {t_boot:.2f} s")


if __name__ == "__main__":
    main()
