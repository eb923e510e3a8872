"""The render actor pool: an engine built once per actor renders many videos.

Each video is cut into overlapping frame windows (size W, overlap K: the engine's own unless the
job says otherwise) and the engine renders them; overlapping windows are blended and stitched back
into one video here, inside this stage, so no global groupby (a barrier) is needed.  A batch holds
one or more videos; the engine may render their windows together (the diffusion engine fills the
GPU that way).  If a batch fails, its videos are rendered again one by one, so a bad row fails alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np

from engines.base import EngineOptions, RenderInput, RenderSettings
from engines.registry import create_engine
from reporting.metrics import worker_metrics
from hellomeme.windows import WindowPlan
from pipelines.rows import PENDING, MemeWork, pack_batch, run_stage, unpack_batch

logger = logging.getLogger(__name__)


def render_input(work: MemeWork, size: int) -> RenderInput:
    """The engine's view of a row."""
    spec = work.spec
    defaults = RenderSettings()
    settings = RenderSettings(
        seed=spec.seed if spec.seed is not None else defaults.seed,
        steps=spec.steps if spec.steps is not None else defaults.steps,
        guidance=spec.guidance if spec.guidance is not None else defaults.guidance,
        prompt=spec.prompt if spec.prompt is not None else defaults.prompt,
        size=size,
    )
    return RenderInput(
        meme_id=work.id,
        reference=work.reference,
        reference_face=work.reference_face,
        driving_frames=work.driving_frames,
        driving_face=work.driving_face,
        windows=work.windows,
        settings=settings,
    )


def _with_frames(work: MemeWork, frames: np.ndarray) -> MemeWork:
    return replace(work, frames=frames, reference=None, driving_frames=None)


class FrameRenderer:
    """Ray Data callable class wrapping one engine instance for the actor's life.

    It records windows in flight, frames rendered and (for GPU engines) the GPU's memory and
    utilisation in the job's metrics.
    """

    def __init__(self, engine: str, options: EngineOptions, size: int = 512, window: int | None = None,
                 overlap: int | None = None) -> None:
        self.size = size
        self.engine = create_engine(engine, options)
        self.window = window or self.engine.window_size
        self.overlap = overlap if overlap is not None else min(self.engine.window_overlap, self.window - 1)
        self.metrics = worker_metrics()
        if self.engine.needs_gpu:
            self.metrics.start_gpu_sampler()

    def plan_windows(self, work: MemeWork) -> MemeWork:
        """The row's overlapping frame windows."""
        return replace(work, windows=WindowPlan(num_frames=len(work.driving_face), size=self.window,
                                                overlap=self.overlap))

    def _render_one(self, work: MemeWork) -> MemeWork:
        (frames,) = self.engine.render([render_input(work, self.size)])
        return _with_frames(work, frames)

    def render(self, works: list[MemeWork]) -> list[MemeWork]:
        """Render the pending works of a batch; the others pass through unchanged."""
        works = [run_stage("windows", self.plan_windows, work) for work in works]
        self.metrics.windows_in_flight(sum(len(work.windows.starts) for work in works
                                           if work.status == PENDING and work.windows is not None))
        try:
            works = self._render(works)
        finally:
            self.metrics.windows_in_flight(0)
            self.metrics.sample_gpus()
        self.metrics.frames_rendered(sum(len(work.frames) for work in works if work.frames is not None))
        return works

    def _render(self, works: list[MemeWork]) -> list[MemeWork]:
        pending = [i for i, work in enumerate(works) if work.status == PENDING]
        if len(pending) > 1:
            started = time.perf_counter()
            try:
                outputs = self.engine.render([render_input(works[i], self.size) for i in pending])
            except Exception:  # isolate the bad row: retry each video alone below
                logger.warning("batch render failed; rendering its %d videos one by one", len(pending), exc_info=True)
            else:
                share = (time.perf_counter() - started) / len(pending)
                for i, frames in zip(pending, outputs):
                    works[i] = _with_frames(works[i], frames).timed("render", share)
                return works
        return [run_stage("render", self._render_one, work) for work in works]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        return pack_batch(self.render(unpack_batch(batch)))
