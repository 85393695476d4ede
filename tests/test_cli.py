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
