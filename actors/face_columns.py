"""A face track as row columns, and back: how face tracks travel between the prepare and render pools.

A track of T frames becomes four tensor columns, ``{prefix}_landmarks`` (T, 478, 3) float32,
``{prefix}_rotation`` (T, 3), ``{prefix}_translation`` (T, 3) and ``{prefix}_detected`` (T,) bool;
its image size is the crop size, which every stage knows from the engine spec.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from faces.tracking import NUM_LANDMARKS, FaceTrack


def track_columns(prefix: str, track: FaceTrack) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_landmarks": np.ascontiguousarray(track.landmarks, dtype=np.float32),
        f"{prefix}_rotation": np.ascontiguousarray(track.rotation, dtype=np.float32),
        f"{prefix}_translation": np.ascontiguousarray(track.translation, dtype=np.float32),
        f"{prefix}_detected": np.ascontiguousarray(track.detected, dtype=bool),
    }


def empty_track_columns(prefix: str) -> dict[str, Callable[[], np.ndarray]]:
    """The columns of a track with no frames (a row that did not reach the pose stage)."""
    return {
        f"{prefix}_landmarks": lambda: np.zeros((0, NUM_LANDMARKS, 3), np.float32),
        f"{prefix}_rotation": lambda: np.zeros((0, 3), np.float32),
        f"{prefix}_translation": lambda: np.zeros((0, 3), np.float32),
        f"{prefix}_detected": lambda: np.zeros((0,), bool),
    }


def track_from_columns(row: Mapping[str, Any], prefix: str, size: int) -> FaceTrack:
    """The track stored under ``prefix`` in a row, in ``size`` x ``size`` crop pixels."""
    return FaceTrack(
        landmarks=np.asarray(row[f"{prefix}_landmarks"], dtype=np.float32),
        rotation=np.asarray(row[f"{prefix}_rotation"], dtype=np.float32),
        translation=np.asarray(row[f"{prefix}_translation"], dtype=np.float32),
        detected=np.asarray(row[f"{prefix}_detected"], dtype=bool),
        image_size=(size, size),
    )
