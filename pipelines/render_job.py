"""One render job from the driver's side: plan the rows, stream them through Ray, write the results."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray

from engines.registry import ENGINE_CLASSES, engine_class
from hellomeme_batch.manifest import read_manifest
from hellomeme_batch.results import Summary, result_row, write_results
from hellomeme_batch.work import PENDING
from pipelines.config import RenderJobConfig
from pipelines.ray_runtime import connect
from pipelines.render_pipeline import PoolSizes, build_dataset
from pipelines.row_plan import plan_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobReport:
    """What a finished job did."""

    summary: Summary
    results: list[dict[str, Any]]
    seconds: float
    seconds_to_first_video: float | None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}


def run_render_job(
    config: RenderJobConfig,
    address: str | None = None,
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
) -> JobReport:
    """Render every pending row of the manifest; job-level problems raise before any row is decoded.

    ``on_result(result_row, done, total)`` is called as each row finishes (skipped and
    up-front failures first), in completion order.
    """
    started = time.perf_counter()
    table = read_manifest(config.manifest_uri, config.storage_options)
    engine = engine_class(config.engine)
    engine.check_ready(config.engine_options)
    works = plan_rows(table, config, tuple(ENGINE_CLASSES))
    results: list[dict[str, Any]] = []
    total = len(works)

    def record(row: dict[str, Any]) -> None:
        results.append(row)
        if on_result is not None:
            on_result(row, len(results), total)

    for work in works:
        if work.status != PENDING:
            record(result_row(work))
    pending = [work for work in works if work.status == PENDING]
    first_video_at = None
    if pending:
        connect(address)
        resources = ray.cluster_resources()
        pools = PoolSizes.for_cluster(engine, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
        logger.info("rendering %d rows with the %s engine (pools: %s)", len(pending), config.engine, pools)
        for row in build_dataset(pending, config, engine, pools).iter_rows():
            row = _plain(row)
            if first_video_at is None and row["status"] == "ok":
                first_video_at = time.perf_counter() - started
            record(row)
    summary = write_results(results, config.output_uri, config.storage_options)
    return JobReport(summary=summary, results=sorted(results, key=lambda r: r["row_index"]),
                     seconds=time.perf_counter() - started, seconds_to_first_video=first_video_at)
