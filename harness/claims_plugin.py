"""The claims plugin: per-model evidence fixtures, verdicts, one report per session.

Registered by ``harness.plugin`` (the light entry point) only when a run asks for claims."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from harness import activations, baseline, claim_selection, evidence, models, parallel, report
from harness import dataset as dataset_module
from harness.activations import peek_model
from harness.claim import ClaimResult, ClaimSpec
from harness.config import (
    DEFAULT_MODELS,
    ConfigError,
    ExtractionSettings,
    FitSettings,
    RunConfig,
    check_output_dir,
)
from harness.dataset import DatasetError
from harness.evidence import Evidence
from harness.extraction import ExtractionError, check_device
from harness.progress import ProgressFactory, tqdm_bar
from harness.session import LmSession
from harness.stats.families import FamilyError, resolve_families

session_key = pytest.StashKey[LmSession]()


def _setting(config: pytest.Config, ini: str) -> str | None:
    value = config.getoption(ini)
    return value if value is not None else config.getini(ini)


def _defaulted(config: pytest.Config, ini: str) -> str:
    """A setting whose ini key has a default (``harness.plugin._OPTIONS``): never None."""
    value = _setting(config, ini)
    assert value is not None, f"{ini} has an ini default"
    return value


def _path(config: pytest.Config, value: str) -> Path:
    if "://" in value:  # an fsspec URL (--lm-cache-dir memory://..., s3://...): kept as is
        return value  # type: ignore[return-value]  # RunConfig keeps an fsspec URL a str
    try:
        path = Path(value).expanduser()
    except RuntimeError as exc:  # "~user/..." naming no user of this machine
        raise ConfigError(f"cannot expand {value!r}: {exc}") from exc
    return path if path.is_absolute() else config.rootpath / path


def _integer(value: str | None, option: str, required: bool = False) -> Any:
    if value is None or value == "":
        if required:
            raise ConfigError(f"--lm-{option} needs a whole number")
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--lm-{option} must be a whole number, got {value!r}") from None


def build_run_config(config: pytest.Config) -> RunConfig:
    get = lambda name: _setting(config, name)  # noqa: E731
    sets = tuple(
        str(_path(config, p.strip())) for p in (get("lm_activations") or "").split(",") if p.strip()
    )
    models_value = get("lm_models")
    if sets and config.getoption("lm_models") is None and models_value == DEFAULT_MODELS:
        models_value = ""  # with activation sets, the default model joins only when named
    # Named twice, run once.
    model_names = tuple(
        dict.fromkeys(m.strip() for m in (models_value or "").split(",") if m.strip())
    )
    dataset = get("lm_dataset")
    report_dir = get("lm_report_dir")
    run_names = [*model_names, *(peek_model(p) or Path(p).name for p in sets)]
    run_name = "+".join(m.replace("/", "__") for m in run_names) or "no-models"
    return RunConfig(
        models=model_names,
        dataset=_path(config, dataset) if dataset else None,
        extraction=ExtractionSettings(
            tokens=_defaulted(config, "lm_tokens"),
            processing=_defaulted(config, "lm_processing"),
            batch_size=_integer(get("lm_batch_size"), "batch-size", required=True),
            device=_defaulted(config, "lm_device"),
            dtype=_defaulted(config, "lm_dtype"),
            threads=_integer(get("lm_threads"), "threads"),
            reservoir=_integer(get("lm_token_reservoir"), "token-reservoir", required=True),
        ),
        fit=FitSettings(families=resolve_families(_defaulted(config, "lm_families"))),
        report_dir=_path(config, report_dir)
        if report_dir
        else _path(config, _defaulted(config, "lm_report_root")) / run_name,
        report_root=None if report_dir else _path(config, _defaulted(config, "lm_report_root")),
        cache_dir=_path(config, _defaulted(config, "lm_cache_dir")),
        baseline_dir=_path(config, _defaulted(config, "lm_baseline_dir")),
        baseline=_defaulted(config, "lm_baseline"),
        seed=_integer(get("lm_seed"), "seed", required=True),
        sentences_per_pair=_integer(get("lm_sentences_per_pair"), "sentences-per-pair"),
        activation_sets=sets,
    )


def pytest_configure(config: pytest.Config) -> None:
    try:
        run_config = build_run_config(config)
        if not (config.getoption("help") or config.getoption("lm_list_claims")):
            # Checked before the work, not after it (an unwritable report folder used to
            # fail at session end, losing the report).
            check_output_dir(run_config.report_dir, "--lm-report-dir")
            check_output_dir(run_config.cache_dir, "--lm-cache-dir")
            if run_config.baseline != "off":
                check_output_dir(run_config.baseline_dir, "--lm-baseline-dir")
            if run_config.models and run_config.extraction.device != "cpu":
                # Before any model loads (torch is imported only for another device).
                try:
                    check_device(run_config.extraction.device)
                except ExtractionError as exc:
                    raise ConfigError(str(exc)) from exc
    except (ConfigError, FamilyError, ValueError) as exc:
        raise pytest.UsageError(f"lmclaims: {exc}") from exc
    config.stash[session_key] = LmSession(run_config)
    config.pluginmanager.register(_Outcomes(config.stash[session_key]), "lmclaims-outcomes")
    _read_activation_sets(config.stash[session_key])
    parallel.configure(config, config.stash[session_key])


def _read_activation_sets(state: LmSession) -> None:
    """Bad sets are usage errors before any model is loaded (checked whole: shapes, NaN)."""
    try:
        state.sets = activations.read_many(list(state.config.activation_sets))
    except activations.ActivationSetError as exc:
        raise pytest.UsageError(f"lmclaims: {exc}") from exc
    clash = sorted(set(state.sets) & set(state.config.models))
    if clash:
        raise pytest.UsageError(
            f"lmclaims: {', '.join(map(repr, clash))} is both in --lm-models and the model of "
            f"an activation set ({state.sets[clash[0]].path}); each name must be one source"
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lm_evidence" in metafunc.fixturenames:
        state = metafunc.config.stash[session_key]
        names = [*state.config.models, *state.sets]
        # Session scope groups a model's tests together: one extraction per model.
        metafunc.parametrize("lm_model", names, ids=names, scope="session")


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Bad model names and bad datasets stop the run before any model is loaded."""
    if config.getoption("lm_list_claims"):
        return  # a listing runs nothing, so it needs no model or dataset
    claim_selection.apply(session, config, items)
    state = config.stash[session_key]
    for item in items:
        key = _claim_key(item)
        if key is not None:
            state.planned[key] = None
    if not any("lm_evidence" in getattr(item, "fixturenames", ()) for item in items):
        return
    if not state.config.models and not state.sets:
        raise pytest.UsageError(
            "lmclaims: no models selected; pass --lm-models NAME[,NAME...] or "
            "--lm-activations PATH[,PATH...]"
        )
    if state.config.baseline == "compare":
        try:
            for name in [*state.config.models, *state.sets]:
                baseline.read(state.config.baseline_dir, name)
        except baseline.BaselineError as exc:
            raise pytest.UsageError(f"lmclaims: {exc}") from exc
    if not state.config.models:
        return  # activation sets only: each brings its own sentences, checked at configure
    try:
        for name in state.config.models:
            models.resolve(name)
        # The subset is drawn with dataset.SUBSET_SEED, not --lm-seed: it is what is
        # measured, not a resample (docs/reliability.md, determinism).
        state.dataset = dataset_module.load(state.config.dataset, state.config.sentences_per_pair)
    except (models.UnknownModelError, DatasetError) as exc:
        raise pytest.UsageError(f"lmclaims: {exc}") from exc


