"""Calibration: a claim's power and false-positive rate at the settings its reports use.

A claim module may declare ``CALIBRATION``, a tuple of ``Scenario``: planted activation sets
whose truth is known, either the effect the claim states (``truth=True``: the share of reps
that come out SUPPORTED is the power) or a null with the nuisances that could fake it
(``truth=False``: the share SUPPORTED is the false-positive rate). Each rep plants a fresh
set and runs the claim's own ``evaluate`` on an ``Evidence`` built over it, with the same
fits, modes and caches a model run uses, so what is calibrated is what runs.

Every rep's outcome is appended to a store (one JSON line per rep) keyed by the claim's id
and version, the scenario and what decides its planted sets, and the rep's seed: an
interrupted run loses at most the reps in flight, a rerun continues where it stopped, and a
new claim version recomputes only its own rows.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from harness import activations, registry, synthetic
from harness.calibration_table import (
    SUMMARY_FILE,
    TARGET_FPR,
    TARGET_POWER,
    markdown,
    read_summary,
    run_settings,
    shown_rate,
    target_met,
    write_summary,
)
from harness.claim import ClaimResult, Verdict, decide
from harness.dataset import Dataset
from harness.evidence import Evidence, SelectionUnavailableError
from harness.extraction import ActivationSet
from harness.planted import (
    Base,
    Nuisances,
    SideModes,
    planted_set,
    production_dataset,
    sentence_tokens,
)
from harness.progress import ProgressFactory, silent, tqdm_bar
from harness.registry import Claim
from harness.stats.families import STUDY_FAMILIES
from harness.stats.inference import clopper_pearson

# (seed) -> a planted set: its sentences and their activations.
Plant = Callable[[int], tuple[Dataset, ActivationSet]]
# (seed, token selection) -> the same sentences read under another token selection.
PlantTokens = Callable[[int, str], tuple[Dataset, ActivationSet]]

NO_NUISANCES = Nuisances()
CONFIDENCE = 0.95
# Cores a rep's own fits may use: the reps already run one per core.
_JOBS_ENV = "LMCLAIMS_JOBS"


@dataclass(frozen=True)
class Scenario:
    """Planted sets with a known truth, for one claim.

    ``params`` is everything that decides the planted sets besides the seed (sizes,
    nuisances, the planted effect): it keys the stored reps, so changing it retires them.
    ``settings`` are the run settings the scenario stands for (design, sample size,
    families), shown in the table and matched against a report's run.
    """

    name: str
    truth: bool
    plant: Plant
    description: str
    params: Mapping[str, Any]
    settings: Mapping[str, Any]
    model: str = "planted"
    families: tuple[str, ...] = ()
    # A target this scenario is known to miss, and why (written into the table and the
    # report; the reduced CI run expects the miss, so a fixed claim must drop the note).
    known_miss: str = ""
    # How a worker process rebuilds a scenario that no claim module declares (a real-data
    # null): a picklable call of this module's factories. None: found by name in the claim.
    ref: tuple[Any, ...] | None = None
    # The same planted sentences read under other token selections, for claims that read
    # a second one (``Evidence.under_tokens``). None: only the run's own selection exists.
    plant_tokens: PlantTokens | None = None
    # Versions of the code a rep's outcome depends on besides the claim (the fit engine, for
    # claims that rank fitted families): they key the stored reps, so a new engine retires
    # them. Left out of the key when empty, so scenarios without it keep their stored reps.
    code: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "truth" if self.truth else "null"

    def key(self) -> str:
        fields = {
            "params": self.params,
            "settings": self.settings,
            "model": self.model,
            "families": list(self.families),
            "truth": self.truth,
        }
        if self.code:
            fields["code"] = dict(self.code)
        blob = json.dumps(
            fields,
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Rate:
    """k of n reps, with a Clopper-Pearson interval."""

    k: int
    n: int
    confidence_interval: tuple[float, float]

    @property
    def share(self) -> float:
        return self.k / self.n if self.n else math.nan

    @classmethod
    def of(cls, k: int, n: int) -> Rate:
        return cls(k, n, clopper_pearson(k, n, CONFIDENCE) if n else (math.nan, math.nan))


@dataclass(frozen=True)
class Calibration:
    """One (claim, scenario) row: how often the claim's verdict came out each way."""

    claim_id: str
    claim_version: int
    scenario: str
    truth: bool
    description: str
    settings: Mapping[str, Any]
    supported: Rate
    refuted: Rate
    seconds: float  # CPU time of the reps, summed over workers
    verdicts: Mapping[str, int] = field(default_factory=dict)
    known_miss: str = ""

    @property
    def reps(self) -> int:
        return self.supported.n

    def meets_target(self) -> bool | None:
        """Power >= 0.8 under a truth, FPR <= 0.05 under a null, on the point estimate;
        None with no reps."""
        return target_met(self.truth, self.supported.share) if self.reps else None

    def clearly_misses(self) -> bool:
        """The interval excludes the target: what a reduced (CI) run may fail on."""
        lo, hi = self.supported.confidence_interval
        return hi < TARGET_POWER if self.truth else lo > TARGET_FPR

    def as_json(self) -> dict[str, Any]:
        return {
            "claim": self.claim_id,
            "version": self.claim_version,
            "scenario": self.scenario,
            "kind": "truth" if self.truth else "null",
            "description": self.description,
            "settings": dict(self.settings),
            "reps": self.reps,
            "supported": self.supported.share,
            "supported_ci": list(self.supported.confidence_interval),
            "refuted": self.refuted.share,
            "refuted_ci": list(self.refuted.confidence_interval),
            "seconds": round(self.seconds, 1),
            "verdicts": dict(self.verdicts),
            "known_miss": self.known_miss,
        }


