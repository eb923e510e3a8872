"""The job's row ledger: which rows each stage is working on, and what became of rows whose worker died.

A small Ray actor, one per job, started by the driver (see :mod:`pipelines.row_guard` for how the
stages use it).  It imports nothing but Ray, so its process starts light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import ray

MAX_WORKER_DEATHS = 2  # a row may end this many worker processes (in a batch, then alone) before it fails


@dataclass(frozen=True)
class Verdict:
    """What the ledger says about running a row again."""

    deaths: int  # workers that died while this row was in flight
    error: str | None = None  # set when the row must fail instead of running


@ray.remote(num_cpus=0, max_restarts=-1)
class RowLedger:
    """Which rows each stage is working on, and what happened to rows whose worker died (one per job)."""

    def __init__(self, max_deaths: int = MAX_WORKER_DEATHS) -> None:
        self.max_deaths = max_deaths
        self.in_flight: dict[tuple[str, int], int] = {}  # (stage, row) -> times started, not finished
        self.deaths: dict[tuple[str, int], int] = {}
        self.timeouts: dict[tuple[str, int], float] = {}

    def begin(self, stage: str, rows: Sequence[int], mark: bool = True) -> list[Verdict]:
        """Count a death for each row that was left in flight; mark the runnable rows in flight (``mark``)."""
        verdicts = []
        for row in rows:
            key = (stage, row)
            if self.in_flight.get(key):  # started before and never finished: its worker died
                self.deaths[key] = self.deaths.get(key, 0) + 1
            deaths = self.deaths.get(key, 0)
            if key in self.timeouts:
                error = f"the row exceeded its time limit of {self.timeouts[key]:.0f} s (its worker was stopped)"
            elif deaths >= self.max_deaths:
                error = (f"its worker process died {deaths} times while working on it (killed for memory, "
                         "or a crash in native code); not tried again")
            else:
                error = None
            self.in_flight[key] = 1 if mark and not error else 0
            verdicts.append(Verdict(deaths=deaths, error=error))
        return verdicts

    def begun(self, stage: str) -> list[int]:
        """Every row this stage has started (finished or not): the driver's list of rows that may have written."""
        return sorted(row for (name, row) in self.in_flight if name == stage)

    def end(self, stage: str, rows: Sequence[int]) -> None:
        for row in rows:
            self.in_flight[(stage, row)] = 0

    def timed_out(self, stage: str, rows: Sequence[int], limit_s: float) -> None:
        for row in rows:
            self.timeouts[(stage, row)] = limit_s
