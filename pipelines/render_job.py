"""One render job from the driver's side: plan the rows, stream them through Ray, write the results.

As rows finish the driver counts them in its metrics (served by the caller, see jobs/render.py);
at the end it writes the results table and the HTML report beside the outputs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import ray

from engines.registry import ENGINE_CLASSES, engine_class
from mediaio import storage
from pipelines.manifest import read_manifest
from reporting.metrics import DriverMetrics
from reporting.report import JobFacts, write_report
from reporting.results import Summary, result_row, write_results
from pipelines.rows import PENDING
from pipelines.config import RenderJobConfig
from pipelines.ray_runtime import connect
from pipelines.render_pipeline import PoolSizes, build_dataset, set_queue_budget
from pipelines.row_plan import plan_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobReport:
    """What a finished job did."""

    summary: Summary
    results: list[dict[str, Any]]
    seconds: float
    seconds_to_first_video: float | None
    report_uri: str | None = None  # None when no report was asked for or it could not be written


def _finished_rows(dataset: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """Result rows as each one leaves the pipeline, as plain Python values.

    Every row is its own block, so each batch here is one row.  ``iter_rows`` would hold a
    finished row back until the next one is ready too (it prefetches a batch: measured lags of
    0.5-3 s); without prefetching a row arrives within a fraction of a second.
    """
    for batch in dataset.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pyarrow"):
        yield from batch.to_pylist()


def _write_report(results: list[dict[str, Any]], config: RenderJobConfig, facts: JobFacts) -> str | None:
    """The HTML report, or None: the results table is the record, a report that fails only logs."""
    try:
        return write_report(results, config.output_uri, facts, config.storage_options)
    except Exception as exc:
        logger.error("report not written: %s", storage.redact(f"{type(exc).__name__}: {exc}"))
        logger.debug("report failure details", exc_info=True)
        return None


def run_render_job(
    config: RenderJobConfig,
    address: str | None = None,
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
    metrics: DriverMetrics | None = None,
) -> JobReport:
    """Render every pending row of the manifest; job-level problems raise before any row is decoded.

    ``on_result(result_row, done, total)`` is called as each row finishes (skipped and
    up-front failures first), in completion order, after ``metrics`` has counted it.
    """
    started = time.perf_counter()
    table = read_manifest(config.manifest_uri, config.storage_options)
    engine = engine_class(config.engine)
    engine.check_ready(config.engine_options)
    works = plan_rows(table, config, tuple(ENGINE_CLASSES))
    results: list[dict[str, Any]] = []
    total = len(works)
    pending = [work for work in works if work.status == PENDING]
    metrics = metrics or DriverMetrics()
    metrics.job_planned(total=total, pending=len(pending))

    def record(row: dict[str, Any], from_pipeline: bool) -> None:
        results.append(row)
        metrics.row_finished(row, from_pipeline)
        if on_result is not None:
            on_result(row, len(results), total)

    for work in works:
        if work.status != PENDING:
            record(result_row(work), from_pipeline=False)
    first_video_at = None
    if pending:
        connect(address)
        resources = ray.cluster_resources()
        pools = PoolSizes.for_cluster(engine, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
        budget = set_queue_budget(ray.data.DataContext.get_current(), config)
        logger.info("rendering %d rows with the %s engine (pools: %s; queues up to %s)", len(pending),
                    config.engine, pools, budget)
        for row in _finished_rows(build_dataset(pending, config, engine, pools)):
            if first_video_at is None and row["status"] == "ok":
                first_video_at = time.perf_counter() - started
            record(row, from_pipeline=True)
    summary = write_results(results, config.output_uri, config.storage_options)
    seconds = time.perf_counter() - started
    report_uri = None
    if config.report:
        facts = JobFacts(manifest_uri=config.manifest_uri, output_uri=config.output_uri, engine=config.engine,
                         seconds=seconds, inputs={work.row_index: (work.spec.reference_uri, work.spec.driving_uri)
                                                  for work in works if work.spec is not None})
        report_uri = _write_report(results, config, facts)
    metrics.job_finished(seconds)
    return JobReport(summary=summary, results=sorted(results, key=lambda r: r["row_index"]),
                     seconds=seconds, seconds_to_first_video=first_video_at, report_uri=report_uri)
