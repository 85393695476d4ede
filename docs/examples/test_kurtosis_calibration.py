"""The kurtosis-rises statistic on planted truths, before it is trusted on a model.

Each layer's values are a Gaussian scale mixture x = z * exp(s * g) (z, g standard normal),
whose kurtosis is 3 * exp(4 s^2): planting s per layer plants the kurtosis trend exactly.
"""

from pathlib import Path

import numpy as np
import pytest

from harness import registry, synthetic
from harness.claim import Verdict

# In your project: the claim's file under claims/.
CLAIM = registry.load_file(Path(__file__).parent / "test_kurtosis_rises.py")
DATA = synthetic.dataset(n_subjects=4, n_attributes=3, per_pair=4)  # 12 pairs


def scale_mixture(s: float) -> synthetic.Sampler:
    return lambda rng, shape: rng.normal(size=shape) * np.exp(s * rng.normal(size=shape))


def run(tmp_path: Path, spreads: list[float], seed: int = 0) -> Verdict:
    acts = synthetic.layered_activations(
        DATA, [scale_mixture(s) for s in spreads], d_model=128, seed=seed
    )
    evidence = synthetic.evidence(DATA, acts, tmp_path / f"cache-{seed}", seed=seed)
    return CLAIM.evaluate(evidence, CLAIM.spec)


def test_detects_a_planted_rise(tmp_path):
    # kurtosis 3.0 -> 5.3 over five layers
    result = run(tmp_path, [0.0, 0.1, 0.2, 0.3, 0.38])
    assert result.verdict == Verdict.SUPPORTED
    assert result.ci[0] > 0


def test_a_planted_fall_is_refuted(tmp_path):
    result = run(tmp_path, [0.38, 0.3, 0.2, 0.1, 0.0])
    assert result.verdict == Verdict.REFUTED


def test_constant_heavy_tails_do_not_fire(tmp_path):
    # Heavy tails (kurtosis 4.3) but no trend. A 95 % interval decides either way on about
    # 2 of 40 null datasets; 6 or more would happen by chance with probability ~1.4 %, so
    # more means the interval is too narrow (e.g. layers treated as independent).
    verdicts = [run(tmp_path, [0.3] * 5, seed=seed).verdict for seed in range(40)]
    assert sum(v != Verdict.INCONCLUSIVE for v in verdicts) <= 5


@pytest.mark.parametrize(("pairs", "layers"), [(3, 5), (12, 2)])
def test_too_little_data_is_inconclusive(tmp_path, pairs, layers):
    data = synthetic.dataset(n_subjects=pairs, n_attributes=1, per_pair=4)
    acts = synthetic.layered_activations(data, [scale_mixture(0.2)] * layers)
    result = CLAIM.evaluate(synthetic.evidence(data, acts, tmp_path), CLAIM.spec)
    assert result.verdict == Verdict.INCONCLUSIVE
