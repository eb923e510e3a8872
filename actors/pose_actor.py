"""The pose actor pool: face landmarks and head pose of the reference and of every driving frame.

mediapipe's face mesh is loaded once per actor and reused for every clip the actor sees.  Each
row leaves this stage with stable square face crops (reference and driving frames) at the
engine's resolution and face tracks in those crops' coordinates; the full-size frames are
dropped here so they travel no further.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from hellomeme_batch import faces
from hellomeme_batch.work import MemeWork, pack_batch, run_stage, unpack_batch


def fit_inside(box: faces.CropBox, height: int, width: int) -> faces.CropBox:
    """Shrink and shift a crop so it lies inside the image where it can (no padded borders on a portrait)."""
    side = min(box.side, float(height), float(width))
    x0 = min(max(box.x0 + (box.side - side) / 2, 0.0), width - side)
    y0 = min(max(box.y0 + (box.side - side) / 2, 0.0), height - side)
    return faces.CropBox(x0=x0, y0=y0, side=side)


class PoseExtractor:
    """Ray Data callable class: batch of packed rows in, the same rows with crops and tracks out."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.tracker = faces.FaceTracker()

    def extract(self, work: MemeWork) -> MemeWork:
        reference_track = self.tracker.detect(work.reference_image)
        height, width = work.reference_image.shape[:2]
        reference_box = fit_inside(faces.stable_crop_box(reference_track), height, width)
        reference = faces.crop_frames(work.reference_image[None], reference_box, self.size)[0]

        clip = work.clip
        driving_track = self.tracker.track(clip.frames)
        driving_box = faces.stable_crop_box(driving_track)
        driving_frames = faces.crop_frames(clip.frames, driving_box, self.size)
        return replace(
            work,
            reference=reference,
            reference_face=reference_track.cropped(reference_box, self.size),
            driving_frames=driving_frames,
            driving_face=driving_track.cropped(driving_box, self.size),
            reference_image=None,
            clip=replace(clip, frames=np.empty((0,), dtype=np.uint8)),
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        return pack_batch([run_stage("pose", self.extract, work) for work in unpack_batch(batch)])
