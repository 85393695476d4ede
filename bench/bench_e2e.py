"""End-to-end benchmark of a claims run on one model (issue 10 item 1).

For each dataset scale (1x, 4x, ... the sentences, repeated with distinct text) it times,
each in its own subprocess so that peak RSS is that process tree's own:

- floor: the bare forward passes the harness must make: the model's Hugging Face body, the
  same token plans, length-sorted batches and batch size, under ``torch.inference_mode``;
- cold: ``pytest claims/`` with a fresh cache (extraction, fits, every claim, the report);
- warm: the same command again, served from that cache.

It prints one table and the ratios cold/floor, cold/(floor + fit engine time), warm/floor,
plus peak RSS of each against the model's own size (float32 parameters). Targets (issue 10):
cold <= 2 x (floor + fit engine), warm < 60 s, peak RSS <= model size + a constant that
does not grow with the number of sentences (compare the 1x and 4x rows).

The scaled dataset: copy k > 0 of each sentence gets the word ``r<k>`` appended, because
the loader drops rows whose (subject, attribute, text) repeats. The seed token mode drops a
sentence's last word, so a copy's prompt is the whole original sentence (one word longer).

    .venv/bin/python bench/bench_e2e.py [--model smollm2-135m] [--sentences-per-pair N]
        [--scale 1,4] [--cache-dir DIR] [--batch-size 32] [--skip-cold] [--pytest-args ...]

Peak RSS is ``ru_maxrss`` from ``wait4`` of each subprocess: the largest single process of
its tree (pytest itself, or one joblib worker), not their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_measured(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one subprocess."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=os.environ | ENV
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode  # ru_maxrss is in KiB on Linux


def write_dataset(per_pair: int | None, scale: int, folder: Path) -> Path:
    from harness import dataset

    frame = dataset.load(None, per_pair, 0).frame
    copies = [frame]
    for k in range(1, scale):
        copies.append(frame.assign(id=frame["id"] + f"-r{k}", text=frame["text"] + f" r{k}"))
    path = folder / f"sentences-x{scale}.jsonl"
    import pandas as pd

    table = pd.concat(copies, ignore_index=True)[["id", "subject", "attribute", "text"]]
    table.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def floor(model: str, dataset_path: str, batch_size: int, cache_dir: str) -> dict[str, Any]:
    """The bare forward passes (run in a subprocess via --_floor)."""
    import torch

    from harness import dataset, extraction, models

    started = time.perf_counter()
    loaded = models.load(models.resolve(model), Path(cache_dir))
    loaded_s = time.perf_counter() - started
    texts = list(dataset.load(Path(dataset_path)).frame["text"])
    plans = [extraction.plan_tokens(loaded.tokenizer, t, "seed") for t in texts]
    order = sorted(range(len(plans)), key=lambda i: len(plans[i].ids))
    body = loaded.hf_model.base_model
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [plans[i] for i in order[start : start + batch_size]]
            width = max(len(p.ids) for p in batch)
            tokens = torch.full((len(batch), width), batch[0].ids[0], dtype=torch.long)
            for row, plan in enumerate(batch):
                tokens[row, : len(plan.ids)] = torch.tensor(plan.ids)
            body(input_ids=tokens)
    params = sum(p.numel() for p in loaded.hf_model.parameters())
    return {
        "load_s": loaded_s,
        "forward_s": time.perf_counter() - started,
        "n_sentences": len(texts),
        "model_mb": params * 4 / 2**20,
        "threads": torch.get_num_threads(),
    }


def engine_seconds(results_json: Path, model: str) -> dict[str, float]:
    """The run's own stage timings (load, extract, fits, modes, ...) from its provenance."""
    if not results_json.is_file():
        return {}
    timings = json.loads(results_json.read_text())["provenance"]["models"][model]["timings_s"]
    return {k: float(v) for k, v in timings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sentences-per-pair", type=int, default=None)
    parser.add_argument("--scale", default="1,4", help="comma-separated dataset multiples")
    parser.add_argument("--cache-dir", default=None, help="parent of the fresh caches (temp)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-cold", action="store_true", help="floor only (quick check)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, quoted")
    parser.add_argument("--_floor", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._floor:
        print(json.dumps(floor(**json.loads(args._floor))))
        return 0

    work = Path(args.cache_dir or tempfile.mkdtemp(prefix="lmclaims-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    scales = [int(s) for s in args.scale.split(",")]
    rows = []
    for scale in scales:
        folder = work / f"x{scale}"
        folder.mkdir(exist_ok=True)
        data = write_dataset(args.sentences_per_pair, scale, folder)
        spec = {
            "model": args.model,
            "dataset_path": str(data),
            "batch_size": args.batch_size,
            "cache_dir": str(folder / "cache"),
        }
        log = folder / "floor.log"
        wall, rss_floor, rc = run_measured(
            [sys.executable, __file__, "--_floor", json.dumps(spec)], ROOT, log
        )
        if rc != 0:
            print(log.read_text()[-3000:])
            return rc
        measured = json.loads(log.read_text().strip().splitlines()[-1])
        row = {"scale": scale, **measured, "floor_rss_mb": rss_floor}
        print(f"x{scale}: floor {measured['forward_s']:.1f} s forward", flush=True)
        if not args.skip_cold:
            pytest_cmd = [
                sys.executable, "-m", "pytest", "claims/", "-q", "-p", "no:cacheprovider",
                f"--lm-models={args.model}", f"--lm-dataset={data}",
                f"--lm-cache-dir={folder / 'cache'}", "--lm-baseline=off",
                f"--lm-report-dir={folder / 'report'}", f"--lm-batch-size={args.batch_size}",
                *shlex.split(args.pytest_args),
            ]  # fmt: skip
            for phase in ("cold", "warm"):
                wall, rss, rc = run_measured(pytest_cmd, ROOT, folder / f"{phase}.log")
                if rc not in (0, 1):  # 1: some claim refuted, a normal outcome
                    print((folder / f"{phase}.log").read_text()[-3000:])
                    return rc
                row[f"{phase}_s"], row[f"{phase}_rss_mb"] = wall, rss
                row[f"{phase}_stages"] = engine_seconds(
                    folder / "report" / "results.json", args.model
                )
                print(f"x{scale}: {phase} {wall:.1f} s", flush=True)
        rows.append(row)
    report(rows)
    print(f"\nlogs, datasets and caches: {work}")
    return 0


def report(rows: list[dict[str, Any]]) -> None:
    from tabulate import tabulate

    table = []
    for r in rows:
        cold = r.get("cold_stages", {})
        fit_engine = sum(v for k, v in cold.items() if k not in ("load", "extract"))
        base = r["forward_s"] + fit_engine
        table.append(
            [
                f"x{r['scale']}",
                r["n_sentences"],
                r["forward_s"],
                cold.get("extract"),
                fit_engine or None,
                r.get("cold_s"),
                r.get("warm_s"),
                r.get("cold_s", 0) / r["forward_s"] if "cold_s" in r else None,
                r.get("cold_s", 0) / base if "cold_s" in r else None,
                r.get("warm_s", 0) / r["forward_s"] if "warm_s" in r else None,
                r["model_mb"],
                r["floor_rss_mb"],
                r.get("cold_rss_mb"),
                r.get("warm_rss_mb"),
            ]
        )
    headers = [
        "data", "sentences", "floor s", "extract s", "fit engine s", "cold s", "warm s",
        "cold/floor", "cold/(floor+fit)", "warm/floor", "model MB", "RSS floor MB",
        "RSS cold MB", "RSS warm MB",
    ]  # fmt: skip
    print()
    print(tabulate(table, headers=headers, floatfmt=".2f", missingval="–"))
    print(
        "\ntargets: cold/(floor+fit) <= 2; warm s < 60; RSS cold - model MB the same at every "
        "scale (does not grow with sentences)"
    )
    for r in rows:
        if "cold_rss_mb" in r:
            print(
                f"x{r['scale']}: RSS cold - model = {r['cold_rss_mb'] - r['model_mb']:.0f} MB; "
                f"cold stages {r['cold_stages']}; torch threads {r['threads']}"
            )


if __name__ == "__main__":
    sys.exit(main())
