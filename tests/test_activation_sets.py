"""Activation sets as a first-class artifact: format, export, claims on sets, bad sets."""

import json
from pathlib import Path

import numpy as np
import pytest

# In-process pytester runs drop modules first imported inside them, and torch's C
# extension cannot be imported twice (nor loky registered twice at exit): load the heavy
# stack before any pytester snapshot (as tests/test_plugin.py does).
import torch  # noqa: F401
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401
from joblib.externals import loky  # noqa: F401

from harness import activations, cli, evidence, extraction, synthetic
from harness.activations import ActivationSetError
from harness.cache import Cache
from harness.claim import Verdict
from harness.config import ExtractionSettings, FitSettings, RunConfig
from harness.dataset import load
from harness.progress import silent
from tests.conftest import make_project

DATA = synthetic.dataset(n_subjects=4, n_attributes=3, per_pair=4)
# Sets a claim must decide on: the claims' two-way (subject x attribute) bootstrap cannot
# bound an interval over three attributes (logistic-dominance is then INCONCLUSIVE).
VERDICT_DATA = synthetic.dataset(n_subjects=6, n_attributes=6, per_pair=3)


def _config(tmp_path: Path, **changes) -> RunConfig:
    fields = {
        "models": (),
        "dataset": None,
        "extraction": ExtractionSettings(),
        "fit": FitSettings(families=("norm", "logistic")),
        "report_dir": tmp_path / "report",
        "cache_dir": tmp_path / "cache",
        "baseline_dir": tmp_path / "baselines",
    } | changes
    return RunConfig(**fields)


def _planted(
    tmp_path: Path, sampler: str = "logistic", model: str = "planted", data=DATA, **kw
) -> Path:
    acts = synthetic.activations(data, sampler, n_layers=3, d_model=128, seed=1)
    return synthetic.write_activation_set(tmp_path / model, data, acts, model=model, **kw)


# ------------------------------------------------------------------------- round trips


