"""The render job's Ray Data pipeline: the wiring, and why each resource choice was made.

    manifest rows (planned on the driver)
      -> decode        tasks: fetch inputs through fsspec, decode frames at the generation rate, keep audio;
                       the report's reference and driving previews are made from the decoded frames
      -> pose          actor pool: mediapipe face mesh loaded once per actor; face crops and tracks
      -> render        actor pool: the engine built once per actor; GPU actors only for GPU engines;
                       each video is cut into overlapping frame windows (size W, overlap K, per
                       engine), and the windows are blended and stitched back per video inside this stage,
                       because a global groupby would be a barrier (no video encoded before the last
                       window of the whole manifest is done)
      -> encode        tasks: H.264 MP4 at the driving clip's rate, frames interpolated, audio muxed;
                       the report's meme preview is made from the rendered frames
      -> write         create-only, all-or-nothing publish through fsspec
      -> results       small plain rows streamed back to the driver
                       (encode, write and results run as one fused task per row: see below)

Every row is its own block (one row per block from ``from_items``), so a small manifest still fans
out over every actor.  Each stage runs rows through ``run_stage``: an error fails that row only.
The workers record the job's metrics as they go (reporting.metrics): rows started and
frames decoded in decode, windows in flight, frames rendered and GPU memory in the render
actors, and each row's status and stage timings as it leaves the pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ray

from actors.pose_actor import PoseExtractor
from actors.render_actor import FrameRenderer
from engines.base import Engine
from reporting import previews
from reporting.metrics import worker_metrics
from reporting.results import result_row
from pipelines.rows import MemeWork, pack, row_stage, unpack
from pipelines.config import RenderJobConfig
from pipelines.decode_stage import make_decode_fn
from pipelines.encode_stage import make_encode_fn
from pipelines.write_stage import make_write_fn

logger = logging.getLogger(__name__)

# Logical CPUs per task or actor.  Ray counts these, it does not pin cores: they bound how many of
# each run at once.  On a 2-CPU machine an actor pool that claims every CPU starves the decode
# tasks and the job hangs, so every claim is a fraction and the pools are sized to leave room.
DECODE_CPUS = 0.25  # the work happens in an ffmpeg subprocess; the task mostly waits
POSE_CPUS = 0.5  # mediapipe runs its graph on this actor's threads
CPU_RENDER_CPUS = 0.5  # the warp engine is numpy/OpenCV work on the actor's threads
GPU_RENDER_CPUS = 0.25  # a GPU actor feeds the GPU; it needs little CPU and must not block CPU stages
ENCODE_CPUS = 0.25  # x264 runs in an ffmpeg subprocess
# Write and results ask for exactly what encode asks for, so Ray Data fuses the three into one task
# per row: the MP4's bytes never pass through the object store, and a finished video does not wait
# for two more task hops (measured on 2 CPUs: each hop to a fresh worker cost about 2 s before the
# first video).

# Rows waiting between stages live in Ray's object store.  Ray Data would let decode run ahead of
# pose and render until half the store is full; each worker keeps the store pages it has read
# resident, so memory would grow with the manifest.  A smaller share keeps a few rows queued in
# front of the slowest stage (enough to keep it busy) and no more.  It is a share of the cluster's
# store, which Ray Data re-reads every second, so the budget grows as an autoscaling cluster adds
# nodes.  Ray Data still runs one task of a stage when a single row is larger than the budget.
# Measured on 2 CPUs with a 7 GiB store (bench/): with about 1 GiB, 300 rows peak within 1.13-1.21x
# of 30 rows' memory (unbounded: 1.48x); 512 MiB held the render actor back on the shared clips
# (36 instead of 48 frames/s once busy).
QUEUE_STORE_FRACTION = 0.15


@dataclass(frozen=True)
class PoolSizes:
    """How many actors each pool may grow to, from the cluster's resources."""

    pose: int
    render: int
    tasks: int  # concurrent tasks per task stage: bounds the worker processes (and their memory)

    @classmethod
    def for_cluster(cls, engine: type[Engine], cpus: float, gpus: float) -> "PoolSizes":
        # Each CPU pool may take at most a quarter of the CPUs' worth of its claim, so decode and
        # encode always find room; a GPU pool has one actor per GPU.
        cpu_pool = max(1, int(cpus // 4 / POSE_CPUS))
        render = max(1, int(gpus)) if engine.needs_gpu else max(1, int(cpus // 4 / CPU_RENDER_CPUS))
        # Fractional claims would let dozens of tasks run at once, each in its own worker process;
        # more than one per CPU only adds processes, not speed (ffmpeg and numpy use the cores).
        return cls(pose=cpu_pool, render=render, tasks=max(2, int(cpus)))


def set_queue_budget(context: ray.data.DataContext, config: RenderJobConfig) -> str:
    """Cap the object-store memory of rows queued between stages (see QUEUE_STORE_FRACTION).

    ``config.queue_memory_mib`` fixes the cap; by default it is a share of the cluster's store.
    Returns the budget in words, for the job's log.
    """
    if config.queue_memory_mib is not None:
        context.override_object_store_memory_limit_fraction = None
        context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
            object_store_memory=config.queue_memory_mib * 2**20)
        return f"{config.queue_memory_mib} MiB"
    context.override_object_store_memory_limit_fraction = QUEUE_STORE_FRACTION
    context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits()
    return f"{QUEUE_STORE_FRACTION:.0%} of the object store"


def _result(row: dict) -> dict:
    work = unpack(row)
    worker_metrics().row_finished(work.status, work.timings)
    return {**result_row(work), **previews.result_fields(work)}


def build_dataset(works: list[MemeWork], config: RenderJobConfig, engine: type[Engine],
                  pools: PoolSizes) -> ray.data.Dataset:
    """Chain the stages over the pending rows; nothing runs until the dataset is iterated.

    The dataset takes its execution options (the queue budget) from the current DataContext.
    """
    dataset = ray.data.from_items([pack(work) for work in works], override_num_blocks=len(works))
    dataset = dataset.map(row_stage("decode", make_decode_fn(config, engine.default_fps)), num_cpus=DECODE_CPUS,
                          compute=ray.data.TaskPoolStrategy(size=pools.tasks))
    dataset = dataset.map_batches(
        PoseExtractor,
        fn_constructor_kwargs={"size": config.size},
        batch_size=1,  # one clip per call: a clip is already ~100 frames of work
        num_cpus=POSE_CPUS,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pools.pose),
    )
    dataset = dataset.map_batches(
        FrameRenderer,
        fn_constructor_kwargs={"engine": config.engine, "options": config.engine_options, "size": config.size,
                               "window": config.window, "overlap": config.overlap},
        batch_size=config.render_batch_size,  # GPU engines batch the windows of several videos
        num_cpus=GPU_RENDER_CPUS if engine.needs_gpu else CPU_RENDER_CPUS,
        num_gpus=1 if engine.needs_gpu else 0,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pools.render),
    )
    dataset = dataset.map(row_stage("encode", make_encode_fn(config)), num_cpus=ENCODE_CPUS,
                          compute=ray.data.TaskPoolStrategy(size=pools.tasks))
    dataset = dataset.map(row_stage("write", make_write_fn(config)), num_cpus=ENCODE_CPUS,
                          compute=ray.data.TaskPoolStrategy(size=pools.tasks))
    return dataset.map(_result, num_cpus=ENCODE_CPUS, compute=ray.data.TaskPoolStrategy(size=pools.tasks))
