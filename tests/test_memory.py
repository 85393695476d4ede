"""Reading activations layer by layer without holding the whole set (issue 10, peak RSS)."""

import numpy as np

from harness import evidence
from harness.progress import silent


def test_read_layer_matches_the_array_however_it_is_held(tmp_path):
    resid = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    np.save(tmp_path / "r.npy", resid)
    mapped = np.load(tmp_path / "r.npy", mmap_mode="r")
    for layer in range(3):
        np.testing.assert_array_equal(evidence._read_layer(mapped, layer), resid[layer])
        np.testing.assert_array_equal(evidence._read_layer(resid, layer), resid[layer])
    # A view of the mapping (same file, other shape) must not be read as the whole file.
    np.testing.assert_array_equal(evidence._read_layer(mapped[:, 1:3], 2), resid[2, 1:3])
    np.testing.assert_array_equal(evidence._read_layer(mapped[::-1], 0), resid[2])
    assert not np.shares_memory(evidence._read_layer(mapped, 0), mapped)


def test_fit_all_takes_a_lazy_stream_of_samples():
    rng = np.random.default_rng(1)
    drawn = []

    def stream():
        for layer in range(2):
            x = rng.logistic(size=400)
            drawn.append(layer)
            yield layer, 0, x

    table = evidence.fit_all(
        stream(), ("norm", "logistic"), 400, 0, progress=silent, n_jobs=1, total=2
    )
    assert drawn == [0, 1]
    assert sorted(set(table["layer"])) == [0, 1] and set(table["family"]) == {"norm", "logistic"}
