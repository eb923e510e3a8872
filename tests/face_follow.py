"""Does a rendered video's face follow its driving clip?  Both are tracked with mediapipe and compared
signal by signal with :func:`faces.tracking.follow_correlations` (mouth and eye opening, head
yaw and pitch; a signal counts only where it moves beyond its noise floor in the clip)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from faces import tracking
from mediaio import clips, media


def read_clip(path: Path) -> np.ndarray:
    """(T, H, W, 3) RGB frames of a video, read with OpenCV (independently of the product's decoder)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def _track(path: str, tracker: tracking.FaceTracker) -> tracking.FaceTrack:
    return tracker.track(clips.decode_clip(path, None, media.MediaLimits()).frames)


def _first(track: tracking.FaceTrack, count: int) -> tracking.FaceTrack:
    return replace(track, landmarks=track.landmarks[:count], rotation=track.rotation[:count],
                   translation=track.translation[:count], detected=track.detected[:count])


def compare(output_path: str, driving_path: str, tracker: tracking.FaceTracker) -> dict[str, float | None]:
    """Pearson r per signal between the clip and the output (None where the clip does not move it)."""
    output, driving = _track(output_path, tracker), _track(driving_path, tracker)
    count = min(len(output), len(driving))
    return tracking.follow_correlations(_first(driving, count), _first(output, count))
