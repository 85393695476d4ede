"""Damped Newton minimization of many small problems at once (the fit engine's optimizer).

Each problem is one sample's mean negative log-likelihood in a few free coordinates. The
engine's objectives take a batch of points ``theta`` (M, k) and, for each point, the
problem it belongs to (``rows``, M): every step of every problem still running is then one
batched objective call, so numpy's per-call overhead, which dominates on a few hundred
nodes, is paid once per step for all samples of a layer instead of once per sample.

Each problem follows exactly the path it would follow alone (its own stencil width, line
search, stopping rule and iteration budget); the arithmetic is per row, so a problem's
result does not depend on which others share its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# objective(theta (M, k), rows (M,)) -> mean negative log-likelihood per value (M,), inf
# where undefined
Objective = Callable[[np.ndarray, np.ndarray], np.ndarray]

MAX_NEWTON_STEPS = 80
# The full and half Newton step first (almost always enough) and a longer one, for
# likelihoods creeping towards a limit at infinity whose tiny curvature the finite
# differences overstate; shorter steps only when none of those improves.
_FIRST_STEPS = np.array([1.0, 0.5, 4.0])
_BACKTRACK_STEPS = np.array([0.25, 0.1, 0.03, 0.01, 0.001])
_STENCIL_WIDTHS = (1e-4, 1e-6)
_NO_START = "no starting point with a finite likelihood"


@dataclass(frozen=True)
class Optimum:
    theta: np.ndarray
    value: float
    converged: bool
    iterations: int
    note: str = ""


# node_sum's blocks: rows of a NodeSet are padded to a multiple of this
SUM_BLOCK = 16


def node_sum(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sums along the last axis (a multiple of SUM_BLOCK long): blocks summed by
    numpy, then the blocks' sums in order. Trailing zero-weight padding (samples with
    fewer nodes than the batch's widest) then leaves every bit of a row's sum as it is,
    and unlike a BLAS product the rounding does not depend on the thread count."""
    product = values * weights
    blocks = product.reshape(*product.shape[:-1], -1, SUM_BLOCK).sum(axis=-1)
    return np.cumsum(blocks, axis=-1)[..., -1]


def _stencil(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    eye = np.eye(k)
    iu, ju = np.triu_indices(k, 1)
    return np.concatenate([eye, -eye, eye[iu] + eye[ju]]), iu, ju


def newton(
    objective: Objective,
    theta0: np.ndarray,
    rows: np.ndarray,
    max_iter: int | np.ndarray = MAX_NEWTON_STEPS,
    tol: float = 1e-11,
    flat_tol: float = 2e-8,
    max_step: float = 3.0,
) -> list[Optimum]:
    """Minimize each problem from its start ``theta0[i]`` (problem ``rows[i]``).

    A step evaluates the whole central-difference stencil and the line search of every
    running problem in one objective call each. Indefinite Hessians are made positive by
    taking absolute eigenvalues.
    """
    theta = np.array(theta0, dtype=np.float64, ndmin=2)
    rows = np.asarray(rows, dtype=np.intp)
    b, k = theta.shape
    budget = np.broadcast_to(np.asarray(max_iter, dtype=np.intp), (b,))
    f0 = np.asarray(objective(theta, rows), dtype=np.float64)
    out: list[Optimum | None] = [None] * b
    flat = np.zeros(b, dtype=np.intp)
    for i in np.flatnonzero(~np.isfinite(f0)):
        out[i] = Optimum(
            theta[i].copy(), float(f0[i]), False, 0, "non-finite log-likelihood at the start"
        )
    active = np.flatnonzero(np.isfinite(f0))
    offsets, iu, ju = _stencil(k)
    n_stencil = len(offsets)
    it = 0
    while active.size:
        it += 1
        over = budget[active] < it
        for i in active[over]:
            note = f"no convergence in {int(budget[i])} Newton steps"
            out[i] = Optimum(theta[i].copy(), float(f0[i]), False, int(budget[i]), note)
        active = active[~over]
        if not active.size:
            break
        # The stencil at the widest step whose points all have a finite objective.
        vals = np.full((active.size, n_stencil), np.nan)
        h = np.full(active.size, np.nan)
        todo = np.arange(active.size)
        for width in _STENCIL_WIDTHS:
            if not todo.size:
                break
            points = theta[active[todo], None, :] + width * offsets[None]
            got = objective(points.reshape(-1, k), np.repeat(rows[active[todo]], n_stencil))
            got = got.reshape(todo.size, n_stencil)
            ok = np.isfinite(got).all(axis=1)
            vals[todo[ok]] = got[ok]
            h[todo[ok]] = width
            todo = todo[~ok]
        for j in todo:
            # The data sit at the edge of the support: no room left for a stencil here.
            i = active[j]
            out[i] = Optimum(theta[i].copy(), float(f0[i]), True, it, "at a support boundary")
        keep = np.isfinite(h)
        active, vals, h = active[keep], vals[keep], h[keep]
        if not active.size:
            break
        fa = f0[active]
        fp, fm, fc = vals[:, :k], vals[:, k : 2 * k], vals[:, 2 * k :]
        h2 = (h * h)[:, None]
        grad = (fp - fm) / (2 * h[:, None])
        hess = np.empty((active.size, k, k))
        diag = np.arange(k)
        hess[:, diag, diag] = (fp - 2 * fa[:, None] + fm) / h2
        off = (fc - fp[:, iu] - fp[:, ju] + fa[:, None]) / h2
        hess[:, iu, ju] = off
        hess[:, ju, iu] = off
        lam, vec = np.linalg.eigh(hess)
        floor = np.maximum(1e-8 * np.abs(lam).max(axis=1), 1e-12)
        lam = np.maximum(np.abs(lam), floor[:, None])
        proj = (vec * grad[:, :, None]).sum(axis=1)  # vec.T @ grad, per problem
        direction = -(vec * (proj / lam)[:, None, :]).sum(axis=2)
        decrement = 0.5 * (proj * proj / lam).sum(axis=1)
        length = np.sqrt((direction * direction).sum(axis=1))
        long = length > max_step
        direction[long] *= (max_step / length[long])[:, None]

        fractions = np.broadcast_to(_FIRST_STEPS, (active.size, len(_FIRST_STEPS))).copy()
        trial = _line(objective, theta[active], direction, rows[active], _FIRST_STEPS)
        stuck = ~(trial.min(axis=1) < fa)
        if stuck.any():
            # Backtracking, padded to the first steps' width with +inf so rows stay aligned.
            back = _line(
                objective,
                theta[active[stuck]],
                direction[stuck],
                rows[active[stuck]],
                _BACKTRACK_STEPS,
            )
            width = max(len(_BACKTRACK_STEPS), len(_FIRST_STEPS))
            trial = _pad(trial, width)
            fractions = _pad(fractions, width, 0.0)
            trial[stuck] = back
            fractions[stuck] = _BACKTRACK_STEPS
        best = np.argmin(trial, axis=1)
        picked = trial[np.arange(active.size), best]
        step = fractions[np.arange(active.size), best]
        gain = fa - picked
        still = np.ones(active.size, dtype=bool)
        for j in np.flatnonzero(~(gain > 0)):
            # rounding noise in the stencil, or a rough objective: fine if little was left
            i = active[j]
            converged = bool(decrement[j] < 1e-5)
            note = "" if converged else "line search found no decrease"
            out[i] = Optimum(theta[i].copy(), float(f0[i]), converged, it, note)
            still[j] = False
        moved = np.flatnonzero(still)
        idx = active[moved]
        theta[idx] = theta[idx] + step[moved, None] * direction[moved]
        f0[idx] = picked[moved]
        done = (decrement[moved] < tol) | ((gain[moved] < tol) & (step[moved] >= 0.25))
        # A likelihood creeping up by < flat_tol per value per step for two steps is
        # approaching a limiting case (loggamma -> normal as c -> inf, johnsonsb ->
        # lognormal) along a direction whose curvature is below the finite-difference
        # noise: what is left to gain there is negligible.
        flat[idx] = np.where(gain[moved] < flat_tol, flat[idx] + 1, 0)
        done |= flat[idx] >= 2
        for i in idx[done]:
            out[i] = Optimum(theta[i].copy(), float(f0[i]), True, it)
        active = idx[~done]
    results = [o for o in out if o is not None]
    assert len(results) == b, "every problem ends with a result"
    return results


def _line(
    objective: Objective,
    theta: np.ndarray,
    direction: np.ndarray,
    rows: np.ndarray,
    steps: np.ndarray,
) -> np.ndarray:
    points = theta[:, None, :] + steps[None, :, None] * direction[:, None, :]
    k = theta.shape[1]
    values = objective(points.reshape(-1, k), np.repeat(rows, len(steps)))
    return values.reshape(len(theta), len(steps))


def _pad(a: np.ndarray, width: int, fill: float = np.inf) -> np.ndarray:
    if a.shape[1] >= width:
        return a
    return np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), fill)], axis=1)


