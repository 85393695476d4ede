"""Calibration of the japanese-sharper-modes verdict on planted truths: power at a planted
effect of realistic size, false-positive rates on nulls. Every replicate is a fresh
synthetic model (8 subjects x 4 attributes x 5 sentences x 96 coordinates x 5 layers) run
through the claim's own ``evaluate``, so the rates are those of the verdict rule itself.

    .venv/bin/python bench/calibrate_japanese.py [--reps 200] [--ladder] [--jobs 1]

Scenarios (side modes: 2 of 96 coordinates of every sentence at +-20, as the outlier
dimensions behind real side modes; jitter = their sd across sentences):
- power: every attribute carries the side modes, Japanese's are tighter (jitter 2.5 vs
  3.0). Its Japanese/others score ratio is ~1.4, under half of SmolLM2-135M's on the
  shipped dataset (0.0061 / 0.0018 ~ 3.3), so "realistic" here errs on the weak side.
- null: every attribute carries the same side modes (jitter 3.0): attributes exchangeable.
- scale null: as null, with the Japanese vectors scaled x 2 as a whole (modes included).
  The standardized score is blind to it by construction (same rates as the null); the
  last column shows what the same test on the data-unit score (one shared
  modes.common_bandwidth, the claim's first design) would call SUPPORTED.
- ladder (--ladder): jitter 2.75 and 2.0 against 3.0, and Japanese-only modes at 1 %.

Targets: power >= 0.9, false-positive rate (SUPPORTED on a null) <= 0.05. The thresholds
are the claim's (alpha 0.05); nothing here is tuned to these scenarios.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from scipy import stats

from harness import synthetic
from harness.dataset import Dataset

JA = "in japanese"
OTHERS = ("in english", "in spanish", "in all lower case")
SHARED = {a: 0.02 for a in (*OTHERS, JA)}


def jitters(japanese: float, others: float = 3.0) -> dict[str, float]:
    return {JA: japanese} | dict.fromkeys(OTHERS, others)


SCENARIOS: dict[str, dict[str, Any]] = {
    "power: Japanese modes tighter (jitter 2.5 vs 3)": {
        "side_fraction": SHARED,
        "jitter": jitters(2.5),
    },
    "null: identical side modes in every attribute": {
        "side_fraction": SHARED,
        "jitter": jitters(3.0),
    },
    "scale null: Japanese vectors x 2, same modes": {
        "side_fraction": SHARED,
        "jitter": jitters(3.0),
        "whole_scale": 2.0,
    },
}
LADDER: dict[str, dict[str, Any]] = {
    "ladder: jitter 2.75 vs 3.0": {"side_fraction": SHARED, "jitter": jitters(2.75)},
    "ladder: jitter 2.0 vs 3.0": {"side_fraction": SHARED, "jitter": jitters(2.0)},
    "ladder: Japanese-only modes, 1 % of coords": {"side_fraction": {JA: 0.01}},
}


def load_claim() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "claims" / "test_japanese_sharper_modes.py"
    spec = importlib.util.spec_from_file_location("claim_japanese_sharper_modes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replicate(
    claim: ModuleType, data: Dataset, planted: dict[str, Any], seed: int, cache: Path
) -> dict[str, Any]:
    planted = dict(planted)
    factor = planted.pop("whole_scale", None)
    acts = synthetic.side_mode_activations(data, **planted, seed=seed)
    if factor is not None:
        resid = np.array(acts.resid)
        resid[:, data.frame["attribute"].to_numpy() == JA] *= factor
        acts = synthetic.ActivationSet(resid, acts.n_tokens, {**acts.meta, "scale": factor})
    result = claim.evaluate(synthetic.evidence(data, acts, cache, seed=seed))
    scores = result.tables["per_attribute"].set_index("attribute")["score"]
    others = scores.drop(JA).mean()
    # The same rule on the data-unit score (one modes.common_bandwidth per subject and
    # layer, no standardization); the pairs table holds each pair's layer-mean scores.
    data_units = claim.relabel_test(result.tables["pairs"], "score_data_units", seed)
    return {
        "verdict": str(result.verdict),
        "effect": result.effect,
        "ratio": scores[JA] / others if others > 0 else np.inf,
        "data_units_supported": data_units.p_greater < 0.05,
    }


def run(
    claim: ModuleType, data: Dataset, planted: dict[str, Any], reps: int, jobs: int, seed0: int
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        if jobs == 1:
            return [replicate(claim, data, planted, seed0 + r, Path(tmp)) for r in range(reps)]
        from joblib import Parallel, delayed

        work = (delayed(replicate)(claim, data, planted, seed0 + r, Path(tmp)) for r in range(reps))
        return list(Parallel(n_jobs=jobs)(work))


def rate(k: int, n: int) -> str:
    lo, hi = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="replicates per scenario")
    parser.add_argument("--ladder", action="store_true", help="also run the effect-size ladder")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (joblib)")
    parser.add_argument("--seed", type=int, default=0, help="first replicate's seed")
    args = parser.parse_args()

    claim = load_claim()
    data = synthetic.language_dataset((*OTHERS, JA), n_subjects=8, per_pair=5)
    scenarios = SCENARIOS | (LADDER if args.ladder else {})
    print(f"{args.reps} replicates per scenario; rates with exact 95% binomial CIs\n")
    header = (
        f"{'scenario':50} {'SUPPORTED':>21} {'REFUTED':>21} {'mean J':>9} {'ja/oth':>6} "
        f"{'data-unit SUPP.':>15}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, int] = {}
    started = time.perf_counter()
    for name, planted in scenarios.items():
        out = run(claim, data, planted, args.reps, args.jobs, args.seed)
        supported = sum(o["verdict"] == "SUPPORTED" for o in out)
        refuted = sum(o["verdict"] == "REFUTED" for o in out)
        summary[name] = supported
        effect = np.mean([o["effect"] for o in out])
        ratio = np.mean([o["ratio"] for o in out])
        data_units = np.mean([o["data_units_supported"] for o in out])
        print(
            f"{name:50} {rate(supported, args.reps):>21} {rate(refuted, args.reps):>21} "
            f"{effect:9.2e} {ratio:6.2f} {data_units:15.3f}"
        )
    power_name, null_name = list(SCENARIOS)[:2]
    power, fpr = summary[power_name] / args.reps, summary[null_name] / args.reps
    print(f"\npower (SUPPORTED at the planted effect):  {power:.3f}  target >= 0.9")
    print(f"false-positive rate (SUPPORTED on null):  {fpr:.3f}  target <= 0.05")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
