"""Helpers shared by the benchmark scripts: memory sampling and appending to RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).with_name("RESULTS.md")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def append_results(title: str, command: str, lines: list[str]) -> None:
    """Append one dated section to bench/RESULTS.md."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = [f"\n## {title} ({stamp})", "", f"- commit: {commit()}", f"- machine: {machine()}",
               f"- command: `{command}`", *[f"- {line}" for line in lines], ""]
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nFigures appended by the scripts in bench/, newest last.\n")
    with RESULTS.open("a") as handle:
        handle.write("\n".join(section))


class PeakMemory:
    """Samples the resident memory of processes (this one and, optionally, every Ray worker) in a thread."""

    def __init__(self, include_ray_workers: bool = False, interval: float = 0.2) -> None:
        self.include_ray_workers = include_ray_workers
        self.interval = interval
        self.peak_driver = 0
        self.peak_workers = 0
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _workers(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(process.info.get("cmdline") or [])
            if "ray::" in (process.info.get("name") or "") or "default_worker.py" in cmdline:
                found.append(process)
        return found

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                driver = me.memory_info().rss
                workers = 0
                if self.include_ray_workers:
                    for process in self._workers():
                        try:
                            workers += process.memory_info().rss
                        except psutil.Error:
                            pass
                self.peak_driver = max(self.peak_driver, driver)
                self.peak_workers = max(self.peak_workers, workers)
                self.peak_total = max(self.peak_total, driver + workers)
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
