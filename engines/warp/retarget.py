"""Where the reference's landmarks go in each frame: the driving clip's motion, moved onto another face.

Two parts, both relative to the driving clip's first frame so that the reference's own
expression and pose are the starting point:

* head motion: per frame, the 3D similarity (scale, rotation, translation) that takes frame 0's
  rigid landmarks onto frame t's;
* expression: frame t's landmarks with that head motion undone, minus frame 0's -- offsets in a
  face-aligned frame -- scaled and rotated into the reference's face frame by the similarity
  between the driving frame 0 and the reference.

The reference's landmarks plus the offsets, moved by the head motion about the reference's face
centre, are the targets.  Mediapipe's z is in pixels like x, so all of it is plain 3D geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hellomeme_batch.faces import FaceIndex


class RetargetError(ValueError):
    """Landmark arrays with the wrong shape."""


@dataclass(frozen=True)
class RetargetConfig:
    """Gains on the driving clip's motion (1.0 copies it)."""

    expression_gain: float = 1.0
    rotation_gain: float = 1.0
    translation_gain: float = 1.0
    scale_gain: float = 1.0
    # Gaussian sigma (frames) smoothing the expression offsets against landmark jitter; blinks
    # last 2-4 frames at 15 fps, so keep it below 1.
    smoothing_sigma: float = 0.6


@dataclass(frozen=True)
class Similarity3D:
    """``y = scale * rotation @ x + translation`` per frame: (T,), (T, 3, 3), (T, 3)."""

    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(T, N, 3) points moved frame by frame; ``points`` is (N, 3) or (T, N, 3)."""
        return self.scale[:, None, None] * np.einsum("tij,tnj->tni", self.rotation, np.broadcast_to(
            points, (len(self.scale),) + points.shape[-2:])) + self.translation[:, None, :]

    def invert(self, points: np.ndarray) -> np.ndarray:
        """(T, N, 3) points with the motion undone."""
        return np.einsum("tji,tnj->tni", self.rotation, points - self.translation[:, None, :]) / self.scale[:, None, None]


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity3D:
    """Least-squares similarity (Umeyama) from ``source`` onto ``target``; (N, 3) or (T, N, 3) each."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim == 2:
        source = source[None]
    if target.ndim == 2:
        target = target[None]
    source, target = np.broadcast_arrays(source, target)
    mean_s, mean_t = source.mean(axis=1), target.mean(axis=1)
    centred_s, centred_t = source - mean_s[:, None], target - mean_t[:, None]
    covariance = np.einsum("tni,tnj->tij", centred_t, centred_s)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt))
    correction = np.ones_like(singular)
    correction[:, -1] = sign
    rotation = u @ (correction[:, :, None] * vt)
    variance = (centred_s ** 2).sum(axis=(1, 2))
    scale = (singular * correction).sum(axis=1) / np.maximum(variance, 1e-12)
    translation = mean_t - scale[:, None] * np.einsum("tij,tj->ti", rotation, mean_s)
    return Similarity3D(scale=scale, rotation=rotation, translation=translation)


