import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness import baseline
from harness.claim import ClaimResult, Verdict

SETTINGS = {"tokens": "seed", "families": ["norm"]}


def _result(verdict=Verdict.SUPPORTED, effect=0.7, ci=(0.6, 0.8), version=1):
    return ClaimResult("c", version, "m", verdict, "share", effect, ci, 0.01, 10)


def test_round_trip_and_match(tmp_path):
    baseline.save(tmp_path, "org/m", [_result()], SETTINGS)
    entry = baseline.read(tmp_path, "org/m").entries["c"]
    assert (tmp_path / "org__m.json").is_file()
    assert baseline.compare(entry, _result(effect=0.75)).matches


def test_flipped_verdict_new_version_and_moved_effect_fail(tmp_path):
    baseline.save(tmp_path, "m", [_result()], SETTINGS)
    entry = baseline.read(tmp_path, "m").entries["c"]
    flipped = baseline.compare(entry, _result(verdict=Verdict.REFUTED))
    assert not flipped.matches and "baseline SUPPORTED, now REFUTED" in flipped.message
    assert "version 2" in baseline.compare(entry, _result(version=2)).message
    moved = baseline.compare(entry, _result(effect=0.9))
    assert not moved.matches and "left its recorded interval" in moved.message


def test_an_interval_beside_its_estimate_still_accepts_the_estimate(tmp_path):
    # Basic bootstrap intervals can exclude their own estimate when the estimate is biased.
    baseline.save(tmp_path, "m", [_result(effect=0.675, ci=(0.77, 0.86))], SETTINGS)
    entry = baseline.read(tmp_path, "m").entries["c"]
    assert baseline.compare(entry, _result(effect=0.675, ci=(0.77, 0.86))).matches
    assert not baseline.compare(entry, _result(effect=0.6)).matches


def test_save_merges_with_claims_not_rerun(tmp_path):
    baseline.save(tmp_path, "m", [_result()], SETTINGS)
    other = ClaimResult("d", 1, "m", Verdict.REFUTED, "x", None, None, None, 3)
    baseline.save(tmp_path, "m", [other], SETTINGS)
    assert set(baseline.read(tmp_path, "m").entries) == {"c", "d"}


def test_settings_mismatch_names_the_settings(tmp_path):
    baseline.save(tmp_path, "m", [_result()], SETTINGS)
    recorded = baseline.read(tmp_path, "m").settings
    assert baseline.settings_mismatch(recorded, SETTINGS) == ""
    message = baseline.settings_mismatch(recorded, {**SETTINGS, "tokens": "last"})
    assert message == "tokens: baseline 'seed', now 'last'"
    # Saving under other settings starts a fresh baseline instead of mixing entries.
    other = ClaimResult("d", 1, "m", Verdict.REFUTED, "x", None, None, None, 3)
    baseline.save(tmp_path, "m", [other], {**SETTINGS, "tokens": "last"})
    assert set(baseline.read(tmp_path, "m").entries) == {"d"}


def test_stored_tolerance_widens_the_interval(tmp_path):
    baseline.save(tmp_path, "m", [_result(effect=0.7, ci=(0.6, 0.8))], SETTINGS)
    entry = baseline.read(tmp_path, "m").entries["c"]
    assert entry.tolerance == pytest.approx(0.02)  # a tenth of the width
    assert baseline.compare(entry, _result(effect=0.815)).matches
    assert not baseline.compare(entry, _result(effect=0.83)).matches
    assert not baseline.compare(entry, _result(effect=0.57)).matches


def test_entries_without_tolerance_load_as_exact(tmp_path):
    baseline.save(tmp_path, "m", [_result()], SETTINGS)
    path = tmp_path / "m.json"
    data = json.loads(path.read_text())
    del data["claims"]["c"]["tolerance"]
    path.write_text(json.dumps(data))
    entry = baseline.read(tmp_path, "m").entries["c"]
    assert entry.tolerance == 0.0
    assert not baseline.compare(entry, _result(effect=0.81)).matches


# ------------------------------------------- unreadable baselines (issue 21, item 3)


