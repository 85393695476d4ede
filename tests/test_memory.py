"""Reading activations layer by layer without holding the whole set (issue 10, peak RSS)."""

from pathlib import Path

import numpy as np
import pytest

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


def test_npy_file_is_filled_in_place_and_reads_back(tmp_path):
    from harness.array_file import NpyFile

    expected = np.random.default_rng(2).normal(size=(3, 7, 5)).astype(np.float32)
    target = NpyFile(tmp_path / "r.npy")
    out = target.allocate(expected.shape)
    for row in np.random.default_rng(3).permutation(7):  # scattered, like length-sorted batches
        out[:, row] = expected[:, row]
        target.release()  # the pages leave RSS, the data stays
    target.flush()
    (tmp_path / "r.npy").rename(tmp_path / "s.npy")  # published by renaming
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), expected)
    np.testing.assert_array_equal(out, expected)  # the mapping outlives the rename
    empty = NpyFile(tmp_path / "e.npy").allocate((2, 0, 5))
    assert empty.shape == (2, 0, 5) and np.load(tmp_path / "e.npy").shape == (2, 0, 5)


def _rss_file_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
@pytest.mark.parametrize("release", [True, False])
def test_written_pages_leave_rss_only_when_released(tmp_path, release):
    """The writer's point: 64 MB written batch by batch stays out of the resident set.
    Without release() the same writes do show up (so the measurement can see them)."""
    from harness.array_file import NpyFile

    target = NpyFile(tmp_path / f"big-{release}.npy")
    out = target.allocate((4, 4096, 1024))  # 64 MB
    before = _rss_file_mb()
    chunk = np.ones((4, 256, 1024), dtype=np.float32)
    for start in range(0, 4096, 256):
        out[:, start : start + 256] = chunk
        if release:
            target.release()
    grown = _rss_file_mb() - before
    if release:
        assert grown < 12, f"{grown:.0f} MB of written pages stayed resident"
    else:
        assert grown > 48, f"only {grown:.0f} MB resident: the measurement cannot see pages"
    target.flush()
    assert float(np.load(tmp_path / f"big-{release}.npy", mmap_mode="r")[3, 4095, 1023]) == 1.0


def test_extraction_writes_batches_into_the_cache_entry(tmp_path, tiny_models, monkeypatch):
    """build() fills the entry's array file batch by batch (pages released after each) and
    publishes exactly what an in-memory extraction gives."""
    from harness import extraction, synthetic
    from harness.array_file import NpyFile
    from harness.config import ExtractionSettings
    from harness.dataset import load

    released = []
    monkeypatch.setattr(NpyFile, "release", lambda self: released.append(self.path.name))
    data = load(sentences_per_pair=1)  # 120 sentences
    config = synthetic.run_config(
        tmp_path / "cache", tmp_path, ("tiny-gpt2",), extraction=ExtractionSettings(batch_size=16)
    )
    built = evidence.build("tiny-gpt2", data, config, progress=silent)
    assert len(released) == 8 + 1  # one per batch of 16, and one by the final flush
    fresh = extraction.extract(
        tiny_models["tiny-gpt2"], list(data.frame["text"]), config.extraction, progress=silent
    )
    np.testing.assert_array_equal(np.asarray(built.activations.resid), fresh.resid)
    assert isinstance(built.activations.resid, np.memmap)  # read back from the entry
    assert not list((tmp_path / "cache" / "activations").glob(".*tmp*"))


def _mapped_evidence(tmp_path, n_layers=6, per_pair=64, d_model=1024):
    """Evidence over a memory-mapped 6 x 4096 x 1024 float32 set (96 MB), built without
    touching the array (a checksum or sum would make every page resident first)."""
    from harness import synthetic
    from harness.cache import Cache
    from harness.extraction import ActivationSet

    data = synthetic.dataset(n_subjects=8, n_attributes=8, per_pair=per_pair)
    shape = (n_layers, len(data), d_model)
    rows = np.arange(len(data), dtype=np.float32)[:, None] + np.zeros(d_model, np.float32)
    writer = np.lib.format.open_memmap(tmp_path / "r.npy", "w+", np.float32, shape)
    for layer in range(n_layers):
        writer[layer] = rows + layer
    writer.flush()
    del writer
    acts = ActivationSet(np.load(tmp_path / "r.npy", mmap_mode="r"), np.full(len(data), 8), {})
    config = synthetic.run_config(tmp_path / "cache", tmp_path)
    return evidence.Evidence("m", acts, data, config, Cache(tmp_path / "cache"), "k")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_evidence_resid_holds_one_layer_not_the_set(tmp_path):
    built = _mapped_evidence(tmp_path)
    stack = built.resid
    assert stack.shape == (6, 4096, 1024) and len(stack) == 6 and np.ndim(stack) == 3
    before = _rss_file_mb()
    for layer in range(6):
        assert float(stack[layer][5, 0]) == 5 + layer
    assert _rss_file_mb() - before < 24, "layers read through Evidence.resid stayed resident"
    mapped = built.activations.resid
    for layer in range(6):  # the control: the set's own long-lived map keeps what it read
        np.array(mapped[layer])
    assert _rss_file_mb() - before > 80, "the measurement cannot see resident pages"


def test_evidence_resid_indexing(tmp_path):
    built = _mapped_evidence(tmp_path, n_layers=3, per_pair=1, d_model=4)
    stack = built.resid
    np.testing.assert_array_equal(stack[-1], np.asarray(built.activations.resid[2]))
    with pytest.raises(ValueError):
        stack[0][0, 0] = 1.0  # shared with other readers: read-only
    with pytest.raises(IndexError):
        stack[3]
    with pytest.raises(TypeError):
        stack[:, 0]
