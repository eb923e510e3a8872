"""One render job from the driver's side: plan the rows, stream them through Ray, write the results.

As rows finish the driver counts them in its metrics (served by the caller, see jobs/render.py);
at the end it writes the results table and the HTML report beside the outputs.

Every planned row ends with a result, whatever happens: the driver reconciles the rows it sent
into the pipeline against the rows that came out.  A pipeline stopped by an error Ray could not
retry runs again for the rows it still held (a few times); a row lost anywhere after that becomes
a failed result, and a job stopped by the user (SIGINT, SIGTERM, SIGHUP) records the rows not yet
run as ``not_run`` before it ends.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import ray

from mediaio import clips, storage
from pipelines import outputs
from pipelines.finish_stage import STAGE as FINISH_STAGE
from pipelines.plan import JobConfig, plan_job
from pipelines.ray_runtime import connect
from pipelines.render_pipeline import (PoolSizes, build_dataset, needs_one_row_blocks, set_block_rows,
                                       set_queue_budget)
from pipelines.row_ledger import RowLedger
from pipelines.rows import NOT_RUN, OK
from reporting.metrics import DriverMetrics
from reporting.report import OTHER_REPORT_FILE, REPORT_FILE, JobFacts, earlier_report, write_report
from reporting.results import (Summary, count_results, kept_tables, result_row, with_earlier_records,
                               write_results)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobReport:
    """What a finished job did."""

    summary: Summary
    results: list[dict[str, Any]]
    seconds: float
    seconds_to_first_video: float | None
    report_uri: str | None = None  # None when no report was asked for or it could not be written
    started_at: float = 0.0  # when the job started, epoch seconds


def _finished_rows(dataset: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """Result rows as each one leaves the pipeline, as plain Python values.

    Every row is its own block, so each batch here is one row.  ``iter_rows`` would hold a
    finished row back until the next one is ready too (it prefetches a batch: measured lags of
    0.5-3 s); without prefetching a row arrives within a fraction of a second.
    """
    for batch in dataset.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pyarrow"):
        yield from batch.to_pylist()


def _write_report(results: list[dict[str, Any]], config: JobConfig, facts: JobFacts) -> str | None:
    """The HTML report, or None: the results table is the record, a report that fails only logs."""
    try:
        return write_report(results, config.output_uri, facts, config.storage_options)
    except Exception as exc:
        logger.error("report not written: %s", storage.redact(f"{type(exc).__name__}: {exc}"))
        logger.debug("report failure details", exc_info=True)
        return None


class JobInterrupted(BaseException):
    """The user stopped the job (SIGINT, SIGTERM or SIGHUP); raised in the driver's main thread by the CLI's handler."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(f"stopped by signal {signal_number}")
        self.signal_number = signal_number


LEDGER_TIMEOUT_S = 10.0  # asking the ledger while the job stops: past this, no row is claimed as written


def _rows_that_began_writing(ledger: Any) -> set[int]:
    """Rows the finish stage started (so their video may be written), or none if the ledger cannot say."""
    if ledger is None:
        return set()
    try:
        return set(ray.get(ledger.begun.remote(FINISH_STAGE), timeout=LEDGER_TIMEOUT_S))
    except Exception as exc:  # the cluster is going away: claim nothing rather than guess
        logger.warning("could not ask which rows were being written: %s", type(exc).__name__)
        return set()


def _unfinished(rows: list[dict[str, Any]], status: str, error: str, config: JobConfig,
                ledger: Any) -> list[dict[str, Any]]:
    """Results rows for planned rows that never came out of the pipeline.

    A row whose video was written before its result reached the driver (the job stopped in
    between) is ``ok``: its final output exists and carries its fingerprint, so it owns it.
    """
    writing = _rows_that_began_writing(ledger)
    results = []
    for row in rows:
        owned = int(row["row_index"]) in writing and _owns_output(row, config)
        settled = {"status": OK, "error": None, "frames": clips.frames_in_video(row["output_uri"])} if owned else {
            "status": status, "error": f"row {row['row_index']} ({row['id']}): {error}"}
        results.append(result_row({**row, **settled, "engine": config.engine.name}))
    return results


