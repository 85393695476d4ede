"""The calibration harness: power and false-positive rates from a claim's own evaluate on
planted sets, stored rep by rep so that a run resumes and a changed claim recomputes."""

import hashlib
import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from harness import calibration, calibration_table, registry
from harness.calibration import Rate, Store
from tests.conftest import claim_module

TOY_CLAIM = '''
"""A toy claim: layer 0's mean coordinate is positive (one-sided z-test over sentences)."""
import numpy as np
from scipy import stats

from harness import synthetic
from harness.calibration import Scenario
from harness.claim import ClaimSpec, Verdict

SPEC = ClaimSpec(
    id="toy-positive-mean",
    version=VERSION,
    title="toy",
    source="tests",
    quote="the mean is positive",
    statistic="z-test of the sentence means of layer 0",
)
DATA = synthetic.dataset(n_subjects=3, n_attributes=2, per_pair=5)


def evaluate(evidence, spec=SPEC):
    means = np.asarray(evidence.layer(0), dtype=float).mean(axis=1)
    z = means.mean() / (means.std(ddof=1) / np.sqrt(means.size))
    p = float(stats.norm.sf(z))
    verdict = Verdict.SUPPORTED if p < 0.05 else Verdict.INCONCLUSIVE
    return spec.result(evidence.model, verdict, "mean", n=means.size, effect=float(means.mean()),
                       pvalue=p)


def plant(shift):
    def make(seed):
        acts = synthetic.activations(DATA, "normal", n_layers=1, d_model=8, seed=seed)
        acts.resid[...] += shift
        return DATA, acts
    return make


CALIBRATION = (
    Scenario("shifted", True, plant(SHIFT), "mean +SHIFT", {"shift": SHIFT}, {"d_model": 8}),
    Scenario("centred", False, plant(0.0), "mean 0", {"shift": 0.0}, {"d_model": 8}),
    # The effect planted but called a null: a claim that fires under it misses its target.
    Scenario("mislabelled", False, plant(SHIFT), "mean +SHIFT", {"shift": SHIFT}, {}),
)
'''


def toy_claim(folder, version=1, shift=0.5, name="toy"):
    path = folder / f"test_{name}.py"
    text = TOY_CLAIM.replace("VERSION", str(version)).replace("SHIFT", str(shift))
    path.write_text(textwrap.dedent(text))
    return registry.load_file(
        path, f"lmclaims_claim_{name}_{version}_{str(shift).replace('.', '_')}"
    )


def test_rates_have_exact_intervals_at_zero_and_one():
    none, every = Rate.of(0, 50), Rate.of(50, 50)
    assert (
        none.share == 0
        and none.confidence_interval[0] == 0
        and 0.05 < none.confidence_interval[1] < 0.08
    )
    assert (
        every.share == 1
        and every.confidence_interval[1] == 1
        and every.confidence_interval[0] < 0.95
    )


def test_power_and_false_positive_rate_of_a_toy_claim(tmp_path):
    claim = toy_claim(tmp_path)
    truth, null, _ = calibration.scenarios(claim)
    store = Store(tmp_path / "store")
    power = calibration.calibrate(claim, truth, 40, store, n_jobs=1)
    fpr = calibration.calibrate(claim, null, 40, store, n_jobs=1)
    # A shift of 0.5 sd over 30 sentence means of 8 coordinates: z ~ 7.7, always found.
    assert power.supported.k == 40 and power.meets_target() and not power.clearly_misses()
    # Under the null a 5 % test fires ~2 of 40 times; the interval must allow 0.05.
    assert fpr.supported.k <= 6 and not fpr.clearly_misses()
    assert fpr.supported.n == 40 and fpr.refuted.k == 0
    assert sum(fpr.verdicts.values()) == 40


def test_a_null_that_fires_clearly_misses_its_target(tmp_path):
    claim = toy_claim(tmp_path, shift=0.3)
    mislabelled = calibration.scenarios(claim)[2]
    row = calibration.calibrate(claim, mislabelled, 20, Store(tmp_path / "s"), n_jobs=1)
    assert row.supported.share > 0.9 and row.clearly_misses() and row.meets_target() is False


