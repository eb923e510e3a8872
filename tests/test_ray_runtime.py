"""Starting the driver's local Ray instance: a start that misses Ray's start-up deadline is tried again."""

from __future__ import annotations

import pytest

from pipelines import ray_runtime


class _Starts:
    """Stands in for ``ray.init``: fails with the given errors first, then starts."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, **kwargs) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


TIMED_OUT = Exception("The current node timed out during startup. This could happen because some of the raylet "
                      "failed to startup or the GCS has become overloaded.")


@pytest.fixture()
def starts(monkeypatch):
    def install(*errors: Exception) -> _Starts:
        fake = _Starts(*errors)
        monkeypatch.setattr(ray_runtime.ray, "init", fake)
        monkeypatch.setattr(ray_runtime.ray, "shutdown", lambda: None)
        return fake

    yield install
    ray_runtime.shutdown_local_ray()  # the job's scratch folder


def test_a_local_start_that_times_out_is_tried_again(starts, caplog):
    fake = starts(TIMED_OUT, TIMED_OUT)
    ray_runtime._init("local", 2, 0)
    assert fake.calls == 3
    assert "timed out starting (attempt 2 of 3" in caplog.text


def test_a_local_start_gives_up_after_its_attempts_and_other_errors_are_not_retried(starts):
    fake = starts(*[TIMED_OUT] * ray_runtime.LOCAL_START_ATTEMPTS)
    with pytest.raises(Exception, match="timed out during startup"):
        ray_runtime._init("local", 2, 0)
    assert fake.calls == ray_runtime.LOCAL_START_ATTEMPTS
    ray_runtime.shutdown_local_ray()
    fake = starts(ValueError("num_cpus must be positive"))
    with pytest.raises(ValueError):
        ray_runtime._init("local", 2, 0)
    assert fake.calls == 1


def test_an_address_where_no_cluster_answers_stops_the_job_at_once_with_exit_1(synthetic_media, tmp_path):
    # Ray's own connection retries without end: a nightly job with a stale address sat for hours.  The
    # CLI runs in a child process: in this one Ray may already be up, and a driver joins only once.
    import socket
    import subprocess
    import sys

    from jobs.manifest_builder import pair_folders, write_manifest
    from tests.conftest import REPO

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ray_runtime.ClusterUnreachableError, match=f"no Ray cluster answers at {address}"):
            ray_runtime.check_answers(address)
    manifest = tmp_path / "manifest.parquet"
    write_manifest(pair_folders(str(synthetic_media / "reference_images"), str(synthetic_media / "drive_videos"),
                                "zip")[:1], str(manifest))
    job = subprocess.run([sys.executable, "-m", "jobs.cli", "render", str(manifest), "--output", str(tmp_path / "out"),
                          "--address", f"127.0.0.1:{port}", "--metrics-port", "0"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert job.returncode == 1, job.stdout + job.stderr
    assert f"job not started: no Ray cluster answers at 127.0.0.1:{port}" in job.stdout + job.stderr
    assert not (tmp_path / "out" / "_results").exists()

def test_an_address_that_answers_as_a_web_server_is_named_as_the_dashboards(tmp_path):
    # The Jobs API's tunnel (submit's address, port 8265) given to render: Ray retried it without end.
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ray_runtime.ClusterUnreachableError, match="answers as a web server"):
            ray_runtime.check_answers(address)
    finally:
        server.shutdown()


def test_a_killed_drivers_temp_folder_is_removed_by_the_next_local_job(tmp_path):
    """A driver killed outright (SIGKILL, the memory killer) cannot remove its temp folder of fetched clips;
    the next local job removes it.  Live jobs' folders, other hosts' (a temp folder shared between
    containers) and folders it cannot tell the owner of stay."""
    import socket
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    try:
        folders = {"killed": f"{host} {dead_pid}", "live": f"{host} {live.pid}", "other-host": f"elsewhere {dead_pid}",
                   "unreadable": "not a pid", "no-owner": None}
        for name, owner in folders.items():
            folder = tmp_path / f"{ray_runtime.SCRATCH_PREFIX}{name}"
            folder.mkdir()
            (folder / "clip.mp4").write_bytes(b"fetched")
            if owner is not None:
                (folder / ray_runtime.SCRATCH_OWNER).write_text(owner)
        (tmp_path / "someone-elses").mkdir()
        removed = ray_runtime.remove_stale_scratch(str(tmp_path))
    finally:
        live.kill()
        live.wait()
    assert removed == [str(tmp_path / f"{ray_runtime.SCRATCH_PREFIX}killed")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{ray_runtime.SCRATCH_PREFIX}{name}" for name in ("live", "other-host", "unreadable", "no-owner")]
        + ["someone-elses"])