def _owns_output(row: dict[str, Any], config: JobConfig) -> bool:
    try:
        return outputs.owns_existing_output(row["output_uri"], row["fingerprint"], config.storage_options)
    except Exception:  # unreadable now: not claimed
        return False


STILL_RUNNING = "not run yet: the job was still running when this results table was written"


def _write_results_so_far(results: list[dict[str, Any]], waiting: list[dict[str, Any]], config: JobConfig) -> None:
    """The results table as the job stands (the rows without a result ``not_run``): what a driver killed
    from here on leaves.  A table that cannot be written now is only logged: the job goes on."""
    done = {int(row["row_index"]) for row in results}
    unfinished = [result_row({**row, "status": NOT_RUN, "engine": config.engine.name,
                              "error": f"row {row['row_index']} ({row['id']}): {STILL_RUNNING}"})
                  for row in waiting if int(row["row_index"]) not in done]
    try:
        write_results(results + unfinished, config.output_uri, config.storage_options)
    except Exception as exc:
        logger.warning("the results table so far could not be written: %s",
                       storage.redact(f"{type(exc).__name__}: {exc}"))


class DiskFullWatch:
    """Notices rows failing one after another on a full disk, so the job stops instead of rendering the rest.

    Every row after the disk fills would spend its render and then fail at the write: the job stops
    once ``ROWS_TO_STOP`` results in a row say so, leaving the others ``not_run`` for a rerun once
    there is space.  Consecutive results, so one node's full temp disk on a cluster, whose other
    nodes still write, does not stop the job.
    """

    ROWS_TO_STOP = 3
    # How a full disk reads in a row's error (Python's OSError, ffmpeg's stderr), and what it is.
    _CAUSES = ((re.compile(r"No space left on device|\[Errno 28\]|ENOSPC"), "no space left on device"),
               (re.compile(r"Disk quota exceeded|\[Errno 122\]|EDQUOT"), "disk quota exceeded"))

    def __init__(self) -> None:
        self.in_a_row = 0
        self.cause = ""

    def full_after(self, row: Mapping[str, Any]) -> bool:
        """Count one finished row; True once the job should stop."""
        error = str(row.get("error") or "") if row.get("status") == "failed" else ""
        cause = next((cause for pattern, cause in self._CAUSES if pattern.search(error)), None)
        self.in_a_row = self.in_a_row + 1 if cause else 0
        self.cause = cause or self.cause
        return self.in_a_row >= self.ROWS_TO_STOP

    @property
    def reason(self) -> str:
        return (f"not run: the job stopped after {self.in_a_row} rows in a row failed for a full disk "
                f"({self.cause}); free space and run the job again, which renders this row")


PIPELINE_ATTEMPTS = 3  # runs of the pipeline for rows without a result, when it stops on an error Ray cannot retry


def _dataset_for(rows: list[dict[str, Any]], config: JobConfig, ledger: Any) -> ray.data.Dataset:
    """The pipeline over ``rows``, its pools sized for the cluster as it is now (a node may have gone)."""
    resources = ray.cluster_resources()
    pools = PoolSizes.for_cluster(config.engine.engine_class().needs_gpu, resources.get("CPU", 1.0),
                                  resources.get("GPU", 0.0))
    context = ray.data.DataContext.get_current()
    budget = set_queue_budget(context, config.queue_memory_mib)
    set_block_rows(context, needs_one_row_blocks(len(rows), config.engine.engine_class().splits(config.engine)))
    logger.info("rendering %d rows with the %s engine (pools: %s; queues up to %s)", len(rows),
                config.engine.name, pools, budget)
    return build_dataset(rows, config, pools, ledger)


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")  # "KeyError: 'x'"


