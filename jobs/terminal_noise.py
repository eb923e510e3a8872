"""Keeping third-party chatter out of the terminal: Ray's, TensorFlow Lite's, mediapipe's and botocore's notices.

Used by both ways a render starts: the ``hellomeme-batch`` command (``jobs/cli.py``, unless ``-v``)
and a job submitted to a cluster (``jobs/render.py``'s own entry point, whose log ``submit`` follows).
Imports nothing of this project's but Ray's own logging hooks.
"""

from __future__ import annotations

import logging
import os
import re


BOTOCORE_LOGGERS = ("botocore", "aiobotocore")  # s3fs's AWS clients


def quiet_third_party_noise() -> None:
    """Keep Ray's, TensorFlow Lite's, mediapipe's and botocore's own chatter out of the terminal (``-v`` brings
    it back).

    Our per-row and progress lines say what the user needs; Ray Data's progress lines repeat them,
    and the native libraries print start-up notices on every actor.  Environment variables are set
    before Ray or mediapipe start, so they reach the processes they start too.
    """
    import warnings

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the C++ core's notices (constructor args...)
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's graph notices
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow Lite's delegate notices
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray.*")
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype")  # protobuf, via mediapipe
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_botocore_notices()
    _route_cluster_errors_to_debug_log()


def quiet_botocore_notices() -> None:
    """botocore's INFO lines ("Found credentials in environment variables." on every s3:// command) to -v
    only: where the credentials came from is a detail; its warnings and errors still reach the terminal."""
    for name in BOTOCORE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


# The cluster's notices of a worker this job stopped (a row past its time limit) or lost (the row's own
# result names it: "its worker process died ... killed for memory"), and of the retry that follows.
_WORKER_LOSS_NOTICES = re.compile(r"^(A worker died or was killed while executing|Task \S+ failed\. There are "
                                  r"(infinite|\d+) retries remaining)")


def _route_cluster_errors_to_debug_log() -> None:
    """Send the cluster's worker-loss notices ("A worker died or was killed ...", a screen each) to the debug log.

    Ray's driver prints them straight to the terminal whatever its logging says, one per worker a
    stopped row took with it.  Its other notices (a request no node can hold, say) still print.
    ``-v`` leaves them all as Ray prints them.
    """
    from ray._private import worker as ray_worker

    printer = getattr(ray_worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "routed_to_log", False):
        return  # another Ray version: its notices stay as they are
    cluster_log = logging.getLogger("hellomeme_batch.cluster_errors")

    def print_or_log(data: dict, ignore_prefix: bool) -> None:
        lines = data.get("lines", [])
        if data.get("pid") == "raylet" and lines and all(_WORKER_LOSS_NOTICES.match(line) for line in lines):
            for line in lines:
                cluster_log.debug("%s", line)
        else:
            printer(data, ignore_prefix)

    print_or_log.routed_to_log = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_or_log