# (dataset, resid to change in place, generator) -> None: a claim's own planted truth on
# top of a production-size set (a bimodal layer, a structure that fades with depth).
Edit = Callable[[Dataset, np.ndarray, np.random.Generator], None]


def planted(
    name: str,
    truth: bool,
    description: str,
    base: Base,
    nuisances: Nuisances = NO_NUISANCES,
    side_modes: SideModes | None = None,
    *,
    model: str = "planted",
    families: tuple[str, ...] = STUDY_FAMILIES,
    edit: Edit | None = None,
    edit_params: Mapping[str, Any] | None = None,
    design: tuple[int, int, int] = (10, 12, 22),
    known_miss: str = "",
    tokens: Mapping[str, Nuisances] | None = None,
    code: Mapping[str, Any] | None = None,
) -> Scenario:
    """A scenario of production-size planted sets (``harness.planted``): ``design`` is
    (subjects, attributes, sentences per pair) of the default dataset, ``base`` the bulk and
    width, ``nuisances`` what real residual streams add, ``side_modes`` and ``edit`` the
    planted truth. ``edit_params`` must name everything ``edit`` depends on: it keys the
    stored reps with the rest.

    ``tokens``: token selection -> the nuisances of the same sentences read under it (a
    token-matched selection drops the homogeneous attribute's tightening, say). Such a set
    has the same design, planted truth and token counts (they belong to the sentences) with
    its own bulk and nuisance draws, as another token's vector of the same sentence has.

    ``code``: versions of the code the outcome depends on besides the claim (``Scenario.code``).
    """
    data = production_dataset(*design)

    def draw(seed: Any, drawn: Nuisances, n_tokens: np.ndarray | None = None) -> ActivationSet:
        acts = planted_set(data, base, drawn, side_modes, seed, n_tokens)
        if edit is not None:
            resid = np.array(acts.resid, dtype=np.float32)
            edit(data, resid, np.random.default_rng([*np.atleast_1d(seed), 7]))
            acts = ActivationSet(resid, acts.n_tokens, acts.meta)
        return acts

    def plant(seed: int) -> tuple[Dataset, ActivationSet]:
        return data, draw(seed, nuisances)

    selections = dict(tokens or {})

    def plant_tokens(seed: int, selection: str) -> tuple[Dataset, ActivationSet]:
        if selection not in selections:
            raise SelectionUnavailableError(
                f"scenario {name!r} plants no {selection!r} token selection "
                f"(it has {', '.join(selections) or 'none'})"
            )
        # The same sentences: their token counts (and so any length effect) are the run's.
        n_tokens = sentence_tokens(data, base, nuisances, seed)
        return data, draw([seed, 1], selections[selection], n_tokens)

    params = {
        "design": list(design),
        "base": asdict(base),
        "nuisances": _key_fields(nuisances),
        "side_modes": None if side_modes is None else asdict(side_modes),
        "edit": dict(edit_params or {}),
    }
    if selections:
        params["tokens"] = {k: _key_fields(v) for k, v in selections.items()}
    settings = run_settings(data, base.d_model, families) | {"layers": base.n_layers}
    return Scenario(
        name,
        truth,
        plant,
        description,
        params,
        settings,
        model,
        families,
        known_miss,
        plant_tokens=plant_tokens if selections else None,
        code=dict(code or {}),
    )


