import json

import numpy as np
import pytest

from harness import evidence, extraction, synthetic
from harness.cache import Cache
from harness.config import ExtractionSettings, RunConfig
from harness.dataset import load
from harness.progress import silent
from harness.synthetic import activations, dataset


def test_cache_hit_performs_no_forward_pass(tmp_path, shared_cache, monkeypatch):
    data = load(sentences_per_pair=1)
    config = synthetic.run_config(shared_cache, tmp_path, ("tiny-gpt2",), ("norm", "logistic"))
    first = evidence.build("tiny-gpt2", data, config, progress=silent)

    def forbidden(*args, **kwargs):
        raise AssertionError("a forward pass ran on a cache hit")

    monkeypatch.setattr(extraction, "extract", forbidden)
    monkeypatch.setattr(extraction, "boot", forbidden)
    second = evidence.build("tiny-gpt2", data, config, progress=silent)
    assert second.activation_key == first.activation_key
    np.testing.assert_array_equal(np.asarray(second.activations.resid), first.activations.resid)


def test_changed_settings_change_the_key(tmp_path, shared_cache):
    data = load(sentences_per_pair=1)
    config = synthetic.run_config(shared_cache, tmp_path, ("tiny-gpt2",), ("norm", "logistic"))
    other = RunConfig(**{**config.__dict__, "extraction": ExtractionSettings(tokens="last")})
    identity = {"tiny": "tiny-gpt2"}
    assert evidence.activation_key(identity, data, config) != evidence.activation_key(
        identity, data, other
    )
    smaller = load(sentences_per_pair=2)
    assert evidence.activation_key(identity, data, config) != evidence.activation_key(
        identity, smaller, config
    )


def test_corrupt_entry_is_discarded(tmp_path):
    cache = Cache(tmp_path)
    data = dataset()
    acts = activations(data, "normal")
    folder = cache.put_activations("k", acts, data.frame)
    assert cache.get_activations("k") is not None
    with (folder / "resid_post.npy").open("r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        assert cache.get_activations("k") is None
    assert not folder.exists()


def test_entry_is_an_activation_set(tmp_path):
    cache = Cache(tmp_path)
    data = dataset()
    acts = activations(data, "normal", n_layers=2, d_model=8)
    folder = cache.put_activations("k", acts, data.frame)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format_version"] == 1 and set(meta["checksums"]) >= {"resid_post.npy"}
    assert len((folder / "sentences.jsonl").read_text().splitlines()) == len(data)
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_cached_arrays_are_computed_once_per_key(tmp_path):
    data = dataset(per_pair=3)
    acts = activations(data, "normal", d_model=8)
    calls = []

    def compute():
        calls.append(1)
        return {"u": np.arange(6.0).reshape(2, 3), "n": np.int64(4), "names": np.array(["a"])}

    first = synthetic.evidence(data, acts, tmp_path).cached_arrays("x", {"k": 1}, compute)
    again = synthetic.evidence(data, acts, tmp_path).cached_arrays("x", {"k": 1}, compute)
    assert len(calls) == 1
    assert set(again) == {"u", "n", "names"}
    np.testing.assert_array_equal(again["u"], first["u"])
    assert again["n"] == 4 and again["names"][0] == "a"
    synthetic.evidence(data, acts, tmp_path).cached_arrays("x", {"k": 2}, compute)
    assert len(calls) == 2  # other fields, other entry
    other = activations(data, "normal", d_model=8, seed=1)
    synthetic.evidence(data, other, tmp_path).cached_arrays("x", {"k": 1}, compute)
    assert len(calls) == 3  # other activations, other entry


def test_source_fingerprint_follows_the_code(tmp_path, monkeypatch):
    import importlib

    from harness.keys import source_fingerprint

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fp_a.py").write_text(
        "def f():\n    return helper()\n\n\ndef helper():\n    return 1\n"
    )
    (tmp_path / "fp_b.py").write_text("def g():\n    return 2\n")
    a, b = importlib.import_module("fp_a"), importlib.import_module("fp_b")
    first = source_fingerprint(a.f)
    assert first == source_fingerprint(a.helper) == source_fingerprint(a)  # per file
    assert source_fingerprint(a.f) != source_fingerprint(b.g)
    assert source_fingerprint(a.f, b.g) == source_fingerprint(b.g, a.f)
    # A helper's edit (not the function named) retires the entry too.
    (tmp_path / "fp_a.py").write_text(
        "def f():\n    return helper()\n\n\ndef helper():\n    return 3\n"
    )
    assert source_fingerprint(a.f) != first


def test_a_second_token_selection_is_extracted_once_and_cached(tmp_path, shared_cache):
    data = load(sentences_per_pair=1)
    config = synthetic.run_config(shared_cache, tmp_path, ("tiny-gpt2",), ("norm", "logistic"))
    built = evidence.build("tiny-gpt2", data, config, progress=silent)
    assert built.under_tokens("seed") is built
    last = built.under_tokens("last")
    assert last.config.extraction.tokens == "last" and last is built.under_tokens("last")
    assert last.activation_key != built.activation_key
    assert len(last.dataset) == len(data)
    # Reading the whole sentence is at least as long as the seed selection's prefix.
    assert (np.asarray(last.activations.n_tokens) >= np.asarray(built.activations.n_tokens)).all()
    again = evidence.build("tiny-gpt2", data, config, progress=silent).under_tokens("last")
    assert again.activation_key == last.activation_key and again.timings["extract"] == 0.0


def test_an_activation_set_has_no_second_token_selection(tmp_path):
    data = dataset()
    built = synthetic.evidence(data, activations(data, "logistic"), tmp_path)
    with pytest.raises(evidence.SelectionUnavailableError, match="no 'last' token selection"):
        built.under_tokens("last")
