"""The engine interface that the render actor pool drives.

An engine is built once per actor (weights loaded once) and renders many videos.  It sees
everything in one coordinate frame: the reference portrait and the driving frames are both
stable square face crops of ``settings.size`` pixels, and the landmarks of both face tracks are
in those crops' pixel coordinates.  The engine renders window by window (``RenderInput.windows``)
and returns one finished frame sequence per video; windows of several videos may be batched
together by engines that profit from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np

from faces.tracking import FaceTrack
from hellomeme.windows import WindowPlan


@dataclass(frozen=True)
class RenderSettings:
    """Per-video settings from the manifest row (diffusion settings are ignored by the warp engine)."""

    seed: int = 0
    steps: int = 25
    guidance: float = 1.5
    prompt: str = ""
    size: int = 512


@dataclass(frozen=True)
class RenderInput:
    """One video to render."""

    meme_id: str
    reference: np.ndarray  # (size, size, 3) uint8 RGB: the reference portrait's face crop
    reference_face: FaceTrack  # one frame, landmarks in ``reference`` pixel coordinates
    driving_frames: np.ndarray  # (T, size, size, 3) uint8 RGB: the driving clip's stable face crop
    driving_face: FaceTrack  # T frames, landmarks in ``driving_frames`` pixel coordinates
    windows: WindowPlan  # overlapping windows over the T frames
    settings: RenderSettings = field(default_factory=RenderSettings)


@dataclass(frozen=True)
class EngineOptions:
    """How an engine is built in each actor (passed by value, so keep it small: paths, not weights)."""

    weights_dir: str | None = None
    device: str = "auto"  # "auto" picks cuda when the actor was given a GPU
    dtype: str = "auto"  # "auto": bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU
    compile: bool = False
    tiny: bool = False  # random-weight tiny config, for tests and CPU benchmarks
    random_weights: bool = False  # full size with random weights, for GPU benchmarks (timing needs no real values)


class Engine(ABC):
    """Renders videos from :class:`RenderInput`; subclasses declare their needs as class attributes."""

    name: ClassVar[str]
    needs_gpu: ClassVar[bool] = False
    window_size: ClassVar[int] = 12
    window_overlap: ClassVar[int] = 4
    # Generation frame rate when the manifest row gives none; None renders at the driving clip's rate.
    default_fps: ClassVar[float | None] = None

    @classmethod
    def check_ready(cls, options: EngineOptions) -> None:
        """Raise before any row is decoded if this engine cannot run with ``options`` (missing weights)."""

    @abstractmethod
    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        """Render each input to (T, size, size, 3) uint8 RGB frames, one array per input, same order."""
