"""Fuzzing (issue 9, item 8): random malformed dataset files and option values. Only the
documented errors come out: DatasetError from the loaders; ConfigError / FamilyError, or the
ValueError that pytest_configure turns into a usage error, from option parsing. Never a
KeyError, TypeError, IndexError, UnicodeError, ... Example counts are bounded (< 30 s)."""

import contextlib
import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import dataset
from harness.claims_plugin import build_run_config
from harness.config import ConfigError, ExtractionSettings, FitSettings, RunConfig
from harness.dataset import DatasetError
from harness.plugin import _OPTIONS
from harness.stats.families import FamilyError, resolve_families

FUZZ = settings(
    max_examples=int(os.environ.get("LMCLAIMS_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = st.sampled_from(["subject", "attribute", "text", "id", "extra", ""])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ROWS = st.lists(st.dictionaries(KEYS, JSON_VALUES, max_size=5), max_size=6)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode(
        "utf-8", "surrogatepass"
    )


def _csv(header: list[str], cells: list[list[str]]) -> bytes:
    lines = [",".join(header)] + [",".join(row) for row in cells]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def _seed_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# The bodies a user's broken file may have: structured but wrong (missing keys, wrong types),
# then damaged (truncated, bad UTF-8 spliced in, a huge line, arbitrary bytes, empty).
STRUCTURED = st.one_of(
    st.tuples(st.just(".jsonl"), ROWS.map(_jsonl)),
    st.tuples(
        st.just(".csv"),
        st.builds(
            _csv,
            st.lists(KEYS, max_size=5),
            st.lists(st.lists(st.text(max_size=12), max_size=5), max_size=5),
        ),
    ),
    st.tuples(st.just(".json"), JSON_VALUES.map(_seed_json)),
    st.tuples(
        st.just(".json"),
        st.dictionaries(
            st.text(max_size=10),
            st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3),
            max_size=3,
        ).map(_seed_json),
    ),
)


@st.composite
def damaged_files(draw: st.DrawFn) -> tuple[str, bytes]:
    suffix, body = draw(STRUCTURED)
    damage = draw(st.sampled_from(["none", "truncate", "bad-utf8", "huge-line", "bytes", "empty"]))
    if damage == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif damage == "bad-utf8":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[at:]
    elif damage == "huge-line":
        body += b"\n" + b'{"subject": "s", "attribute": "a", "text": "' + b"x" * 200_000 + b'"'
    elif damage == "bytes":
        body = draw(st.binary(max_size=200))
    elif damage == "empty":
        body = b""
    return suffix, body


@FUZZ
@given(file=damaged_files(), per_pair=st.none() | st.integers(1, 4))
def test_malformed_dataset_files_raise_only_dataset_errors(tmp_path: Path, file, per_pair):
    suffix, body = file
    path = tmp_path / f"data{suffix}"
    path.write_bytes(body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the duplicate-row warning is documented behaviour
        try:
            loaded = dataset.load(path, per_pair)
        except DatasetError:
            return
    # What loads is usable: non-empty, no blank cells.
    assert len(loaded) > 0
    assert all(loaded.frame[c].str.strip().ne("").all() for c in dataset.COLUMNS)


def _fake_config(values: dict[str, str | None], root: Path) -> Any:
    """What build_run_config reads from a pytest.Config: options, ini values, rootpath."""
    defaults = {"lm_" + name.replace("-", "_"): default for name, _, default in _OPTIONS}
    return SimpleNamespace(
        getoption=lambda name: values.get(name),
        getini=lambda name: defaults[name],
        rootpath=root,
        inicfg={},  # nothing set in an ini file
    )


OPTION_VALUES = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(
        ["0", "-1", "1e3", "32", " 7 ", "cuda:x", "cuda:99", "mps", "nan", "~nosuchuser/x", "all,"]
    ),
)


@FUZZ
@given(
    values=st.dictionaries(
        st.sampled_from(["lm_" + n.replace("-", "_") for n, _, _ in _OPTIONS]), OPTION_VALUES
    )
)
def test_random_option_values_raise_only_usage_errors(tmp_path: Path, values):
    try:
        config = build_run_config(_fake_config(values, tmp_path))
    except ValueError:  # ConfigError, FamilyError, int(): pytest_configure's usage error
        return
    assert isinstance(config, RunConfig)


@FUZZ
@given(
    tokens=st.text(max_size=8) | st.sampled_from(["seed", "last", "mean"]),
    processing=st.text(max_size=8) | st.sampled_from(["raw", "tl-compat"]),
    batch_size=st.integers(-(2**40), 2**40),
    device=st.text(max_size=8) | st.sampled_from(["cpu", "cuda", "cuda:1", "mps", ":"]),
    dtype=st.text(max_size=8) | st.sampled_from(["float32", "bfloat16", "float16"]),
    families=st.text(max_size=30) | st.lists(st.text(max_size=8), max_size=4),
    subsample=st.integers(-(2**40), 2**40),
)
def test_config_classes_raise_only_config_and_family_errors(
    tokens, processing, batch_size, device, dtype, families, subsample
):
    with contextlib.suppress(ConfigError):
        ExtractionSettings(tokens, processing, batch_size, device, dtype)
    with contextlib.suppress(ConfigError, FamilyError):
        FitSettings(resolve_families(families), subsample)


def test_the_usage_error_path_covers_what_build_run_config_raises(tmp_path: Path):
    # A bad integer is a ValueError, which pytest_configure reports as a usage error.
    with pytest.raises(ValueError):
        build_run_config(_fake_config({"lm_batch_size": "many"}, tmp_path))
