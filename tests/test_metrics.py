"""The job's metrics: the driver's endpoint follows a render as it runs, the workers export through Ray."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.manifest_builder import manifest_table, write_manifest
from mediaio import media
from pipelines.outputs import FINGERPRINT_TAG
from reporting.metrics import (
    DEFAULT_DRIVER_HOST,
    DEFAULT_DRIVER_PORT,
    WORKER_METRICS,
    DriverMetrics,
    MetricsEndpoint,
    gpu_readings,
)
from jobs.cli import build_parser
from jobs.render import served_metrics
from engines.registry import engine_spec
from pipelines.plan import JobConfig, plan_rows
from pipelines.render_job import run_render_job

REPO = Path(__file__).resolve().parents[1]


RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "otel_scope_name",
              "otel_scope_schema_url", "otel_scope_version", "job_id"}


def scrape(url: str, job_id: str | None = None) -> dict[str, float]:
    """Every sample on a Prometheus endpoint as ``name{label="v",...}`` -> value, labels sorted.

    With ``job_id`` (a Ray endpoint): only that job's samples, Ray's own labels (node, worker,
    session) dropped and the samples that differ only by them summed -- one value per series.
    """
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    samples: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if job_id is not None and sample.labels.get("job_id") != job_id:
                continue
            dropped = RAY_LABELS if job_id is not None else set()
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k not in dropped)
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] += sample.value
    return dict(samples)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_worker_metrics_are_a_no_op_without_ray():
    code = (
        "import sys\n"
        "from reporting.metrics import worker_metrics\n"
        "m = worker_metrics()\n"
        "m.row_started(); m.frames_decoded(3); m.frames_rendered(3); m.videos_in_flight(2)\n"
        "m.row_finished('ok', {'decode': 0.1}); m.sample_gpus()\n"
        "assert 'ray' not in sys.modules, 'recording imported Ray'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, timeout=60)


def fake_torch(initialized: bool, utilization_error: bool = False):
    def utilization(device):
        if utilization_error:
            raise ModuleNotFoundError("pynvml")
        return 87

    cuda = types.SimpleNamespace(
        is_available=lambda: True, is_initialized=lambda: initialized, device_count=lambda: 2,
        memory_allocated=lambda device: 1000 * (device + 1), memory_reserved=lambda device: 4000 * (device + 1),
        utilization=utilization,
    )
    return types.SimpleNamespace(cuda=cuda)


def test_gpu_readings_come_only_from_a_process_that_uses_cuda():
    assert gpu_readings(fake_torch(initialized=False)) == []
    readings = gpu_readings(fake_torch(initialized=True))
    assert [(r.device, r.allocated_bytes, r.reserved_bytes, r.utilization_percent) for r in readings] == [
        (0, 1000, 4000, 87.0), (1, 2000, 8000, 87.0)]
    assert [r.utilization_percent for r in gpu_readings(fake_torch(True, utilization_error=True))] == [None, None]


def test_driver_counters_follow_the_rows():
    metrics = DriverMetrics()
    metrics.job_planned(total=4, pending=2)
    # A rerun's skipped row carries the frames and timings of the run that made its video: not this job's
    # (a rerun that rendered nothing showed 16 frames rendered and two encodes).
    metrics.row_finished({"status": "skipped", "frames": 16, "seconds_encode": 0.7}, from_pipeline=False)
    metrics.row_finished({"status": "ok", "frames": 30, "seconds_decode": 1.5, "seconds_render": 4.0,
                          "seconds_write": 0.0}, from_pipeline=True)
    value = metrics.registry.get_sample_value
    assert value("hellomeme_job_rows_in_flight") == 1
    assert value("hellomeme_job_rows_finished_total", {"status": "ok"}) == 1
    assert value("hellomeme_job_rows_finished_total", {"status": "failed"}) == 0
    assert value("hellomeme_job_frames_rendered_total") == 30
    assert value("hellomeme_job_stage_seconds_sum", {"stage": "render"}) == 4.0
    assert value("hellomeme_job_stage_seconds_count", {"stage": "write"}) is None  # never reached
    assert value("hellomeme_job_stage_seconds_count", {"stage": "encode"}) is None  # only the skipped row's
    metrics.job_finished(12.0)
    assert value("hellomeme_job_running") == 0 and value("hellomeme_job_seconds") == 12.0


def test_render_serves_metrics_on_loopback_by_default_and_survives_a_busy_port(caplog):
    args = build_parser().parse_args(["render", "m.parquet", "--output", "out"])
    assert (args.metrics_host, args.metrics_port) == (DEFAULT_DRIVER_HOST, DEFAULT_DRIVER_PORT) == ("127.0.0.1", 9471)
    port = free_port()
    with served_metrics("127.0.0.1", port) as metrics:
        metrics.job_planned(total=3, pending=3)
        assert scrape(f"http://127.0.0.1:{port}/metrics")["hellomeme_job_rows"] == 3
        with served_metrics("127.0.0.1", port) as second:  # another job holds the port: warn, go on
            second.job_planned(total=1, pending=1)
        assert "metrics endpoint not started" in caplog.text
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_a_scrape_sees_the_job_run_and_with_linger_sees_it_finished():
    """The endpoint closed the moment the job ended, and job_seconds stayed 0 until then: every scrape said
    running, 0 s, and a dashboard never showed a job done.  The linger comes after the job (the CLI
    prints its summary and ends its Ray first)."""
    from jobs.render import linger_metrics

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    kept = []
    with served_metrics("127.0.0.1", port, kept) as metrics:
        metrics.job_planned(total=2, pending=2)
        time.sleep(1.2)
        running = scrape(url)
        metrics.job_finished(1.5)
    after = scrape(url)  # the job is over; the endpoint is kept open for the linger
    started = time.monotonic()
    linger_metrics(kept, 0.5)
    assert time.monotonic() - started >= 0.45
    assert running["hellomeme_job_running"] == 1 and running["hellomeme_job_seconds"] >= 1.0
    assert after["hellomeme_job_running"] == 0 and after["hellomeme_job_seconds"] == 1.5
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)
    args = build_parser().parse_args(["render", "m.parquet", "--output", "out", "--metrics-linger", "30"])
    assert args.metrics_linger == 30.0
    with pytest.raises(SystemExit):  # 1e20 overflowed the timer after every row had rendered
        build_parser().parse_args(["render", "m.parquet", "--output", "out", "--metrics-linger", "1e20"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["render", "m.parquet", "--output", "out", "--progress-seconds", "1e20"])


def test_dashboard_queries_only_metrics_the_job_exports():
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queried = {name for expr in exprs for name in re.findall(r"\b(?:ray_)?hellomeme_\w+", expr)}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    driver = {family.name + suffix for family in DriverMetrics().registry.collect() for suffix in suffixes[family.type]}
    workers = {name for metric in WORKER_METRICS for name in metric.exported_names()}
    assert queried and queried <= driver | workers, queried - driver - workers
    assert {name for name in queried if name.startswith("ray_")}, "the workers' metrics are on the dashboard"


def _write_earlier_output(config, manifest_row, path):
    """Put there what an earlier run of this row left: a small MP4 carrying the row's fingerprint."""
    (planned,) = plan_rows(manifest_table([manifest_row]), config).pending
    frames = np.zeros((4, 64, 64, 3), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(media.encode_mp4(frames, 4.0, 4.0, 1.0, None, media.MediaLimits(),
                                      metadata={"comment": FINGERPRINT_TAG + planned["fingerprint"]}))


@pytest.fixture(scope="module")
def watched_render(ray_local, synthetic_media, tmp_path_factory):
    """A 4-row render (2 ok, 1 failed, 1 skipped) whose driver endpoint is scraped as each row finishes."""
    folder = tmp_path_factory.mktemp("metrics-run")
    drives, portraits = synthetic_media / "drive_videos", synthetic_media / "reference_images"
    one, two = str(portraits / "astronaut.png"), str(portraits / "grace_hopper.png")
    rows = [
        {"id": "first", "reference_uri": one, "driving_uri": str(drives / "grace_hopper.mp4"), "max_seconds": 1.0},
        {"id": "missing", "reference_uri": one, "driving_uri": str(folder / "nope.mp4")},
        {"id": "done", "reference_uri": one, "driving_uri": str(drives / "grace_hopper.mp4")},
        {"id": "second", "reference_uri": two, "driving_uri": str(drives / "astronaut.mp4"), "max_seconds": 1.0},
    ]
    write_manifest(rows, str(folder / "manifest.parquet"))
    config = JobConfig(manifest_uri=str(folder / "manifest.parquet"), output_uri=str(folder / "out"),
                       engine=engine_spec("warp", size=256), report=False)
    _write_earlier_output(config, rows[2], folder / "out" / "done.mp4")
    metrics = DriverMetrics()
    with MetricsEndpoint(metrics.registry, "127.0.0.1", 0) as endpoint:
        during: list[tuple[int, dict[str, float]]] = []
        polled: list[dict[str, float]] = []
        finished = threading.Event()

        def poll() -> None:  # a scraper that knows nothing of the job, as Prometheus would be
            while not finished.wait(0.2):
                polled.append(scrape(endpoint.url))

        def on_result(row, done, total):
            during.append((done, scrape(endpoint.url)))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            report = run_render_job(config, on_result=on_result, metrics=metrics)
        finally:
            finished.set()
            poller.join(timeout=15)
        after = scrape(endpoint.url)
    return report, during, polled, after


@pytest.mark.ray
def test_driver_endpoint_shows_the_render_progress_during_and_after(watched_render):
    report, during, polled, after = watched_render
    statuses = [row["status"] for row in report.results]
    assert statuses == ["ok", "failed", "skipped", "ok"], report.results
    total = len(statuses)

    def finished(sample):
        return sum(sample[f'hellomeme_job_rows_finished_total{{status="{s}"}}'] for s in ("ok", "failed", "skipped"))

    assert [done for done, _ in during] == list(range(1, total + 1))
    for done, sample in during:  # each scrape, taken as a row finished, counts exactly the rows done
        assert finished(sample) == done
        assert sample["hellomeme_job_rows"] == total and sample["hellomeme_job_running"] == 1
        assert sample["hellomeme_job_rows_in_flight"] == sample["hellomeme_job_rows_started_total"] - (
            done - 1)  # one row (skipped) settled without the pipeline
    mid_run = [sample for done, sample in during if done < total]
    assert mid_run and all(sample["hellomeme_job_rows_in_flight"] > 0 for sample in mid_run)
    assert polled and [finished(sample) for sample in polled] == sorted(finished(sample) for sample in polled)

    assert finished(after) == total
    assert after['hellomeme_job_rows_finished_total{status="ok"}'] == 2
    assert after['hellomeme_job_rows_finished_total{status="failed"}'] == 1
    assert after['hellomeme_job_rows_finished_total{status="skipped"}'] == 1
    assert after["hellomeme_job_rows_started_total"] == 3
    assert after["hellomeme_job_rows_in_flight"] == 0 and after["hellomeme_job_running"] == 0
    # The skipped row's frames were rendered by the run that made its video, not this one.
    assert after["hellomeme_job_frames_rendered_total"] == sum(
        row["frames"] for row in report.results if row["status"] != "skipped") > 0
    assert after['hellomeme_job_stage_seconds_count{stage="render"}'] == 2
    # The failed row failed inside the prepare stage (its clip is missing): only whole stages count.
    assert after['hellomeme_job_stage_seconds_count{stage="decode"}'] == 2


@pytest.mark.ray
def test_workers_export_their_metrics_through_ray(watched_render):
    import ray

    report, *_ = watched_render
    frames = sum(row["frames"] for row in report.results if row["status"] == "ok")  # a skipped row's were made before
    (node,) = [node for node in ray.nodes() if node["Alive"]]
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    job_id = ray.get_runtime_context().get_job_id()
    # This Ray job (the test session's driver) may have rendered before, so its counters are at least ours.
    wanted = {
        "ray_hellomeme_rows_started_total": 3,
        'ray_hellomeme_rows_finished_total{status="ok"}': 2,
        'ray_hellomeme_rows_finished_total{status="failed"}': 1,
        "ray_hellomeme_frames_rendered_total": frames,
        'ray_hellomeme_stage_seconds_count{stage="render"}': 2,
    }
    deadline = time.monotonic() + 60  # each worker reports to its node's agent every few seconds
    while True:
        exported = scrape(url, job_id)
        missing = {name: exported.get(name) for name, least in wanted.items() if exported.get(name, 0) < least}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"not exported (yet) by Ray's metrics agent: {missing}"
    assert exported.get("ray_hellomeme_frames_decoded_total", 0) >= frames
