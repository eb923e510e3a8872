"""The terminal's view of a long job: a line per finished row, and every so often a line for the whole job.

The periodic line says rows done of total, rows per minute, output frames per second and an
estimate of the time left, so a job of thousands of rows shows it is moving between rows.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from mediaio.redaction import printable
from pipelines.rows import STAGES

logger = logging.getLogger("hellomeme_batch.progress")

DEFAULT_PERIOD_S = 30.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


QUIET_STATUSES = ("skipped", "not_run")
QUIET_LISTED = 10  # rows of each quiet status listed one by one
# Rows failed at planning (before any stage ran: a bad engine name, a missing column value) listed
# one by one; a manifest of 100,000 such rows printed 100,000 lines before its summary.  Rows that
# fail in the pipeline are always listed: each is news.  The end-of-job summary names as many.
PLANNING_FAILURES_LISTED = 50


class Progress:
    """Counts finished rows and frames; logs each row, and a summary line every ``period_s`` seconds."""

    def __init__(self, period_s: float = DEFAULT_PERIOD_S) -> None:
        self.period_s = period_s
        self.started = time.monotonic()
        self.done = self.total = self.frames = self.ran = self.failed_at_planning = 0
        self.first_ran_at: float | None = None  # when the first row came out of the pipeline
        self.frames_at_first = 0
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        if self.period_s > 0:
            self._thread = threading.Thread(target=self._every_period, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()

    def on_planned(self, total: int) -> None:
        """The job's rows are planned (the job's ``on_planned`` callback)."""
        with self._lock:
            self.total = total
            self.started = time.monotonic()

    def on_result(self, row: dict[str, Any], done: int, total: int) -> None:
        """A row finished (the job's ``on_result`` callback)."""
        with self._lock:
            self.done, self.total = done, total
            self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
            self.frames += int(row.get("frames") or 0) if row["status"] == "ok" else 0
            if row["status"] in ("ok", "failed") and _went_through_the_pipeline(row):
                self.ran += 1
                if self.first_ran_at is None:  # the rates count what came after this row
                    self.first_ran_at, self.frames_at_first = time.monotonic(), self.frames
        if row["status"] == "failed":
            with self._lock:
                at_planning = not _went_through_the_pipeline(row)
                if at_planning:
                    self.failed_at_planning += 1
                listed = not at_planning or self.failed_at_planning <= PLANNING_FAILURES_LISTED
                first_unlisted = at_planning and self.failed_at_planning == PLANNING_FAILURES_LISTED + 1
            logger.log(logging.WARNING if listed else logging.DEBUG, "[%d/%d] failed  %s: %s", done, total,
                       printable(row["id"]), printable(row["error"]))
            if first_unlisted:
                logger.warning("[%d/%d] ... further rows failed at planning are not listed one by one (-v lists "
                               "them; every row is in the results table)", done, total)
            return
        # Rows with nothing new to say (a rerun's thousands of skipped rows, a stopped job's not_run ones)
        # are listed up to a few each, so the lines that matter do not scroll away; -v lists them all.
        count = self.counts[row["status"]]
        quiet = row["status"] in QUIET_STATUSES and count > QUIET_LISTED
        logger.log(logging.DEBUG if quiet else logging.INFO, "[%d/%d] %-7s %s -> %s", done, total, row["status"],
                   printable(row["id"]), printable(row["output_uri"]))
        if row["status"] in QUIET_STATUSES and count == QUIET_LISTED + 1:
            logger.info("[%d/%d] ... further %s rows are not listed one by one (-v lists them)", done, total,
                        row["status"])

    def line(self) -> str:
        """The whole job in one line.

        Rates run from the first row out of the pipeline: counted from the start, Ray's start-up and
        the rows settled at planning made the first minutes' estimate hours off.
        """
        with self._lock:
            left = self.total - self.done
            counts = ", ".join(f"{count} {status}" for status, count in sorted(self.counts.items()))
            since = None if self.first_ran_at is None else time.monotonic() - self.first_ran_at
            if since is None or self.ran < 2 or since <= 0:
                rates, eta = "rates after the first rows", "-" if left else "0m00s"
            else:
                per_second = (self.ran - 1) / since
                rates = f"{per_second * 60.0:.1f} rows/min, {(self.frames - self.frames_at_first) / since:.1f} frames/s"
                eta = _duration(left / per_second) if left else "0m00s"
            return f"progress: {self.done}/{self.total} rows ({counts or 'none yet'}), {rates}, ETA {eta}"

    def _every_period(self) -> None:
        while not self._stop.wait(self.period_s):
            logger.info("%s", self.line())


def _went_through_the_pipeline(row: dict[str, Any]) -> bool:
    """Whether a finished row was worked on (a row failed or skipped at planning has no stage time)."""
    return any(float(row.get(f"seconds_{stage}") or 0.0) > 0.0 for stage in STAGES)
