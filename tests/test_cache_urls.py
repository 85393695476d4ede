"""--lm-cache-dir as an fsspec URL: extract on one machine, evaluate claims on another."""

import uuid

import fsspec
import numpy as np
import pytest

from harness import evidence, extraction, remote_cache, synthetic
from harness.cache import Cache
from harness.dataset import load
from harness.progress import silent

DATA = synthetic.dataset(n_subjects=2, n_attributes=2, per_pair=3)


@pytest.fixture
def url() -> str:
    # memory:// is one filesystem per process: a fresh root per test keeps them apart.
    return f"memory://lmclaims-{uuid.uuid4().hex[:8]}/cache"


def _memory() -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("memory")


def test_an_entry_written_on_one_machine_is_read_on_another(tmp_path, url):
    acts = synthetic.activations(DATA, "normal", n_layers=2, d_model=8)
    writer = Cache(url, staging=tmp_path / "machine-a")
    writer.put_activations("k", acts, DATA.frame)
    remote = url.removeprefix("memory://")
    names = {p.rsplit("/", 1)[-1] for p in _memory().ls(f"/{remote}/activations/k", detail=False)}
    assert names == {"meta.json", "resid_post.npy", "n_tokens.npy", "sentences.jsonl"}
    reader = Cache(url, staging=tmp_path / "machine-b")
    got = reader.get_activations("k")
    assert got is not None
    assert isinstance(got.resid, np.memmap)  # read from the local staging copy, mapped
    assert str(got.resid.filename).startswith(str(tmp_path / "machine-b"))
    np.testing.assert_array_equal(np.asarray(got.resid), acts.resid)
    assert got.meta["dataset_sha256"] == DATA.sha256


def test_derived_tables_travel_too(tmp_path, url):
    table = DATA.frame.assign(value=np.arange(len(DATA), dtype=float))
    Cache(url, staging=tmp_path / "a").put_table("fits", "t", table, {"model": "m"})
    got = Cache(url, staging=tmp_path / "b").get_table("fits", "t")
    assert got is not None and list(got["value"]) == list(table["value"])
    assert Cache(url, staging=tmp_path / "c").get_table("fits", "absent") is None


def test_an_entry_without_meta_json_is_absent(tmp_path, url, monkeypatch):
    """An upload cut off before its last file (meta.json) is never seen by a reader."""
    acts = synthetic.activations(DATA, "normal", n_layers=2, d_model=8)
    writer = Cache(url, staging=tmp_path / "a")
    real_put = writer.remote.fs.put_file

    def cut_off(lpath, rpath, *args, **kwargs):
        if rpath.endswith("meta.json"):
            raise ConnectionError("network gone")
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(writer.remote.fs, "put_file", cut_off)
    with pytest.raises(ConnectionError):
        writer.put_activations("k", acts, DATA.frame)
    remote = url.removeprefix("memory://")
    assert _memory().exists(f"/{remote}/activations/k/resid_post.npy")  # half an entry
    assert Cache(url, staging=tmp_path / "b").get_activations("k") is None
    # A later complete publish (here: the same writer once the network is back) is seen.
    monkeypatch.setattr(writer.remote.fs, "put_file", real_put)
    writer.remote.push("activations", "k", writer.entry("activations", "k"))
    assert Cache(url, staging=tmp_path / "c").get_activations("k") is not None


def test_a_corrupt_remote_entry_is_discarded_everywhere(tmp_path, url):
    acts = synthetic.activations(DATA, "normal", n_layers=2, d_model=8)
    Cache(url, staging=tmp_path / "a").put_activations("k", acts, DATA.frame)
    remote = url.removeprefix("memory://")
    path = f"/{remote}/activations/k/resid_post.npy"
    data = bytearray(_memory().cat_file(path))
    data[-8:] = b"\x00" * 8
    _memory().pipe_file(path, bytes(data))
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        assert Cache(url, staging=tmp_path / "b").get_activations("k") is None
    assert not _memory().exists(f"/{remote}/activations/k/meta.json")


def test_file_urls_and_plain_paths_use_the_local_fast_path(tmp_path):
    store, root = remote_cache.open_root(f"file://{tmp_path}/c")
    assert store is None and root == tmp_path / "c"
    assert remote_cache.open_root(tmp_path / "d") == (None, tmp_path / "d")
    cache = Cache(f"file://{tmp_path}/c")
    acts = synthetic.activations(DATA, "normal", n_layers=2, d_model=8)
    cache.put_activations("k", acts, DATA.frame)
    assert (tmp_path / "c" / "activations" / "k" / "meta.json").is_file()
    assert isinstance(Cache(tmp_path / "c").get_activations("k").resid, np.memmap)


def test_extract_on_one_machine_evaluate_on_another(tmp_path, url, monkeypatch):
    """The multi-machine recipe end to end: the second 'machine' (a fresh staging folder)
    runs no forward pass and reuses the first one's fits."""
    data = load(sentences_per_pair=2)  # 128 values per sample: enough to fit
    monkeypatch.setattr(remote_cache, "default_staging", lambda _: tmp_path / "machine-a")
    first = evidence.build(
        "tiny-gpt2",
        data,
        synthetic.run_config(url, tmp_path, ("tiny-gpt2",), ("norm", "logistic")),
        progress=silent,
    )
    fits = first.fits
    monkeypatch.setattr(remote_cache, "default_staging", lambda _: tmp_path / "machine-b")

    def forbidden(*args, **kwargs):
        raise AssertionError("work repeated that the shared cache holds")

    monkeypatch.setattr(extraction, "extract", forbidden)
    monkeypatch.setattr(evidence, "fit_all", forbidden)
    second = evidence.build(
        "tiny-gpt2",
        data,
        synthetic.run_config(url, tmp_path, ("tiny-gpt2",), ("norm", "logistic")),
        progress=silent,
    )
    assert second.cache.root == tmp_path / "machine-b"
    np.testing.assert_array_equal(np.asarray(second.activations.resid), first.activations.resid)
    np.testing.assert_allclose(second.fits["loglik"], fits["loglik"])


def test_a_url_cache_dir_option_is_kept_as_a_url(pytester):
    pytester.makeini("[pytest]\nlm_cache_dir = memory://somewhere/cache\n")
    from harness.claims_plugin import build_run_config

    config = pytester.parseconfig()
    assert build_run_config(config).cache_dir == "memory://somewhere/cache"