def _stored(tmp_path, **entry_changes):
    baseline.save(tmp_path, "m", [_result()], SETTINGS)
    path = baseline.path_for(tmp_path, "m")
    data = json.loads(path.read_text())
    for key, value in entry_changes.items():
        if value is ...:
            del data["claims"]["c"][key]
        else:
            data["claims"]["c"][key] = value
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"verdict": "MAYBE"}, "entry 'c': verdict must be one of SUPPORTED"),
        ({"ci": "wide"}, "entry 'c': ci must be null or \\[low, high\\]"),
        ({"ci": [0.9, 0.1]}, "entry 'c': ci must be null or \\[low, high\\]"),
        ({"effect": ...}, "entry 'c': missing effect"),
        ({"claim_version": "1"}, "entry 'c': claim_version must be an integer"),
        ({"tolerance": -1}, "entry 'c': tolerance must be a number >= 0"),
    ],
)
def test_a_bad_entry_names_the_file_and_the_entry(tmp_path, change, message):
    path = _stored(tmp_path, **change)
    with pytest.raises(baseline.BaselineError, match=message) as caught:
        baseline.read(tmp_path, "m")
    assert str(caught.value).startswith(str(path))
    assert "--lm-baseline=update" in str(caught.value)


@pytest.mark.parametrize("text", ["", '{"schema_version": 1, "claims": {"c": {', "[]", "\xff"])
def test_an_unreadable_file_names_itself(tmp_path, text):
    path = baseline.path_for(tmp_path, "m")
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(baseline.BaselineError) as caught:
        baseline.read(tmp_path, "m")
    assert str(caught.value).startswith(str(path))


def test_update_replaces_an_unreadable_file(tmp_path):
    baseline.path_for(tmp_path, "m").write_text('{"schema_version": 1, "cla')
    baseline.save(tmp_path, "m", [_result()], SETTINGS)
    assert baseline.read(tmp_path, "m").entries["c"].verdict is Verdict.SUPPORTED


def test_unbounded_intervals_and_missing_effects_round_trip(tmp_path):
    baseline.save(tmp_path, "m", [_result(effect=None, ci=(-float("inf"), float("inf")))], {})
    entry = baseline.read(tmp_path, "m").entries["c"]
    assert entry.effect is None and entry.ci == (-float("inf"), float("inf"))


RUN = {"tokens": "seed", "seed": 0}


def _baseline(verdict=None, settings=RUN):
    entries = {}
    if verdict is not None:
        entry = baseline.BaselineEntry("claim-x", 1, verdict, 0.7, (0.6, 0.8), 0.0)
        entries["claim-x"] = entry
    return baseline.Baseline(Path("baselines/m.json"), settings, entries)


@pytest.mark.parametrize(
    ("mode", "stored", "verdict", "outcome", "unrecorded"),
    [
        # compare, with a matching entry: the verdict maps to its outcome
        ("compare", _baseline(Verdict.SUPPORTED), Verdict.SUPPORTED, "pass", False),
        ("compare", _baseline(Verdict.REFUTED), Verdict.REFUTED, "xfail", False),
        ("compare", _baseline(Verdict.INCONCLUSIVE), Verdict.INCONCLUSIVE, "skip", False),
        # compare, entry disagrees or was made under other settings: fail
        ("compare", _baseline(Verdict.SUPPORTED), Verdict.REFUTED, "fail", False),
        (
            "compare",
            _baseline(Verdict.SUPPORTED, {"tokens": "last", "seed": 0}),
            Verdict.SUPPORTED,
            "fail",
            False,
        ),
        # compare, no entry: a new result to record; REFUTED fails until recorded
        ("compare", _baseline(), Verdict.SUPPORTED, "pass", True),
        ("compare", _baseline(), Verdict.REFUTED, "fail", True),
        ("compare", None, Verdict.NOT_APPLICABLE, "skip", True),
        # update writes whatever came out; off answers "does the claim hold?"
        ("update", None, Verdict.REFUTED, "xfail", False),
        ("off", None, Verdict.REFUTED, "fail", False),
        ("off", None, Verdict.SUPPORTED, "pass", False),
    ],
)
def test_decide(mode, stored, verdict, outcome, unrecorded):
    result = replace(_result(verdict), claim_id="claim-x")
    decision = baseline.decide(mode, stored, RUN, result)
    assert (decision.outcome, decision.unrecorded) == (outcome, unrecorded)
    if outcome == "fail" and stored is not None and stored.settings != RUN:
        assert "other settings (tokens" in decision.message
    if outcome in ("xfail", "skip"):
        assert result.summary() in decision.message
