"""The job's Prometheus metrics: what the workers report through Ray, and what the driver serves itself.

Workers (decode and encode tasks, the render actors) record through ``ray.util.metrics``; each
node's metrics agent exports them as ``ray_hellomeme_*`` (counters with ``_total``), labelled by
Ray with the node and worker.  The instruments are created on first use and only in a process
where Ray is running, so this module imports and records without Ray (recording is a no-op).

The driver keeps the job's own counters in a prometheus-client registry and serves them on one
HTTP endpoint (127.0.0.1 by default): a user scraping that endpoint alone sees the job's
progress -- rows by status, frames rendered, stage latencies from each finished row's timings,
rows in flight -- without a Prometheus pointed at every node of the cluster.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

STATUSES = ("ok", "failed", "skipped", "not_run")

# Seconds one stage takes for one row: from a write of a few milliseconds to a long GPU render.
STAGE_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 150.0, 300.0, 600.0, 1800.0)

GPU_SAMPLE_SECONDS = 5.0  # a GPU render call can take minutes: sample beside it, not only after it

DEFAULT_DRIVER_HOST = "127.0.0.1"
DEFAULT_DRIVER_PORT = 9471


# ---------------------------------------------------------------------------------------------
# Worker side: ray.util.metrics, exported by each node's metrics agent.


@dataclass(frozen=True)
class WorkerMetric:
    """One metric the workers record; Ray exports it as ``ray_<name>``."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    description: str
    tag_keys: tuple[str, ...] = ()

    def exported_names(self) -> tuple[str, ...]:
        """The series names a Prometheus scraping Ray's metrics agent sees."""
        base = f"ray_{self.name}"
        if self.kind == "counter":
            return (f"{base}_total",)
        if self.kind == "histogram":
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        return (base,)


WORKER_METRICS = (
    WorkerMetric("hellomeme_rows_started", "counter", "Rows whose decode began", ("job_id",)),
    WorkerMetric("hellomeme_rows_finished", "counter", "Rows that left the pipeline, by status", ("job_id", "status")),
    WorkerMetric("hellomeme_frames_decoded", "counter", "Driving frames decoded at the generation rate", ("job_id",)),
    WorkerMetric("hellomeme_frames_rendered", "counter", "Frames the engine rendered", ("job_id",)),
    WorkerMetric("hellomeme_stage_seconds", "histogram", "Seconds one stage took for one row", ("job_id", "stage")),
    WorkerMetric("hellomeme_videos_in_flight", "gauge", "Videos this render actor is rendering now",
                 ("job_id",)),
    WorkerMetric("hellomeme_gpu_memory_bytes", "gauge",
                 "GPU memory held by this render actor's torch allocator (kind: allocated, reserved)",
                 ("job_id", "device", "kind")),
    WorkerMetric("hellomeme_gpu_utilization_percent", "gauge", "GPU utilisation seen by this render actor",
                 ("job_id", "device")),
)


@dataclass(frozen=True)
class GpuReading:
    """One CUDA device as this process sees it."""

    device: int
    allocated_bytes: int
    reserved_bytes: int
    utilization_percent: float | None  # None when torch cannot ask the driver (no pynvml)


def gpu_readings(torch: Any) -> list[GpuReading]:
    """Memory and utilisation of the CUDA devices this process has used; empty without CUDA.

    Only a process that already initialised CUDA is asked, so sampling never creates a CUDA
    context (hundreds of MB) in a CPU worker.
    """
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_available() or not cuda.is_initialized():
        return []
    readings = []
    for device in range(cuda.device_count()):
        try:
            utilization: float | None = float(cuda.utilization(device))
        except Exception:  # torch needs pynvml (or amdsmi) for this; memory is still worth reporting
            utilization = None
        readings.append(GpuReading(device=device, allocated_bytes=int(cuda.memory_allocated(device)),
                                   reserved_bytes=int(cuda.memory_reserved(device)),
                                   utilization_percent=utilization))
    return readings


