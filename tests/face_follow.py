"""Does a rendered face follow its driving clip?  Signals measured with mediapipe on both videos.

Used by the integration tests and the benchmark: mouth opening, eye opening, head yaw and head
pitch are measured frame by frame on the output and on the driving clip (both decoded at the
output's rate), and compared with Pearson's r.  A signal counts only when it moves beyond its
noise floor in the clip: a clip that never blinks says nothing about blinking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hellomeme_batch import faces, media

# Standard deviation below which a signal is measurement noise, not motion (normalised units for
# the openings, radians for the angles: 0.035 rad is 2 degrees).
NOISE_FLOORS = {"mouth": 0.03, "eyes": 0.012, "yaw": 0.035, "pitch": 0.035}


@dataclass(frozen=True)
class SignalMatch:
    name: str
    clip_std: float
    pearson: float | None  # None when the signal stays within its noise floor in the clip


def signals(track: faces.FaceTrack) -> dict[str, np.ndarray]:
    return {
        "mouth": faces.mouth_opening(track),
        "eyes": faces.eye_opening(track),
        "yaw": faces.head_yaw(track),
        "pitch": faces.head_pitch(track),
    }


def track_video(path: str, tracker: faces.FaceTracker, fps: float | None = None) -> faces.FaceTrack:
    clip = media.decode_clip(path, fps, media.MediaLimits())
    return tracker.track(clip.frames)


def compare(output_path: str, driving_path: str, tracker: faces.FaceTracker) -> list[SignalMatch]:
    out_track = track_video(output_path, tracker)
    clip_track = track_video(driving_path, tracker)
    count = min(len(out_track), len(clip_track))
    out_signals, clip_signals = signals(out_track), signals(clip_track)
    matches = []
    for name, floor in NOISE_FLOORS.items():
        a, b = out_signals[name][:count], clip_signals[name][:count]
        std = float(np.std(b))
        pearson = float(np.corrcoef(a, b)[0, 1]) if std > floor and np.std(a) > 0 else None
        if std > floor and np.std(a) == 0:
            pearson = 0.0
        matches.append(SignalMatch(name=name, clip_std=std, pearson=pearson))
    return matches