def test_a_rerun_reuses_stored_reps_and_an_interrupted_one_finishes_the_rest(tmp_path):
    claim = toy_claim(tmp_path)
    truth = calibration.scenarios(claim)[0]
    store = Store(tmp_path / "store")
    first = calibration.calibrate(claim, truth, 10, store, n_jobs=1)
    lines = (tmp_path / "store" / "toy-positive-mean.jsonl").read_text().splitlines()
    assert len(lines) == 10
    # An interrupted run: only 6 reps written, the last one cut short mid-line.
    path = tmp_path / "store" / "toy-positive-mean.jsonl"
    path.write_text("\n".join(lines[:6]) + "\n" + lines[6][:20])
    again = calibration.calibrate(claim, truth, 10, store, n_jobs=1)
    records = list(store.records("toy-positive-mean"))
    assert len(records) == 6 + 4  # the cut line is skipped and its rep recomputed
    assert sorted(r["seed"] for r in records) == list(range(10))
    assert again.verdicts == first.verdicts
    # Nothing left to do: no new lines.
    calibration.calibrate(claim, truth, 10, store, n_jobs=1)
    assert len(list(store.records("toy-positive-mean"))) == 10


def test_a_new_claim_version_or_changed_scenario_recomputes_only_its_rows(tmp_path):
    store = Store(tmp_path / "store")
    v1 = toy_claim(tmp_path / "", version=1)
    calibration.calibrate(v1, calibration.scenarios(v1)[0], 5, store, n_jobs=1)
    v2 = toy_claim(tmp_path, version=2)
    assert store.done("toy-positive-mean", 2, calibration.scenarios(v2)[0]) == {}
    assert len(store.done("toy-positive-mean", 1, calibration.scenarios(v1)[0])) == 5
    moved = toy_claim(tmp_path, version=1, shift=0.25)
    assert calibration.scenarios(moved)[0].key() != calibration.scenarios(v1)[0].key()
    assert store.done("toy-positive-mean", 1, calibration.scenarios(moved)[0]) == {}


def test_the_code_a_scenario_depends_on_keys_its_reps_and_no_code_keeps_old_keys(tmp_path):
    from dataclasses import replace

    scenario = calibration.scenarios(toy_claim(tmp_path))[0]
    # Without code the key is the hash of the fields alone, as reps stored before were keyed.
    assert scenario.code == {}
    blob = {
        "params": scenario.params,
        "settings": scenario.settings,
        "model": scenario.model,
        "families": list(scenario.families),
        "truth": scenario.truth,
    }
    digest = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
    assert scenario.key() == digest[:16]
    v5 = replace(scenario, code={"fit_engine": 5})
    v6 = replace(scenario, code={"fit_engine": 6})
    assert len({scenario.key(), v5.key(), v6.key()}) == 3
    store = Store(tmp_path / "store")
    for seed in range(3):
        store.append("toy", {"version": 1, "scenario": v5.name, "key": v5.key(), "seed": seed})
    assert sorted(store.done("toy", 1, v5)) == [0, 1, 2]
    assert store.done("toy", 1, v6) == {}  # a new engine reruns them
    claim = toy_claim(tmp_path)
    records = list(store.done("toy", 1, v5).values())
    for record in records:
        record["verdict"] = "SUPPORTED"
    row = calibration.summarize(claim, v5, records)
    assert row.settings == dict(scenario.settings) | {"fit_engine": 5}  # shown in the table


def test_the_fit_dependent_claims_key_their_reps_by_the_engine():
    from harness.stats.fit_engine import ENGINE_VERSION

    for name in ("logistic_dominance", "gaussian_with_outliers"):
        module = claim_module(name, prefix="engine")
        for scenario in module.CALIBRATION:
            assert scenario.code == {"fit_engine": ENGINE_VERSION}, (name, scenario.name)


def test_a_rep_records_its_cpu_time_not_its_waits(tmp_path, monkeypatch):
    claim = toy_claim(tmp_path)
    scenario = calibration.scenarios(claim)[0]
    real = calibration.evaluate_planted

    def waiting(*args):
        time.sleep(0.5)  # what a rep beside other work spends waiting for a core
        return real(*args)

    monkeypatch.setattr(calibration, "evaluate_planted", waiting)
    calibration.calibrate(claim, scenario, 1, Store(tmp_path / "store"), n_jobs=1)
    (record,) = Store(tmp_path / "store").records(claim.spec.id)
    assert record["seconds"] < 0.4, record


