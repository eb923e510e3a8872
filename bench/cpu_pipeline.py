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
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from actors.pose_actor import PoseExtractor  # noqa: E402
from actors.render_actor import FrameRenderer  # noqa: E402
from bench._common import PeakMemory, add_pipeline_arguments, append_results, has_media  # noqa: E402
from engines.registry import engine_class  # noqa: E402
from pipelines.manifest import read_manifest  # noqa: E402
from jobs.manifest_builder import pair_folders, write_manifest  # noqa: E402
from pipelines.rows import run_stage  # noqa: E402
from pipelines.config import RenderJobConfig  # noqa: E402
from pipelines.decode_stage import make_decode_fn  # noqa: E402
from pipelines.encode_stage import make_encode_fn  # noqa: E402
from pipelines.ray_runtime import connect  # noqa: E402
from pipelines.render_job import run_render_job  # noqa: E402
from pipelines.row_plan import plan_rows  # noqa: E402
from pipelines.write_stage import make_write_fn  # noqa: E402

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


def sequential(config: RenderJobConfig) -> tuple[int, float, float, list[tuple[float, int]]]:
    """(a): one process, one row at a time, stage after stage.

    Returns frames, seconds, first-video seconds and (seconds, frames) of each finished video.
    """
    engine = engine_class(config.engine)
    started = time.perf_counter()
    works = plan_rows(read_manifest(config.manifest_uri), config, (config.engine,))
    pose = PoseExtractor(size=config.size)
    render = FrameRenderer(config.engine, config.engine_options, size=config.size)
    decode, encode, write = make_decode_fn(config, engine.default_fps), make_encode_fn(config), make_write_fn(config)
    frames, first, finished = 0, None, []
    for work in works:
        work = run_stage("decode", decode, work)
        work = run_stage("pose", pose.extract, work)
        (work,) = render.render([work])
        work = run_stage("encode", encode, work)
        work = run_stage("write", write, work)
        if work.status != "ok":
            raise RuntimeError(f"row {work.id} failed: {work.error}")
        frames += work.num_frames
        first = first or time.perf_counter() - started
        finished.append((time.perf_counter() - started, work.num_frames))
    return frames, time.perf_counter() - started, first, finished


def warp_speed(config: RenderJobConfig) -> float:
    """The warp engine alone on one core: output frames per second at the job's size."""
    cv2.setNumThreads(1)
    config = replace(config, skip_existing=False)  # the sequential run already wrote these rows
    engine = engine_class(config.engine)
    works = plan_rows(read_manifest(config.manifest_uri), config, (config.engine,))[:2]
    pose = PoseExtractor(size=config.size)
    render = FrameRenderer(config.engine, config.engine_options, size=config.size)
    decode = make_decode_fn(config, engine.default_fps)
    prepared = [render.plan_windows(run_stage("pose", pose.extract, run_stage("decode", decode, w))) for w in works]
    started = time.perf_counter()
    frames = sum(len(w.frames) for w in render.render(prepared))
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

        seq_config = RenderJobConfig(manifest_uri=manifest, output_uri=os.path.join(scratch, "a"))
        cpu_before = cpu_seconds()
        with PeakMemory() as seq_memory:
            seq_frames, seq_seconds, seq_first, seq_finished = sequential(seq_config)
        seq_cores = (cpu_seconds() - cpu_before) / seq_seconds
        per_core = warp_speed(seq_config)

        ray_config = RenderJobConfig(manifest_uri=manifest, output_uri=os.path.join(scratch, "b"),
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
        ray_cpu = ray_memory.ray_cpu_seconds() + cpu_seconds() - driver_cpu_before
        if report.summary.ok != len(rows):
            print(f"pipeline rendered {report.summary.ok}/{len(rows)} rows", file=sys.stderr)
            return 1
        ray_frames = sum(row["frames"] for row in report.results)
    a_fps = seq_frames / seq_seconds
    b_fps = ray_frames / report.seconds
    seq_steady, ray_steady = steady_fps(seq_finished), steady_fps(ray_finished)
    lines = [
        f"rows: {len(rows)} (of the 8 shared pairs), {seq_frames} output frames, warp engine, "
        f"{seq_config.size}x{seq_config.size}",
        f"(a) sequential, one process: {a_fps:.1f} output frames/s, {seq_seconds:.1f} s, "
        f"first video after {seq_first:.1f} s, peak PSS {seq_memory.peak_driver / 2**20:.0f} MiB, "
        f"{seq_cores:.2f} of {os.cpu_count()} cores busy on average (ffmpeg, mediapipe and OpenCV use threads), "
        f"so a pipeline on these cores can be at most {os.cpu_count() / seq_cores:.2f}x faster",
        f"(b) Ray pipeline ({os.cpu_count()} CPUs; Ray started beforehand in {ray_start_seconds:.1f} s): "
        f"{b_fps:.1f} output frames/s, {report.seconds:.1f} s, "
        f"first video after {report.seconds_to_first_video:.1f} s, "
        f"peak PSS driver {ray_memory.peak_driver / 2**20:.0f} MiB + workers {ray_memory.peak_workers / 2**20:.0f} MiB",
        f"CPU seconds per output frame: (a) {seq_cores * seq_seconds / seq_frames * 1000:.0f} ms, "
        f"(b) {ray_cpu / seq_frames * 1000:.0f} ms (driver and Ray processes)",
        f"(b) CPU seconds by process: {ray_memory.cpu_breakdown()}",
        f"ratio b/a: {b_fps / a_fps:.2f} over the whole job",
        f"steady state (first to last finished video): (a) {seq_steady:.1f}, "
        f"(b) {ray_steady:.1f} output frames/s, ratio b/a {ray_steady / seq_steady:.2f}",
        f"warp engine alone, one core: {per_core:.1f} output frames/s",
    ]
    print("\n".join(lines))
    if not args.no_record:
        append_results("CPU pipeline", " ".join(["python bench/cpu_pipeline.py", *sys.argv[1:]]), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
