"""Ctrl-C and SIGTERM stop a job promptly and cleanly.

The CLI runs in a child process with its own local Ray instance; once it has finished a row it
gets the signal.  It must exit 130 (SIGINT) or 143 (SIGTERM) within seconds, with a results table
holding every row (the finished ones as they ended, the rest ``not_run``), and leave no temp
folder and no Ray process behind.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from jobs.manifest_builder import pair_folders, write_manifest
from tests.conftest import REPO
from tests.isolated_ray import end_processes_under, isolated_environment, private_temp_dir


ROWS = 8
LEFTOVER_GRACE_S = 30  # how long the job's Ray processes may take to go once it exited


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _processes_naming(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(process.info.get("cmdline") or []) + str(process.info.get("environ") or "")
        except psutil.Error:
            continue
        if marker in text:
            found.append(process)
    return found


def _still_running_after(marker: str, grace_s: float) -> list[psutil.Process]:
    """The processes naming ``marker`` that are still there ``grace_s`` after the job exited.

    A Ray worker busy in native code notices its raylet is gone only when it next looks, which on a
    loaded machine takes a few seconds: what counts is that it goes, not that it goes at once.
    """
    deadline = time.monotonic() + grace_s
    while (found := _processes_naming(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def test_sigint_and_sigterm_raise_job_interrupted_once_and_the_handlers_come_back():
    """All three signals take the same path (the end-to-end test below sends SIGTERM): one JobInterrupted, exit 128 + N."""
    from jobs.render import EXIT_SIGNAL_BASE, stopped_by_signals
    from pipelines.render_job import JobInterrupted

    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for number, exit_status in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        with pytest.raises(JobInterrupted) as stopped:
            with stopped_by_signals():
                os.kill(os.getpid(), number)
                time.sleep(5)  # the handler raises here, in the main thread
        assert stopped.value.signal_number == number and EXIT_SIGNAL_BASE + number == exit_status
        assert {n: signal.getsignal(n) for n in before} == before


@pytest.mark.ray
@pytest.mark.parametrize("signal_number, exit_status", [(signal.SIGTERM, 143)])
def test_a_signal_stops_the_job_with_results_and_nothing_left_behind(synthetic_media, tmp_path, signal_number,
                                                                    exit_status):
    pairs = pair_folders(str(synthetic_media / "reference_images"), str(synthetic_media / "drive_videos"), "all")
    rows = [{**pair, "id": f"{pair['id']}-{i}"} for i, pair in zip(range(ROWS), itertools.cycle(pairs))]
    manifest = tmp_path / "manifest.parquet"
    write_manifest(rows, str(manifest))
    out = tmp_path / "out"
    scratch = tmp_path / "tmp"  # the job's temp folders go under TMPDIR: here, where we can look
    scratch.mkdir()
    ray_tmp = private_temp_dir("hm-sig-")
    env = isolated_environment(ray_tmp, TMPDIR=str(scratch))
    job = subprocess.Popen([sys.executable, "-m", "jobs.cli", "render", str(manifest), "--output", str(out),
                            "--address", "local", "--metrics-port", "0", "--size", "256"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Two videos written: the first one's result has reached the driver by then.
        _wait_for(lambda: len(list(out.glob("*.mp4"))) >= 2 or job.poll() is not None, 300, "two videos")
        assert job.poll() is None, "the job ended before it could be stopped"
        os.kill(job.pid, signal_number)
        started = time.monotonic()
        output, _ = job.communicate(timeout=90)
        stopped_in = time.monotonic() - started
    finally:
        if job.poll() is None:
            job.kill()
        leftovers = _still_running_after(ray_tmp, LEFTOVER_GRACE_S)
        end_processes_under(ray_tmp)
    assert job.returncode == exit_status, output[-3000:]
    assert stopped_in < 60, f"took {stopped_in:.0f} s to stop"
    results = pq.read_table(out / "_results" / "results.parquet").to_pylist()
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)
    statuses = {r["status"] for r in results}
    assert "ok" in statuses and "not_run" in statuses, statuses
    assert all("not run" in r["error"] for r in results if r["status"] == "not_run")
    # A video written before its result reached the driver belongs to an ok row, never a not_run one.
    written = {path.stem for path in out.glob("*.mp4")}
    assert {r["id"] for r in results if r["status"] == "ok"} == written
    # and records what it holds (a rerun carries the record: frames 0 read as a broken video)
    assert all(r["frames"] > 0 for r in results if r["status"] == "ok"), results
    assert (out / "index.html").exists()
    assert not list(out.rglob("*.partial"))
    assert not [p for p in scratch.iterdir() if p.name.startswith("hellomeme-job-")], list(scratch.iterdir())
    assert not leftovers, [p.info.get("cmdline") for p in leftovers]


@pytest.mark.ray
def test_sigterm_while_ray_starts_still_writes_every_row_as_not_run(synthetic_media, tmp_path):
    # Ray's driver takes SIGTERM for itself while ray.init runs (sys.exit(15)): the job ended with exit
    # status 15 and wrote nothing.  SIGTERM is what Kubernetes, Slurm and `timeout` send, and a local
    # start takes seconds on a busy machine.
    pairs = pair_folders(str(synthetic_media / "reference_images"), str(synthetic_media / "drive_videos"), "all")
    manifest = tmp_path / "manifest.parquet"
    write_manifest(pairs[:2], str(manifest))
    out = tmp_path / "out"
    ray_tmp = private_temp_dir("hm-sig-start-")
    job = subprocess.Popen([sys.executable, "-m", "jobs.cli", "render", str(manifest), "--output", str(out),
                            "--address", "local", "--metrics-port", "0", "--size", "256"], cwd=REPO,
                           env=isolated_environment(ray_tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        said = []
        for line in job.stdout:
            said.append(line)
            if "starting a local Ray instance" in line:
                time.sleep(0.5)  # into ray.init, which takes seconds
                job.send_signal(signal.SIGTERM)
                break
        output = "".join(said) + job.communicate(timeout=120)[0]
    finally:
        if job.poll() is None:
            job.kill()
        leftovers = _still_running_after(ray_tmp, LEFTOVER_GRACE_S)
        end_processes_under(ray_tmp)
    assert job.returncode == 143, output[-3000:]
    results = pq.read_table(out / "_results" / "results.parquet").to_pylist()
    assert len(results) == 2 and {r["status"] for r in results} <= {"not_run", "ok"}, results
    assert (out / "index.html").exists()
    assert not leftovers, [p.info.get("cmdline") for p in leftovers]
