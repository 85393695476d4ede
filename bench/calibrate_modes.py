"""Calibration of the two secondary-mode claims on planted truths: power (SUPPORTED where the
effect is planted) and false-positive rate (SUPPORTED where it is not), N datasets each.

    .venv/bin/python bench/calibrate_modes.py [--reps 200] [--seed 0]

Sizes are the realistic small ones of the calibration tests: 12 pairs (4 subjects x 3
attributes); final-layer-bimodality 6 sentences x 128 coordinates x 5 layers,
left-modes-decline 8 sentences x 256 coordinates x 6 layers. Targets: power >= 0.9,
false-positive rate <= 0.05.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import synthetic  # noqa: E402
from harness.claim import ClaimResult, Verdict  # noqa: E402
from harness.dataset import Dataset  # noqa: E402
from harness.extraction import ActivationSet  # noqa: E402


def load_claim(name: str) -> ModuleType:
    path = ROOT / "claims" / f"test_{name}.py"
    spec = importlib.util.spec_from_file_location(f"claim_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BIMODALITY = load_claim("final_layer_bimodality")
LEFT_MODES = load_claim("left_modes_decline")

# (rng) -> activations; the dataset is fixed per claim.
Plant = Callable[[np.random.Generator], ActivationSet]

BI_DATA = synthetic.dataset(n_subjects=4, n_attributes=3, per_pair=6)
LEFT_DATA = synthetic.dataset(n_subjects=4, n_attributes=3, per_pair=8)
N_PAIRS, BI_LAYERS, LEFT_LAYERS = 12, 5, 6


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def bimodal(separation: float, balance: float = 0.5) -> Plant:
    return lambda rng: synthetic.bimodal_activations(
        BI_DATA, (-1,), separation=separation, balance=balance, n_layers=BI_LAYERS, seed=_seed(rng)
    )


def unimodal(sampler: str) -> Plant:
    return lambda rng: synthetic.bimodal_activations(
        BI_DATA, (), sampler=sampler, n_layers=BI_LAYERS, seed=_seed(rng)
    )


def side_modes(rng: np.random.Generator) -> ActivationSet:
    # The study's small secondary modes (2 of 128 coordinates per side, compact) in every
    # pair and layer: many KDE peaks, none of them major.
    attributes = BI_DATA.frame["attribute"].unique()
    return synthetic.side_mode_activations(
        BI_DATA,
        dict.fromkeys(attributes, 4 / 128),
        jitter=0.2,
        n_layers=BI_LAYERS,
        d_model=128,
        seed=_seed(rng),
    )


def counts(left: tuple[float, float, int], right: tuple[float, float, int]) -> Plant:
    """Left / right counts ~ Binomial(trials, p) with p linear in depth (start, end, trials)."""

    def plant(rng: np.random.Generator) -> ActivationSet:
        n_left = synthetic.trend_counts(LEFT_LAYERS, N_PAIRS, *left, rng)
        n_right = synthetic.trend_counts(LEFT_LAYERS, N_PAIRS, *right, rng)
        return synthetic.mode_count_activations(LEFT_DATA, n_left, n_right, seed=_seed(rng))

    return plant


# (claim module, dataset, model name, plant, what a SUPPORTED verdict means here)
Condition = tuple[ModuleType, Dataset, str, Plant, str]

CONDITIONS: dict[str, Condition] = {
    # final-layer-bimodality: "almost perfectly symmetrically bimodal" = two logistic modes
    # 6 scale units apart, equal weights (valley ~50 % below the modes after smoothing).
    "bimodality: symmetric bimodal final layer, pythia-160m": (
        BIMODALITY,
        BI_DATA,
        "pythia-160m",
        bimodal(3.0),
        "power",
    ),
    "bimodality: logistic final layer, gpt2": (
        BIMODALITY,
        BI_DATA,
        "gpt2",
        unimodal("logistic"),
        "power",
    ),
    "bimodality: logistic final layer, pythia-160m": (
        BIMODALITY,
        BI_DATA,
        "pythia-160m",
        unimodal("logistic"),
        "false positive",
    ),
    "bimodality: t3 final layer, pythia-160m": (
        BIMODALITY,
        BI_DATA,
        "pythia-160m",
        unimodal("t3"),
        "false positive",
    ),
    "bimodality: small side modes everywhere, pythia-160m": (
        BIMODALITY,
        BI_DATA,
        "pythia-160m",
        side_modes,
        "false positive",
    ),
    "bimodality: symmetric bimodal final layer, gpt2": (
        BIMODALITY,
        BI_DATA,
        "gpt2",
        bimodal(3.0),
        "false positive",
    ),
    "bimodality: weaker, modes 5 scale units apart, pythia-160m": (
        BIMODALITY,
        BI_DATA,
        "pythia-160m",
        bimodal(2.5),
        "power (below the study's size)",
    ),
    "bimodality: 70/30 bimodal final layer, pythia-160m": (
        BIMODALITY,
        BI_DATA,
        "pythia-160m",
        bimodal(3.0, 0.7),
        "power (asymmetric)",
    ),
    # left-modes-decline: the left count falls from ~1.8 to ~0.2 modes per sample over
    # depth, the right one stays at ~0.8 ("tended to decrease", "fairly constant").
    "left modes: left 1.8 -> 0.2, right 0.8 constant": (
        LEFT_MODES,
        LEFT_DATA,
        "synthetic",
        counts((0.9, 0.1, 2), (0.8, 0.8, 1)),
        "power",
    ),
    "left modes: left 1.0 and right 0.8 constant (null)": (
        LEFT_MODES,
        LEFT_DATA,
        "synthetic",
        counts((0.5, 0.5, 2), (0.8, 0.8, 1)),
        "false positive",
    ),
    "left modes: both 0.9 -> 0.1 (equal decline, null)": (
        LEFT_MODES,
        LEFT_DATA,
        "synthetic",
        counts((0.9, 0.1, 1), (0.9, 0.1, 1)),
        "false positive",
    ),
    "left modes: weaker, left 1.2 -> 0.8, right constant": (
        LEFT_MODES,
        LEFT_DATA,
        "synthetic",
        counts((0.6, 0.4, 2), (0.8, 0.8, 1)),
        "power (below the study's size)",
    ),
}


def run_one(condition: Condition, rng: np.random.Generator) -> ClaimResult:
    claim, data, model, plant, _ = condition
    with tempfile.TemporaryDirectory() as folder:
        evidence = synthetic.evidence(data, plant(rng), Path(folder), model=model)
        return claim.evaluate(evidence)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95 % interval for a rate estimated from n replications."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="datasets per condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="run conditions whose name contains this")
    args = parser.parse_args()

    print(f"{args.reps} synthetic datasets per condition; rate = share SUPPORTED")
    header = f"{'condition':62s} {'measures':32s} {'rate':>6s}  {'95% CI':13s}  verdicts"
    print(header)
    print("-" * len(header))
    for index, (name, condition) in enumerate(CONDITIONS.items()):
        if args.only not in name:
            continue
        rng = np.random.default_rng([args.seed, index])
        started = time.perf_counter()
        verdicts = Counter(run_one(condition, rng).verdict for _ in range(args.reps))
        k = verdicts[Verdict.SUPPORTED]
        lo, hi = wilson(k, args.reps)
        tally = ", ".join(f"{v.value.lower()} {c}" for v, c in sorted(verdicts.items()))
        seconds = time.perf_counter() - started
        print(
            f"{name:62s} {condition[4]:32s} {k / args.reps:6.3f}  [{lo:.3f}, {hi:.3f}]  "
            f"{tally} ({seconds:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