def _rotation_power(rotation: np.ndarray, gain: float) -> np.ndarray:
    """Rotations scaled in angle by ``gain`` (axis-angle), (T, 3, 3)."""
    if gain == 1.0:
        return rotation
    angle = np.arccos(np.clip((np.trace(rotation, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0))
    axis = np.stack([rotation[:, 2, 1] - rotation[:, 1, 2], rotation[:, 0, 2] - rotation[:, 2, 0],
                     rotation[:, 1, 0] - rotation[:, 0, 1]], axis=1)
    norm = np.linalg.norm(axis, axis=1, keepdims=True)
    axis = np.where(norm > 1e-9, axis / np.maximum(norm, 1e-12), np.array([1.0, 0.0, 0.0]))
    theta = angle * gain
    k = np.zeros((len(axis), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(0, 2, 1)
    return np.eye(3) + np.sin(theta)[:, None, None] * k + (1 - np.cos(theta))[:, None, None] * (k @ k)


def _smooth_in_time(values: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or len(values) < 2:
        return values
    radius = max(1, int(round(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    index = np.clip(np.arange(len(values))[:, None] + offsets[None], 0, len(values) - 1)
    return np.einsum("tk,tk...->t...", weights[None].repeat(len(values), 0), values[index])


def face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit "right" (eye corner to eye corner) and "down" (forehead to chin) axes of one face, 3D."""
    right = landmarks[FaceIndex.EYE_OUTER_RIGHT] - landmarks[FaceIndex.EYE_OUTER_LEFT]
    right = right / np.linalg.norm(right)
    down = landmarks[FaceIndex.CHIN] - landmarks[FaceIndex.FOREHEAD]
    down = down - right * (down @ right)
    return right, down / np.linalg.norm(down)


# Pairs that must not cross: (upper, lower) along the face's "down" axis.
_NON_CROSSING_PAIRS = tuple(
    pair
    for upper, lower in ((FaceIndex.LIPS_INNER_UPPER, FaceIndex.LIPS_INNER_LOWER),
                         (FaceIndex.EYE_LEFT_UPPER, FaceIndex.EYE_LEFT_LOWER),
                         (FaceIndex.EYE_RIGHT_UPPER, FaceIndex.EYE_RIGHT_LOWER))
    for pair in zip(upper[1:-1], lower[1:-1])
)


def uncross_lids_and_lips(landmarks: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Landmarks (T, N, 3) where no upper lip/lid point ends up below its lower partner."""
    upper = np.array([u for u, _ in _NON_CROSSING_PAIRS])
    lower = np.array([v for _, v in _NON_CROSSING_PAIRS])
    gap = np.einsum("tpc,c->tp", landmarks[:, lower] - landmarks[:, upper], down)
    overlap = np.minimum(gap, 0.0)[..., None] * down  # (T, P, 3), zero where the pair is in order
    fixed = landmarks.copy()
    fixed[:, upper] += overlap / 2
    fixed[:, lower] -= overlap / 2
    return fixed


def compose_targets(reference: np.ndarray, offsets: np.ndarray, head: Similarity3D,
                    centre: np.ndarray | None = None) -> np.ndarray:
    """(T, N, 3) reference landmarks plus expression ``offsets``, moved by ``head`` about ``centre``.

    ``head`` is a motion relative to the reference's own pose: identity leaves it where it is.
    The shared last step of retargeting and of scripted (demo) motion.
    """
    reference = np.asarray(reference, dtype=np.float64)
    if centre is None:
        centre = reference[list(FaceIndex.RIGID)].mean(axis=0)
    _, down = face_axes(reference)
    expressive = uncross_lids_and_lips(reference[None] + offsets, down)
    return head.apply(expressive - centre) + centre


def retarget(reference: np.ndarray, driving: np.ndarray, config: RetargetConfig = RetargetConfig()) -> np.ndarray:
    """(T, 478, 3) target landmarks for the reference (478, 3) following the driving (T, 478, 3)."""
    reference = np.asarray(reference, dtype=np.float64)
    driving = np.asarray(driving, dtype=np.float64)
    if reference.shape != (478, 3) or driving.ndim != 3 or driving.shape[1:] != (478, 3):
        raise RetargetError(f"expected reference (478, 3) and driving (T, 478, 3), got {reference.shape}, {driving.shape}")
    rigid = list(FaceIndex.RIGID)

    # Head motion of the driving face relative to its first frame.
    motion = fit_similarity(driving[0, rigid], driving[:, rigid])
    # Expression: each frame with its head motion undone, as offsets from frame 0.
    offsets = motion.invert(driving) - driving[0]
    offsets = _smooth_in_time(offsets, config.smoothing_sigma)
    # Into the reference's face frame (size and orientation).
    to_reference = fit_similarity(driving[0, rigid], reference[rigid])
    offsets = to_reference.scale[0] * offsets @ to_reference.rotation[0].T * config.expression_gain

    # The driving face's centre shift, in reference pixels; the rotation and scale act about the
    # reference's face centre.
    centres = driving[:, rigid].mean(axis=1)
    shift = (centres - centres[0]) * to_reference.scale[0] * config.translation_gain
    shift[:, 2] = 0.0
    head = Similarity3D(scale=motion.scale ** config.scale_gain,
                        rotation=_rotation_power(motion.rotation, config.rotation_gain),
                        translation=shift)
    return compose_targets(reference, offsets, head)