def _never_raises(record: Callable[..., None]) -> Callable[..., None]:
    """A recording method whose failure is logged: metrics must never fail a row or a render actor."""

    @functools.wraps(record)
    def guarded(self: "WorkerMetrics", *args: Any, **kwargs: Any) -> None:
        try:
            record(self, *args, **kwargs)
        except Exception:
            logger.warning("recording metrics (%s) failed", record.__name__, exc_info=True)

    return guarded


def _ray_is_running() -> bool:
    ray = sys.modules.get("ray")  # a process that never imported Ray is not a Ray worker
    return ray is not None and ray.is_initialized()


class WorkerMetrics:
    """The pipeline's metrics as recorded in its workers; every method is a no-op without Ray."""

    def __init__(self) -> None:
        self._instruments: dict[str, Any] | None = None
        self._job_id = ""
        self._lock = threading.Lock()
        self._gpu_sampler: threading.Thread | None = None

    def _get(self) -> dict[str, Any] | None:
        if self._instruments is None:
            if not _ray_is_running():
                return None
            with self._lock:
                if self._instruments is None:
                    self._instruments = self._create()
        return self._instruments

    def _create(self) -> dict[str, Any]:
        import ray
        from ray.util import metrics as ray_metrics

        self._job_id = ray.get_runtime_context().get_job_id() or ""
        instruments: dict[str, Any] = {}
        for metric in WORKER_METRICS:
            if metric.kind == "counter":
                instrument = ray_metrics.Counter(metric.name, metric.description, metric.tag_keys)
            elif metric.kind == "gauge":
                instrument = ray_metrics.Gauge(metric.name, metric.description, metric.tag_keys)
            else:
                instrument = ray_metrics.Histogram(metric.name, metric.description, list(STAGE_SECONDS_BUCKETS),
                                                   metric.tag_keys)
            instruments[metric.name] = instrument.set_default_tags({"job_id": self._job_id})
        return instruments

    @_never_raises
    def row_started(self) -> None:
        if (instruments := self._get()) is not None:
            instruments["hellomeme_rows_started"].inc()

    @_never_raises
    def frames_decoded(self, count: int) -> None:
        if count > 0 and (instruments := self._get()) is not None:
            instruments["hellomeme_frames_decoded"].inc(count)

    @_never_raises
    def frames_rendered(self, count: int) -> None:
        if count > 0 and (instruments := self._get()) is not None:
            instruments["hellomeme_frames_rendered"].inc(count)

    @_never_raises
    def row_finished(self, status: str, timings: Mapping[str, float]) -> None:
        """A row left the pipeline: count it by status and observe each stage it went through."""
        if (instruments := self._get()) is None:
            return
        instruments["hellomeme_rows_finished"].inc(tags={"status": status})
        for stage, seconds in timings.items():
            instruments["hellomeme_stage_seconds"].observe(float(seconds), tags={"stage": stage})

    @_never_raises
    def videos_in_flight(self, count: int) -> None:
        if (instruments := self._get()) is not None:
            instruments["hellomeme_videos_in_flight"].set(count)

    @_never_raises
    def sample_gpus(self) -> None:
        """Record GPU memory and utilisation if this process uses CUDA through torch (else nothing)."""
        torch = sys.modules.get("torch")  # an engine that uses the GPU has imported torch already
        if torch is None or (instruments := self._get()) is None:
            return
        for reading in gpu_readings(torch):
            device = str(reading.device)
            memory = instruments["hellomeme_gpu_memory_bytes"]
            memory.set(reading.allocated_bytes, tags={"device": device, "kind": "allocated"})
            memory.set(reading.reserved_bytes, tags={"device": device, "kind": "reserved"})
            if reading.utilization_percent is not None:
                instruments["hellomeme_gpu_utilization_percent"].set(reading.utilization_percent,
                                                                      tags={"device": device})


    def start_gpu_sampler(self, interval: float = GPU_SAMPLE_SECONDS) -> None:
        """Sample the GPUs every ``interval`` seconds from a daemon thread (once per process)."""
        with self._lock:
            if self._gpu_sampler is not None:
                return
            self._gpu_sampler = threading.Thread(target=self._sample_gpus_forever, args=(interval,),
                                                 name="hellomeme-gpu-metrics", daemon=True)
        self._gpu_sampler.start()

    def _sample_gpus_forever(self, interval: float) -> None:
        while True:
            self.sample_gpus()
            time.sleep(interval)


