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

from faces import tracking
from mediaio.storage import redact
from pipelines.rows import MemeWork, pack_batch, run_stage, unpack_batch


class InputFaceError(Exception):
    """No usable face in one of a row's inputs; the message names the input."""


class PoseExtractor:
    """Ray Data callable class: batch of packed rows in, the same rows with crops and tracks out."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.tracker = tracking.FaceTracker()

    def extract(self, work: MemeWork) -> MemeWork:
        try:
            reference_track = self.tracker.detect(work.reference_image)
        except tracking.FaceError as exc:
            raise InputFaceError(f"reference {redact(work.spec.reference_uri)}: {exc}") from None
        reference_box = tracking.stable_crop_box(reference_track)  # kept inside the image: no padded borders
        reference = tracking.crop_frames(work.reference_image[None], reference_box, self.size)[0]

        clip = work.clip
        try:
            driving_track = self.tracker.track(clip.frames)
        except tracking.FaceError as exc:
            raise InputFaceError(f"driving video {redact(work.spec.driving_uri)}: {exc}") from None
        driving_box = tracking.stable_crop_box(driving_track)
        driving_frames = tracking.crop_frames(clip.frames, driving_box, self.size)
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
