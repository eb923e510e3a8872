"""CPU pipeline benchmark: the shared pairs rendered (a) stage after stage in one process and
(b) through the Ray pipeline on this machine's CPUs, side by side in one run.

    .venv/bin/python bench/cpu_pipeline.py [--media ../shared/media] [--rows 8] [--queue-memory MIB]

Prints output frames per second of each, the ratio b/a, peak memory, time to the first finished
video, and the warp engine's own speed on one core; appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench._common import PeakMemory, add_pipeline_arguments, append_results, has_media  # noqa: E402
from jobs.manifest_builder import pair_folders, write_manifest  # noqa: E402
from mediaio.threads import AUTO  # noqa: E402
from pipelines.finish_stage import make_finish_fn  # noqa: E402
from pipelines.plan import JobConfig, plan_job  # noqa: E402
from pipelines.ray_runtime import connect, shutdown_local_ray  # noqa: E402
from pipelines.render_job import run_render_job  # noqa: E402
from pipelines.render_pipeline import PoolSizes, PrepareStage, RenderStage  # noqa: E402
from pipelines.rows import batch_rows, rows_batch  # noqa: E402

logger = logging.getLogger("bench.cpu_pipeline")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the ffmpeg calls), user and system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def steady_fps(finished: list[tuple[float, int]]) -> float:
    """Output frames per second between the first and the last finished video: the rate once every
    stage is busy, without start-up (process spawns, model loads) or the drain at the end."""
    if len(finished) < 2:
        return float("nan")
    (first_at, _), (last_at, _) = finished[0], finished[-1]
    return sum(frames for _, frames in finished[1:]) / (last_at - first_at)


def stages(config: JobConfig) -> tuple[PrepareStage, RenderStage]:
    """The pipeline's own stage objects, built in this process (no Ray), as the actors build them, but
    with each library's own thread count: alone in a process, its threads use cores that would idle."""
    engine = config.engine.engine_class()
    prepare = PrepareStage(config.engine.size, engine.default_fps, engine.crop_rule, config.limits,
                           dict(config.storage_options), config.max_input_bytes,
                           config.output_uri if config.report else None, config.policy, threads=AUTO,
                           driving_crops=engine.needs_driving_frames)
    return prepare, RenderStage(config.engine, dict(config.storage_options), threads=AUTO)


def column_bytes(row: dict) -> int:
    """Bytes of a row's columns as they would sit in the object store (pixels, tracks, audio)."""
    return sum(value.nbytes if isinstance(value, np.ndarray) else len(value) if isinstance(value, bytes) else 8
               for value in row.values())


def sequential(config: JobConfig) -> tuple[int, float, float, list[tuple[float, int]], int]:
    """(a): one process, one row at a time, the pipeline's stages one after another.

    Returns frames, seconds, first-video seconds, (seconds, frames) of each finished video, and the
    bytes the rows would have put in the object store between stages.
    """
    started = time.perf_counter()
    plan = plan_job(config)
    prepare, render = stages(config)
    finish = make_finish_fn(config, threads=AUTO)
    frames, first, finished, queued_bytes = 0, None, [], 0
    for row in plan.pending:
        row = prepare(row)
        queued_bytes += column_bytes(row)
        (row,) = batch_rows(render(rows_batch([row])))
        queued_bytes += column_bytes(row)
        result = finish(row)
        if result["status"] != "ok":
            raise RuntimeError(f"row {result['id']} failed: {result['error']}")
        frames += result["frames"]
        first = first or time.perf_counter() - started
        finished.append((time.perf_counter() - started, result["frames"]))
    return frames, time.perf_counter() - started, first, finished, queued_bytes


# Ray Data's own actors that a job on a fresh instance starts (detached: on a running cluster the first
# job's stay up for the later jobs): its stats actor and its autoscaling coordinator.
RAY_DATA_SYSTEM_ACTORS = 2


