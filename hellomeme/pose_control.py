"""The head-pose control image: a small square turned with the head, projected, 4 edges in 4 colours.

HelloMeme draws, for every frame, a 10 cm square placed at the head's position and rotated by
the head's rotation, projected with its 3DMM camera onto a black canvas, each edge 15 px wide
in its own colour so the control net can tell up from down and left from right.

Conventions (HelloMeme's 3DMM camera, y up, the camera looking down -z, units about metres):
``rotation`` is (pitch, yaw, roll) in radians, applied as R = Rz(roll) Ry(yaw) Rx(pitch);
pitch > 0 tips the face down, yaw > 0 turns it towards the image's right, roll > 0 tilts it
counter-clockwise on screen. ``translation`` is the head origin in camera space, z < 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Hello3DMM's camera: focal length in pixels for its 512 px crops, and the square's half side.
HELLOMEME_FOCAL_LENGTH = 4828.598903609935
SQUARE_HALF_SIDE = 0.05
REFERENCE_CANVAS = 512
LINE_WIDTH_AT_512 = 15
# Edge colours in RGB (HelloMeme draws with OpenCV in BGR: green, blue, red, magenta once in RGB).
EDGE_COLOURS_RGB = ((0, 255, 0), (0, 0, 255), (255, 0, 0), (255, 0, 255))
# Side of the square relative to the larger side of the face-landmark box. HelloMeme's 3DMM
# puts a face of extent ~0.15 (metres) at the square's 0.1: our estimate, see estimate_translation.
SQUARE_SIDE_PER_FACE_EXTENT = 0.66
SQUARE_SIDE_CM = 100 * 2 * SQUARE_HALF_SIDE  # the 3DMM's units read as metres


@dataclass(frozen=True)
class HeadPoseTrack:
    """Per-frame head pose in HelloMeme's 3DMM convention (see module docstring)."""

    rotation: np.ndarray  # (T, 3) pitch, yaw, roll radians
    translation: np.ndarray  # (T, 3)

    def __post_init__(self) -> None:
        rotation, translation = np.asarray(self.rotation), np.asarray(self.translation)
        if rotation.ndim != 2 or rotation.shape[1] != 3 or translation.shape != rotation.shape:
            raise ValueError(
                f"rotation and translation must both be (T, 3), got {rotation.shape} and {translation.shape}"
            )

    def __len__(self) -> int:
        return int(np.asarray(self.rotation).shape[0])


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """(3,) pitch, yaw, roll -> the 3x3 matrix that right-multiplies row vectors (v @ M)."""
    pitch, yaw, roll = (float(a) for a in angles)
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (rz @ ry @ rx).T


def project_square(rotation: np.ndarray, translation: np.ndarray, canvas: int) -> np.ndarray:
    """Pixel corners (4, 2) of the pose square on a ``canvas``-pixel image, y down.

    As in HelloMeme, the square and the translation's depth are scaled by 0.05 and so is the focal
    length: the square's size on screen tracks the head's distance while its perspective is strong.
    """
    corners = np.array([[-1, -1, 0], [-1, 1, 0], [1, 1, 0], [1, -1, 0]], dtype=np.float64) * SQUARE_HALF_SIDE
    offset = np.asarray(translation, dtype=np.float64).copy()
    offset[2] *= 0.05
    points = corners @ rotation_matrix(rotation) + offset
    focal = HELLOMEME_FOCAL_LENGTH * 0.05
    depth = -points[:, 2]
    if np.any(depth <= 0):
        raise ValueError(f"pose square is behind the camera (translation {translation})")
    x = focal * points[:, 0] / depth + canvas * 0.5
    y = focal * points[:, 1] / depth + canvas * 0.5
    return np.stack([x, canvas - y], axis=1)


def draw_pose_image(rotation: np.ndarray, translation: np.ndarray, canvas: int = REFERENCE_CANVAS) -> np.ndarray:
    """(canvas, canvas, 3) uint8 RGB control image for one frame."""
    corners = project_square(rotation, translation, canvas).astype(np.int32)
    width = max(1, round(LINE_WIDTH_AT_512 * canvas / REFERENCE_CANVAS))
    image = np.zeros((canvas, canvas, 3), dtype=np.uint8)
    for edge, colour in enumerate(EDGE_COLOURS_RGB):
        start, end = corners[edge], corners[(edge + 1) % 4]
        cv2.line(image, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), colour, width)
    return image


