"""Interruption, concurrency and determinism, on real subprocess runs of the plugin."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cache import Cache
from tests.conftest import make_project

TIMING_KEYS = {"timings_s", "seconds_boot", "seconds_forward", "started", "seconds"}


_STARTED: list[subprocess.Popen] = []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _reap_runs():
    """A test that fails (a timeout included) must not leave its run behind: under load,
    a timed-out SIGINT test left a run's joblib worker and loky's trackers alive for 25
    minutes. Each run leads its own process group; what is left of it is killed."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)


def _start(project: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "claims", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own session: every process the run starts (joblib's workers, loky's resource
        # tracker) stays in it, so what outlives the run can be found after it exits.
        start_new_session=True,
        # SIGINT as a terminal gives it. A suite started in the background (`make test &`,
        # nohup) passes SIGINT on as ignored, and Python then installs no KeyboardInterrupt
        # handler: the runs went on to the fits and exited 1 (the "lost" interrupts of
        # earlier fresh-clone runs; CI's own runs passed).
        preexec_fn=_default_sigint,
    )
    _STARTED.append(proc)
    return proc


def _session_members(sid: int) -> list[str]:
    """Live processes of a session (from /proc), as 'pid command line'."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        state, _ppid, _group, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session) == sid and state != "Z":
            found.append(f"{entry.name} {command[:200]}")
    return found


def _assert_nothing_outlives(proc: subprocess.Popen) -> None:
    left: list[str] = []
    for _ in range(100):  # loky's tracker exits once it sees its parent's pipe close
        left = _session_members(proc.pid)
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError("processes outlived the interrupted run:\n" + "\n".join(left))


def _read_until(proc: subprocess.Popen, text: str) -> str:
    seen = ""
    while text not in seen and proc.poll() is None:
        seen += proc.stderr.read(1)
    return seen


def _entries(cache: Path, kind: str) -> list[Path]:
    """Published entries only: a writer's temporary ``.<key>.tmp-<pid>-...`` folder is not one."""
    folder = cache / kind
    return (
        sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
    )


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sigkill_after_extraction_keeps_activations_and_rerun_finishes(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "p").mkdir()
    project = make_project(tmp_path / "p", cache, per_pair=22)
    proc = _start(project, "--lm-families", "study")
    assert _wait_for(lambda: _entries(cache, "activations"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # Whatever was published is whole: every entry passes its checksum.
    store = Cache(cache)
    (entry,) = _entries(cache, "activations")
    assert store.get_activations(entry.name) is not None

    rerun = _start(project, "--lm-families", "study")
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 1, out + err  # refuted on random weights, no baseline
    results = json.loads((project / "reports/tiny-gpt2/results.json").read_text())
    assert results["provenance"]["models"]["tiny-gpt2"]["timings_s"]["extract"] == 0.0
    assert not list(cache.glob("*/.*.tmp-*")), "stale temporary entries were not swept"


def test_sigint_during_extraction_leaves_no_entry_and_rerun_recomputes(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "p").mkdir()
    # All 2,640 sentences at batch size 1: extraction lasts many seconds, not one. With
    # 264 sentences a loaded machine sometimes finished extracting before the signal
    # arrived, and the test then raced instead of testing.
    project = make_project(tmp_path / "p", cache, per_pair=22, subjects=10, attributes=12)
    proc = _start(project, "--lm-batch-size", "1")
    # The progress bar names the stage on stderr; interrupt as soon as extraction starts.
    _read_until(proc, "extract tiny-gpt2")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    # pytest: interrupted. Once (CI, loaded machine) it exited 1: the output says why.
    assert proc.returncode == 2, (out + err)[-4000:]
    _assert_nothing_outlives(proc)
    assert not _entries(cache, "activations")
    assert not list(cache.glob("*/.*.tmp-*"))

    rerun = _start(project)
    rerun.communicate(timeout=600)
    results = json.loads((project / "reports/tiny-gpt2/results.json").read_text())
    assert results["provenance"]["models"]["tiny-gpt2"]["timings_s"]["extract"] > 0


def test_sigint_during_fitting_stops_the_run_with_its_workers(tmp_path):
    # Issue 21 item 9: after an interrupted `make test`, a joblib worker and loky's resource
    # trackers of the run were still alive 25 minutes later. Nothing here depends on speed:
    # the signal comes once fitting has begun, and the only bounds are generous timeouts.
    cache = tmp_path / "cache"
    (tmp_path / "p").mkdir()
    project = make_project(tmp_path / "p", cache, per_pair=22, subjects=10, attributes=12)
    proc = _start(project)
    _read_until(proc, "fit tiny-gpt2")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out + err)[-4000:]
    _assert_nothing_outlives(proc)
    assert not list(cache.glob("*/.*.tmp-*"))


def test_two_concurrent_runs_share_one_cache_and_agree(tmp_path):
    cache = tmp_path / "cache"
    projects = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        projects.append(make_project(tmp_path / name, cache, per_pair=8))
    procs = [_start(p) for p in projects]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 1, out + err
    assert len(_entries(cache, "activations")) == 1
    assert len(_entries(cache, "fits")) == 1
    assert not list(cache.glob("*/.*.tmp-*"))
    a, b = (json.loads((p / "reports/tiny-gpt2/results.json").read_text()) for p in projects)
    # Same settings, same bytes, apart from timings, timestamps and the project paths.
    for key in ("report_dir", "report_root", "dataset", "cache_dir", "baseline_dir"):
        a["provenance"]["settings"].pop(key), b["provenance"]["settings"].pop(key)
    a["provenance"]["dataset"].pop("source"), b["provenance"]["dataset"].pop("source")
    assert _without_timings(a) == _without_timings(b)


def test_the_interrupt_latch_respects_an_ignored_sigint():
    # A run started under nohup asked not to be interrupted by SIGINT; the extraction latch
    # must not take that back (it used to install its handler whatever was there).
    from harness.evidence import _InterruptLatch

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _InterruptLatch():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with _InterruptLatch() as latch:
            assert signal.getsignal(signal.SIGINT) == latch._handle
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
