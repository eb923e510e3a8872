"""A local render's Ray instance listens on the loopback address only."""

import ipaddress

import psutil
import pytest

pytestmark = pytest.mark.ray


def _ray_process_ids() -> set[int]:
    pids = set()
    for process in psutil.process_iter(["name", "cmdline"]):
        text = " ".join(process.info.get("cmdline") or []) + " " + (process.info.get("name") or "")
        if any(part in text for part in ("gcs_server", "raylet", "ray::", "default_worker.py", "dashboard")):
            pids.add(process.pid)
    return pids


def test_local_ray_listens_on_loopback_only(ray_local):
    ray_local.get(ray_local.remote(lambda: 1).remote())  # workers up
    pids = _ray_process_ids()
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "found no listening Ray sockets to check"
    exposed = [f"{c.laddr.ip}:{c.laddr.port} (pid {c.pid})" for c in listening
               if not ipaddress.ip_address(c.laddr.ip.removeprefix("::ffff:")).is_loopback]
    assert not exposed, exposed