_worker_metrics = WorkerMetrics()


def worker_metrics() -> WorkerMetrics:
    """This process's worker metrics (one set per process, created lazily)."""
    return _worker_metrics


# ---------------------------------------------------------------------------------------------
# Driver side: prometheus-client, served over HTTP by the driver itself.


class DriverMetrics:
    """The job's counters kept on the driver, in a registry of their own (one per job)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rows = Gauge("hellomeme_job_rows", "Rows in the manifest", registry=r)
        self.rows_started = Counter("hellomeme_job_rows_started", "Rows handed to the pipeline to render (all "
                                    "pending rows at the start; the workers' ray_hellomeme_rows_started counts "
                                    "the rows a stage has begun)", registry=r)
        self.rows_finished = Counter("hellomeme_job_rows_finished", "Rows finished, by status", ["status"],
                                     registry=r)
        self.rows_in_flight = Gauge("hellomeme_job_rows_in_flight",
                                    "Rows handed to the pipeline and not finished yet, queued or in a stage", registry=r)
        self.frames_rendered = Counter("hellomeme_job_frames_rendered", "Frames rendered by finished rows",
                                       registry=r)
        self.stage_seconds = Histogram("hellomeme_job_stage_seconds", "Seconds one stage took for one finished row",
                                       ["stage"], buckets=STAGE_SECONDS_BUCKETS, registry=r)
        self.running = Gauge("hellomeme_job_running", "1 while the job runs, 0 once it has finished", registry=r)
        self.seconds = Gauge("hellomeme_job_seconds", "Wall-clock seconds the job has run since its rows were "
                             "planned (its whole run once it has finished)", registry=r)
        for status in STATUSES:  # every status is a series from the start, so rates and sums see zeros
            self.rows_finished.labels(status=status)

    def job_planned(self, total: int, pending: int) -> None:
        """The manifest is planned: ``total`` rows, of which ``pending`` go to the pipeline."""
        self.running.set(1)
        started = time.monotonic()
        self.seconds.set_function(lambda: time.monotonic() - started)  # a scrape mid-job sees it grow
        self.rows.set(total)
        self.rows_started.inc(pending)
        self.rows_in_flight.set(pending)

    @_never_raises
    def row_finished(self, row: Mapping[str, Any], from_pipeline: bool) -> None:
        """Count a results row; ``from_pipeline`` when it went through Ray (not failed or skipped up front)."""
        self.rows_finished.labels(status=str(row["status"])).inc()
        if from_pipeline:
            self.rows_in_flight.dec()
        if row["status"] == "skipped":  # its frames and timings are the run's that made its video, not this job's
            return
        frames = row.get("frames") or 0
        if frames > 0:
            self.frames_rendered.inc(frames)
        for column, seconds in row.items():
            if column.startswith("seconds_") and seconds:  # a stage the row never reached has no time
                self.stage_seconds.labels(stage=column.removeprefix("seconds_")).observe(float(seconds))

    def job_finished(self, seconds: float) -> None:
        self.running.set(0)
        self.rows_in_flight.set(0)
        self.seconds.set_function(lambda: seconds)


class MetricsEndpoint:
    """An HTTP endpoint serving a registry at ``/metrics`` from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str = DEFAULT_DRIVER_HOST, port: int = DEFAULT_DRIVER_PORT):
        """Bind now (port 0: any free port); OSError if the address is taken."""
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host, self.port = self._server.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MetricsEndpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