def multistart(
    objective: Objective,
    starts: np.ndarray,
    rows: np.ndarray,
    n_problems: int,
    keep: int = 2,
    margin: float = 0.05,
    probe: int = 2,
    promise: float = 1e-3,
) -> list[Optimum]:
    """Per problem: Newton from its best start to convergence, then short probes from the
    next few (those within ``margin`` per value at the start): one start can sit in the
    basin of a worse local optimum (skewed or bimodal samples). A probe that beats the best
    so far, or comes within ``promise`` per value of it somewhere else, is run to
    convergence. ``starts[i]`` belongs to problem ``rows[i]``."""
    starts = np.asarray(starts, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.intp)
    values = objective(starts, rows)
    orders: list[list[int]] = []
    best = []
    for p in range(n_problems):
        mine = np.flatnonzero(rows == p)
        v = values[mine]
        orders.append([int(mine[i]) for i in np.argsort(v) if v[i] <= v.min() + margin][:keep])
        best.append(Optimum(starts[mine[:1]].reshape(-1), math.inf, False, 0, _NO_START))
    first = [p for p in range(n_problems) if orders[p]]
    if first:
        found = newton(objective, starts[[orders[p][0] for p in first]], np.array(first))
        for p, opt in zip(first, found, strict=True):
            best[p] = opt
    for j in range(1, keep):
        probing = [p for p in range(n_problems) if len(orders[p]) > j]
        if not probing:
            continue
        trials = newton(
            objective, starts[[orders[p][j] for p in probing]], np.array(probing), max_iter=probe
        )
        further = []
        for p, trial in zip(probing, trials, strict=True):
            elsewhere = float(np.max(np.abs(trial.theta - best[p].theta))) > 0.5  # another basin
            if not trial.converged and (
                trial.value < best[p].value - 1e-7
                or (elsewhere and trial.value < best[p].value + promise)
            ):
                further.append((p, trial))
            elif trial.converged and trial.value < best[p].value:
                best[p] = trial
        if further:
            resumed = newton(
                objective,
                np.array([t.theta for _, t in further]),
                np.array([p for p, _ in further]),
            )
            for (p, _), trial in zip(further, resumed, strict=True):
                if trial.converged and trial.value < best[p].value:
                    best[p] = trial
    return best
