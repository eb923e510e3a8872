"""The embedded default engine: landmark-driven 2D mesh warping of the reference, no weights, CPU.

For each video: retarget the driving clip's expression and head motion onto the reference's
landmarks (:mod:`engines.warp.retarget`; the head rotation from the two face tracks' solvePnP
angles, so a nod stays a nod whatever either face's starting pose), then render each frame by
warping the reference portrait (:mod:`engines.warp.portrait`).  A warped frame depends only on
its own target landmarks, so the engine needs no windows: each frame is rendered once, and there
are no seams.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from engines.base import Engine, EngineSpec, RenderInput
from engines.warp.portrait import PortraitRig, RigConfig
from engines.warp.retarget import RetargetConfig, retarget

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
    needs_driving_frames = False  # it moves the reference along the driving landmarks only
    default_fps = None
    settings_used = frozenset()  # no diffusion: seed, steps, guidance, prompt and LoRA mean nothing here

    def __init__(self, spec: EngineSpec, storage_options: Mapping[str, Any] | None = None,
                 config: WarpConfig = WarpConfig()) -> None:
        super().__init__(spec, storage_options)  # nothing to load
        self.config = config

    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        return [self.render_one(item) for item in inputs]

    def render_one(self, item: RenderInput) -> np.ndarray:
        """(T, size, size, 3) uint8 frames of one video."""
        _check_input(item, self.spec.size)
        started = time.perf_counter()
        rig = PortraitRig(item.reference, item.reference_face.landmarks[0], self.config.rig)
        targets = retarget(item.reference_face.landmarks[0], item.driving_face.landmarks, self.config.retarget,
                           reference_pose=item.reference_face.rotation[0], driving_pose=item.driving_face.rotation,
                           image_size=item.reference_face.image_size)

        rig.prepare(targets)
        frames = np.empty((len(targets),) + item.reference.shape, dtype=np.uint8)
        for t, target in enumerate(targets):
            frames[t] = rig.render(target)
        log.debug("warp %s: %d frames in %.2fs", item.meme_id, len(frames), time.perf_counter() - started)
        return frames


def _check_input(item: RenderInput, size: int) -> None:
    if item.reference.shape != (size, size, 3) or item.reference.dtype != np.uint8:
        raise WarpInputError(f"{item.meme_id}: reference must be ({size}, {size}, 3) uint8, "
                             f"got {item.reference.shape} {item.reference.dtype}")
    if len(item.reference_face) != 1:
        raise WarpInputError(f"{item.meme_id}: reference face must have one frame, got {len(item.reference_face)}")
    if tuple(item.reference_face.image_size) != (size, size) or tuple(item.driving_face.image_size) != (size, size):
        raise WarpInputError(f"{item.meme_id}: face tracks must be in {size}x{size} crop coordinates, got "
                             f"{item.reference_face.image_size} and {item.driving_face.image_size}")
    if len(item.driving_frames) and len(item.driving_frames) != len(item.driving_face):
        raise WarpInputError(f"{item.meme_id}: {len(item.driving_frames)} driving frames but "
                             f"{len(item.driving_face)} driving face entries")
