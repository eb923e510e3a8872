"""Ray instances that tests start in other processes, kept apart from every other Ray on the machine.

Each gets a private, short ``RAY_TMPDIR`` (Ray records a started cluster's address there, where a
later ``ray.init()`` would find it; socket paths under it have a length limit) and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which makes Ray give its nodes the loopback address
(Ray 2.60 ignores ``--node-ip-address 127.0.0.1`` otherwise), so nothing listens beyond 127.0.0.1.
Whatever outlives the test is found by that temp dir in its command line and ended.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

RAY_POINTERS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                "HELLOMEME_STORAGE_OPTIONS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def outside_environment() -> dict[str, str]:
    """This process's environment without anything that would point Ray at another cluster."""
    return {key: value for key, value in os.environ.items() if key not in RAY_POINTERS}


def private_temp_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def isolated_environment(temp_dir: str, **extra: str) -> dict[str, str]:
    """The environment for a process that starts or joins the Ray instance living under ``temp_dir``."""
    repo = str(Path(__file__).resolve().parents[1])
    return {**outside_environment(), "RAY_TMPDIR": temp_dir, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "PYTHONPATH": os.pathsep.join([repo, str(Path(__file__).parent)]), **extra}


def end_processes_under(temp_dir: str) -> None:
    """End processes of the Ray instance under ``temp_dir`` left behind, then the dir.

    A process is that instance's when its command line names ``temp_dir`` or its environment has
    ``RAY_TMPDIR=temp_dir``: a worker renames itself (``ray::MapWorker(...)``), so its command line
    no longer says, and one whose node was removed mid-job can outlive its raylet.
    """
    marker, variable = temp_dir.encode(), b"RAY_TMPDIR=" + temp_dir.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ours = marker in Path(f"/proc/{pid}/cmdline").read_bytes() or \
                variable in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if ours and int(pid) != os.getpid():
                os.kill(int(pid), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass  # gone meanwhile, or not ours
    shutil.rmtree(temp_dir, ignore_errors=True)


def run_child_job(script: str, args: list[str], report_path: Path, prefix: str, timeout_s: float = 900) -> dict:
    """Run ``python script *args report_path`` against its own private Ray and return the JSON it wrote.

    The script (a test module run as ``__main__``) starts or joins a Ray instance under a private
    temp dir, does its job and writes its outcome as JSON to ``report_path``; whatever it leaves
    running is ended afterwards.
    """
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    ray_tmp = private_temp_dir(prefix)
    try:
        child = subprocess.run([sys.executable, script, *args, str(report_path)], cwd=repo,
                               env=isolated_environment(ray_tmp), capture_output=True, text=True, timeout=timeout_s)
    finally:
        end_processes_under(ray_tmp)
    if child.returncode != 0:
        raise AssertionError(f"{Path(script).name} failed (exit {child.returncode}):\n{child.stderr[-6000:]}")
    return json.loads(report_path.read_text())
