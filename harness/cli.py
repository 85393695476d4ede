"""The ``lmclaims`` console command: ``lmclaims diff RUN_A RUN_B``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate


def _results(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """A run's results by (claim, model); a run directory or its results.json."""
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    if not file.is_file():
        raise SystemExit(f"lmclaims diff: no results.json at {path}")
    data = json.loads(file.read_text())
    return {(r["claim_id"], r["model"]): r for r in data["results"]}


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}"


def diff_rows(a: dict, b: dict) -> list[list[str]]:
    rows = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key), b.get(key)
        if ra is None or rb is None:
            rows.append([*key, "added" if ra is None else "removed", (ra or rb)["verdict"], "", ""])
            continue
        changes = []
        if ra["verdict"] != rb["verdict"]:
            changes.append("verdict")
        ea, eb = ra.get("effect"), rb.get("effect")
        if (ea is None) != (eb is None) or (
            ea is not None and not math.isclose(ea, eb, rel_tol=1e-9, abs_tol=1e-12)
        ):
            changes.append("effect")
        if ra.get("claim_version") != rb.get("claim_version"):
            changes.append("version")
        if changes:
            rows.append(
                [
                    *key,
                    ", ".join(changes),
                    f"{ra['verdict']} -> {rb['verdict']}",
                    f"{_num(ea)} -> {_num(eb)}",
                    ra.get("effect_name", ""),
                ]
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmclaims", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    diff = sub.add_parser("diff", help="which verdicts and effects changed between two runs")
    diff.add_argument("run_a", help="report directory or results.json")
    diff.add_argument("run_b", help="report directory or results.json")
    args = parser.parse_args(argv)
    rows = diff_rows(_results(args.run_a), _results(args.run_b))
    if not rows:
        print("no verdict or effect changed")
        return 0
    headers = ["claim", "model", "changed", "verdict", "effect", "effect name"]
    print(tabulate(rows, headers=headers, tablefmt="github"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
