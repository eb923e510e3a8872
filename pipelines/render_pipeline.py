"""The render job's Ray Data pipeline: the wiring, each stage's columns, and why each resource choice was made.

    planned rows (pipelines/plan.py)   row_index, id, reference_uri, driving_uri, output_uri,
                                       seed, steps, guidance, prompt, lora, lora_scale, fps, max_seconds,
                                       fingerprint, status, error, time_limit_s, seconds_<stage>
      -> prepare   actor pool (actors/prepare_actor.py): mediapipe loaded once per actor; fetches the
                   inputs, streams the clip through the face mesh and cuts face crops; full-resolution
                   frames never leave the actor.
                   adds: reference_crop (S, S, 3) uint8, reference_{landmarks, rotation, translation,
                         detected} (1 frame), driving_crops (T, S, S, 3) uint8, driving_{landmarks (T, 478, 3),
                         rotation (T, 3), translation (T, 3), detected (T,)}, audio (AAC bytes or null),
                         generation_fps, output_fps, duration, frames, preview_reference, preview_driving
      -> render    actor pool (actors/render_actor.py): the engine built once per actor; GPU actors only
                   for GPU engines; rows sharing the engine's batch key rendered in one call.
                   adds: rendered (T, S, S, 3) uint8; drops the crops and tracks
      -> finish    tasks (pipelines/finish_stage.py): encode, write, results row, one task per row.
                   gives: the results row (row_index, id, status, output_uri, error, frames, engine,
                          seconds_<stage>, preview_<kind>) -- small plain rows streamed to the driver

Every row is its own block (``from_items`` with one block per row), so a small manifest still fans
out over every actor.  Each stage runs inside the per-row error boundary (pipelines/rows.py): an
error fails that row only, and the row carries empty values for the columns it never got.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray

from actors import prepare_actor, render_actor
from actors.prepare_actor import PrepareActor
from actors.render_actor import RenderActor
from engines.base import EngineSpec
from mediaio.media import MediaLimits
from mediaio.storage import StoragePolicy
from pipelines.finish_stage import make_finish_fn
from pipelines.plan import JobConfig
from pipelines.row_guard import RowGuard
from pipelines.rows import Row, batch_rows, fail, rows_batch, run_batch_stage, run_stage, with_empty

logger = logging.getLogger(__name__)

# Logical CPUs per task or actor.  Ray counts these, it does not pin cores: they bound how many of
# each run at once.  On a 2-CPU machine an actor pool that claims every CPU starves the finish
# tasks and the job hangs, so every claim is a fraction and the pools are sized to leave room.
PREPARE_CPUS = 0.5  # PyAV decodes and mediapipe runs its graph on this actor's threads
CPU_RENDER_CPUS = 0.5  # the warp engine is numpy/OpenCV work on the actor's threads
GPU_RENDER_CPUS = 0.25  # a GPU actor feeds the GPU; it needs little CPU and must not block CPU stages
FINISH_CPUS = 0.25  # x264 runs in an ffmpeg subprocess; the task mostly waits on it

# Rows waiting between stages live in Ray's object store.  Ray Data would let prepare run ahead of
# render until half the store is full; each worker keeps the store pages it has read resident, so
# memory would grow with the manifest.  A smaller share keeps a few rows queued in front of the
# slowest stage (enough to keep it busy) and no more.  It is a share of the cluster's store, which
# Ray Data re-reads every second, so the budget grows as an autoscaling cluster adds nodes.  Ray
# Data still runs one task of a stage when a single row is larger than the budget.  Measured on 2
# CPUs with a 7 GiB store (bench/soak.py): with about 1 GiB, 300 rows peak within 1.13-1.21x of 30
# rows' memory (unbounded: 1.48x); 512 MiB held the render actor back on the shared clips.
QUEUE_STORE_FRACTION = 0.15


@dataclass(frozen=True)
class PoolSizes:
    """How many actors each pool may grow to, from the cluster's resources."""

    prepare: int
    render: int
    tasks: int  # concurrent finish tasks: bounds the worker processes (and their memory)

    @classmethod
    def for_cluster(cls, needs_gpu: bool, cpus: float, gpus: float) -> "PoolSizes":
        # Each CPU pool may take at most a quarter of the CPUs' worth of its claim, so the finish
        # tasks always find room; a GPU pool has one actor per GPU.
        prepare = max(1, int(cpus // 4 / PREPARE_CPUS))
        render = max(1, int(gpus)) if needs_gpu else max(1, int(cpus // 4 / CPU_RENDER_CPUS))
        # Fractional claims would let dozens of tasks run at once, each in its own worker process;
        # more than one per CPU only adds processes, not speed (ffmpeg uses the cores).
        return cls(prepare=prepare, render=render, tasks=max(2, int(cpus)))


def set_queue_budget(context: ray.data.DataContext, queue_memory_mib: int | None) -> str:
    """Cap the object-store memory of rows queued between stages (see QUEUE_STORE_FRACTION).

    ``queue_memory_mib`` fixes the cap; None makes it a share of the cluster's store.  Returns the
    budget in words, for the job's log.
    """
    if queue_memory_mib is not None:
        context.override_object_store_memory_limit_fraction = None
        context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
            object_store_memory=queue_memory_mib * 2**20)
        return f"{queue_memory_mib} MiB"
    context.override_object_store_memory_limit_fraction = QUEUE_STORE_FRACTION
    context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits()
    return f"{QUEUE_STORE_FRACTION:.0%} of the object store"


class PrepareStage:
    """Ray Data callable class: the prepare actor inside the per-row error boundary and the row guard."""

    def __init__(self, size: int, default_fps: float | None, crop_rule: str, limits: MediaLimits,
                 storage_options: dict[str, Any], max_input_bytes: int, previews_uri: str | None,
                 policy: StoragePolicy, ledger: Any = None) -> None:
        self.actor = PrepareActor(size, default_fps, crop_rule, limits, storage_options, max_input_bytes, previews_uri,
                                  policy)
        self.outputs = prepare_actor.output_columns(size)
        self.guard = RowGuard(ledger, "prepare")

    def __call__(self, row: Row) -> Row:
        (row,) = self.guard.run([row], lambda rows: [run_stage("prepare", self.actor, rows[0], self.outputs)],
                                lambda row, error: with_empty(fail(row, "prepare", error), self.outputs))
        return row


class RenderStage:
    """Ray Data callable class: the render actor inside the error boundary and the row guard; drops what it
    consumed."""

    def __init__(self, spec: EngineSpec, storage_options: dict[str, Any], ledger: Any = None) -> None:
        self.actor = RenderActor(spec, storage_options)
        self.outputs = render_actor.output_columns(spec.size)
        self.guard = RowGuard(ledger, "render")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows = self.guard.run(batch_rows(batch), lambda rows: run_batch_stage("render", self.actor, rows, self.outputs),
                              lambda row, error: with_empty(fail(row, "render", error), self.outputs))
        return rows_batch([{name: value for name, value in row.items() if name not in render_actor.CONSUMED_COLUMNS}
                           for row in rows])


def build_dataset(rows: list[Row], config: JobConfig, pools: PoolSizes, ledger: Any = None) -> ray.data.Dataset:
    """Chain the stages over the planned rows; nothing runs until the dataset is iterated.

    ``ledger`` (a :class:`pipelines.row_guard.RowLedger`) bounds each row's time and worker deaths.
    The dataset takes its execution options (the queue budget) from the current DataContext.
    """
    engine = config.engine.engine_class()
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    dataset = dataset.map(
        PrepareStage,
        fn_constructor_kwargs={"size": config.engine.size, "default_fps": engine.default_fps,
                               "crop_rule": engine.crop_rule, "limits": config.limits,
                               "storage_options": dict(config.storage_options),
                               "max_input_bytes": config.max_input_bytes,
                               "previews_uri": config.output_uri if config.report else None,
                               "policy": config.policy, "ledger": ledger},
        num_cpus=PREPARE_CPUS,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pools.prepare),
    )
    dataset = dataset.map_batches(
        RenderStage,
        fn_constructor_kwargs={"spec": config.engine, "storage_options": dict(config.storage_options),
                               "ledger": ledger},
        batch_size=config.videos_per_batch,  # GPU engines batch the windows of several videos
        num_cpus=GPU_RENDER_CPUS if engine.needs_gpu else CPU_RENDER_CPUS,
        num_gpus=1 if engine.needs_gpu else 0,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pools.render),
    )
    return dataset.map(make_finish_fn(config, ledger), num_cpus=FINISH_CPUS,
                       compute=ray.data.TaskPoolStrategy(size=pools.tasks))