def test_parallel_reps_give_the_same_outcomes_as_serial_ones(tmp_path):
    claim = toy_claim(tmp_path, shift=0.08)
    truth = calibration.scenarios(claim)[0]
    serial = calibration.calibrate(claim, truth, 12, Store(tmp_path / "a"), n_jobs=1)
    parallel = calibration.calibrate(claim, truth, 12, Store(tmp_path / "b"), n_jobs=2)
    by_seed = [
        sorted(
            (r["seed"], r["verdict"], r["effect"])
            for r in Store(tmp_path / f).records(claim.spec.id)
        )
        for f in ("a", "b")
    ]
    assert by_seed[0] == by_seed[1]
    assert serial.verdicts == parallel.verdicts


def test_command_line_writes_the_table_and_the_summary_reports_read(tmp_path):
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    toy_claim(claims_dir)
    out, summary = tmp_path / "calibration.md", tmp_path / "calibration.json"
    argv = [
        "--claims-dir",
        str(claims_dir),
        "--store",
        str(tmp_path / "store"),
        "--reps",
        "8",
        "--jobs",
        "1",
        "--out",
        str(out),
        "--summary",
        str(summary),
    ]
    assert calibration.main(argv) == 0
    text = out.read_text()
    assert "## toy-positive-mean (v1)" in text and "| shifted" in text and "| centred" in text
    entries = json.loads(summary.read_text())
    assert {e["scenario"] for e in entries} == {"shifted", "centred", "mislabelled"}
    assert all(e["reps"] == 8 and len(e["supported_ci"]) == 2 for e in entries)
    # A second run of fewer reps replaces the rows; a new version drops the old rows.
    assert calibration.main([*argv[:5], "3", *argv[6:]]) == 0
    assert {e["reps"] for e in json.loads(summary.read_text())} == {3}
    rows = calibration_table.rows_for("toy-positive-mean", 1, summary)
    assert len(rows) == 3 and calibration_table.rows_for("toy-positive-mean", 2, summary) == []


