"""Soak benchmark: 300 rows of short clips against 30 rows, in one run, on this machine's CPUs.

    .venv/bin/python bench/soak.py [--media ../shared/media] [--rows 300] [--small 30] [--seconds 1.0]
                                      [--queue-memory MIB]

The pipeline streams, so memory must not grow with the manifest: the peak resident memory of the
driver and of the Ray workers is measured for both runs and compared (target: within 1.3x), every
row must be ok, and rows per minute are reported.  Figures are appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PeakMemory, add_pipeline_arguments, append_results, has_media  # noqa: E402
from jobs.manifest_builder import pair_folders, write_manifest  # noqa: E402
from pipelines.plan import JobConfig  # noqa: E402
from pipelines.ray_runtime import connect, shutdown_local_ray  # noqa: E402
from pipelines.render_job import run_render_job  # noqa: E402


def soak_rows(media: Path, count: int, seconds: float) -> list[dict]:
    """``count`` rows cycling over every shared (portrait, clip) pair, each clip cut to ``seconds``."""
    pairs = pair_folders(str(media / "reference_images"), str(media / "drive_videos"), "all")
    return [{**pair, "id": f"soak-{i:04d}", "max_seconds": seconds}
            for i, pair in zip(range(count), itertools.cycle(pairs))]


def run(rows: list[dict], folder: str, queue_memory: int | None) -> tuple[object, PeakMemory]:
    manifest = os.path.join(folder, "manifest.parquet")
    write_manifest(rows, manifest)
    config = JobConfig(manifest_uri=manifest, output_uri=os.path.join(folder, "out"), report=False,
                             queue_memory_mib=queue_memory)
    with PeakMemory(include_ray_workers=True) as memory:
        report = run_render_job(config, address="local")
    return report, memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--small", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of each driving clip to render")
    add_pipeline_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    media = args.media
    if not has_media(media):
        return 1
    figures = {}
    for label, count in (("small", args.small), ("large", args.rows)):
        # A fresh Ray instance for each run, started before it is measured: the processes a run
        # leaves behind (actors shutting down, idle workers) must not count against the next one.
        connect("local")
        with tempfile.TemporaryDirectory(prefix=f"soak-{label}-") as folder:
            started = time.perf_counter()
            report, memory = run(soak_rows(media, count, args.seconds), folder, args.queue_memory)
            minutes = (time.perf_counter() - started) / 60
        shutdown_local_ray()  # its workers and its scratch folder
        if report.summary.ok != count:
            print(f"{label}: {report.summary.ok}/{count} rows ok", file=sys.stderr)
            return 1
        figures[label] = (count, count / minutes, memory)
    small, large = figures["small"], figures["large"]
    driver_ratio = large[2].peak_driver / small[2].peak_driver
    worker_ratio = large[2].peak_workers / small[2].peak_workers
    lines = [
        f"{args.small} rows: {small[1]:.1f} rows/min, peak PSS driver {small[2].peak_driver / 2**20:.0f} MiB, "
        f"workers {small[2].peak_workers / 2**20:.0f} MiB",
        f"{args.rows} rows: {large[1]:.1f} rows/min, peak PSS driver {large[2].peak_driver / 2**20:.0f} MiB, "
        f"workers {large[2].peak_workers / 2**20:.0f} MiB",
        f"peak memory ratio {args.rows}/{args.small}: driver {driver_ratio:.2f}, workers {worker_ratio:.2f} "
        f"(target <= 1.3); every row ok",
        f"clips cut to {args.seconds:g} s, warp engine, 512x512",
        f"processes at the workers' peak, {args.small} rows: {small[2].breakdown()}",
        f"processes at the workers' peak, {args.rows} rows: {large[2].breakdown()}",
    ]
    print("\n".join(lines))
    if not args.no_record:
        append_results("Soak", " ".join(["python bench/soak.py", *sys.argv[1:]]), lines)
    return 0 if max(driver_ratio, worker_ratio) <= 1.3 else 2


if __name__ == "__main__":
    sys.exit(main())
