"""The run's report, written once at session end: report.md, results.json, figures/."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness import __version__
from harness import calibration_table as calibration
from harness.claim import ClaimResult
from harness.environment import accelerators, cpu_model, library_versions
from harness.figures import KINDS
from harness.session import LmSession, Unfinished

SCHEMA_VERSION = 1


def _fmt(value: Any) -> str:
    # Not computed (None, NaN) or not finite: a dash, never "nan"/"inf" (the notes say why).
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _ci(ci: tuple[float, float] | None) -> str:
    if ci is None or not all(math.isfinite(end) for end in ci):
        return "–"
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def summary_table(results: list[ClaimResult]) -> str:
    rows = [
        [
            r.claim_id,
            r.model,
            f"**{r.verdict}**",
            r.effect_name,
            _fmt(r.effect),
            _ci(r.ci),
            _fmt(r.pvalue),
            r.n,
            r.claim_version,
        ]
        for r in results
    ]
    # The claim version last: a baseline holds only for the version it recorded.
    headers = ["claim", "model", "verdict", "effect", "value", "95% CI", "p", "n", "claim v"]
    return tabulate(rows, headers=headers, tablefmt="github")


def unfinished_table(unfinished: list[Unfinished]) -> str:
    rows = [[u.claim_id, u.model, f"**{u.outcome}**", u.reason] for u in unfinished]
    return tabulate(rows, headers=["claim", "model", "outcome", "reason"], tablefmt="github")


MAX_MD_ROWS = 40


def _table_md(frame: pd.DataFrame) -> str:
    if len(frame) > MAX_MD_ROWS:
        return f"*{len(frame)} rows: see results.json*"
    # NaN cells read as "–" (tabulate writes "nan" for them, "–" only for None).
    shown = frame.astype(object).where(frame.notna(), None)
    return tabulate(
        shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".3g", missingval="–"
    )


def provenance(state: LmSession) -> dict[str, Any]:
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    return {
        "lmclaims_version": __version__,
        "git_commit": commit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started)),
        "library_versions": library_versions(),
        "settings": state.config.describe(),
        "dataset": None
        if state.dataset is None
        else {
            "source": state.dataset.source,
            "sha256": state.dataset.sha256,
            "n_sentences": len(state.dataset),
            "n_subjects": len(state.dataset.subjects),
            "n_attributes": len(state.dataset.attributes),
        },
        "models": model_provenance(state),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "accelerators": accelerators(),
            "python": platform.python_version(),
        },
    }


def model_provenance(state: LmSession) -> dict[str, dict[str, Any]]:
    """Per model: extraction metadata (device, dtypes, ...), timings and activation key;
    models run by xdist workers included."""
    local = {
        name: {k: v for k, v in ev.activations.meta.items() if k != "library_versions"}
        | {"timings_s": ev.timings, "activation_key": ev.activation_key}
        for name, ev in state.evidence.items()
    }
    return local | state.remote_models


def write(state: LmSession) -> Path:
    out = state.config.report_dir
    figures = out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance(state)
    lines = ["# lmclaims verdict report", ""]
    if state.interrupted:
        lines += [
            "> **This run was interrupted.** The report is partial: claims marked NOT RUN "
            "were not decided.",
            "",
        ]
    lines += [
        f"Models: {', '.join(prov['models']) or '–'} · dataset "
        f"{prov['dataset']['n_sentences'] if prov['dataset'] else '–'} sentences · "
        f"lmclaims {__version__}",
        "",
        summary_table(state.results),
        "",
    ]
    if state.unfinished:
        lines += ["**Without a verdict.**", "", unfinished_table(state.unfinished), ""]
    for claim_id, spec in state.specs.items():
        lines += [
            f"## {spec.title} (`{claim_id}` v{spec.version})",
            "",
            f"> {spec.quote}",
            "",
            f"*Source:* {spec.source}",
            "",
            f"**Test.** {spec.statistic}",
            "",
        ]
        if spec.multiplicity:
            lines += [f"**Multiple tests.** {spec.multiplicity}", ""]
        if spec.source_numbers:
            lines += ["**The source's numbers.**", ""]
            lines += [f"- {k}: {v}" for k, v in spec.source_numbers.items()] + [""]
        if spec.caveats:
            lines += ["**Caveats.**", ""]
            lines += [f"- {caveat}" for caveat in spec.caveats] + [""]
        calibrated = calibration.rows_for(claim_id, spec.version)
        lines += calibration_lines(calibrated)
        for result in (r for r in state.results if r.claim_id == claim_id):
            lines += [
                f"### {result.model}: {result.verdict} ({result.scope})",
                "",
                result.summary(),
                "",
            ]
            lines += [coverage_line(calibrated, _run_settings(state, result.model)), ""]
            lines += [f"- {note}" for note in result.notes] + [""]
            for name, table in result.tables.items():
                if table.empty:
                    continue
                figure = figures / f"{claim_id}--{result.model.replace('/', '__')}--{name}.png"
                plot = KINDS.get(spec.plots.get(name, "lines"))
                if plot and plot(table, f"{claim_id} on {result.model}: {name}", figure):
                    lines += [f"![{name}](figures/{figure.name})", ""]
                lines += [
                    f"<details><summary>{name}</summary>",
                    "",
                    _table_md(table),
                    "",
                    "</details>",
                    "",
                ]
        for missing in (u for u in state.unfinished if u.claim_id == claim_id):
            lines += [f"### {missing.model}: {missing.outcome}", "", missing.reason, ""]
    lines += ["## Provenance", "", "```json", json.dumps(prov, indent=2, default=str), "```", ""]
    (out / "report.md").write_text("\n".join(lines))
    payload = {
        "schema_version": SCHEMA_VERSION,
        "provenance": prov,
        "interrupted": state.interrupted,
        "results": [_result_json(r) for r in state.results],
        "unfinished": [dataclasses.asdict(u) for u in state.unfinished],
    }
    # Strict JSON: a value that was not computed or is not finite is null (notes say why).
    text = json.dumps(_finite(payload), indent=2, default=str, allow_nan=False)
    (out / "results.json").write_text(text + "\n")
    _point_latest(out, state.config.report_root)
    return out / "report.md"


def calibration_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The committed calibration of this claim version (docs/calibration.md), shown before
    its verdicts: how often it says SUPPORTED when its effect is planted and when not."""
    if not rows:
        return [
            "**Calibration.** None recorded for this claim version: its power and "
            "false-positive rate are unknown.",
            "",
        ]
    settings = ", ".join(f"{k} {v}" for k, v in rows[0]["settings"].items())
    return [
        "**Calibration** (the share of planted sets SUPPORTED is the power under a truth and "
        "the false-positive rate under a null; 95% Clopper-Pearson; measured at "
        f"{settings}; "
        "docs/calibration.md).",
        "",
        *calibration.claim_table(rows),
    ]