def draw_pose_images(track: HeadPoseTrack, canvas: int = REFERENCE_CANVAS) -> np.ndarray:
    """(T, canvas, canvas, 3) uint8 RGB control images."""
    return np.stack([draw_pose_image(r, t, canvas) for r, t in zip(track.rotation, track.translation)])


def estimate_translation(landmarks: np.ndarray, canvas: int) -> np.ndarray:
    """HelloMeme-convention translation that puts the square on the face, from (N, >=2) pixel landmarks.

    HelloMeme gets the translation from its own 3DMM. Without a usable 3-D head pose we place
    the square from the landmarks: centred on the landmark box, its side
    ``SQUARE_SIDE_PER_FACE_EXTENT`` of the box's larger side (the 3DMM's face is ~0.15 wide
    against the square's 0.1). Returns (3,).
    """
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float(np.max(high - low))
    if extent <= 0:
        raise ValueError("face landmarks span no area")
    return _translation_for_square((low + high) / 2, SQUARE_SIDE_PER_FACE_EXTENT * extent, canvas)


def rotation_from_opencv(rotation: np.ndarray) -> np.ndarray:
    """(T, 3) pitch, yaw, roll of ``Rz Ry Rx`` in OpenCV camera axes (y down, z forward) -> HelloMeme's.

    Flipping y and z (S = diag(1, -1, -1)) gives S Rz(r) Ry(y) Rx(p) S = Rz(-r) Ry(-y) Rx(p):
    pitch keeps its sign, yaw and roll change theirs.
    """
    return np.asarray(rotation, dtype=np.float64) * np.array([1.0, -1.0, -1.0])


def translation_from_camera(translation_cm: np.ndarray, focal_px: float, canvas: int) -> np.ndarray:
    """HelloMeme-convention translation drawing the square where an OpenCV-camera head pose puts the head.

    ``translation_cm`` is (x right, y down, z forward) in cm for a pinhole camera of ``focal_px``
    centred on the canvas: the square is centred on the head origin's projection with the side a
    ``SQUARE_SIDE_CM`` square has at that distance. Returns (3,).
    """
    x, y, z = (float(v) for v in translation_cm)
    if z <= 0:
        raise ValueError(f"head is not in front of the camera (z = {z})")
    centre = np.array([focal_px * x / z + canvas * 0.5, focal_px * y / z + canvas * 0.5])
    return _translation_for_square(centre, focal_px * SQUARE_SIDE_CM / z, canvas)


def _translation_for_square(centre: np.ndarray, side: float, canvas: int) -> np.ndarray:
    """Translation whose frontal square is centred on ``centre`` (pixels, y down) with ``side`` pixels."""
    depth = HELLOMEME_FOCAL_LENGTH * 2 * SQUARE_HALF_SIDE / side
    t_x = (centre[0] - canvas * 0.5) * depth / HELLOMEME_FOCAL_LENGTH
    t_y = (canvas * 0.5 - centre[1]) * depth / HELLOMEME_FOCAL_LENGTH
    return np.array([t_x, t_y, -depth])


def driving_pose_track(
    driving_rotation: np.ndarray,
    driving_translation: np.ndarray,
    reference_translation: np.ndarray,
    trans_ratio: float,
) -> HeadPoseTrack:
    """HelloMeme's rule: the driver's rotation, at the reference's position moved by ``trans_ratio`` of the driver's
    motion (relative to the driver's first frame)."""
    driving_translation = np.asarray(driving_translation, dtype=np.float64)
    moved = np.asarray(reference_translation, dtype=np.float64)[None] + (
        driving_translation - driving_translation[:1]
    ) * float(trans_ratio)
    return HeadPoseTrack(rotation=np.asarray(driving_rotation, dtype=np.float64), translation=moved)
