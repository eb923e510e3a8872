"""`hellomeme-batch render`: run a render job here or on a cluster; also what `ray job submit` runs.

    python -m jobs.render MANIFEST --output URI [options]

While it runs, the driver serves the job's Prometheus metrics (rows by status, frames rendered,
stage latencies, rows in flight) at http://127.0.0.1:9471/metrics (see --metrics-port); when it
ends, OUTPUT/index.html reports every row.

Exit status: 0 when every row is ok or skipped, 2 when some row failed, 1 on a job-level error, 130 or 143
when stopped by SIGINT, SIGTERM or SIGHUP (the rows finished so far are in the results, the rest marked not_run).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from typing import Iterator

from engines.base import EngineOptionError
from engines.registry import UnknownEngineError
from pipelines.manifest import ManifestError
from pipelines.plan import JobOptionError, check_engine_options, check_job_settings
from reporting.metrics import DriverMetrics, MetricsEndpoint
from mediaio.redaction import install_log_safety, printable, redact
from mediaio.storage import StorageError
from jobs.options import (
    EXIT_JOB_ERROR,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    EXIT_SIGNAL_BASE,
    STORAGE_OPTIONS_ENV,
    CommandLineParser,
    add_metrics_arguments,
    add_render_arguments,
    job_config,
    seconds_or_off,
)
from jobs.progress import DEFAULT_PERIOD_S, PLANNING_FAILURES_LISTED, Progress
from jobs.terminal_noise import quiet_third_party_noise
from pipelines.ray_runtime import ClusterUnreachableError, shutdown_local_ray
from pipelines.render_job import JobInterrupted, JobReport, remove_cut_writes, run_render_job

logger = logging.getLogger("hellomeme_batch.render")



# Failed rows the end-of-job summary names; a manifest of thousands of broken rows would otherwise
# bury the summary (each row's line was already logged as it finished, and all are in the results).
SUMMARY_FAILED_ROWS = PLANNING_FAILURES_LISTED


def print_summary(report: JobReport, output: str) -> None:
    summary = report.summary
    lines = [
        f"{summary.total} rows: {summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped"
        + (f", {summary.not_run} not run" if summary.not_run else "") + f" in {report.seconds:.1f} s",
        f"outputs: {printable(output)}",
        f"results: {summary.results_uri or 'not written (see the error above)'}",
    ]
    if report.report_uri:
        lines.append(f"report:  {report.report_uri}")
    if summary.failed:
        failed = [row for row in report.results if row["status"] == "failed"]
        lines.append("failed rows:" if len(failed) <= SUMMARY_FAILED_ROWS
                     else f"failed rows (the first {SUMMARY_FAILED_ROWS} of {len(failed)}; all are in the results):")
        lines += [f"  {printable(row['id'])}: {printable(row['error'])}" for row in failed[:SUMMARY_FAILED_ROWS]]
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except OSError as exc:  # the terminal is gone (a hangup): the results table and the report say it all
        logger.debug("summary not printed: %s", exc)


def exit_code(report: JobReport) -> int:
    """1 when the results table could not be written (the job's record is missing), else 2 if rows failed."""
    if report.summary.results_uri is None:
        return EXIT_JOB_ERROR
    return EXIT_ROWS_FAILED if report.summary.failed else EXIT_OK


@contextlib.contextmanager
def served_metrics(host: str, port: int, kept_open: list[MetricsEndpoint] | None = None) -> Iterator[DriverMetrics]:
    """The job's driver metrics, served at host:port for the job's life (port 0: not served).

    With ``kept_open``, the endpoint of a job that ended by itself is added to it instead of closed,
    for :func:`linger_metrics` to close once the summary is out and the job's Ray is gone.  A port
    that cannot be bound (another job holds it) is a warning, not a reason to not render.
    """
    metrics = DriverMetrics()
    endpoint = None
    if port:
        try:
            endpoint = MetricsEndpoint(metrics.registry, host, port)
        except OSError as exc:
            logger.warning("metrics endpoint not started on %s:%d: %s; rendering without it", host, port, exc)
        else:
            logger.info("serving the job's metrics at %s", endpoint.url)
    ended = False
    try:
        yield metrics
        ended = True
    finally:
        if endpoint is not None:
            if ended and kept_open is not None:
                kept_open.append(endpoint)
            else:
                endpoint.close()


def linger_metrics(endpoints: list[MetricsEndpoint], seconds: float) -> None:
    """Serve a finished job's metrics ``seconds`` longer, so Prometheus scrapes the job as finished.

    The job is over (its results written, its summary printed, its Ray gone): a stop signal ends the
    wait early and changes nothing of the job's exit status.
    """
    if not endpoints:
        return
    done = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = {number: signal.signal(number, lambda *_: done.set()) for number in STOP_SIGNALS} if in_main else {}
    try:
        logger.info("the job's metrics stay at %s for %g s (--metrics-linger)", endpoints[0].url, seconds)
        done.wait(seconds)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for endpoint in endpoints:
            endpoint.close()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP stop the job promptly: JobInterrupted is raised in the main thread, once.

    SIGHUP (the terminal or ssh session closed under the job) is a stop too: it killed the job
    with nothing recorded, and it reaches a local Ray instance's processes in the terminal's
    process group as well, so the job could not go on regardless (run it under nohup or tmux, or
    submit it, to outlive the terminal).
    """
    def stop(signal_number: int, frame: object) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)  # a second signal does not cut the results short
        raise JobInterrupted(signal_number)

    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _storage_option_hint(exc: Exception) -> str:
    """What a file system's TypeError about a keyword means to the user: a storage option it does not take.

    s3fs hands the options to botocore when it first connects, deep inside the job, so a mistyped
    key (client_kwargs.endpoint-url) surfaced as "AioSession._create_client() got an unexpected
    keyword argument 'endpoint-url'".
    """
    if isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc):
        return (" (a storage option the file system does not take: check --storage-option and "
                f"${STORAGE_OPTIONS_ENV}; dotted keys nest, as in client_kwargs.endpoint_url=...)")
    return ""


def _log_error_lines(lead: str, message: str) -> None:
    """Log a message of several lines (missing weights: one per file, where the job looked) as a record per
    line: in one record the log's control-character escaping showed them as one line strewn with '\\n'."""
    first, *rest = message.splitlines() or [""]
    logger.error("%s%s", lead, first)
    for line in rest:
        logger.error("  %s", line)


def run(args: argparse.Namespace) -> int:
    """Run the job described by parsed arguments; returns the exit status."""
    lingering: list[MetricsEndpoint] = []
    try:
        with stopped_by_signals():
            config = job_config(args)
            # A bad option stops the job before its metrics endpoint is announced (the plan checks again).
            check_job_settings(config)
            check_engine_options(config.engine)
            with served_metrics(args.metrics_host, args.metrics_port,
                                lingering if args.metrics_linger > 0 else None) as metrics, \
                    Progress(args.progress_seconds) as progress:
                report = run_render_job(config, address=args.address, on_result=progress.on_result, metrics=metrics,
                                        on_planned=progress.on_planned)
    except JobInterrupted as stop:
        report = getattr(stop, "report", None)
        # The job's workers end first; the temp files of the writes they had in flight then go.
        if shutdown_local_ray() and report is not None:
            remove_cut_writes(config, report)
        if report is not None:
            print_summary(report, config.output_uri)
        logger.warning("stopped by signal %d%s", stop.signal_number,
                       "" if report is None else "; run the same command again to render the rows not run")
        return EXIT_SIGNAL_BASE + stop.signal_number
    except (ManifestError, UnknownEngineError, EngineOptionError, JobOptionError, StorageError,
            ClusterUnreachableError, argparse.ArgumentTypeError) as exc:
        _log_error_lines("job not started: ", redact(str(exc)))
        return EXIT_JOB_ERROR
    except Exception as exc:  # a job-level failure the user must see in one line, details in the log
        _log_error_lines("job failed: ", redact(f"{type(exc).__name__}: {exc}") + _storage_option_hint(exc))
        logger.debug("job failure details", exc_info=True)
        return EXIT_JOB_ERROR
    finally:
        shutdown_local_ray()  # a local instance's workers and temp files go with the job
    print_summary(report, config.output_uri)
    linger_metrics(lingering, args.metrics_linger)
    return exit_code(report)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_render_arguments(parser)
    add_metrics_arguments(parser)
    parser.add_argument("--address", default=None,
                        help="Ray cluster: auto, HOST:PORT or ray://...; default: $RAY_ADDRESS, else a local instance")
    parser.add_argument("--progress-seconds", type=seconds_or_off, default=DEFAULT_PERIOD_S, metavar="S",
                        help="log a line with rows done, rows/min, frames/s and an ETA every S seconds (0: off; "
                             "default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    parser = CommandLineParser(prog="python -m jobs.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    install_log_safety()
    args = parser.parse_args(argv)
    # A submitted job's log is what `submit` follows: as quiet as a local render (Ray Data's progress
    # blocks, the C++ core's and TensorFlow Lite's notices were 39 of a 4-row job's 59 lines).
    quiet_third_party_noise()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