@pytest.fixture(scope="session")
def lm_evidence(request: pytest.FixtureRequest, lm_model: str) -> Evidence:
    state = request.config.stash[session_key]
    if lm_model in state.errors:
        pytest.fail(state.errors[lm_model], pytrace=False)
    if lm_model not in state.evidence and lm_model in state.sets:
        state.evidence[lm_model] = evidence.from_activation_set(
            state.sets[lm_model], state.config, _progress(request.config)
        )
    if lm_model not in state.evidence:
        assert state.dataset is not None
        try:
            state.evidence[lm_model] = evidence.build(
                lm_model, state.dataset, state.config, _progress(request.config)
            )
        except (models.ModelError, ExtractionError) as exc:
            state.errors[lm_model] = f"{lm_model}: {exc}"
            pytest.fail(state.errors[lm_model], pytrace=False)
    return state.evidence[lm_model]


def _progress(config: pytest.Config) -> ProgressFactory:
    """Bars drawn with pytest's output capture suspended, so long stages stay visible."""
    capture = config.pluginmanager.getplugin("capturemanager")

    @contextmanager
    def factory(total: int, desc: str, unit: str) -> Iterator[Any]:
        with capture.global_and_fixture_disabled(), tqdm_bar(total, desc, unit) as bar:
            yield bar

    return factory if capture is not None else tqdm_bar