def coverage_line(rows: list[dict[str, Any]], run: dict[str, Any] | None) -> str:
    if not rows:
        return "*Not calibrated: no calibration recorded for this claim version.*"
    if run is None:
        return "*Calibration coverage unknown: this run's settings were not recorded.*"
    reasons = calibration.uncovered(rows[0]["settings"], run)
    if reasons:
        return "*Not calibrated at these settings:* " + "; ".join(reasons) + "."
    return "*Calibrated at these settings* (design, sentences per pair, width, families)."


def _run_settings(state: LmSession, model: str) -> dict[str, Any] | None:
    families = state.config.fit.families
    evidence = state.evidence.get(model)
    if evidence is not None:
        return calibration.run_settings(evidence.dataset, evidence.activations.d_model, families)
    meta = state.remote_models.get(model, {})
    if state.dataset is not None and isinstance(meta.get("d_model"), int):
        return calibration.run_settings(state.dataset, meta["d_model"], families)
    return None


def _point_latest(out: Path, root: Path | None) -> None:
    """``<report root>/latest`` -> the newest run, swapped atomically by renaming a new
    link; none when the user named the run's folder (nothing is made outside it)."""
    if root is None:
        return
    link = Path(root) / "latest"
    if link.exists() and not link.is_symlink():
        return  # a real folder called "latest" is the user's; leave it alone
    tmp = Path(root) / f".latest-{os.getpid()}"
    with contextlib.suppress(OSError, ValueError):
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(out, root))
        tmp.replace(link)


def _finite(value: Any) -> Any:
    """NaN and infinities become None, recursively, so results.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _result_json(result: ClaimResult) -> dict[str, Any]:
    return {
        "claim_id": result.claim_id,
        "claim_version": result.claim_version,
        "model": result.model,
        "verdict": str(result.verdict),
        "effect_name": result.effect_name,
        "effect": result.effect,
        "ci": list(result.ci) if result.ci else None,
        "pvalue": result.pvalue,
        "n": result.n,
        "scope": result.scope,
        "notes": list(result.notes),
        "tables": {k: v.to_dict(orient="records") for k, v in result.tables.items()},
    }
