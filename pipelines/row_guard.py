"""No row can hold or crash-loop the job: hard time limits, and a bounded number of worker deaths per row.

Two things the per-row error boundary (:mod:`pipelines.rows`) cannot catch, because they never
return to Python: a stage that hangs (a decoder stuck in native code) and a worker that dies (the
kernel's memory killer, a native abort).  Ray Data retries the lost work forever, so left alone
one such row would hold the job for good.

- :class:`pipelines.row_ledger.RowLedger` is a small Ray actor the driver starts for the job.  A stage tells it which
  rows it starts and finishes.  A row that was started and never finished, and comes back, was on
  a worker that died: the ledger counts that, and once a row has cost :data:`pipelines.row_ledger.MAX_WORKER_DEATHS`
  workers it fails with the cause instead of running again.
- :class:`Watchdog` enforces ``--row-time-limit`` while a stage works on a row (time spent queued
  between stages does not count): past it, it records the timeout in the ledger and ends the
  worker process, the one way to stop native code.  Ray restarts the worker and retries; the
  ledger then fails the row with "exceeded its time limit".

A batch of rows that killed its worker is run again one row at a time, so only the row that
kills a worker alone pays for it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Sequence

import ray

from pipelines.row_ledger import Verdict
from pipelines.rows import PENDING

logger = logging.getLogger(__name__)

WATCHDOG_EXIT_CODE = 75  # the worker process ends itself: a row past its deadline


class Watchdog:
    """Ends this worker process if a stage is still working when its deadline passes (one per process).

    Deadlines are on the monotonic clock, which stands still while the machine sleeps: a laptop
    shut overnight mid-job must not find every row in flight past its limit on waking (nor an
    NTP step of the wall clock).
    """

    _instance: "Watchdog | None" = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._deadline: float | None = None
        self._on_expire: Callable[[], None] | None = None
        threading.Thread(target=self._watch, name="row-watchdog", daemon=True).start()

    @classmethod
    def get(cls) -> "Watchdog":
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = Watchdog()
            return cls._instance

    def arm(self, deadline: float, on_expire: Callable[[], None]) -> None:
        with self._lock:
            self._deadline, self._on_expire = deadline, on_expire
            self._lock.notify()

    def disarm(self) -> None:
        with self._lock:
            self._deadline, self._on_expire = None, None
            self._lock.notify()

    def _watch(self) -> None:
        while True:
            with self._lock:
                while self._deadline is None or time.monotonic() < self._deadline:
                    timeout = None if self._deadline is None else max(0.05, self._deadline - time.monotonic())
                    self._lock.wait(timeout)
                on_expire = self._on_expire
            try:
                if on_expire is not None:
                    on_expire()
            finally:
                logging.shutdown()
                sys.stderr.flush()
                os._exit(WATCHDOG_EXIT_CODE)


class RowGuard:
    """A stage's view of the ledger and the watchdog: run rows so none can hold or crash-loop the job."""

    def __init__(self, ledger: Any | None, stage: str, part_column: str | None = None) -> None:
        """``part_column``: rows are parts of a row that may run at once on several workers (a split
        video's groups of windows); the ledger then counts each part on its own."""
        self.ledger = ledger
        self.stage = stage
        self.part_column = part_column

    def _labels(self, rows: Sequence[dict]) -> dict[str, list[int]]:
        """The rows' indices under the ledger's stage label: the stage, or the stage and the part."""
        labels: dict[str, list[int]] = {}
        for row in rows:
            label = self.stage if self.part_column is None else f"{self.stage} {int(row[self.part_column])}"
            labels.setdefault(label, []).append(int(row["row_index"]))
        return labels

    def run(self, rows: list[dict], work: Callable[[list[dict]], list[dict]],
            refuse: Callable[[dict, str], dict]) -> list[dict]:
        """``work(rows)`` -> rows, under the ledger and the watchdog; ``refuse(row, error)`` fails a row unrun.

        Rows that already failed go through ``work`` as they are (it passes them on).  A batch in
        which some row has killed a worker before runs one row at a time, so only that row pays.
        Without a ledger (a stage called outside a job, as the unit tests do) ``work`` just runs.
        """
        if self.ledger is None:
            return work(rows)
        pending = [i for i, row in enumerate(rows) if row["status"] == PENDING]
        verdicts = dict(zip(pending, self._begin([rows[i] for i in pending], mark=True)))
        out = list(rows)
        for i, verdict in verdicts.items():
            if verdict.error:
                out[i] = refuse(rows[i], verdict.error)
        runnable = [i for i in pending if not verdicts[i].error]
        passing = [i for i in range(len(rows)) if i not in verdicts]
        if len(runnable) > 1 and any(verdicts[i].deaths for i in runnable):
            self._end([rows[i] for i in runnable])  # each is marked again just before it runs alone
            for i in runnable:
                (verdict,) = self._begin([rows[i]], mark=True)
                out[i] = refuse(rows[i], verdict.error) if verdict.error else self._watched([rows[i]], work)[0]
            runnable = []
        together = runnable + passing
        if together:
            for i, row in zip(together, self._watched([rows[i] for i in together], work)):
                out[i] = row
        return out

    def _begin(self, rows: Sequence[dict], mark: bool) -> list[Verdict]:
        if not rows:
            return []
        if self.part_column is None:
            return ray.get(self.ledger.begin.remote(self.stage, [int(row["row_index"]) for row in rows], mark))
        return [ray.get(self.ledger.begin.remote(label, indices, mark))[0]
                for row in rows for label, indices in self._labels([row]).items()]

    def _end(self, rows: Sequence[dict]) -> None:
        for label, indices in self._labels(rows).items():
            self.ledger.end.remote(label, indices)

    def _watched(self, rows: list[dict], work: Callable[[list[dict]], list[dict]]) -> list[dict]:
        """``work(rows)`` while the watchdog holds the stage's deadline for these rows."""
        pending = [row for row in rows if row["status"] == PENDING]
        deadline, limit = stage_deadline(pending)
        labels = self._labels(pending)
        if deadline is not None:
            def expire() -> None:
                for label, indices in labels.items():
                    logger.error("%s: rows %s passed their deadline; stopping this worker", label, indices)
                    ray.get(self.ledger.timed_out.remote(label, indices, limit), timeout=10)

            Watchdog.get().arm(deadline, expire)
        try:
            return work(rows)
        finally:
            if deadline is not None:
                Watchdog.get().disarm()
            self._end(pending)


def stage_deadline(rows: Sequence[dict]) -> tuple[float | None, float]:
    """When a stage working on ``rows`` must be done: each row's time limit, one after the other; and that limit."""
    if not rows:
        return None, 0.0
    limit = min(float(row["time_limit_s"]) for row in rows)
    return time.monotonic() + limit * len(rows), limit
