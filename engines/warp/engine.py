"""The embedded default engine: landmark-driven 2D mesh warping of the reference, no weights, CPU.

For each video: retarget the driving clip's expression and head motion onto the reference's
landmarks (:mod:`engines.warp.retarget`; the head rotation from the two face tracks' solvePnP
angles, so a nod stays a nod whatever either face's starting pose), then render each frame by
warping the reference portrait (:mod:`engines.warp.portrait`).  Frames are produced window by window and joined with
:func:`hellomeme.windows.blend_windows`, the mechanism every engine shares; a warped
frame does not depend on its window, so each frame is rendered once and shared by the windows
that hold it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from engines.base import Engine, EngineOptions, RenderInput
from engines.warp.portrait import PortraitRig, RigConfig
from engines.warp.retarget import RetargetConfig, retarget
from hellomeme.windows import blend_windows

log = logging.getLogger(__name__)


class WarpInputError(ValueError):
    """A render input the warp engine cannot use (shapes that disagree)."""


@dataclass(frozen=True)
class WarpConfig:
    """Tuning of the warp engine; the defaults are what the product uses."""

    retarget: RetargetConfig = field(default_factory=RetargetConfig)
    rig: RigConfig = field(default_factory=RigConfig)


class WarpEngine(Engine):
    """Animates the reference crop by moving a mesh of its landmarks along the driving face."""

    name = "warp"
    needs_gpu = False
    window_size = 16
    window_overlap = 4
    default_fps = None

    def __init__(self, options: EngineOptions = EngineOptions(), config: WarpConfig = WarpConfig()) -> None:
        self.options = options  # nothing to load: weights, device and dtype do not apply
        self.config = config

    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        return [self.render_one(item) for item in inputs]

    def render_one(self, item: RenderInput) -> np.ndarray:
        """(T, size, size, 3) uint8 frames of one video."""
        _check_input(item)
        started = time.perf_counter()
        rig = PortraitRig(item.reference, item.reference_face.landmarks[0], self.config.rig)
        targets = retarget(item.reference_face.landmarks[0], item.driving_face.landmarks, self.config.retarget,
                           reference_pose=item.reference_face.rotation[0], driving_pose=item.driving_face.rotation,
                           image_size=item.reference_face.image_size)

        num_frames = len(targets)
        frames = np.empty((num_frames,) + item.reference.shape, dtype=np.uint8)
        rendered = np.zeros(num_frames, dtype=bool)
        window_frames = []
        for window in item.windows.windows:
            for t in window:
                if not rendered[t]:
                    frames[t] = rig.render(targets[t])
                    rendered[t] = True
            window_frames.append(frames[window.start:window.stop])
        out = blend_windows(item.windows, window_frames)
        log.debug("warp %s: %d frames in %.2fs", item.meme_id, num_frames, time.perf_counter() - started)
        return out


def _check_input(item: RenderInput) -> None:
    size = item.settings.size
    if item.reference.shape != (size, size, 3) or item.reference.dtype != np.uint8:
        raise WarpInputError(f"{item.meme_id}: reference must be ({size}, {size}, 3) uint8, "
                             f"got {item.reference.shape} {item.reference.dtype}")
    if len(item.reference_face) != 1:
        raise WarpInputError(f"{item.meme_id}: reference face must have one frame, got {len(item.reference_face)}")
    if tuple(item.reference_face.image_size) != (size, size) or tuple(item.driving_face.image_size) != (size, size):
        raise WarpInputError(f"{item.meme_id}: face tracks must be in {size}x{size} crop coordinates, got "
                             f"{item.reference_face.image_size} and {item.driving_face.image_size}")
    if len(item.driving_frames) != len(item.driving_face):
        raise WarpInputError(f"{item.meme_id}: {len(item.driving_frames)} driving frames but "
                             f"{len(item.driving_face)} driving face entries")
    if item.windows.num_frames != len(item.driving_face):
        raise WarpInputError(f"{item.meme_id}: window plan covers {item.windows.num_frames} frames, "
                             f"driving face has {len(item.driving_face)}")