def worker_start_cpu() -> float:
    """CPU seconds a new Python process spends importing what any Ray Data worker of this job imports
    (Ray Data, and through it pandas and pyarrow; the pipeline's stage modules) before its first row."""
    probe = ("import resource, ray.data, pipelines.render_pipeline; u = resource.getrusage(resource.RUSAGE_SELF); "
             "print(u.ru_utime + u.ru_stime)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return float(done.stdout.split()[-1])


def ray_floor(seq_cpu: float, seq_seconds: float, rows: int, start_cpu: float) -> tuple[int, float, float]:
    """The best the Ray pipeline can do on this machine's CPUs, whatever its scheduling: its processes
    (one per stage actor, the finish workers, Ray Data's own actors) each pay ``start_cpu`` before any
    row, on top of the loop's own CPU for the rows.  Returns the processes, the lowest CPU over the
    loop's, and the highest whole-job ratio (every core busy from the first second to the last)."""
    cpus = os.cpu_count() or 1
    pools = PoolSizes.for_cluster(needs_gpu=False, cpus=cpus, gpus=0)
    processes = pools.prepare + pools.render + min(pools.finish, rows) + RAY_DATA_SYSTEM_ACTORS
    least_cpu = seq_cpu + processes * start_cpu
    return processes, least_cpu / seq_cpu, seq_seconds / (least_cpu / cpus)


def warp_speed(config: JobConfig) -> float:
    """The warp engine alone on one core: output frames per second at the job's size."""
    cv2.setNumThreads(1)
    config = replace(config, skip_existing=False, output_uri=config.output_uri + "-speed")
    prepare, render = stages(config)
    prepared = [prepare(row) for row in plan_job(config).pending[:2]]
    started = time.perf_counter()
    rendered = batch_rows(render(rows_batch(prepared)))
    frames = sum(len(row["rendered"]) for row in rendered)
    cv2.setNumThreads(0)
    return frames / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8, help="rows: the 8 shared pairs, cycled beyond 8")
    add_pipeline_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    media = args.media
    if not has_media(media):
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as scratch:
        pairs = pair_folders(str(media / "reference_images"), str(media / "drive_videos"), "zip")[:8]
        # More rows than pairs: the pairs again under new ids, to see the job's rate past its start-up.
        rows = [pair if i < len(pairs) else {**pair, "id": f"{pair['id']}-{i // len(pairs)}"}
                for i, pair in zip(range(args.rows), itertools.cycle(pairs))]
        manifest = os.path.join(scratch, "manifest.parquet")
        write_manifest(rows, manifest)

        seq_config = JobConfig(manifest_uri=manifest, output_uri=os.path.join(scratch, "a"))
        cpu_before = cpu_seconds()
        with PeakMemory() as seq_memory:
            seq_frames, seq_seconds, seq_first, seq_finished, queued_bytes = sequential(seq_config)
        # The memory sampler's own CPU is the bench's, not the job's: taken out on both sides.
        seq_cores = (cpu_seconds() - cpu_before - seq_memory.own_cpu_seconds) / seq_seconds
        per_core = warp_speed(seq_config)
        start_cpu = worker_start_cpu()

        ray_config = JobConfig(manifest_uri=manifest, output_uri=os.path.join(scratch, "b"),
                               queue_memory_mib=args.queue_memory)
        ray_started = time.perf_counter()
        connect("local")
        ray_start_seconds = time.perf_counter() - ray_started
        ray_finished: list[tuple[float, int]] = []
        job_started = time.perf_counter()

        def on_result(row, done, total):
            if row["status"] == "ok":
                ray_finished.append((time.perf_counter() - job_started, row["frames"]))

        driver_cpu_before = cpu_seconds()
        with PeakMemory(include_ray_workers=True) as ray_memory:
            report = run_render_job(ray_config, address="local", on_result=on_result)
        ray_cpu = (ray_memory.ray_cpu_seconds() + cpu_seconds() - driver_cpu_before
                   - ray_memory.own_cpu_seconds)
        shutdown_local_ray()  # its workers and its scratch folder
        if report.summary.ok != len(rows):
            print(f"pipeline rendered {report.summary.ok}/{len(rows)} rows", file=sys.stderr)
            return 1
        ray_frames = sum(row["frames"] for row in report.results)
    a_fps = seq_frames / seq_seconds
    b_fps = ray_frames / report.seconds
    seq_steady, ray_steady = steady_fps(seq_finished), steady_fps(ray_finished)
    processes, least_cpu_ratio, best_ratio = ray_floor(seq_cores * seq_seconds, seq_seconds, len(rows), start_cpu)
    lines = [
        f"rows: {len(rows)} (of the 8 shared pairs), {seq_frames} output frames, warp engine, "
        f"{seq_config.engine.size}x{seq_config.engine.size}",
        f"(a) sequential, one process: {a_fps:.1f} output frames/s, {seq_seconds:.1f} s, "
        f"first video after {seq_first:.1f} s, peak PSS {seq_memory.peak_driver / 2**20:.0f} MiB, "
        f"{seq_cores:.2f} of {os.cpu_count()} cores busy on average (ffmpeg, mediapipe and OpenCV use threads), "
        f"so a pipeline on these cores can be at most {os.cpu_count() / seq_cores:.2f}x faster",
        f"(b) Ray pipeline ({os.cpu_count()} CPUs; Ray started beforehand in {ray_start_seconds:.1f} s): "
        f"{b_fps:.1f} output frames/s, {report.seconds:.1f} s, "
        f"first video after {report.seconds_to_first_video:.1f} s, "
        f"peak PSS driver {ray_memory.peak_driver / 2**20:.0f} MiB + workers {ray_memory.peak_workers / 2**20:.0f} MiB",
        f"CPU seconds per output frame: (a) {seq_cores * seq_seconds / seq_frames * 1000:.0f} ms, "
        f"(b) {ray_cpu / seq_frames * 1000:.0f} ms (driver and Ray processes; the bench's memory sampler, "
        f"{seq_memory.own_cpu_seconds:.1f} s and {ray_memory.own_cpu_seconds:.1f} s, left out)",
        f"(b) CPU seconds by process: {ray_memory.cpu_breakdown()}",
        f"ratio b/a: {b_fps / a_fps:.2f} over the whole job",
        f"steady state (first to last finished video): (a) {seq_steady:.1f}, "
        f"(b) {ray_steady:.1f} output frames/s, ratio b/a {ray_steady / seq_steady:.2f}",
        f"warp engine alone, one core: {per_core:.1f} output frames/s",
        f"object store between stages: {queued_bytes / seq_frames / 2**20:.2f} MiB per output frame "
        f"(face crops in, rendered frames out; {queued_bytes / 2**20:.0f} MiB for the job)",
        f"CPU per output frame, (b) over (a): {ray_cpu / (seq_cores * seq_seconds):.2f}",
        f"floor of (b) on these cores: {processes} Ray Data worker processes (stage actors, finish workers, "
        f"Ray Data's {RAY_DATA_SYSTEM_ACTORS} own actors) each spend {start_cpu:.1f} CPU-s importing Ray Data and "
        f"the stages before any row, so (b) needs at least {least_cpu_ratio:.2f}x (a)'s CPU and its whole-job "
        f"ratio is at most {best_ratio:.2f} with every core busy throughout",
    ]
    print("\n".join(lines))
    if not args.no_record:
        append_results("CPU pipeline", " ".join(["python bench/cpu_pipeline.py", *sys.argv[1:]]), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