def _key_fields(nuisances: Nuisances) -> dict[str, Any]:
    """The nuisances as they key stored reps: a field added after reps were stored is left
    out at its default, so that adding it does not retire every stored row."""
    fields = asdict(nuisances)
    for added in ("length_tightening", "attribute_length_sd"):
        if fields[added] == 0.0:
            del fields[added]
    return fields


PERMUTATIONS = ("attribute", "subject")


def permuted(
    source: Path | str,
    shuffle: str,
    *,
    families: tuple[str, ...] = STUDY_FAMILIES,
    tokens: Mapping[str, Path | str] | None = None,
) -> Scenario:
    """A real-data null: a model's activation set (a folder, docs/activation-format.md) with
    its ``shuffle`` labels permuted, attribute labels within each subject ("attribute") or
    subject labels within each attribute ("subject"). Every pair keeps its size, and each
    sentence keeps its activations and token count, so everything a real model has stays
    (massive dims, scales, token and length effects) except the label structure: a claim
    comparing attributes (or subjects) that comes out SUPPORTED here is a false positive.

    ``tokens``: token selection -> the same model's set of the same sentences read under
    it (a claim reading a second selection gets it, with the same labels permuted)."""
    if shuffle not in PERMUTATIONS:
        raise ValueError(f"shuffle must be one of {PERMUTATIONS}, got {shuffle!r}")
    folder = Path(source).resolve()
    stored = activations.read(folder, check_values=False)
    within = "subject" if shuffle == "attribute" else "attribute"
    siblings = {k: Path(v).resolve() for k, v in (tokens or {}).items()}
    hashes = {}
    for selection, sibling in siblings.items():
        other = activations.read(sibling, check_values=False)
        if (
            not other.dataset.frame["text"]
            .reset_index(drop=True)
            .equals(stored.dataset.frame["text"].reset_index(drop=True))
        ):
            raise ValueError(f"{sibling} does not hold the sentences of {folder} in its order")
        hashes[selection] = other.content_hash

    def relabelled(path: Path, seed: int) -> tuple[Dataset, ActivationSet]:
        real = activations.read(path, verify=False, check_values=False)
        frame = real.dataset.frame.reset_index(drop=True).copy()
        rng = np.random.default_rng([seed, 11])
        labels = frame[shuffle].to_numpy().copy()
        for rows in frame.groupby(within, sort=True).indices.values():
            labels[rows] = labels[rng.permutation(rows)]
        frame[shuffle] = labels
        return Dataset(frame, f"{real.dataset.source} ({shuffle}s permuted)"), real.activations

    def plant(seed: int) -> tuple[Dataset, ActivationSet]:
        return relabelled(folder, seed)

    def plant_tokens(seed: int, selection: str) -> tuple[Dataset, ActivationSet]:
        if selection not in siblings:
            raise SelectionUnavailableError(
                f"no {selection!r} set of {stored.model} was given (--permute-tokens)"
            )
        return relabelled(siblings[selection], seed)  # the same seed: the same permutation

    data, acts = stored.dataset, stored.activations
    settings = run_settings(data, acts.d_model, families) | {"layers": acts.n_layers}
    params: dict[str, Any] = {"set": stored.content_hash, "shuffle": shuffle}
    if hashes:
        params["tokens"] = hashes
    shown = "".join(f", {k!r} tokens from a second set" for k in siblings)
    return Scenario(
        f"{stored.model}, {shuffle}s permuted within {within}",
        False,
        plant,
        f"{stored.model}'s own activations, {shuffle} labels permuted within each {within}" + shown,
        params,
        settings,
        stored.model,
        families,
        ref=(
            "permuted",
            str(folder),
            shuffle,
            families,
            tuple(sorted((k, str(v)) for k, v in siblings.items())),
        ),
        plant_tokens=plant_tokens if siblings else None,
    )


