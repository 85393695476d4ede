"""The ``lmclaims`` console command: ``lmclaims diff RUN_A RUN_B``, ``lmclaims list``,
``lmclaims extract``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from tabulate import tabulate

from harness import activations, models
from harness.config import (
    DEFAULT_CACHE_DIR,
    DTYPES,
    EXTRACTION_DEFAULTS,
    PROCESSING_MODES,
    TOKEN_MODES,
    ConfigError,
    ExtractionSettings,
)
from harness.dataset import DatasetError
from harness.export import export
from harness.extraction import ExtractionError

DESCRIPTION = (
    "lmclaims: compare two runs (diff), list the claims (list), or write a model's "
    "activation set without running claims (extract). Run the claims themselves with "
    "`pytest claims/`."
)
# Settings that say where files went, not how verdicts were reached.
_PLACES = ("report_dir", "report_root", "cache_dir", "baseline_dir", "baseline")


class _Unreadable(Exception):
    """A run that cannot be read: a usage error (exit 2), not "differences found" (1)."""


def _run(path: str) -> dict[str, Any]:
    """A run's results.json (a run directory or the file), checked enough to diff."""
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    if not file.is_file():
        raise _Unreadable(f"no results.json at {path}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        results = data["results"]
        missing = [k for r in results for k in ("claim_id", "model", "verdict") if k not in r]
        if missing:
            raise KeyError(missing[0])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise _Unreadable(f"{file} is not a readable results.json ({why})") from exc
    return data


def _results(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["claim_id"], r["model"]): r for r in data["results"]}


def settings_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The method settings two runs differ in (where their files went aside)."""

    def settings(data: dict[str, Any]) -> dict[str, Any]:
        found = data.get("provenance", {}).get("settings", {})
        return (
            {k: v for k, v in found.items() if k not in _PLACES} if isinstance(found, dict) else {}
        )

    sa, sb = settings(a), settings(b)
    return [
        f"{k}: {sa.get(k)!r} -> {sb.get(k)!r}"
        for k in sorted(set(sa) | set(sb))
        if sa.get(k) != sb.get(k)
    ]


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}"


def diff_rows(a: dict, b: dict) -> list[list[str]]:
    rows = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key), b.get(key)
        if ra is None or rb is None:
            entry = cast("dict[str, Any]", ra or rb)  # one of the two is present
            rows.append([*key, "added" if ra is None else "removed", entry["verdict"], "", ""])
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
    parser = argparse.ArgumentParser(prog="lmclaims", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    diff = sub.add_parser("diff", help="which verdicts and effects changed between two runs")
    diff.add_argument("run_a", help="report directory or results.json")
    diff.add_argument("run_b", help="report directory or results.json")
    listing = sub.add_parser("list", help="every claim: id, version, needs, source")
    listing.add_argument("paths", nargs="*", help="claim files or folders (default: claims/)")
    extract = sub.add_parser(
        "extract", help="write a model's activation set (docs/activation-format.md), no claims"
    )
    _extract_arguments(extract)
    args = parser.parse_args(argv)
    if args.command == "list":
        return list_claims(args.paths)
    if args.command == "extract":
        return extract_set(args)
    try:
        run_a, run_b = _run(args.run_a), _run(args.run_b)
    except _Unreadable as exc:
        print(f"lmclaims diff: {exc}", file=sys.stderr)
        return 2
    differing = settings_differences(run_a, run_b)
    if differing:
        print(
            "lmclaims diff: warning: the runs used different settings, so differences may "
            "come from them: " + "; ".join(differing),
            file=sys.stderr,
        )
    rows = diff_rows(_results(run_a), _results(run_b))
    if not rows:
        print("no verdict or effect changed")
        return 0
    headers = ["claim", "model", "changed", "verdict", "effect", "effect name"]
    print(tabulate(rows, headers=headers, tablefmt="github"))
    return 1


def _extract_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = EXTRACTION_DEFAULTS

    parser.add_argument("--model", required=True, help="registered name, HF id or local folder")
    parser.add_argument("--out", required=True, help="new folder for the activation set")
    parser.add_argument("--dataset", default=None, help="sentences (default: shipped set)")
    parser.add_argument("--tokens", default=defaults.tokens, choices=TOKEN_MODES)
    parser.add_argument(
        "--token-reservoir",
        type=int,
        default=defaults.reservoir,
        help="token vectors kept per pair (all)",
    )
    parser.add_argument("--processing", default=defaults.processing, choices=PROCESSING_MODES)
    parser.add_argument("--dtype", default=defaults.dtype, choices=DTYPES, help="weights' dtype")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--sentences-per-pair", type=int, default=None)
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="cache folder or fsspec URL")


def extract_set(args: argparse.Namespace) -> int:
    """``lmclaims extract``: the GPU-machine half of a split run."""
    try:
        settings = ExtractionSettings(
            tokens=args.tokens,
            processing=args.processing,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            reservoir=args.token_reservoir,
        )
        stored = export(
            args.model, args.out, args.dataset, settings, args.cache_dir, args.sentences_per_pair
        )
    except (
        activations.ActivationSetError,
        ConfigError,
        DatasetError,
        ExtractionError,
        models.ModelError,
    ) as exc:
        print(f"lmclaims extract: {exc}", file=sys.stderr)
        return 2
    shape = stored.activations.resid.shape
    print(
        f"wrote {stored.path}: {stored.model}, {shape[0]} layers x {shape[1]} sentences x "
        f"{shape[2]} ({stored.activations.resid.dtype})"
    )
    return 0


def list_claims(paths: Sequence[str]) -> int:
    """The table of ``pytest --lm-list-claims``: the same collection, so the same claims."""

    default = ["claims"] if Path("claims").is_dir() else []
    # -qq: the table alone, without pytest's header and "no tests ran" line.
    args = ["--lm-list-claims", "-qq", "-p", "no:cacheprovider", *(paths or default)]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main())
