"""The render pool: an engine built once per actor renders many videos.

A call gets the rows of one Ray Data batch (one or more videos).  Rows whose settings share the
engine's batch key (for HelloMeme: the same LoRA) are rendered in one engine call, so a GPU engine
fills its batches with windows of several videos.  If a call fails, the pipeline's error boundary
runs its rows again one by one, so a bad row fails alone.  The actor records frames rendered and,
for GPU engines, the GPU's memory and utilisation in the job's metrics.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from actors.face_columns import track_from_columns
from engines.base import EngineSpec, RenderInput, RowSettings
from engines.registry import create_engine
from reporting.metrics import worker_metrics

logger = logging.getLogger(__name__)

# The columns the render stage reads and no later stage needs: the pipeline drops them after it.
CONSUMED_COLUMNS = ("reference_crop", "reference_landmarks", "reference_rotation", "reference_translation",
                    "reference_detected", "driving_crops", "driving_landmarks", "driving_rotation",
                    "driving_translation", "driving_detected")


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

    def __init__(self, spec: EngineSpec, storage_options: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.engine = create_engine(spec, storage_options)
        self.metrics = worker_metrics()
        if self.engine.needs_gpu:
            self.metrics.start_gpu_sampler()

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``{"rendered": frames}`` for each row, in order."""
        inputs = [render_input(row, self.spec.size) for row in rows]
        groups: dict[Any, list[int]] = {}
        for index, item in enumerate(inputs):
            groups.setdefault(self.engine.batch_key(item.settings), []).append(index)
        outputs: list[np.ndarray | None] = [None] * len(inputs)
        self.metrics.videos_in_flight(len(inputs))
        try:
            for indices in groups.values():
                for index, frames in zip(indices, self.engine.render([inputs[i] for i in indices])):
                    outputs[index] = frames
        finally:
            self.metrics.videos_in_flight(0)
            self.metrics.sample_gpus()
        self.metrics.frames_rendered(sum(len(frames) for frames in outputs))
        return [{"rendered": frames} for frames in outputs]
