"""Connecting the driver to Ray: a private local instance, or an existing cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from typing import Callable, Iterator

import ray

from mediaio.native_notices import notices_to_debug_log

logger = logging.getLogger(__name__)

# Ray gives a starting node 30 s (fixed in ray/_private/node.py) to register with its GCS.  On a
# machine whose cores are busy with other work, a local start can miss that and the whole job would
# fail before any row ran (seen in the test suite, two Ray jobs starting at once on 2 cores), so a
# local start that times out is tried again.
LOCAL_START_ATTEMPTS = 3
LOCAL_START_TIMEOUT_MESSAGE = "timed out during startup"


def keep_on_loopback() -> None:
    """Make a local Ray instance give its node the loopback address, so no Ray port listens beyond 127.0.0.1.

    Ray 2.60 ignores ``_node_ip_address="127.0.0.1"`` and picks the machine's network address
    unless its cluster mode is off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, its default on macOS
    and Windows).  The environment variable reaches the processes ``ray.init`` starts; the
    driver read it at import, so its constant is set too.  Only for a private local instance:
    joining a real cluster needs the machine's address.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


def connect(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the cluster at ``address`` ("auto", "ray://..", "HOST:PORT"), or start a local one.

    ``None`` means: inside a Ray job (RAY_ADDRESS set) join that cluster, else start a local
    instance whose dashboard binds 127.0.0.1 only.
    """
    if ray.is_initialized():
        return
    # Ray installs its own SIGTERM handler in the driver while it starts (sys.exit(15): exit status 15,
    # nothing written); the caller's (the CLI's records every row as not run and exits 143) is put
    # back once Ray is up, and gets a SIGTERM that arrived in between.
    main = threading.current_thread() is threading.main_thread()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    stopped = False
    with _signals_noted(main) as noted:
        try:
            _init(address, num_cpus, num_gpus)
        except SystemExit as exit_request:
            if exit_request.code != signal.SIGTERM:
                raise
            stopped = True
        finally:
            if main:
                for number, handler in handlers.items():
                    if handler is not None:
                        signal.signal(number, handler)
        # Ray's sys.exit is lost where the signal lands in a callback that ignores exceptions (seen: an
        # at-fork hook); the signal was still noted.
        stopped = stopped or signal.SIGTERM in noted()
    if stopped:
        caller = handlers[signal.SIGTERM]
        if callable(caller):
            caller(signal.SIGTERM, None)
        raise SystemExit(signal.SIGTERM)


@contextlib.contextmanager
def _signals_noted(main: bool) -> Iterator[Callable[[], set[int]]]:
    """Note every signal this process gets while inside, whatever its Python handler does with it.

    The interpreter writes each signal's number to its wakeup file descriptor before any handler
    runs (settable in the main thread only; elsewhere nothing is noted).
    """
    if not main:
        yield set
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def noted() -> set[int]:
        seen: set[int] = set()
        with contextlib.suppress(BlockingIOError):
            while chunk := reader.recv(256):
                seen.update(chunk)
        return seen

    try:
        yield noted
    finally:
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()

SCRATCH_PREFIX = "hellomeme-job-"
SCRATCH_OWNER = "owner.pid"  # the driver's pid, so a later job can tell a killed driver's folder from a live one's


def _owner_line(pid: int | None = None) -> str:
    """``host pid``: the host too, as a temp folder shared between containers holds other hosts' pids."""
    return f"{socket.gethostname()} {os.getpid() if pid is None else pid}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_stale_scratch(temp_root: str) -> list[str]:
    """Remove the scratch folders of local jobs whose driver is gone (killed: SIGKILL, out of memory),
    which no clean-up of their own could remove; returns what was removed.

    Only folders whose owner file names a process of this host that no longer exists: a live job's
    folder, another host's, or one whose owner cannot be read is left alone.
    """
    removed = []
    try:
        names = os.listdir(temp_root)
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(temp_root, name)
        if not name.startswith(SCRATCH_PREFIX) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        try:
            with open(os.path.join(folder, SCRATCH_OWNER), encoding="ascii") as owner:
                host, pid_text = owner.read().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if host == socket.gethostname() and pid != os.getpid() and not _process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        logger.info("removed %d temp folder(s) of earlier local jobs whose driver was killed", len(removed))
    return removed


def _init(address: str | None, num_cpus: int | None, num_gpus: int | None) -> None:
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        logger.info("connecting to the Ray cluster at %s", address)
        check_answers(address)
        level = logging.getLogger("ray").getEffectiveLevel()
        # The workers' own output (TensorFlow Lite's and mediapipe's notices, a screen of them per
        # prepare actor) reaches the driver's terminal only when Ray's logging is not quietened (-v);
        # it stays in the cluster's logs and dashboard either way.
        with notices_to_debug_log(logger):
            ray.init(address=address, logging_level=level, log_to_driver=level <= logging.INFO)
        return
    logger.info("starting a local Ray instance")
    keep_on_loopback()
    global _local_scratch
    # The workers' temp files (fetched clips, audio for the encode) live in one folder of this job's,
    # removed when the job ends however it ends: a stopped job leaves nothing in the system's temp folder.
    remove_stale_scratch(tempfile.gettempdir())
    _local_scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    with open(os.path.join(_local_scratch, SCRATCH_OWNER), "w", encoding="ascii") as owner:
        owner.write(_owner_line())
    _set_scratch(_local_scratch)
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            with notices_to_debug_log(logger):  # the C++ core's "Set ray log level ..." line
                ray.init(
                    address="local",  # a new private instance, never a cluster some other process started here
                    num_cpus=num_cpus,
                    num_gpus=num_gpus,
                    dashboard_host="127.0.0.1",
                    include_dashboard=False,
                    logging_level=logging.getLogger("ray").getEffectiveLevel(),
                    log_to_driver=False,
                )
            return
        except Exception as exc:  # Ray raises a bare Exception when its node misses the start-up deadline
            if LOCAL_START_TIMEOUT_MESSAGE not in str(exc) or attempt == LOCAL_START_ATTEMPTS:
                raise
            logger.warning("the local Ray instance timed out starting (attempt %d of %d, the machine is busy); "
                           "starting it again", attempt, LOCAL_START_ATTEMPTS)
            ray.shutdown()


class ClusterUnreachableError(ConnectionError):
    """No Ray cluster answers at the address the job was given."""


# Ray's own connection to a head that is not there retries without end (a nightly job with a stale
# address sat for hours); a head that is up accepts a connection at once.
CLUSTER_ANSWER_TIMEOUT_S = 15.0
DEFAULT_PORTS = {"ray://": 10001, "": 6379}  # Ray Client's port, the GCS's


def check_answers(address: str) -> None:
    """Raise :class:`ClusterUnreachableError` unless something accepts a connection at ``address``'s port.

    ``auto`` (the cluster this machine's ``ray start`` made) and addresses of other schemes are
    left to Ray, which fails at once on those it cannot use.
    """
    if address == "auto" or ("://" in address and not address.startswith("ray://")):
        return
    scheme = "ray://" if address.startswith("ray://") else ""
    where = address[len(scheme):].split("/", 1)[0]
    host, colon, port = where.rpartition(":")
    if not colon or not port.isdigit():
        host, port = where, str(DEFAULT_PORTS[scheme])
    host = host.strip("[]")  # an IPv6 address in brackets
    try:
        with socket.create_connection((host, int(port)), timeout=CLUSTER_ANSWER_TIMEOUT_S) as connection:
            speaks_http = _answers_http(connection)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterUnreachableError(
            f"no Ray cluster answers at {address} ({reason}): is it running? (`ray status` on its head "
            "node says)") from None
    if speaks_http:  # Ray would retry this address without end
        raise ClusterUnreachableError(
            f"{address} answers as a web server, not as a Ray cluster's GCS: that is the dashboard's or Jobs "
            f"API's address (submit a job there with `hellomeme-batch submit MANIFEST --address "
            f"http://{host}:{port}`); `render --address` takes the GCS's, {host}:6379 by default")


HTTP_PROBE_TIMEOUT_S = 2.0


def _answers_http(connection: socket.socket) -> bool:
    """Whether the server at the other end answers a plain HTTP request as a web server does.

    A GCS speaks gRPC (HTTP/2 frames, binary) and never answers ``HTTP/1.x ...``; the dashboard
    and the Jobs API (port 8265, the address ``submit`` takes) do.
    """
    try:
        connection.settimeout(HTTP_PROBE_TIMEOUT_S)
        connection.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
        return connection.recv(5) == b"HTTP/"
    except OSError:
        return False


_local_scratch: str | None = None  # set while this process runs the local Ray instance it started
_saved_environment: dict[str, str | None] = {}


def _set_scratch(scratch: str) -> None:
    """Point TMPDIR at the job's scratch folder in this process's environment, which the local Ray
    instance's processes inherit; Ray's own folder (logs, sockets) stays where it would have been.

    Not through ``ray.init``'s runtime environment: Ray pools workers by runtime environment, so
    the workers it starts with the node (one per CPU, started while the driver plans) would not
    match a job that has one and could never run its tasks: the job waited for new workers to start
    and import, on cores the idle ones had just been busy with.
    """
    _saved_environment.update({name: os.environ.get(name) for name in ("TMPDIR", "RAY_TMPDIR")})
    # Ray puts its session folder under TMPDIR on Linux (else /tmp), unless RAY_TMPDIR says otherwise.
    default = os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None
    os.environ.setdefault("RAY_TMPDIR", default or "/tmp")
    os.environ["TMPDIR"] = scratch


def _restore_environment(scratch: str) -> None:
    for name, value in _saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved_environment.clear()
    if tempfile.tempdir == scratch:  # Python caches the folder it picked the first time
        tempfile.tempdir = None


def shutdown_local_ray() -> bool:
    """End the local Ray instance this process started (its workers, their temp files); a cluster is left alone.

    True when a local instance was ended (so no worker of this job is left running).
    """
    global _local_scratch
    if _local_scratch is None:
        return False
    if ray.is_initialized():
        ray.shutdown()
    _restore_environment(_local_scratch)
    shutil.rmtree(_local_scratch, ignore_errors=True)
    _local_scratch = None
    return True