@pytest.fixture
def lm_verdict(request: pytest.FixtureRequest) -> Callable[[ClaimSpec, ClaimResult], None]:
    """Record a claim's result and turn its verdict into the pytest outcome."""
    state = request.config.stash[session_key]

    def check(spec: ClaimSpec, result: ClaimResult) -> None:
        state.results.append(result)
        state.specs[spec.id] = spec
        mode = state.config.baseline
        # off never reads baselines; compare checked them before the run (collection).
        stored = (
            baseline.read(state.config.baseline_dir, result.model) if mode == "compare" else None
        )
        decision = baseline.decide(mode, stored, _baseline_settings(state, result.model), result)
        if decision.unrecorded:
            state.unrecorded.append(result)
        if decision.outcome == "fail":
            pytest.fail(decision.message, pytrace=False)
        if decision.outcome == "xfail":
            pytest.xfail(decision.message)
        if decision.outcome == "skip":
            pytest.skip(decision.message)

    return check


def _baseline_settings(state: LmSession, model: str) -> dict[str, Any]:
    if model in state.sets:
        # A set's own sentences and extraction settings, not the run's options.
        stored = state.sets[model]
        settings = state.config.baseline_settings(stored.dataset.sha256)
        for name in ("tokens", "processing", "dtype", "reservoir"):
            settings.pop(name, None)
        return {**settings, **stored.extraction_fields()}
    assert state.dataset is not None
    return state.config.baseline_settings(state.dataset.sha256)


def _claim_key(item: pytest.Item) -> tuple[str, str] | None:
    """(claim id, model) of a claim test item; None for any other test."""
    spec = getattr(getattr(item, "function", None), "lm_claim", None)
    params = getattr(getattr(item, "callspec", None), "params", {})
    if not isinstance(spec, ClaimSpec) or "lm_model" not in params:
        return None
    return spec.id, params["lm_model"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # The key rides on the report, so an xdist controller (which collects nothing) sees
    # which claim and model a report is about.
    report = yield
    key = _claim_key(item)
    if key is not None:
        report.user_properties.append(("lm_claim", list(key)))
        # A claim that crashes before its verdict still gets its section in the report.
        spec = item.function.lm_claim  # type: ignore[attr-defined]  # a claim_test Function
        item.config.stash[session_key].specs.setdefault(spec.id, spec)
    return report


def _one_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else report.longreprtext
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else "failed without a message"
    return line.removeprefix("Failed: ")


class _Outcomes:
    """Records which claims crashed (on the controller too, under xdist)."""

    def __init__(self, state: LmSession) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The [claim, model] list that pytest_runtest_makereport stored.
        stored = cast("list[str] | None", dict(report.user_properties).get("lm_claim"))
        if stored is None:
            return
        key = (str(stored[0]), str(stored[1]))
        self.state.planned[key] = None
        if report.failed:
            where = "" if report.when == "call" else f"in {report.when}: "
            self.state.failures.setdefault(key, where + _one_line(report))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(session_key, None)
    if state is None or not state.planned or exitstatus == pytest.ExitCode.USAGE_ERROR:
        return  # nothing was meant to run, or a usage error stopped it before the work
    if parallel.is_worker(session.config):
        # Under xdist the controller writes the one report and the baselines.
        parallel.ship(session.config, state)
        return
    state.interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    state.settle()

    to_save = state.results if state.config.baseline == "update" else state.unrecorded
    for model in dict.fromkeys(r.model for r in to_save):
        results = [r for r in to_save if r.model == model]
        state.baselines_written.append(
            baseline.save(
                state.config.baseline_dir, model, results, _baseline_settings(state, model)
            )
        )
    state.report_path = report.write(state)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    state = terminalreporter.config.stash.get(session_key, None)
    if state is None or state.report_path is None:
        return
    counts: dict[str, int] = {}
    for verdict in [
        *(str(r.verdict) for r in state.results),
        *(u.outcome for u in state.unfinished),
    ]:
        counts[verdict] = counts.get(verdict, 0) + 1
    tally = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    if state.unrecorded:
        unrecorded = ", ".join(sorted({f"{r.claim_id} on {r.model}" for r in state.unrecorded}))
        terminalreporter.write_line(
            f"lmclaims: no baseline entry for {unrecorded}: recorded their verdicts in "
            f"{', '.join(map(str, state.baselines_written))}; review and commit them to "
            "compare later runs against them"
        )
    claims = {claim for claim, _ in state.planned}
    models = {model for _, model in state.planned}
    stopped = " (interrupted: the report is partial)" if state.interrupted else ""
    terminalreporter.write_line(
        f"lmclaims: {len(claims)} claim(s) x {len(models)} model(s): {tally}{stopped} "
        f"-> {state.report_path}"
    )