# --------------------------------------------------------------------- the rep store


class Store:
    """Rep outcomes, one JSON line each, in ``<folder>/<claim id>.jsonl``.

    Appended and flushed rep by rep by the one process that collects the reps, so an
    interrupted run keeps every finished rep. A line cut short by a kill is skipped.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _file(self, claim_id: str) -> Path:
        return self.folder / f"{claim_id}.jsonl"

    def records(self, claim_id: str) -> Iterator[dict[str, Any]]:
        path = self._file(claim_id)
        if not path.exists():
            return
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted write
                if isinstance(record, dict):
                    yield record

    def done(self, claim_id: str, version: int, scenario: Scenario) -> dict[int, dict[str, Any]]:
        """This scenario's stored reps for this claim version, by seed."""
        key = scenario.key()
        return {
            int(r["seed"]): r
            for r in self.records(claim_id)
            if r.get("version") == version
            and r.get("scenario") == scenario.name
            and r.get("key") == key
        }

    def append(self, claim_id: str, record: Mapping[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._file(claim_id)
        with path.open("a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                # A line cut short by a killed run: end it, so this record starts its own.
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
            handle.write((json.dumps(record, sort_keys=True) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())


# -------------------------------------------------------------------------- one rep


def scenarios(claim: Claim) -> tuple[Scenario, ...]:
    """The scenarios a claim module declares in ``CALIBRATION`` (none: not calibrated)."""
    module = sys.modules.get(claim.module)
    declared = getattr(module, "CALIBRATION", ()) if module is not None else ()
    return tuple(declared)


def evaluate_planted(claim: Claim, scenario: Scenario, seed: int, cache_dir: Path) -> ClaimResult:
    """The claim's own ``evaluate`` on the planted set of ``seed``, through Evidence."""
    families = scenario.families or synthetic.CORE_FAMILIES
    reselect = None
    if scenario.plant_tokens is not None:
        plant_tokens = scenario.plant_tokens

        def reselect(tokens: str) -> Evidence:
            data, acts = plant_tokens(seed, tokens)
            return synthetic.evidence(
                data, acts, cache_dir, families, seed, scenario.model, tokens=tokens
            )

    data, acts = scenario.plant(seed)
    evidence = synthetic.evidence(
        data, acts, cache_dir, families, seed, scenario.model, reselect=reselect
    )
    return decide(claim.spec, claim.evaluate, evidence)


def _run_rep(
    claim_file: str, module_name: str, scenario_ref: str | tuple[Any, ...], seed: int
) -> dict[str, Any]:
    """One rep in a worker process: import the claim, plant, evaluate, summarize."""
    claim = _claim_in_worker(claim_file, module_name)
    scenario = _scenario_in_worker(claim, scenario_ref)
    # CPU time, not wall time: a rep run beside other work (a CI run, a report) would
    # otherwise record its waits as cost. A rep runs on one core (below), so they agree on a
    # quiet machine.
    started = time.process_time()
    with tempfile.TemporaryDirectory(prefix="lmclaims-calibration-") as tmp, _one_core():
        result = evaluate_planted(claim, scenario, seed, Path(tmp))
    return {
        "claim": claim.spec.id,
        "version": claim.spec.version,
        "scenario": scenario.name,
        "key": scenario.key(),
        "seed": seed,
        "verdict": str(result.verdict),
        "effect": _finite(result.effect),
        "pvalue": _finite(result.pvalue),
        "seconds": round(time.process_time() - started, 3),
    }


@contextlib.contextmanager
def _one_core() -> Iterator[None]:
    """A rep's own fits run where the rep runs: the reps already use every core."""
    before = os.environ.get(_JOBS_ENV)
    os.environ[_JOBS_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[_JOBS_ENV]
        else:
            os.environ[_JOBS_ENV] = before


_WORKER_CLAIMS: dict[tuple[str, str], Claim] = {}
_WORKER_SCENARIOS: dict[tuple[Any, ...], Scenario] = {}


def _scenario_in_worker(claim: Claim, ref: str | tuple[Any, ...]) -> Scenario:
    if isinstance(ref, str):
        return {s.name: s for s in scenarios(claim)}[ref]
    if ref not in _WORKER_SCENARIOS:
        kind, *args = ref
        if kind != "permuted":
            raise ValueError(f"unknown scenario reference {ref!r}")
        source, shuffle, families, tokens = args
        _WORKER_SCENARIOS[ref] = permuted(
            source, shuffle, families=tuple(families), tokens=dict(tokens)
        )
    return _WORKER_SCENARIOS[ref]


def _claim_in_worker(claim_file: str, module_name: str) -> Claim:
    key = (claim_file, module_name)
    if key not in _WORKER_CLAIMS:
        if claim_file:
            module = registry.import_file(Path(claim_file), module_name)
        else:
            import importlib

            module = importlib.import_module(module_name)
        found = registry.from_module(module)
        if found is None:
            raise ValueError(f"{claim_file or module_name} declares no claim")
        _WORKER_CLAIMS[key] = found
    return _WORKER_CLAIMS[key]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# ---------------------------------------------------------------------- the harness


def calibrate(
    claim: Claim,
    scenario: Scenario,
    reps: int,
    store: Store,
    n_jobs: int = -1,
    progress: ProgressFactory = silent,
) -> Calibration:
    """Power / false-positive rate of ``claim`` under ``scenario`` over seeds 0..reps-1.

    Reps already in ``store`` are reused; the missing ones run in parallel through joblib
    (its active backend: local processes by default, a Dask or Ray cluster when the caller
    sets one with ``joblib.parallel_config``), each appended to the store as it finishes.
    """
    from joblib import Parallel, delayed

    done = store.done(claim.spec.id, claim.spec.version, scenario)
    missing = [seed for seed in range(reps) if seed not in done]
    if missing:
        claim_file = str(claim.path) if claim.path is not None else ""
        # In this process (n_jobs=1) the reps use the claim as loaded, not a re-import.
        _WORKER_CLAIMS[(claim_file, claim.module)] = claim
        if scenario.ref is not None:
            _WORKER_SCENARIOS[scenario.ref] = scenario
        jobs = (
            delayed(_run_rep)(claim_file, claim.module, scenario.ref or scenario.name, seed)
            for seed in missing
        )
        label = f"calibrate {claim.spec.id}: {scenario.name}"
        with progress(len(missing), label, "rep") as bar:
            parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
            for record in parallel(jobs):
                store.append(claim.spec.id, record)
                done[int(record["seed"])] = record
                bar.update(1)
    return summarize(claim, scenario, [done[seed] for seed in range(reps)])


def stored(claim: Claim, scenario: Scenario, reps: int, store: Store) -> Calibration | None:
    """The row of the reps already stored (seeds 0..n-1 with none missing, n <= ``reps``),
    computing nothing: a long table's progress so far. None with no stored rep."""
    done = store.done(claim.spec.id, claim.spec.version, scenario)
    n = 0
    while n < reps and n in done:
        n += 1
    return summarize(claim, scenario, [done[seed] for seed in range(n)]) if n else None


def summarize(
    claim: Claim, scenario: Scenario, records: Sequence[Mapping[str, Any]]
) -> Calibration:
    verdicts: dict[str, int] = {}
    for record in records:
        verdicts[record["verdict"]] = verdicts.get(record["verdict"], 0) + 1
    n = len(records)
    return Calibration(
        claim.spec.id,
        claim.spec.version,
        scenario.name,
        scenario.truth,
        scenario.description,
        # The code versions the reps rest on are shown with the settings they were run at.
        dict(scenario.settings) | dict(scenario.code),
        Rate.of(verdicts.get(str(Verdict.SUPPORTED), 0), n),
        Rate.of(verdicts.get(str(Verdict.REFUTED), 0), n),
        float(sum(float(r.get("seconds", 0.0)) for r in records)),
        verdicts,
        scenario.known_miss,
    )


# ---------------------------------------------------------- the committed table


def _rate(rate: Rate) -> str:
    return shown_rate(rate.share, rate.confidence_interval) if rate.n else "–"


def merged_summary(
    old: Sequence[Mapping[str, Any]], fresh: Iterable[Calibration], versions: Mapping[str, int]
) -> list[dict[str, Any]]:
    """The table after a run: its fresh rows, and the old rows of other scenarios whose claim
    still exists at the same version (a run of one claim keeps the rest of the table; a
    claim's new version drops its old rows)."""
    rows = [r.as_json() for r in fresh]
    replaced = {(r["claim"], r["scenario"]) for r in rows}
    kept = [
        dict(e)
        for e in old
        if (e["claim"], e["scenario"]) not in replaced and versions.get(e["claim"]) == e["version"]
    ]
    return sorted(kept + rows, key=lambda e: (e["claim"], e["kind"] != "truth", e["scenario"]))


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.calibration",
        description="Measure every claim's power and false-positive rate on planted sets "
        "and write docs/calibration.md. Resumable: stored reps are reused.",
    )
    parser.add_argument("--claims", default="", help="comma-separated claim ids (default: all)")
    parser.add_argument("--reps", type=int, default=200, help="reps per scenario (default 200)")
    parser.add_argument("--jobs", type=int, default=-1, help="parallel reps (default: all cores)")
    parser.add_argument(
        "--backend", default="loky", help="joblib backend: loky (default), dask, ray"
    )
    parser.add_argument("--scheduler", default=None, help="dask scheduler address (--backend dask)")
    parser.add_argument("--store", type=Path, default=Path("calibration/records"))
    parser.add_argument("--out", type=Path, default=Path("docs/calibration.md"))
    parser.add_argument("--summary", type=Path, default=SUMMARY_FILE)
    parser.add_argument("--claims-dir", type=Path, default=Path("claims"))
    parser.add_argument(
        "--permute",
        type=Path,
        default=None,
        help="a model's activation set (folder): add real-data nulls, its labels permuted, "
        "for claims declaring PERMUTATION_NULLS",
    )
    parser.add_argument(
        "--permute-tokens",
        action="append",
        default=[],
        metavar="SELECTION=SET",
        help="the same model's activation set under another token selection (e.g. "
        "last=FOLDER), for claims that read a second one; repeatable",
    )
    parser.add_argument("--permutation-reps", type=int, default=100)
    parser.add_argument(
        "--stored",
        action="store_true",
        help="run nothing: write the table from the reps already stored (each scenario's "
        "first reps with none missing, up to --reps)",
    )
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    siblings = {}
    for given in args.permute_tokens:
        selection, sep, folder = given.partition("=")
        if not sep or not selection or not folder:
            parser.error(f"--permute-tokens takes SELECTION=SET, got {given!r}")
        siblings[selection] = Path(folder)
    # Every claim is loaded now, not again at the end: a long run must not import claim
    # files edited while it ran against the harness modules it already holds.
    every = _load_claims(args.claims_dir)
    claims = _select(every, args.claims.split(","))
    store = Store(args.store)
    rows: list[Calibration] = []
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_backend(args.backend, args.scheduler))
        except ValueError as exc:  # a cluster whose workers would share processes
            parser.error(str(exc))
        stack.enter_context(_workers_die_with_us())
        for claim in claims:
            chosen = list(scenarios(claim))
            if args.permute is not None:
                shuffles = getattr(sys.modules.get(claim.module), "PERMUTATION_NULLS", ())
                # Only the selections the claim reads: another set's hash in a null's key
                # would retire its reps whenever that set changes, and the table would say
                # the claim read it.
                read = {k: v for k, v in siblings.items() if k in claim.spec.token_selections}
                chosen += [permuted(args.permute, shuffle, tokens=read) for shuffle in shuffles]
            for scenario in chosen:
                reps = args.permutation_reps if scenario.ref else args.reps
                if args.stored:
                    row = stored(claim, scenario, reps, store)
                    if row is None:
                        continue
                else:
                    row = calibrate(claim, scenario, reps, store, args.jobs, tqdm_bar)
                rows.append(row)
                print(describe(row), flush=True)
    versions = {c.spec.id: c.spec.version for c in every}
    entries = merged_summary(read_summary(args.summary), rows, versions)
    write_summary(entries, args.summary)
    args.out.write_text(markdown(entries, f"make calibrate REPS={args.reps}"), encoding="utf-8")
    return 0


def describe(row: Calibration) -> str:
    """One line: the claim, scenario, both rates with their intervals, reps and time."""
    return (
        f"{row.claim_id} v{row.claim_version} {row.scenario} ({'truth' if row.truth else 'null'}):"
        f" SUPPORTED {_rate(row.supported)}, REFUTED {_rate(row.refuted)}, {row.reps} reps,"
        f" {row.seconds:.0f} s"
    )


def _load_claims(folder: Path) -> list[Claim]:
    """Every claim file of ``folder``, imported (``_select`` checks them)."""
    return [registry.load_file(path) for path in sorted(folder.glob("test_*.py"))]


def _select(every: Sequence[Claim], ids: Sequence[str]) -> list[Claim]:
    """The claims ``ids`` names (all when none is named), checked by the registry: ids
    are unique, and an unknown id is an error."""
    chosen = registry.Registry.build(every).select(ids)
    return [c for c in every if not chosen or c.spec.id in chosen]


@contextlib.contextmanager
def _workers_die_with_us() -> Iterator[None]:
    """SIGTERM acts as Ctrl-C, and an interrupted run takes joblib's worker processes with
    it: loky keeps them for reuse, and a killed parent left them running as orphans. The
    reps already stored are kept; a rerun continues from them."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=False, kill_workers=True)
        print("interrupted: the finished reps are stored; rerun to continue", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


class _backend:
    """joblib's backend for the reps: loky here, or a cluster (dask.distributed, ray)."""

    def __init__(self, name: str, scheduler: str | None) -> None:
        self.name, self.scheduler = name, scheduler
        self._stack: list[Any] = []

    def __enter__(self) -> None:
        if self.name == "dask":
            from dask.distributed import Client  # optional: pip install "dask[distributed]"

            # One rep per process: a rep sets process-wide state (its one-core setting) and
            # records its process's CPU time, which reps sharing a process would mix.
            client = Client(self.scheduler) if self.scheduler else Client(threads_per_worker=1)
            threads = max(client.nthreads().values(), default=1)
            if threads > 1:
                client.close()
                raise ValueError(
                    f"the dask workers at {self.scheduler} run {threads} threads each; start "
                    "them with --nthreads 1 (and --nworkers for the cores) so that each rep "
                    "has a process of its own"
                )
            self._stack.append(client)
        elif self.name == "ray":
            from ray.util.joblib import register_ray  # optional: pip install ray

            register_ray()
        context = joblib.parallel_config(backend=self.name)
        context.__enter__()
        self._stack.append(context)

    def __exit__(self, *exc: object) -> None:
        for item in reversed(self._stack):
            if hasattr(item, "__exit__"):
                item.__exit__(*exc)
            else:
                item.close()


if __name__ == "__main__":
    # Through the module's import name, not __main__: the reps' functions must pickle by
    # reference for joblib's worker processes.
    from harness.calibration import main as _main

    raise SystemExit(_main())