def _root_cause(exc: BaseException) -> str:
    """The error that stopped the pipeline, in one line.

    A stage's error reaches the driver wrapped by Ray, as text: its traceback, the stage's own
    ``SomeError: message`` line, then Ray's wrapper and advice.  The last such line not of Ray's
    own names the cause; an error of Ray's own (no traceback) names itself.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [found for found in map(_ERROR_LINE.match, lines) if found and not found.group(1).startswith("ray.")]
    said = f"{named[-1].group(1)}: {named[-1].group(2)}" if named else \
        f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return storage.redact(said[:300])


def _settle_after_stop(waiting: dict[int, dict[str, Any]], exc: Exception, config: JobConfig, ledger: Any,
                       last_try: bool) -> list[dict[str, Any]]:
    """Results for the rows the stopped pipeline still held, taken out of ``waiting``.

    A row whose video was written before the stop owns it and is ok.  The others stay waiting
    for the next run of the pipeline, or on the ``last_try`` fail with the stop's cause.  Ray
    retries a task or actor lost with its node by itself; what reaches here is an error it could
    not retry (seen: Ray Data's streaming-generator assertion when a node goes mid-row).
    """
    logger.error("the pipeline stopped: %s", storage.redact(f"{type(exc).__name__}: {exc}"))
    logger.debug("pipeline failure details", exc_info=True)
    cause = f"lost: the pipeline stopped before this row finished ({_root_cause(exc)})"
    settled = [row for row in _unfinished(list(waiting.values()), "failed", cause, config, ledger)
               if last_try or row["status"] == OK]
    for row in settled:
        waiting.pop(int(row["row_index"]))
    return settled


def run_render_job(
    config: JobConfig,
    address: str | None = None,
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
    metrics: DriverMetrics | None = None,
    on_planned: Callable[[int], None] | None = None,
) -> JobReport:
    """Render every pending row of the manifest; job-level problems raise before any row runs.

    ``on_planned(total)`` is called once the rows are planned; ``on_result(result_row, done, total)``
    as each row finishes (skipped and up-front failures first), in completion order, after
    ``metrics`` has counted it.  On
    :class:`JobInterrupted` the results and report are written for the rows finished so far
    (the others ``not_run``) and the exception goes on to the caller.
    """
    started, started_at = time.perf_counter(), time.time()
    plan = plan_job(config)
    results: list[dict[str, Any]] = []
    metrics = metrics or DriverMetrics()
    metrics.job_planned(total=plan.total, pending=len(plan.pending))
    if on_planned is not None:
        on_planned(plan.total)

    waiting: dict[int, dict[str, Any]] = {}  # rows sent into the pipeline without a result yet
    last_written = time.monotonic()

    def record(row: dict[str, Any], from_pipeline: bool, running: bool = False) -> None:
        """Count a finished row; ``running``: it came out of the running pipeline (the table may be due)."""
        nonlocal last_written
        results.append(row)
        metrics.row_finished(row, from_pipeline)
        if on_result is not None:
            on_result(row, len(results), plan.total)
        if running and waiting and time.monotonic() - last_written >= config.results_every_s:
            _write_results_so_far(results, list(waiting.values()), config)
            last_written = time.monotonic()

    for row in with_earlier_records(plan.settled, config.output_uri, config.storage_options):
        record(row, from_pipeline=False)
    first_video_at = None
    interrupted: JobInterrupted | None = None
    if plan.pending:
        waiting.update((int(row["row_index"]), row) for row in plan.pending)
        ledger = None
        disk = DiskFullWatch()
        try:
            connect(address)
            for attempt in range(1, PIPELINE_ATTEMPTS + 1):
                ledger = RowLedger.remote()
                try:
                    for row in _finished_rows(_dataset_for(list(waiting.values()), config, ledger)):
                        if waiting.pop(int(row["row_index"]), None) is None:
                            continue  # a row Ray ran twice (a retried task): its first result stands
                        if first_video_at is None and row["status"] == "ok":
                            first_video_at = time.perf_counter() - started
                        record(row, from_pipeline=True, running=True)
                        if disk.full_after(row):
                            break
                    break
                except Exception as exc:  # the pipeline itself stopped: rows still out there run again, or fail
                    for row in _settle_after_stop(waiting, exc, config, ledger, last_try=attempt == PIPELINE_ATTEMPTS):
                        record(row, from_pipeline=True)
                    if waiting:
                        logger.warning("running the pipeline again for the %d rows without a result (attempt %d "
                                       "of %d)", len(waiting), attempt + 1, PIPELINE_ATTEMPTS)
            if waiting and disk.in_a_row >= DiskFullWatch.ROWS_TO_STOP:
                logger.error("stopping the job: %d rows in a row failed for a full disk (%s); the %d rows left are "
                             "not_run, for a rerun once there is space", disk.in_a_row, disk.cause, len(waiting))
                for row in _unfinished(list(waiting.values()), NOT_RUN, disk.reason, config, ledger):
                    record(row, from_pipeline=True)
                waiting.clear()
        except JobInterrupted as stop:
            interrupted = stop
            logger.warning("job stopped by signal %d: writing the results of the rows finished so far",
                           stop.signal_number)
            for row in _unfinished(list(waiting.values()), NOT_RUN, f"not run: {stop}", config, ledger):
                record(row, from_pipeline=True)
            waiting.clear()
        for row in _unfinished(list(waiting.values()), "failed", "lost: the pipeline ended without a result "
                               "for this row", config, ledger):
            record(row, from_pipeline=True)
    try:
        summary = write_results(results, config.output_uri, config.storage_options)
    except Exception as exc:  # the output's storage refuses it (full, gone): the summary still says it all
        logger.error("the results table could not be written under %s: %s; every row's result is in this "
                     "log and the summary", storage.redact(config.output_uri),
                     storage.redact(f"{type(exc).__name__}: {exc}"))
        logger.debug("results table failure details", exc_info=True)
        summary = count_results(results, results_uri=None)
    seconds = time.perf_counter() - started
    report_uri = None
    if config.report:
        facts = JobFacts(manifest_uri=config.manifest_uri, output_uri=config.output_uri, engine=config.engine.name,
                         seconds=seconds, inputs=plan.inputs,
                         kept_tables=tuple(kept_tables(config.output_uri, config.storage_options)))
        report_uri = _write_report(results, config, facts)
    elif (stale := earlier_report(config.output_uri, config.storage_options)) is not None:
        logger.warning("%s is an earlier job's report, left as it was (--no-report): its figures are not this "
                       "job's; the results table is", storage.redact(stale))
    metrics.job_finished(seconds)
    report = JobReport(summary=summary, results=sorted(results, key=lambda r: r["row_index"]), seconds=seconds,
                       seconds_to_first_video=first_video_at, report_uri=report_uri,
                       started_at=started_at)
    if interrupted is not None:
        interrupted.report = report
        raise interrupted
    return report


def remove_cut_writes(config: JobConfig, report: JobReport) -> None:
    """After a stopped job's workers are gone: remove the temp files of the writes they never finished.

    Only files made during the job go (see :func:`pipelines.outputs.clean_partials_since`); a run
    on a cluster, whose workers may outlive this call, leaves them to the next run's clean-up.
    """
    targets = [row["output_uri"] for row in report.results if row.get("output_uri")]
    folders = sorted({target.rsplit("/", 1)[0] for target in targets})
    names = {target.rsplit("/", 1)[-1] for target in targets} | {REPORT_FILE, OTHER_REPORT_FILE}
    outputs.clean_partials_since(config.output_uri, report.started_at, directories=folders, names=names)
