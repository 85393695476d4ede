"""Claims across models in parallel with pytest-xdist: one model per worker, one report.

``pytest -n auto claims/ --lm-models a,b,c`` runs each worker's claims as usual; at the
worker's session end its results, claim specs and model provenance travel to the
controller (xdist's ``workeroutput``) as JSON, and the controller writes the single report
and the baselines, as a serial run would. Unless ``--dist`` is given, ``-n`` schedules one
model per worker, so each model is extracted once, by one worker; all workers share the
cache directory, whose entries are published atomically.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harness import dataset, report
from harness.claim import ClaimResult, ClaimSpec, Verdict
from harness.session import LmSession

PAYLOAD_KEY = "lmclaims"


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    """This process hands tests to xdist workers and collects none itself."""
    return not is_worker(config) and getattr(config.option, "dist", "no") != "no"


# -- JSON round trip of results and specs (exact: floats, NaN and infinities survive) --------


def _plain(value: Any) -> Any:
    """What json cannot write natively: numpy scalars and arrays, tuples inside cells."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} between xdist processes: {value!r}")


def frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    """Columns with their dtypes; ``frame_from_json`` rebuilds an equal frame."""
    return {
        "columns": [str(c) for c in frame.columns],
        "dtypes": [str(t) for t in frame.dtypes],
        "data": [frame[c].tolist() for c in frame.columns],
        "index": None if isinstance(frame.index, pd.RangeIndex) else frame.index.tolist(),
    }


def frame_from_json(data: dict[str, Any]) -> pd.DataFrame:
    columns = {
        name: pd.Series(values, dtype=dtype)
        for name, dtype, values in zip(data["columns"], data["dtypes"], data["data"], strict=True)
    }
    frame = pd.DataFrame(columns, columns=data["columns"])
    if data.get("index") is not None:
        frame.index = pd.Index(data["index"])
    return frame


def result_to_json(result: ClaimResult) -> dict[str, Any]:
    out = asdict(result) | {"verdict": str(result.verdict)}
    out["tables"] = {name: frame_to_json(t) for name, t in result.tables.items()}
    return out


def result_from_json(data: dict[str, Any]) -> ClaimResult:
    fields = dict(data)
    fields["verdict"] = Verdict(fields["verdict"])
    fields["ci"] = None if fields["ci"] is None else tuple(fields["ci"])
    fields["notes"] = tuple(fields["notes"])
    fields["tables"] = {name: frame_from_json(t) for name, t in fields["tables"].items()}
    return ClaimResult(**fields)


def spec_to_json(spec: ClaimSpec) -> dict[str, Any]:
    out = asdict(spec)
    out["expectations"] = {k: str(v) for k, v in spec.expectations.items()}
    return out


def spec_from_json(data: dict[str, Any]) -> ClaimSpec:
    fields = dict(data)
    fields["expectations"] = {k: Verdict(v) for k, v in fields["expectations"].items()}
    fields["caveats"] = tuple(fields["caveats"])
    fields["needs"] = tuple(fields["needs"])
    fields["study_models"] = tuple(fields.get("study_models", ()))
    return ClaimSpec(**fields)


# -- worker -> controller -----------------------------------------------------------------


def encode_session(state: LmSession) -> str:
    """A worker's part of the run: results (which of them lack a baseline), specs, models."""
    unrecorded = {id(r) for r in state.unrecorded}
    payload = {
        "results": [result_to_json(r) for r in state.results],
        "unrecorded": [i for i, r in enumerate(state.results) if id(r) in unrecorded],
        "specs": {claim_id: spec_to_json(s) for claim_id, s in state.specs.items()},
        "models": report.model_provenance(state),
        "errors": dict(state.errors),
    }
    # Python's json writes NaN/Infinity: both ends are this module, so they round-trip.
    return json.dumps(payload, default=_plain, allow_nan=True)


def merge_session(state: LmSession, text: str) -> None:
    """Add a worker's part to the controller's state, results in --lm-models order."""
    payload = json.loads(text)
    results = [result_from_json(r) for r in payload["results"]]
    state.results.extend(results)
    state.unrecorded.extend(results[i] for i in payload["unrecorded"])
    for claim_id, spec in payload["specs"].items():
        state.specs.setdefault(claim_id, spec_from_json(spec))
    for model, provenance in payload["models"].items():
        state.remote_models.setdefault(model, provenance)
    state.errors.update(payload["errors"])
    order = {name: i for i, name in enumerate(state.config.models)}
    state.results.sort(key=lambda r: order.get(r.model, len(order)))
    state.unrecorded.sort(key=lambda r: order.get(r.model, len(order)))
    ranked = sorted(state.remote_models.items(), key=lambda kv: order.get(kv[0], len(order)))
    state.remote_models = dict(ranked)
    if state.dataset is None:
        # The controller collects nothing, so it has not read the dataset; its hash keys
        # the baselines it writes.
        # The same fixed subset seed as plugin.py's collection (not --lm-seed).
        state.dataset = dataset.load(state.config.dataset, state.config.sentences_per_pair)


# -- the xdist hooks ------------------------------------------------------------------------


def model_scope(nodeid: str, models: tuple[str, ...]) -> str:
    """The model a claim item runs on, read from its parametrize id (``test_x[model]``, or
    ``[model-...]``/``[...-model]`` beside other parameters); other items: their own node id."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return nodeid
    param = nodeid[nodeid.rindex("[") + 1 : -1]
    parts = f"-{param}-"
    found = [m for m in models if m == param or f"-{m}-" in parts]
    return f"lm-model:{max(found, key=len)}" if found else nodeid


def _scheduler(config: pytest.Config, log: Any, models: tuple[str, ...]) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ModelScheduling(LoadScopeScheduling):
        """xdist's scope scheduling with one scope per model: a model's claims share a
        worker, which extracts it once and fits it once."""

        def _split_scope(self, nodeid: str) -> str:
            return model_scope(nodeid, models)

    return ModelScheduling(config, log)


class Controller:
    def __init__(self, state: LmSession) -> None:
        self.state = state

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") != "load" or _dist_given(config):
            return None  # an explicit --dist is the user's choice
        # Plain -n: xdist's "load" would split a model's claims over workers, each then
        # extracting the model. (xdist's loadgroup marks do not work under pytest 9: xdist
        # 3.8 renames node ids through an attribute pytest 9 no longer reads.)
        return _scheduler(config, log, self.state.config.models)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        payload = getattr(node, "workeroutput", {}).get(PAYLOAD_KEY)
        if payload is not None:
            merge_session(self.state, payload)


def _dist_given(config: pytest.Config) -> bool:
    args = [
        *config.invocation_params.args,
        *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
        *config.getini("addopts"),
    ]
    return any(str(a) in ("-d", "--distload") or str(a).startswith("--dist") for a in args)


def configure(config: pytest.Config, state: LmSession) -> None:
    """Register the controller's side where xdist is installed and distributing."""
    if config.pluginmanager.hasplugin("xdist") and is_controller(config):
        config.pluginmanager.register(Controller(state), "lmclaims-xdist-controller")


def ship(config: pytest.Config, state: LmSession) -> None:
    """At a worker's session end: hand its part of the run to the controller."""
    payload = encode_session(state)
    config.workeroutput[PAYLOAD_KEY] = payload  # type: ignore[attr-defined]  # an xdist worker's
