"""The render job's Ray Data pipeline: the wiring, each stage's columns, and why each resource choice was made.

    planned rows (pipelines/plan.py)   row_index, id, reference_uri, driving_uri, output_uri,
                                       fingerprint, replace_output, seed, steps, guidance, prompt, lora,
                                       lora_scale, fps, max_seconds, status, error, time_limit_s,
                                       seconds_<stage>
      -> prepare   actor pool (actors/prepare_actor.py): mediapipe loaded once per actor; fetches the
                   inputs, streams the clip through the face mesh and cuts face crops; full-resolution
                   frames never leave the actor.
                   adds: reference_crop (S, S, 3) uint8, reference_{landmarks, rotation, translation,
                         detected} (1 frame), driving_crops (T, S, S, 3) uint8 (none, (0, S, S, 3), for an
                         engine that reads only the landmarks: warp), driving_{landmarks (T, 478, 3),
                         rotation (T, 3), translation (T, 3), detected (T,)}, audio (AAC bytes or null),
                         generation_fps, output_fps, duration, frames, preview_reference, preview_driving
      -> render    actor pool (actors/render_actor.py): the engine built once per actor; GPU actors only
                   for GPU engines (one per GPU); rows sharing the engine's batch key rendered in one call.
                   adds: rendered (T, S, S, 3) uint8; drops the crops and tracks
                   With an engine that splits long videos (HelloMeme with --spread-windows), a long
                   video instead leaves as one row per part (a batch returns more rows than it got):
                   adds: part_index, part_count, part_start, part_stop, part_keep_from (int64),
                         part_state (N,) float32 + part_state_shape (k,) int64 (actors/video_parts.py);
                   a part row keeps the crops of its frames and the whole tracks, a whole video's row
                   keeps these columns emptied (one schema for both kinds)
                   (splitting engines: every output is cut into one-row blocks, set_block_rows, so
                   each part finds its own actor)
      -> parts     actor pool (splitting engines; RenderActor.render_parts): renders part rows, any
                   video's, one a call; passes whole videos' rows through; drops the crops and tracks
      -> stitch    one actor (splitting engines; actors/stitch_actor.py): holds a video's parts until
                   all are back, emits the video's row (frames in order, part columns dropped); others
                   pass through.  Other videos keep flowing meanwhile: no barrier anywhere.
      -> finish    tasks (pipelines/finish_stage.py): encode, write, results row, one task per row.
                   gives: the results row (row_index, id, status, output_uri, error, frames, engine,
                          seconds_<stage>, preview_<kind>) -- small plain rows streamed to the driver

Every row is its own block (``from_items`` with one block per row), so a small manifest still fans
out over every actor.  A manifest of more than MAX_INPUT_BLOCKS rows starts as that many blocks
of several rows (the driver builds each block, a few ms apiece), and every stage's output is then
cut into one-row blocks (``set_block_rows``), so its rows fan out from the prepare stage on.

Keeping every GPU busy (settings derived from the cluster, ``PoolSizes.for_cluster`` and
``render_batch_size``): GPU pools are fixed at one actor per GPU and start with the job; the prepare
pool of a GPU engine has an actor per GPU (preparing a row costs a fraction of rendering it), also
started with the job; Ray Data keeps up to two batches in flight per actor, so the next row is
already queued on a GPU actor when it finishes one; the batch of videos per render call is capped
so every GPU gets several batches (the tail is one short batch, not a GPU's share); and the queue
budget (a share of the store, growing with the nodes) holds many prepared rows per GPU.  Each stage runs inside the per-row error boundary (pipelines/rows.py): an
error fails that row only, and the row carries empty values for the columns it never got.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import ray
from ray.data.context import DEFAULT_TARGET_MAX_BLOCK_SIZE

from actors import prepare_actor, render_actor, video_parts
from actors.prepare_actor import PrepareActor
from actors.render_actor import PARTS_KEY, RenderActor
from actors.stitch_actor import Stitcher
from engines.base import EngineSpec
from mediaio.media import MediaLimits
from mediaio.storage import StoragePolicy
from pipelines.finish_stage import make_finish_fn
from pipelines.plan import JobConfig
from pipelines.row_guard import RowGuard
from pipelines.rows import Row, batch_rows, fail, rows_batch, run_batch_stage, run_stage, with_empty

logger = logging.getLogger(__name__)

# Logical CPUs per actor.  Ray counts these, it does not pin cores: they bound how many of each run
# at once.  On a 2-CPU machine an actor pool that claims every CPU starves the finish stage and the
# job hangs, so every claim is a fraction and the pools are sized to leave room.
PREPARE_CPUS = 0.5  # PyAV decodes and mediapipe runs its graph on this actor's threads
CPU_RENDER_CPUS = 0.5  # the warp engine is numpy/OpenCV work on the actor's threads
GPU_RENDER_CPUS = 0.25  # a GPU actor feeds the GPU; it needs little CPU and must not block CPU stages
FINISH_CPUS = 0.25  # x264 runs in an ffmpeg subprocess; the task mostly waits on it
STITCH_CPUS = 0.1  # concatenates a split video's parts: next to no work, but it must always find room
# Threads of each stage's native libraries (PyAV's decoder, OpenCV, ffmpeg; mediaio/threads.py).
# Ray already runs the stages side by side on every core, so a stage's own threads only contend
# with the other stages: on 2 CPUs a 16-row job ran 8-9% faster with one thread per stage than
# with each library's own choice (one per core), measured side by side.
STAGE_THREADS = 1

# With an engine that splits long videos there are two GPU pools: the render pool (whole videos,
# and the edge passes of long ones) and the parts pool (groups of windows).  Both run on every
# GPU: if each claimed whole GPUs, the GPUs would be divided between the pools, and one kind of
# work would leave the other pool's GPUs idle (a manifest of short clips never touches the parts
# pool; a single long clip spends most of its time there).  So every GPU hosts one actor of each,
# and the two share it (CUDA time-slices between the two processes; each holds its own copy of
# the model, ~6 GB in fp16 for v5).  The claims are 0.51 and 0.49, not 0.5 and 0.5: Ray packs
# fractional claims onto a GPU until it is full, in the order they are asked for, so two render
# actors asked for first would share GPU 0.  At 0.51 no GPU can hold two render actors, and the
# parts actors, asked for after them, find exactly 0.49 free on every GPU.
WHOLE_GPU_SHARE = 0.51
PART_GPU_SHARE = 0.49
# Each render actor should see several batches over a job, so that the last batches do not leave
# most GPUs idle while a few finish: the batch of videos per call is capped at rows / (actors x this).
BATCHES_PER_RENDER_ACTOR = 4
# GPU engines: prepare actors per render actor.  Preparing a row (decode + face mesh, ~1-2 s of a
# core for a 5-s 1080p clip) takes a small fraction of rendering it (HelloMeme v5: ~48 denoised
# frames x 25 steps x 2 branches x 1.4 TFLOP, ~8 s of an H100 at 40% of its bf16 peak), so one
# prepare actor per GPU keeps the queue in front of the GPUs full with room to spare, even when
# a row's clip is long and decodes slowly.
PREPARE_PER_GPU = 1.0

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
    finish: int  # concurrent finish tasks: bounds the worker processes (and their memory)

    @classmethod
    def for_cluster(cls, needs_gpu: bool, cpus: float, gpus: float) -> "PoolSizes":
        # Each CPU pool may take at most a quarter of the CPUs' worth of its claim, so the finish
        # tasks always find room; a GPU pool has one actor per GPU.  For a GPU engine the prepare
        # pool also grows with the GPUs (PREPARE_PER_GPU) up to half the CPUs' worth, so adding
        # GPU nodes (which bring CPUs) adds the prepare actors that feed them.
        prepare = max(1, int(cpus // 4 / PREPARE_CPUS))
        render = max(1, int(gpus)) if needs_gpu else max(1, int(cpus // 4 / CPU_RENDER_CPUS))
        if needs_gpu:
            # Whatever the GPU pools (two of them with a splitting engine) and the stitch actor claim,
            # at least one CPU stays free for the finish tasks.
            room = cpus - render * 2 * GPU_RENDER_CPUS - STITCH_CPUS - 1.0
            wanted = min(int(cpus // 2 / PREPARE_CPUS), math.ceil(gpus * PREPARE_PER_GPU), int(room / PREPARE_CPUS))
            prepare = max(prepare, wanted)
        # Fractional claims would let dozens of finish tasks run at once, each its own worker
        # process; more than one per CPU only adds processes, not speed (ffmpeg uses the cores).
        return cls(prepare=prepare, render=render, finish=max(2, int(cpus)))


def render_batch_size(videos_per_batch: int, rows: int, render_actors: int) -> int:
    """Videos per render call: the job's ``--videos-per-batch``, but never so many that the GPUs starve.

    Ray Data hands whole batches to actors: with 16 rows, 8 GPUs and batches of 4, four GPUs get
    all the work and four wait.  Capping the batch at rows / (actors x BATCHES_PER_RENDER_ACTOR)
    gives every actor several batches, so the tail is one short batch, not a GPU's share.
    """
    cap = max(1, rows // max(1, render_actors * BATCHES_PER_RENDER_ACTOR))
    return max(1, min(int(videos_per_batch), cap))


def set_queue_budget(context: ray.data.DataContext, queue_memory_mib: int | None) -> str:
    """Cap the object-store memory of rows queued between stages (see QUEUE_STORE_FRACTION).

    ``queue_memory_mib`` fixes the cap; None makes it a share of the cluster's store (which grows
    as GPU nodes join, each bringing its store).  Returns the budget in words, for the job's log.
    """
    if queue_memory_mib is not None:
        context.override_object_store_memory_limit_fraction = None
        context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
            object_store_memory=queue_memory_mib * 2**20)
        return f"{queue_memory_mib} MiB"
    context.override_object_store_memory_limit_fraction = QUEUE_STORE_FRACTION
    context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits()
    return f"{QUEUE_STORE_FRACTION:.0%} of the object store"


# The driver spends 3-5 ms building each input block (``from_items``, measured on 2 CPUs: 1000
# one-row blocks 4.9 s, 4000 15 s), so a 20000-row manifest with a block per row waited ~100 s
# before its first row started.  Past this many rows, rows share the input blocks (about 2 s to
# build), and the stages' outputs are cut into one-row blocks instead (``input_blocks``).
MAX_INPUT_BLOCKS = 500


def input_blocks(rows: int) -> int:
    """How many blocks the planned rows start as: one per row, up to MAX_INPUT_BLOCKS."""
    return max(1, min(rows, MAX_INPUT_BLOCKS))


def needs_one_row_blocks(rows: int, splits: bool) -> bool:
    """Whether every stage's output must be cut into one-row blocks: for a splitting engine (its parts
    spread over the actors) and for a manifest whose rows share input blocks (they spread out after
    the prepare stage)."""
    return splits or input_blocks(rows) < rows


def set_block_rows(context: ray.data.DataContext, one_row_blocks: bool) -> None:
    """One row per block everywhere (splitting engines: part rows spread over the actors), or Ray Data's default.

    Ray Data cuts a stage's output into blocks no larger than ``target_max_block_size``; at one
    byte every row is its own block.  Set on every job: the context outlives a job in the driver.
    """
    context.target_max_block_size = 1 if one_row_blocks else DEFAULT_TARGET_MAX_BLOCK_SIZE


class PrepareStage:
    """Ray Data callable class: the prepare actor inside the per-row error boundary and the row guard."""

    def __init__(self, size: int, default_fps: float | None, crop_rule: str, limits: MediaLimits,
                 storage_options: dict[str, Any], max_input_bytes: int, previews_uri: str | None,
                 policy: StoragePolicy, ledger: Any = None, threads: int = STAGE_THREADS,
                 driving_crops: bool = True) -> None:
        self.actor = PrepareActor(size, default_fps, crop_rule, limits, storage_options, max_input_bytes, previews_uri,
                                  policy, threads, driving_crops)
        self.outputs = prepare_actor.output_columns(size)
        self.guard = RowGuard(ledger, "prepare")

    def __call__(self, row: Row) -> Row:
        (row,) = self.guard.run([row], lambda rows: [run_stage("prepare", self.actor, rows[0], self.outputs)],
                                lambda row, error: with_empty(fail(row, "prepare", error), self.outputs))
        return row


def _drop_consumed(rows: list[Row]) -> dict[str, list]:
    return rows_batch([{name: value for name, value in row.items() if name not in render_actor.CONSUMED_COLUMNS}
                       for row in rows])


class RenderStage:
    """Ray Data callable class: the render actor inside the error boundary and the row guard; drops what it
    consumed.

    With an engine that splits videos, a split video leaves as its part rows (a batch may return
    more rows than it got) and every row keeps the crops' columns, emptied on whole videos' rows:
    one schema for both kinds (see actors/video_parts.py).
    """

    def __init__(self, spec: EngineSpec, storage_options: dict[str, Any], ledger: Any = None,
                 threads: int = STAGE_THREADS) -> None:
        self.actor = RenderActor(spec, storage_options, threads)
        self.outputs = render_actor.output_columns(spec.size)
        self.size = spec.size
        self.guard = RowGuard(ledger, "render")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows = self.guard.run(batch_rows(batch), lambda rows: run_batch_stage("render", self.actor, rows, self.outputs),
                              lambda row, error: with_empty(fail(row, "render", error), self.outputs))
        if not self.actor.splits:
            return _drop_consumed(rows)
        out: list[Row] = []
        for row in rows:
            parts = row.get(PARTS_KEY)
            out.extend(video_parts.part_rows(row, parts) if parts else [video_parts.whole_row(row, self.size)])
        return rows_batch(out)


class PartStage:
    """Ray Data callable class: renders part rows (any video's) in the error boundary and the row guard;
    other rows pass through.

    A part that fails is failed like a row (its error names the row and the stage); the stitch
    stage then fails its video.  The guard counts each part on its own (parts of one video run on
    several actors at once).  Drops the crops and tracks of every row.
    """

    def __init__(self, spec: EngineSpec, storage_options: dict[str, Any], ledger: Any = None,
                 threads: int = STAGE_THREADS) -> None:
        self.actor = RenderActor(spec, storage_options, threads)
        self.outputs = render_actor.output_columns(spec.size)
        self.size = spec.size
        self.guard = RowGuard(ledger, "render part", part_column="part_index")

    def _render(self, rows: list[Row]) -> list[dict[str, Any]]:
        return self.actor.render_parts([video_parts.part_input(row, self.size) for row in rows])

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows = batch_rows(batch)
        todo = [i for i, row in enumerate(rows) if video_parts.is_part(row)]
        if todo:
            done = self.guard.run([rows[i] for i in todo],
                                  lambda parts: run_batch_stage("render", self._render, parts, self.outputs),
                                  lambda row, error: with_empty(fail(row, "render", error), self.outputs))
            for i, row in zip(todo, done):
                rows[i] = row
        return _drop_consumed(rows)


class StitchStage:
    """Ray Data callable class (flat_map): holds a split video's parts until all are back (actors/stitch_actor.py)."""

    def __init__(self) -> None:
        self.stitcher = Stitcher()

    def __call__(self, row: Row) -> list[Row]:
        return self.stitcher(dict(row))


def build_dataset(rows: list[Row], config: JobConfig, pools: PoolSizes, ledger: Any = None) -> ray.data.Dataset:
    """Chain the stages over the planned rows; nothing runs until the dataset is iterated.

    ``ledger`` (a :class:`pipelines.row_guard.RowLedger`) bounds each row's time and worker deaths.
    The dataset takes its execution options (the queue budget) from the current DataContext.
    """
    engine = config.engine.engine_class()
    dataset = ray.data.from_items(rows, override_num_blocks=input_blocks(len(rows)))
    dataset = dataset.map(
        PrepareStage,
        fn_constructor_kwargs={"size": config.engine.size, "default_fps": engine.default_fps,
                               "crop_rule": engine.crop_rule, "limits": config.limits,
                               "storage_options": dict(config.storage_options),
                               "max_input_bytes": config.max_input_bytes,
                               "previews_uri": config.output_uri if config.report else None,
                               "policy": config.policy, "ledger": ledger,
                               "driving_crops": engine.needs_driving_frames},
        num_cpus=PREPARE_CPUS,
        # For a GPU engine every prepare actor starts with the job: a pool that grows from one only
        # as its queue backs up would leave GPUs waiting for their first rows.
        compute=ray.data.ActorPoolStrategy(min_size=pools.prepare if engine.needs_gpu else 1, max_size=pools.prepare),
    )
    dataset = _render_stages(dataset, rows, config, pools, ledger)
    # Tasks, not a warm actor pool: an actor pool took ~7 s off the first video on 2 CPUs, but a row
    # whose finish actor's node was removed mid-job was lost (tests/test_faults.py), where a task is
    # retried elsewhere.
    return dataset.map(make_finish_fn(config, ledger, STAGE_THREADS), num_cpus=FINISH_CPUS,
                       compute=ray.data.TaskPoolStrategy(size=pools.finish))


def _render_stages(dataset: ray.data.Dataset, rows: list[Row], config: JobConfig, pools: PoolSizes,
                   ledger: Any) -> ray.data.Dataset:
    """The render stage; with an engine that splits long videos, the parts stage and the stitch stage after it."""
    engine = config.engine.engine_class()
    splits = engine.splits(config.engine)
    actor_args = {"spec": config.engine, "storage_options": dict(config.storage_options), "ledger": ledger}
    cpus = GPU_RENDER_CPUS if engine.needs_gpu else CPU_RENDER_CPUS
    dataset = dataset.map_batches(
        RenderStage,
        fn_constructor_kwargs=actor_args,
        batch_size=render_batch_size(config.videos_per_batch, len(rows), pools.render),
        num_cpus=cpus,
        num_gpus=(WHOLE_GPU_SHARE if splits else 1) if engine.needs_gpu else 0,
        compute=_render_pool(engine.needs_gpu, pools.render),
    )
    if not splits:
        return dataset
    # A split video's part rows leave one render call together; set_block_rows (called by the
    # driver for splitting engines) has Ray Data cut every output into one-row blocks, so each part
    # goes to whichever parts actor is free.  (A repartition would do it too, but its tasks claim a
    # whole CPU, which a small node's pools leave no room for: the pipeline hung on 2 CPUs.)
    dataset = dataset.map_batches(
        PartStage,
        fn_constructor_kwargs=actor_args,
        batch_size=1,  # one group of windows a call: parts spread over every actor
        num_cpus=cpus,
        num_gpus=PART_GPU_SHARE if engine.needs_gpu else 0,
        compute=_render_pool(engine.needs_gpu, pools.render),
    )
    return dataset.flat_map(StitchStage, num_cpus=STITCH_CPUS, compute=ray.data.ActorPoolStrategy(size=1))


def _render_pool(needs_gpu: bool, size: int) -> ray.data.ActorPoolStrategy:
    # GPU pools are fixed at one actor per GPU, all started with the job: an autoscaling pool
    # starts with one actor and grows only as its queue backs up, leaving GPUs idle meanwhile
    # (and Ray places the pools' fractional GPU claims in the order they are asked for, see above).
    if needs_gpu:
        return ray.data.ActorPoolStrategy(min_size=size, max_size=size)
    return ray.data.ActorPoolStrategy(min_size=1, max_size=size)