def test_extract_then_read_gives_identical_arrays_and_meta(tmp_path, shared_cache, tiny_models):
    out = tmp_path / "set"
    argv = ["extract", "--model", "tiny-gpt2", "--out", str(out)]
    argv += ["--sentences-per-pair", "1", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 0
    stored = activations.read(out)
    data = load(sentences_per_pair=1)
    # An independent extraction of the same sentences with the same model.
    fresh = extraction.extract(
        tiny_models["tiny-gpt2"], list(data.frame["text"]), ExtractionSettings(), progress=silent
    )
    assert stored.activations.resid.dtype == np.float32
    assert isinstance(stored.activations.resid, np.memmap)  # memory-mapped on read
    np.testing.assert_array_equal(np.asarray(stored.activations.resid), fresh.resid)
    np.testing.assert_array_equal(stored.activations.n_tokens, fresh.n_tokens)
    assert stored.dataset.frame.equals(data.frame)
    assert stored.dataset.sha256 == data.sha256
    written = json.loads((out / "meta.json").read_text())
    assert written["format_version"] == activations.FORMAT_VERSION
    assert {k: v for k, v in written.items() if k not in ("format_version", "checksums")} == (
        stored.activations.meta
    )
    meta = stored.activations.meta
    for name in ("model", "n_layers", "d_model", "hook", "tokens", "processing", "dtype"):
        assert meta[name] == fresh.meta.get(name, meta[name]) and meta[name] is not None
    assert meta["dataset_sha256"] == data.sha256 and meta["created"].endswith("Z")
    assert meta["library_versions"]["numpy"] == np.__version__
    # The extraction went through the cache: its entry is the same activation set.
    entry = next((tmp_path / "cache" / "activations").iterdir())
    cached = activations.read(entry)
    np.testing.assert_array_equal(np.asarray(cached.activations.resid), fresh.resid)
    assert cached.checksums["resid_post.npy"] == stored.checksums["resid_post.npy"]


def test_extract_refuses_a_nonempty_out_folder(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me")
    argv = ["extract", "--model", "tiny-gpt2", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "x").read_text() == "keep me"


def test_cache_entries_written_before_new_meta_fields_stay_readable(tmp_path):
    cache = Cache(tmp_path)
    acts = synthetic.activations(DATA, "normal", n_layers=2, d_model=8)
    folder = cache.put_activations("k", acts, DATA.frame)
    # An entry as the cache wrote it before dataset_sha256 / created / hook existed.
    meta = json.loads((folder / "meta.json").read_text())
    for name in ("dataset_sha256", "created", "hook", "tokens", "processing"):
        meta.pop(name)
    (folder / "meta.json").write_text(json.dumps(meta))
    got = cache.get_activations("k")
    assert got is not None and folder.exists()
    assert got.meta["dataset_sha256"] == DATA.sha256 and got.meta["created"].endswith("Z")
    np.testing.assert_array_equal(np.asarray(got.resid), acts.resid)


def test_float16_sets_are_accepted_and_give_the_planted_verdict(tmp_path):
    from tests.test_logistic_dominance_calibration import claim

    verdicts = {}
    for dtype in ("float16", "float32"):
        path = _planted(tmp_path / dtype, dtype=dtype, data=VERDICT_DATA)
        stored = activations.read(path)
        assert stored.activations.resid.dtype == np.dtype(dtype)
        assert stored.activations.meta["dtype"] == dtype
        ev = evidence.from_activation_set(path, _config(tmp_path / dtype), progress=silent)
        verdicts[dtype] = claim.evaluate(ev).verdict
    assert verdicts == {"float16": Verdict.SUPPORTED, "float32": Verdict.SUPPORTED}


def test_safetensors_array_is_memory_mapped(tmp_path):
    from safetensors.numpy import save_file

    path = _planted(tmp_path)
    resid = np.load(path / "resid_post.npy")
    (path / "resid_post.npy").unlink()
    (path / "n_tokens.npy").unlink()
    save_file({"resid_post": resid.astype(np.float16)}, str(path / "resid_post.safetensors"))
    meta = json.loads((path / "meta.json").read_text())
    meta.pop("checksums")  # a hand-made set may carry none; the reader hashes the files
    (path / "meta.json").write_text(json.dumps(meta))
    stored = activations.read(path)
    assert isinstance(stored.activations.resid, np.memmap)
    np.testing.assert_array_equal(stored.activations.resid, resid.astype(np.float16))
    # n_tokens come from the sentence table once n_tokens.npy is gone.
    assert (stored.activations.n_tokens == 8).all()


def test_sentences_per_pair_takes_the_matching_rows(tmp_path):
    path = _planted(tmp_path)
    full = activations.read(path)
    ev = evidence.from_activation_set(
        path, _config(tmp_path, sentences_per_pair=2), progress=silent
    )
    assert len(ev.dataset) == 12 * 2
    rows = [int(np.flatnonzero(full.dataset.frame["id"] == i)[0]) for i in ev.dataset.frame["id"]]
    np.testing.assert_array_equal(ev.activations.resid, np.asarray(full.activations.resid)[:, rows])


def test_derived_tables_are_keyed_by_the_sets_content(tmp_path, monkeypatch):
    a = evidence.from_activation_set(_planted(tmp_path / "a"), _config(tmp_path), progress=silent)
    same = evidence.from_activation_set(tmp_path / "a" / "planted", _config(tmp_path))
    other = evidence.from_activation_set(
        _planted(tmp_path / "b", sampler="normal"), _config(tmp_path), progress=silent
    )
    assert a.activation_key == same.activation_key != other.activation_key
    assert a.model == "planted"
    fits = a.fits
    assert not other.fits["loglik"].equals(fits["loglik"])

    def forbidden(*args, **kwargs):
        raise AssertionError("fits recomputed for a set whose tables are cached")

    monkeypatch.setattr(evidence, "fit_all", forbidden)
    np.testing.assert_allclose(same.fits["loglik"], fits["loglik"])  # from the cache


# ------------------------------------------------------------------------- bad sets


def _rewrite_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


def _drop_checksums(path: Path) -> None:
    # As a set written by hand, without checksums: the later checks are what must catch it.
    meta = json.loads((path / "meta.json").read_text())
    meta.pop("checksums")
    (path / "meta.json").write_text(json.dumps(meta))


def _replace_array(path: Path, array: np.ndarray) -> None:
    np.save(path / "resid_post.npy", array)
    _drop_checksums(path)


def _edit_sentences(path: Path, edit) -> None:
    (path / "sentences.jsonl").write_text(edit((path / "sentences.jsonl").read_text()))
    _drop_checksums(path)


def _with_nan(path: Path) -> None:
    resid = np.load(path / "resid_post.npy")
    resid[1, 3, :5] = np.nan
    resid[2, 0, 0] = np.inf
    _replace_array(path, resid)


BAD_SETS = {
    "missing meta": (lambda p: (p / "meta.json").unlink(), "missing meta.json"),
    "missing array": (lambda p: (p / "resid_post.npy").unlink(), "missing resid_post.npy"),
    "missing sentences": (lambda p: (p / "sentences.jsonl").unlink(), "missing sentences.jsonl"),
    "unknown version": (
        lambda p: _rewrite_meta(p, format_version=7),
        "unknown format version 7; this lmclaims reads version(s) 1",
    ),
    "rows vs array": (
        lambda p: _edit_sentences(p, lambda t: "".join(t.splitlines(keepends=True)[:-1])),
        "resid_post.npy has 48 sentences (shape (3, 48, 128)) but sentences.jsonl has 47 rows",
    ),
    "n_layers": (
        lambda p: _rewrite_meta(p, n_layers=4),
        "meta.json says n_layers=4 but resid_post.npy has 3",
    ),
    "d_model": (
        lambda p: _rewrite_meta(p, d_model=64),
        "meta.json says d_model=64 but resid_post.npy has 128",
    ),
    "nan and inf": (
        _with_nan,
        "6 NaN/inf values (layer 1: 5, layer 2: 1)",
    ),
    "checksum": (
        lambda p: (p / "sentences.jsonl").write_text(
            (p / "sentences.jsonl").read_text().replace("sentence 0", "sentence zero", 1)
        ),
        "sentences.jsonl does not match its checksum",
    ),
    "2d array": (
        lambda p: _replace_array(p, np.zeros((48, 128), np.float32)),
        "expected 3 dimensions",
    ),
    "integer array": (
        lambda p: _replace_array(p, np.zeros((3, 48, 128), np.int32)),
        "holds int32; use float16 or float32",
    ),
    "duplicate rows": (
        lambda p: _edit_sentences(p, lambda t: t.replace("sentence 1 about", "sentence 0 about")),
        "duplicate row",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETS))
def test_bad_sets_are_refused_with_a_clear_error(tmp_path, case):
    path = _planted(tmp_path)
    damage, message = BAD_SETS[case]
    damage(path)
    with pytest.raises(ActivationSetError) as info:
        activations.read(path)
    assert message in str(info.value), str(info.value)
    assert str(path) in str(info.value)


def test_a_folder_that_is_not_there(tmp_path):
    with pytest.raises(ActivationSetError, match="no such directory"):
        activations.read(tmp_path / "nowhere")


def test_two_sets_of_one_model_are_refused(tmp_path):
    a, b = _planted(tmp_path / "a"), _planted(tmp_path / "b", sampler="normal")
    with pytest.raises(ActivationSetError, match="both name model 'planted'"):
        activations.read_many([a, b])


# ------------------------------------------------------------ the full pytest path


@pytest.fixture
def project(pytester: pytest.Pytester, shared_cache: Path) -> pytest.Pytester:
    make_project(pytester.path, shared_cache)
    for sampler in ("logistic", "normal"):
        acts = synthetic.activations(VERDICT_DATA, sampler, n_layers=3, d_model=128, seed=1)
        synthetic.write_activation_set(
            pytester.path / "sets" / sampler, VERDICT_DATA, acts, model=f"planted-{sampler}"
        )
    return pytester


def test_claims_on_sets_beside_a_model_give_the_planted_verdicts(project):
    args = ["claims", "--lm-activations", "sets/logistic,sets/normal"]
    args += ["--lm-families=norm,logistic", "-p", "no:cacheprovider"]
    result = project.runpytest(*args)
    # tiny-gpt2 (from the ini) and the normal set are refuted, the logistic set supported.
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "logistic-dominance on planted-normal: REFUTED" in out
    assert "logistic-dominance on tiny-gpt2: REFUTED" in out
    report = project.path / "reports" / "tiny-gpt2+planted-logistic+planted-normal"
    text = " ".join((report / "report.md").read_text().split())  # table padding aside
    assert "| logistic-dominance | planted-logistic | **SUPPORTED** |" in text
    assert "| logistic-dominance | planted-normal | **REFUTED** |" in text
    results = json.loads((report / "results.json").read_text())
    verdicts = {r["model"]: r["verdict"] for r in results["results"]}
    assert verdicts == {
        "tiny-gpt2": "REFUTED",
        "planted-logistic": "SUPPORTED",
        "planted-normal": "REFUTED",
    }
    assert results["provenance"]["settings"]["activation_sets"] == [
        str(project.path / "sets" / "logistic"),
        str(project.path / "sets" / "normal"),
    ]
    # Baselines were written per set, under the set's own sentences and settings; the next
    # run compares against them and the refutations become expected failures.
    stored = json.loads((project.path / "baselines" / "planted-normal.json").read_text())
    assert stored["settings"]["dataset_sha256"] == VERDICT_DATA.sha256
    assert stored["settings"]["processing"] == "synthetic"
    again = project.runpytest(*args, "--lm-models=")
    again.assert_outcomes(passed=1, xfailed=1)


def test_a_set_named_like_a_model_is_a_usage_error(project):
    acts = synthetic.activations(DATA, "normal", n_layers=2, d_model=16)
    synthetic.write_activation_set(project.path / "clash", DATA, acts, model="tiny-gpt2")
    result = project.runpytest("claims", "--lm-activations", "clash", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'tiny-gpt2' is both in --lm-models and the model of an*"])


def test_a_bad_set_is_a_usage_error_before_any_model_loads(project):
    _with_nan(project.path / "sets" / "normal")
    result = project.runpytest(
        "claims", "--lm-activations", "sets/logistic,sets/normal", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sets/normal: 6 NaN/inf values (layer 1: 5, layer 2: 1)*"])
    assert "extract tiny-gpt2" not in result.stdout.str() + result.stderr.str()


def test_sets_alone_do_not_pull_in_the_default_model(project):
    # An ini that names no model: the default (smollm2-135m) must not join a set-only run.
    ini = (project.path / "pytest.ini").read_text().replace("lm_models = tiny-gpt2\n", "")
    (project.path / "pytest.ini").write_text(ini)
    result = project.runpytest(
        "claims",
        "--lm-activations",
        "sets/logistic",
        "--lm-families=norm,logistic",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["lmclaims: 1 claim(s) x 1 model(s): 1 SUPPORTED -> *"])
    assert (project.path / "reports" / "planted-logistic" / "report.md").is_file()


def test_bad_safetensors_files_are_clear_errors(tmp_path):
    from safetensors.numpy import save_file

    path = _planted(tmp_path)
    resid = np.load(path / "resid_post.npy")
    (path / "resid_post.npy").unlink()
    meta = json.loads((path / "meta.json").read_text())
    meta.pop("checksums")
    (path / "meta.json").write_text(json.dumps(meta))
    target = path / "resid_post.safetensors"
    target.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")  # a header cut short
    with pytest.raises(activations.ActivationSetError, match="not a valid safetensors file"):
        activations.read(path)
    save_file({"a": resid, "b": resid}, str(target))
    with pytest.raises(activations.ActivationSetError, match="one tensor named 'resid_post'"):
        activations.read(path)
    save_file({"other": resid.astype(np.float64)}, str(target))
    with pytest.raises(activations.ActivationSetError, match="use F16 or F32"):
        activations.read(path)