def test_a_claim_file_edited_during_a_run_does_not_break_its_end(tmp_path, monkeypatch):
    # A calibration runs for hours; the summary at its end must use the claims it loaded
    # at the start, not import files edited since (once a crash that lost the table).
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    toy_claim(claims_dir)
    real = calibration.calibrate

    def edit_then_calibrate(*args, **kwargs):
        (claims_dir / "test_toy.py").write_text("raise ImportError('edited mid-run')\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(calibration, "calibrate", edit_then_calibrate)
    summary = tmp_path / "calibration.json"
    argv = ["--claims-dir", str(claims_dir), "--store", str(tmp_path / "store"), "--reps", "2"]
    argv += ["--jobs", "1", "--out", str(tmp_path / "c.md"), "--summary", str(summary)]
    assert calibration.main(argv) == 0
    assert {e["reps"] for e in json.loads(summary.read_text())} == {2}


def test_unknown_claim_id_is_a_clear_error(tmp_path):
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    toy_claim(claims_dir)
    with pytest.raises(registry.ClaimError, match="unknown claim 'toy-positive'"):
        calibration.main(
            [
                "--claims-dir",
                str(claims_dir),
                "--claims",
                "toy-positive",
                "--store",
                str(tmp_path / "s"),
                "--out",
                str(tmp_path / "o.md"),
            ]
        )


def test_a_run_is_covered_only_at_the_calibrated_settings():
    at = {"subjects": 10, "attributes": 12, "per_pair": 22, "d_model": 576, "families": "study"}
    assert calibration_table.uncovered(at, dict(at)) == []
    assert calibration_table.uncovered(at, at | {"d_model": 896}) == []  # within 2x
    assert calibration_table.uncovered(at, at | {"d_model": 64}) == [
        "d_model 64 (calibrated: 576, within 2x)"
    ]
    assert calibration_table.uncovered(at, at | {"per_pair": 3, "families": "core"}) == [
        "per_pair 3 (calibrated: 22)",
        "families core (calibrated: study)",
    ]


def test_a_real_data_null_permutes_labels_within_the_other_factor(tmp_path):
    from harness import synthetic

    data = synthetic.dataset(n_subjects=3, n_attributes=4, per_pair=5)
    acts = synthetic.activations(data, "normal", n_layers=2, d_model=6, seed=3)
    folder = synthetic.write_activation_set(tmp_path / "set", data, acts, model="tiny-real")
    scenario = calibration.permuted(folder, "attribute", families=("norm",))
    assert not scenario.truth and scenario.model == "tiny-real"
    assert scenario.settings["subjects"] == 3 and scenario.settings["layers"] == 2
    first, acts_1 = scenario.plant(0)
    second, _ = scenario.plant(1)
    original = data.frame.reset_index(drop=True)
    for permuted_data in (first, second):
        frame = permuted_data.frame
        # Subjects and every pair's size stay; attributes move only within a subject.
        assert (frame["subject"] == original["subject"]).all()
        assert (frame.groupby(["subject", "attribute"]).size() == 5).all()
        for rows in original.groupby("subject").indices.values():
            assert sorted(frame["attribute"][rows]) == sorted(original["attribute"][rows])
    assert not (first.frame["attribute"] == original["attribute"]).all()
    assert not (first.frame["attribute"] == second.frame["attribute"]).all()
    assert (acts_1.resid == acts.resid).all()  # the sentences keep their activations
    with pytest.raises(ValueError, match="shuffle must be one of"):
        calibration.permuted(folder, "sentence")


def test_a_real_data_null_permutes_a_second_token_selection_the_same_way(tmp_path):
    from harness import synthetic

    data = synthetic.dataset(n_subjects=3, n_attributes=4, per_pair=5)
    seed_set = synthetic.activations(data, "normal", n_layers=2, d_model=6, seed=3)
    last_set = synthetic.activations(data, "normal", n_layers=2, d_model=6, seed=4)
    folder = synthetic.write_activation_set(tmp_path / "seed", data, seed_set)
    last = synthetic.write_activation_set(tmp_path / "last", data, last_set)
    scenario = calibration.permuted(folder, "attribute", families=("norm",), tokens={"last": last})
    plain = calibration.permuted(folder, "attribute", families=("norm",))
    assert scenario.key() != plain.key() and plain.plant_tokens is None
    relabelled, _ = scenario.plant(5)
    same, acts = scenario.plant_tokens(5, "last")
    assert (same.frame["attribute"] == relabelled.frame["attribute"]).all()
    assert (acts.resid == last_set.resid).all()
    with pytest.raises(calibration.SelectionUnavailableError, match="--permute-tokens"):
        scenario.plant_tokens(5, "mean")
    other = synthetic.dataset(n_subjects=3, n_attributes=4, per_pair=4)
    stranger = synthetic.write_activation_set(
        tmp_path / "other", other, synthetic.activations(other, "normal", 2, 6)
    )
    with pytest.raises(ValueError, match="does not hold the sentences"):
        calibration.permuted(folder, "attribute", tokens={"last": stranger})


def test_real_data_nulls_run_through_the_harness(tmp_path):
    from harness import synthetic

    claim = toy_claim(tmp_path, shift=0.0)
    data = synthetic.dataset(n_subjects=3, n_attributes=2, per_pair=5)
    acts = synthetic.activations(data, "normal", n_layers=1, d_model=8, seed=3)
    folder = synthetic.write_activation_set(tmp_path / "set", data, acts)
    scenario = calibration.permuted(folder, "subject", families=("norm",))
    store = Store(tmp_path / "store")
    serial = calibration.calibrate(claim, scenario, 4, store, n_jobs=1)
    # Workers rebuild the scenario from its reference (no claim module declares it).
    parallel = calibration.calibrate(claim, scenario, 4, Store(tmp_path / "other"), n_jobs=2)
    assert serial.verdicts == parallel.verdicts and serial.reps == 4


def test_python_m_runs_reps_in_worker_processes(tmp_path):
    """``python -m harness.calibration`` with two workers: the reps' function must pickle
    by reference to its module, not as ``__main__``'s (which carried the loaded claims)."""
    import subprocess

    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    toy_claim(claims_dir)
    summary = tmp_path / "calibration.json"
    command = _module_command(claims_dir, tmp_path / "store", 4, tmp_path)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "toy-positive-mean v1 shifted (truth): SUPPORTED 1.00" in done.stdout
    assert len(json.loads(summary.read_text())) == 3


def test_sigterm_stops_a_run_with_its_workers_and_keeps_the_finished_reps(tmp_path):
    import os
    import signal
    import subprocess
    import time

    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    toy_claim(claims_dir)
    store = tmp_path / "store"
    command = _module_command(claims_dir, store, 100000, tmp_path)
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = store / "toy-positive-mean.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not records.exists() or len(records.read_text().splitlines()) < 20
    ):
        time.sleep(0.2)
    children = subprocess.run(
        ["pgrep", "-P", str(run.pid)], capture_output=True, text=True
    ).stdout.split()
    assert children, "the run has no worker processes"
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode != 0 and "interrupted" in err
    time.sleep(1)
    alive = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
    # A zombie has exited; only a running worker outlives the run.
    alive = [p for p in alive if "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
    assert alive == [], f"workers outlived the run: {alive}"
    kept = len(list(Store(store).records("toy-positive-mean")))
    assert kept >= 20


def _module_command(claims_dir, store, reps, out):
    """``python -m harness.calibration`` on the claims in ``claims_dir``, two workers."""
    import sys

    return [
        *(sys.executable, "-m", "harness.calibration", "--claims-dir", str(claims_dir)),
        *("--store", str(store), "--reps", str(reps), "--jobs", "2"),
        *("--out", str(out / "calibration.md"), "--summary", str(out / "calibration.json")),
    ]


def test_stored_writes_the_table_from_stored_reps_without_running_any(tmp_path):
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    claim = toy_claim(claims_dir)
    store = Store(tmp_path / "store")
    calibration.calibrate(claim, calibration.scenarios(claim)[0], 7, store, n_jobs=1)
    before = len(list(store.records(claim.spec.id)))
    summary = tmp_path / "calibration.json"
    argv = [
        "--claims-dir",
        str(claims_dir),
        "--store",
        str(store.folder),
        "--reps",
        "200",
        "--stored",
        "--out",
        str(tmp_path / "c.md"),
        "--summary",
        str(summary),
    ]
    assert calibration.main(argv) == 0
    assert len(list(store.records(claim.spec.id))) == before  # nothing ran
    entries = json.loads(summary.read_text())
    assert [(e["scenario"], e["reps"]) for e in entries] == [("shifted", 7)]


def test_markdown_cells_keep_pipes_inside_the_cell():
    entry = {
        "claim": "c",
        "version": 1,
        "scenario": "s",
        "kind": "truth",
        "reps": 3,
        "description": "mean |D| falls",
        "settings": {},
        "supported": 1.0,
        "supported_ci": [0.3, 1.0],
        "refuted": 0.0,
        "refuted_ci": [0.0, 0.7],
        "seconds": 1.0,
    }
    row = next(
        line for line in calibration_table.markdown([entry], "x").splitlines() if "falls" in line
    )
    assert "mean \\|D\\| falls" in row
    assert row.count("|") - row.count("\\|") == 9  # 8 columns


def test_reports_show_the_calibration_and_say_when_a_run_is_not_covered():
    from harness import report

    entry = {
        "claim": "c",
        "version": 1,
        "scenario": "planted truth",
        "kind": "truth",
        "reps": 30,
        "description": "an effect",
        "supported": 0.9,
        "supported_ci": [0.73, 0.98],
        "refuted": 0.0,
        "refuted_ci": [0.0, 0.12],
        "seconds": 5.0,
        "known_miss": "",
        "settings": {"subjects": 10, "attributes": 12, "per_pair": 22, "d_model": 576},
    }
    missed = entry | {
        "scenario": "a null",
        "kind": "null",
        "supported": 0.5,
        "known_miss": "fires under massive dims",
    }
    text = "\n".join(report.calibration_lines([entry, missed]))
    assert "planted truth" in text and "0.90 [0.73, 0.98]" in text
    assert "**missed**" in text and "Known miss, *a null*: fires under massive dims" in text
    assert "None recorded" in report.calibration_lines([])[0]
    run = dict(entry["settings"])
    assert report.coverage_line([entry], run).startswith("*Calibrated at these settings*")
    line = report.coverage_line([entry], run | {"d_model": 64, "per_pair": 3})
    assert line.startswith("*Not calibrated at these settings:*") and "d_model 64" in line


def test_a_planted_token_selection_keeps_the_sentences_and_their_token_counts():
    from dataclasses import replace

    from harness.planted import REALISTIC, Base

    long = replace(REALISTIC, homogeneous_attribute="in japanese", attribute_length_sd=0.2)
    scenario = calibration.planted(
        "toy", True, "", Base(n_layers=2, d_model=32), long, tokens={"last": REALISTIC}
    )
    data, acts = scenario.plant(3)
    same, control = scenario.plant_tokens(3, "last")
    assert same is data
    np.testing.assert_array_equal(control.n_tokens, acts.n_tokens)
    assert not np.allclose(control.resid, acts.resid)  # another token's vectors
    assert scenario.params["tokens"]["last"]["homogeneous_attribute"] is None
    with pytest.raises(calibration.SelectionUnavailableError, match="no 'mean' token selection"):
        scenario.plant_tokens(3, "mean")
