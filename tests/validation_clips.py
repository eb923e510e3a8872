"""A validation set of driving clips broader than the shared eight, built from the demo portraits.

Scripted head motions (:data:`jobs.demo_media.MOTION_SCRIPTS`: small and large nods, small and
large turns, tilts, all at once) performed by the two portraits that ship with scikit-image and
matplotlib, then changed the way clips differ in the wild: mirrored (the head turned the other
way), cropped off-centre into a 16:9 frame, the face shrunk inside the frame, re-timed to
other frame rates.  Each clip is paired with a reference that is not its driver (or its
mirror image), so no clip animates its own face.  Nothing here needs ../shared.

:func:`follow` runs a clip through the warp engine as the pipeline would (track, stable crop,
render, track the output) and returns the per-signal correlations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from engines.base import RenderInput
from engines.registry import engine_spec
from engines.warp import WarpEngine
from faces import tracking
from faces.tracking import FaceTrack, FaceTracker, crop_frames, stable_crop_box
from jobs.demo_media import MOTION_SCRIPTS, demo_portraits, synthesize_driving_clip

SECONDS = 3.0
FPS = 15.0


def mirrored(frames: np.ndarray, fps: float) -> tuple[np.ndarray, float]:
    return np.ascontiguousarray(frames[:, :, ::-1]), fps


def off_centre_wide(frames: np.ndarray, fps: float) -> tuple[np.ndarray, float]:
    """The clip in a 16:9 frame, the face left of centre and lower (a webcam framing)."""
    count, height, width, _ = frames.shape
    canvas = np.empty((count, height, width * 16 // 9, 3), dtype=np.uint8)
    canvas[:] = frames[:, :, :1].mean(axis=(1, 2), keepdims=True).astype(np.uint8)
    x0 = width // 5
    canvas[:, :, x0:x0 + width] = frames
    return canvas, fps


def shrunk(frames: np.ndarray, fps: float, factor: float = 0.6) -> tuple[np.ndarray, float]:
    """The face smaller in a frame of the same size (the rest edge-padded)."""
    count, height, width, _ = frames.shape
    small = (int(round(width * factor)), int(round(height * factor)))
    out = np.empty_like(frames)
    top, left = (height - small[1]) // 3, (width - small[0]) // 2
    for t in range(count):
        scaled = cv2.resize(frames[t], small, interpolation=cv2.INTER_AREA)
        out[t] = cv2.copyMakeBorder(scaled, top, height - small[1] - top, left, width - small[0] - left,
                                    cv2.BORDER_REPLICATE)
    return out, fps


def retimed(frames: np.ndarray, fps: float, new_fps: float) -> tuple[np.ndarray, float]:
    """The clip resampled to ``new_fps`` by taking the nearest frame (dropping or repeating)."""
    count = max(2, int(round(len(frames) * new_fps / fps)))
    index = np.minimum(np.round(np.arange(count) * fps / new_fps).astype(int), len(frames) - 1)
    return frames[index], new_fps


@dataclass(frozen=True)
class ClipSpec:
    """How one validation clip is made: who drives, which script, which change, who is animated."""

    name: str
    driver: str
    script: str
    reference: str
    variant: Callable[[np.ndarray, float], tuple[np.ndarray, float]] | None = None
    fps: float = FPS
    mirror_reference: bool = False


SPECS: tuple[ClipSpec, ...] = (
    ClipSpec("nod_small", "astronaut", "nod_small", "grace_hopper"),
    ClipSpec("nod_small_mirrored", "grace_hopper", "nod_small", "astronaut", mirrored),
    ClipSpec("nod_large_wide", "grace_hopper", "nod_large", "astronaut", off_centre_wide),
    ClipSpec("turn_small_25fps", "astronaut", "turn_small", "grace_hopper", fps=25.0),
    ClipSpec("turn_shrunk", "astronaut", "turn", "grace_hopper", shrunk, mirror_reference=True),
    ClipSpec("roll", "grace_hopper", "roll", "astronaut", mirrored),
    ClipSpec("combined", "astronaut", "combined", "grace_hopper"),
    ClipSpec("combined_10fps_mirrored", "grace_hopper", "combined", "astronaut",
             lambda frames, fps: retimed(*mirrored(frames, fps), 10.0), mirror_reference=True),
)

# What each script moves: the signals a clip made from it must judge (move beyond their floors).
MOVES: dict[str, frozenset[str]] = {
    "nod_small": frozenset({"pitch"}),
    "nod_large": frozenset({"pitch", "pitch_proxy"}),
    "turn_small": frozenset({"yaw"}),
    "turn": frozenset({"yaw", "yaw_proxy"}),
    "roll": frozenset({"roll"}),
    "combined": frozenset({"mouth", "pitch", "yaw", "roll", "yaw_proxy", "pitch_proxy"}),
}


@dataclass(frozen=True)
class ValidationClip:
    spec: ClipSpec
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB driving frames
    fps: float
    reference: np.ndarray  # the reference portrait (whole image)


def build(spec: ClipSpec, tracker: FaceTracker, portraits: dict[str, np.ndarray] | None = None,
          seconds: float = SECONDS) -> ValidationClip:
    portraits = demo_portraits() if portraits is None else portraits
    frames, fps = synthesize_driving_clip(portraits[spec.driver], MOTION_SCRIPTS[spec.script], fps=spec.fps,
                                          seconds=seconds, tracker=tracker)
    if spec.variant is not None:
        frames, fps = spec.variant(frames, fps)
    reference = portraits[spec.reference]
    if spec.mirror_reference:
        reference = np.ascontiguousarray(reference[:, ::-1])
    return ValidationClip(spec=spec, frames=frames, fps=fps, reference=reference)


@dataclass(frozen=True)
class FollowResult:
    correlations: dict[str, float | None]
    driving: FaceTrack  # in driving-crop pixels
    output: FaceTrack  # tracked on the rendered frames
    frames: np.ndarray  # rendered frames
    driving_frames: np.ndarray  # driving crops


def render_input(meme_id: str, reference: np.ndarray, reference_face: FaceTrack, driving_frames: np.ndarray,
                 driving_face: FaceTrack) -> RenderInput:
    """A RenderInput for the warp engine."""
    return RenderInput(meme_id=meme_id, reference=reference, reference_face=reference_face,
                       driving_frames=driving_frames, driving_face=driving_face)


def follow(driving_frames: np.ndarray, reference_image: np.ndarray, tracker: FaceTracker,
           engine: WarpEngine | None = None, size: int = 512, meme_id: str = "validation") -> FollowResult:
    """Render ``driving_frames`` onto ``reference_image`` as the pipeline would; how well the output follows."""
    engine = WarpEngine(engine_spec("warp", size=size)) if engine is None else engine
    track = tracker.track(driving_frames)
    box = stable_crop_box(track)
    driving = track.cropped(box, size)
    crops = crop_frames(driving_frames, box, size)
    reference_box = stable_crop_box(tracker.detect(reference_image))
    reference = crop_frames(reference_image, reference_box, size)
    reference_face = tracker.detect(reference)
    out = engine.render([render_input(meme_id, reference, reference_face, crops, driving)])[0]
    rendered = tracker.track(out)
    correlations = tracking.follow_correlations(driving, rendered, signals=tracking.motion_signals)
    return FollowResult(correlations=correlations, driving=driving, output=rendered, frames=out, driving_frames=crops)
