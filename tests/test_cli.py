import json

from harness import cli


def _run(tmp_path, name, results):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"schema_version": 1, "results": results}))
    return str(folder)


def _r(claim, verdict, effect, model="m"):
    return {
        "claim_id": claim,
        "model": model,
        "verdict": verdict,
        "effect": effect,
        "claim_version": 1,
        "effect_name": "share",
    }


def test_diff_names_changed_verdicts_and_effects(tmp_path, capsys):
    a = _run(
        tmp_path,
        "a",
        [_r("x", "SUPPORTED", 0.7), _r("y", "REFUTED", 0.1), _r("z", "INCONCLUSIVE", None)],
    )
    b = _run(
        tmp_path, "b", [_r("x", "REFUTED", 0.4), _r("y", "REFUTED", 0.1), _r("w", "SUPPORTED", 0.9)]
    )
    assert cli.main(["diff", a, b]) == 1
    out = capsys.readouterr().out
    assert "| x       | m       | verdict, effect | SUPPORTED -> REFUTED | 0.7 -> 0.4" in out
    assert "removed" in out and "added" in out
    assert "| y " not in out


def test_diff_of_identical_runs(tmp_path, capsys):
    a = _run(tmp_path, "a", [_r("x", "SUPPORTED", 0.7)])
    assert cli.main(["diff", a, a]) == 0
    assert "no verdict or effect changed" in capsys.readouterr().out


# ------------------------------------------------------ issue 21, item 7


def test_diff_of_a_missing_or_corrupt_run_is_a_usage_error(tmp_path, capsys):
    a = _run(tmp_path, "a", [_r("x", "SUPPORTED", 0.7)])
    # Exit 1 means "differences found": a run that cannot be read is 2.
    assert cli.main(["diff", a, str(tmp_path / "missing")]) == 2
    assert "no results.json at" in capsys.readouterr().err
    for text in ('{"results": [{"claim', '{"results": [{"model": "m"}]}', "[1, 2]"):
        (tmp_path / "bad.json").write_text(text)
        assert cli.main(["diff", a, str(tmp_path / "bad.json")]) == 2
        assert "bad.json is not a readable results.json" in capsys.readouterr().err


def test_diff_warns_when_the_runs_used_different_settings(tmp_path, capsys):
    runs = []
    for name, tokens in (("a", "seed"), ("b", "last")):
        folder = tmp_path / name
        folder.mkdir()
        settings = {"extraction": {"tokens": tokens}, "report_dir": str(folder), "seed": 0}
        payload = {"provenance": {"settings": settings}, "results": [_r("x", "SUPPORTED", 0.7)]}
        (folder / "results.json").write_text(json.dumps(payload))
        runs.append(str(folder))
    assert cli.main(["diff", *runs]) == 0
    err = capsys.readouterr().err
    assert "warning: the runs used different settings" in err and "'last'" in err
    assert "report_dir" not in err  # where the files went is not a method setting


def test_help_is_plain_text_and_names_every_command(capsys):
    import pytest

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out
    for command in ("diff", "list", "extract"):
        assert command in out
