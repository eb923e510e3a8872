"""Helpers shared by the benchmark scripts: their common options, memory and CPU sampling, and
appending to RESULTS.md."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).with_name("RESULTS.md")
DEFAULT_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the benches that run the render pipeline on the shared media."""
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA, help="folder with reference_images/ and "
                        "drive_videos/ (default: ../shared/media)")
    parser.add_argument("--queue-memory", type=int, default=None, metavar="MIB",
                        help="the pipeline's queue budget (default: the job's default)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")


def has_media(media: Path) -> bool:
    """Whether the shared media are at ``media``; says so on stderr when not."""
    if (media / "drive_videos").is_dir():
        return True
    print(f"no media at {media}; pass --media", file=sys.stderr)
    return False


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


def _pss(process: psutil.Process) -> tuple[int, int]:
    """Proportional set size, and the part of it that is shared memory (Ray's object store).

    PSS is resident memory with each shared page (libraries, the object store mapped into every
    worker) divided among the processes that map it, so a sum over processes counts each page
    once.  Object-store pages stay resident in a worker that has read them until the store reuses
    them, so they are reported apart from the worker's own memory.  Falls back to RSS and no
    shared part where /proc/PID/smaps_rollup cannot be read.
    """
    try:
        fields = {}
        with open(f"/proc/{process.pid}/smaps_rollup") as rollup:
            for line in rollup:
                key, _, value = line.partition(":")
                if key in ("Pss", "Pss_Shmem"):
                    fields[key] = int(value.split()[0]) * 1024
        return fields["Pss"], fields.get("Pss_Shmem", 0)
    except (OSError, KeyError, ValueError):
        return process.memory_info().rss, 0


def ray_processes() -> list[psutil.Process]:
    """Every process of a Ray instance on this machine: workers, actors, raylet, GCS, dashboard."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        name = process.info.get("name") or ""
        if "ray::" in name or any(part in cmdline for part in ("default_worker.py", "raylet", "gcs_server",
                                                               "dashboard", "runtime_env")):
            found.append(process)
    return found


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds of a Ray process and of its finished children (a worker's ffmpeg calls).

    The raylet's children are the workers, already counted one by one, so only its own time counts.
    """
    times = process.cpu_times()
    if _title(process) == "raylet":
        return times.user + times.system
    return times.user + times.system + times.children_user + times.children_system


def _title(process: psutil.Process) -> str:
    """A short name for a Ray process: its title (``ray::FrameRenderer``, ``ray::IDLE``) or program."""
    words = (process.info.get("cmdline") or [process.info.get("name") or "?"])
    first = words[0].split(".")[0] if words[0].startswith("ray::") else Path(words[0]).name
    if first.startswith("python") and len(words) > 1:
        first = Path(words[1]).name
    return first


class PeakMemory:
    """Samples the memory (PSS) of this process and, optionally, of every Ray process, in a thread.

    Reading a process's PSS makes the kernel walk its page tables: sampling a dozen Ray processes
    every half second cost this process 14% of a core, taken from the pipeline it measured.  So the
    default interval is a second, and the thread's own CPU time (``own_cpu_seconds``) is kept for
    the caller to take out of the process's CPU figures.
    """

    def __init__(self, include_ray_workers: bool = False, interval: float = 1.0) -> None:
        self.include_ray_workers = include_ray_workers
        self.interval = interval
        self.peak_driver = 0
        self.peak_workers = 0
        self.at_worker_peak: dict[str, tuple[int, int, int]] = {}  # title -> (count, bytes, shared bytes)
        # CPU seconds per Ray process, when first seen and when last seen: processes that end during
        # the run keep their last sample (up to one interval short), processes that start count whole.
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._titles: dict[int, str] = {}
        self._first_sample = True
        self.own_cpu_seconds = 0.0  # CPU time of the sampling thread itself
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        started = time.thread_time()
        while not self._stop.is_set():
            try:
                driver = _pss(me)[0]
                workers, by_title = 0, {}
                if self.include_ray_workers:
                    for process in ray_processes():
                        try:
                            size, shm = _pss(process)
                        except psutil.Error:
                            continue
                        workers += size
                        title = _title(process)
                        try:
                            used = _cpu_seconds(process)
                        except psutil.Error:
                            used = None
                        if used is not None:
                            self._cpu_last[process.pid] = used
                            self._titles[process.pid] = title
                            if self._first_sample:
                                self._cpu_first[process.pid] = used
                        count, total, total_shm = by_title.get(title, (0, 0, 0))
                        by_title[title] = (count + 1, total + size, total_shm + shm)
                self._first_sample = False
                self.peak_driver = max(self.peak_driver, driver)
                if workers > self.peak_workers:
                    self.peak_workers, self.at_worker_peak = workers, by_title
            except psutil.Error:
                pass
            self.own_cpu_seconds = time.thread_time() - started
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def ray_cpu_seconds(self) -> float:
        """CPU seconds the Ray processes used while sampled (include_ray_workers only)."""
        return sum(last - self._cpu_first.get(pid, 0.0) for pid, last in self._cpu_last.items())

    def cpu_breakdown(self) -> str:
        """CPU seconds by process title, largest first: 'title xcount seconds, ...'."""
        by_title: dict[str, tuple[int, float]] = {}
        for pid, last in self._cpu_last.items():
            count, total = by_title.get(self._titles[pid], (0, 0.0))
            by_title[self._titles[pid]] = (count + 1, total + last - self._cpu_first.get(pid, 0.0))
        rows = sorted(by_title.items(), key=lambda item: -item[1][1])
        return ", ".join(f"{title} x{count} {seconds:.1f} s" for title, (count, seconds) in rows if seconds >= 0.05)

    def breakdown(self) -> str:
        """The processes behind the workers' peak, largest first: 'title xcount MiB, ...'."""
        rows = sorted(self.at_worker_peak.items(), key=lambda item: -item[1][1])
        return ", ".join(f"{title} x{count} {size / 2**20:.0f} MiB (object store {shm / 2**20:.0f})"
                         for title, (count, size, shm) in rows)
