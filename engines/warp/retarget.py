"""Where the reference's landmarks go in each frame: the driving clip's motion, moved onto another face.

Two parts, both relative to the driving clip's first frame so that the reference's own
expression and pose are the starting point:

* head motion: per frame, the 3D similarity (scale, rotation, translation) that takes frame 0's
  rigid landmarks onto frame t's;
* expression: frame t's landmarks with that head motion undone, minus frame 0's -- offsets in a
  face-aligned frame -- scaled and rotated into the reference's face frame by the similarity
  between the driving frame 0 and the reference.

Offsets from frame 0 lose what frame 0 already shows (a clip that starts mid-laugh would never
open the reference's mouth), so by default the openings are then set absolutely: the mouth gap
to the driving gap, each eye to the reference's own opening times the driving eye's openness.

The reference's landmarks plus the offsets, moved by the head motion about the reference's face
centre, are the targets.  Mediapipe's z is in pixels like x, so all of it is plain 3D geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.warp.expressions import FaceFrame, close_eyes, eye_gaps, mouth_gap, open_mouth
from hellomeme_batch.faces import FaceIndex, smooth_in_time


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
    # The same for the head motion (rotation, scale, shift), whose jitter moves the whole head.
    motion_smoothing_sigma: float = 1.0
    # Set openings from the driving face rather than adding its changes from frame 0: the mouth
    # gap as is (in eye-corner distances), each eye's gap relative to that eye's usual (90th
    # percentile) opening in the clip.  A clip that starts mid-laugh or mid-blink then still
    # laughs and blinks on the reference.
    absolute_openings: bool = True
    eye_open_percentile: float = 90.0


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
    expressive = uncross_lids_and_lips(reference[None] + offsets, FaceFrame.of(reference).down)
    return head.apply(expressive - centre) + centre


def retarget(reference: np.ndarray, driving: np.ndarray, config: RetargetConfig = RetargetConfig()) -> np.ndarray:
    """(T, 478, 3) target landmarks for the reference (478, 3) following the driving (T, 478, 3).

    The head rotation comes from the 3D landmarks (not the track's solvePnP angles): it is the
    rotation that also undoes the head motion for the expression, and it transferred pitch
    better in measurements on the shared clips.
    """
    reference = np.asarray(reference, dtype=np.float64)
    driving = np.asarray(driving, dtype=np.float64)
    if reference.shape != (478, 3) or driving.ndim != 3 or driving.shape[1:] != (478, 3):
        raise RetargetError(f"expected reference (478, 3) and driving (T, 478, 3), got {reference.shape}, {driving.shape}")
    rigid = list(FaceIndex.RIGID)

    # Head motion of the driving face relative to its first frame.
    motion = fit_similarity(driving[0, rigid], driving[:, rigid])
    # Expression: each frame with its head motion undone, as offsets from frame 0.
    offsets = smooth_in_time(motion.invert(driving) - driving[0], config.smoothing_sigma)
    aligned = driving[0] + offsets
    # Into the reference's face frame (size and orientation).
    to_reference = fit_similarity(driving[0, rigid], reference[rigid])
    offsets = to_reference.scale[0] * offsets @ to_reference.rotation[0].T * config.expression_gain
    if config.absolute_openings:
        offsets = offsets + _opening_corrections(reference, reference + offsets, aligned, config)

    # The driving face's centre shift, in reference pixels; the rotation and scale act about the
    # reference's face centre.
    centres = driving[:, rigid].mean(axis=1)
    shift = (centres - centres[0]) * to_reference.scale[0] * config.translation_gain
    shift[:, 2] = 0.0
    sigma = config.motion_smoothing_sigma
    head = Similarity3D(scale=smooth_in_time(motion.scale, sigma) ** config.scale_gain,
                        rotation=_rotation_power(_smooth_rotations(motion.rotation, sigma), config.rotation_gain),
                        translation=smooth_in_time(shift, sigma))
    return compose_targets(reference, offsets, head)


def _smooth_rotations(rotation: np.ndarray, sigma: float) -> np.ndarray:
    """Rotations (T, 3, 3) averaged over time and projected back onto rotations (fine for small spreads)."""
    if sigma <= 0 or len(rotation) < 2:
        return rotation
    u, _, vt = np.linalg.svd(smooth_in_time(rotation, sigma))
    fix = np.ones((len(rotation), 3))
    fix[:, -1] = np.sign(np.linalg.det(u @ vt))
    return u @ (fix[:, :, None] * vt)


def _opening_corrections(reference: np.ndarray, expressive: np.ndarray, aligned: np.ndarray,
                         config: RetargetConfig) -> np.ndarray:
    """(T, 478, 3) offsets that bring the mouth and eye openings of ``expressive`` to the driving's.

    Mouth: the driving gap itself.  Eyes: the reference's own gap times the driving eye's
    openness (its gap over its usual gap in the clip, capped a little above 1).
    """
    mouth_wanted = mouth_gap(aligned) * config.expression_gain
    correction = open_mouth(reference, mouth_wanted - mouth_gap(expressive))
    driving_eyes = eye_gaps(aligned)  # (T, 2)
    usual = np.maximum(np.percentile(driving_eyes, config.eye_open_percentile, axis=0), 1e-3)
    openness = np.clip(driving_eyes / usual, 0.0, 1.15)
    reference_eyes = np.maximum(eye_gaps(reference), 1e-3)
    closure = (eye_gaps(expressive) - reference_eyes * openness) / reference_eyes
    return correction + close_eyes(reference, closure)
