"""The render pool: an engine built once per actor renders many videos.

A call gets the rows of one Ray Data batch (one or more videos).  Rows whose settings share the
engine's batch key (for HelloMeme: the same LoRA) are rendered in one engine call, so a GPU engine
fills its batches with windows of several videos.  If a call fails, the pipeline's error boundary
runs its rows again one by one, so a bad row fails alone.  The actor records frames rendered and,
for GPU engines, the GPU's memory and utilisation in the job's metrics.

With an engine that splits videos (:meth:`engines.base.Engine.splits`), a long video comes back
as its parts instead of frames (under :data:`PARTS_KEY`, a Python list the render stage turns
into part rows, see :mod:`actors.video_parts`); any actor of the parts pool renders them.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from actors.face_columns import track_from_columns
from engines.base import EngineSpec, PartInput, RenderInput, RowSettings, VideoPart
from engines.registry import create_engine
from mediaio.threads import AUTO, use_threads
from reporting.metrics import worker_metrics

logger = logging.getLogger(__name__)

# The columns the render stage reads and no later stage needs: the pipeline drops them after it.
CONSUMED_COLUMNS = ("reference_crop", "reference_landmarks", "reference_rotation", "reference_translation",
                    "reference_detected", "driving_crops", "driving_landmarks", "driving_rotation",
                    "driving_translation", "driving_detected")


# Where a split video's parts are returned (not a column: the render stage makes one row of each).
PARTS_KEY = "_parts"


def output_columns(size: int) -> dict[str, Callable[[], Any]]:
    """Columns this stage adds, with the empty values a row that did not run it carries."""
    return {"rendered": lambda: np.zeros((0, size, size, 3), np.uint8)}


def render_input(row: Mapping[str, Any], size: int) -> RenderInput:
    """The engine's view of a prepared row."""
    return RenderInput(
        meme_id=str(row["id"]),
        reference=np.asarray(row["reference_crop"]),
        reference_face=track_from_columns(row, "reference", size),
        driving_frames=np.asarray(row["driving_crops"]),
        driving_face=track_from_columns(row, "driving", size),
        settings=RowSettings.from_columns(row),
    )


class RenderActor:
    """Wraps one engine instance for the actor's life."""

    def __init__(self, spec: EngineSpec, storage_options: Mapping[str, Any] | None = None,
                 threads: int = AUTO) -> None:
        use_threads(threads)  # OpenCV's, in this process (mediaio/threads.py)
        self.spec = spec
        self.engine = create_engine(spec, storage_options)
        self.splits = self.engine.splits(spec)
        self.metrics = worker_metrics()
        if self.engine.needs_gpu:
            self.metrics.start_gpu_sampler()

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``{"rendered": frames}`` for each row, in order; a split video's ``{"rendered": no frames, PARTS_KEY: parts}``."""
        inputs = [render_input(row, self.spec.size) for row in rows]
        groups: dict[Any, list[int]] = {}
        for index, item in enumerate(inputs):
            groups.setdefault(self.engine.batch_key(item.settings), []).append(index)
        outputs: list[np.ndarray | list[VideoPart] | None] = [None] * len(inputs)
        render = self.engine.render_or_split if self.splits else self.engine.render
        self.metrics.videos_in_flight(len(inputs))
        try:
            for indices in groups.values():
                for index, frames in zip(indices, render([inputs[i] for i in indices])):
                    outputs[index] = frames
        finally:
            self.metrics.videos_in_flight(0)
            self.metrics.sample_gpus()
        self.metrics.frames_rendered(sum(len(frames) for frames in outputs if isinstance(frames, np.ndarray)))
        empty = output_columns(self.spec.size)["rendered"]
        return [{"rendered": frames} if isinstance(frames, np.ndarray) else {"rendered": empty(), PARTS_KEY: frames}
                for frames in outputs]

    def render_parts(self, parts: Sequence[PartInput]) -> list[dict[str, Any]]:
        """``{"rendered": the part's frames}`` for each part of a split video, in order (any video's parts)."""
        groups: dict[Any, list[int]] = {}
        for index, item in enumerate(parts):
            groups.setdefault(self.engine.batch_key(item.video.settings), []).append(index)
        outputs: list[np.ndarray | None] = [None] * len(parts)
        self.metrics.videos_in_flight(len(parts))
        try:
            for indices in groups.values():
                for index, frames in zip(indices, self.engine.render_parts([parts[i] for i in indices])):
                    if len(frames) != parts[index].part.output_frames:
                        raise RuntimeError(f"the engine rendered {len(frames)} frames for a part of "
                                           f"{parts[index].part.output_frames}")
                    outputs[index] = frames
        finally:
            self.metrics.videos_in_flight(0)
            self.metrics.sample_gpus()
        self.metrics.frames_rendered(sum(len(frames) for frames in outputs))
        return [{"rendered": frames} for frames in outputs]
