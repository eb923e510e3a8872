"""Parametric expressions on face-mesh landmarks: open the mouth, close the eyes, smile.

Each returns landmark offsets (478, 3) for one face, in that face's own frame (its "right" and
"down" axes), with amounts in units of the face's outer-eye-corner distance ``L`` so they mean
the same on any face.  Retargeting uses them to set mouth and eye openings to the driving
clip's (a laughing first frame must not become the neutral pose); the demo uses them to script
driving clips.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from engines.warp.mesh import NUM_MESH_LANDMARKS, face_mesh_triangles
from faces.tracking import FaceIndex

LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
MOUTH_CORNERS = (61, 78, 308, 291)
_MOUTH_CENTRE_PAIR = (13, 14)
EYES = (
    (FaceIndex.EYE_LEFT_UPPER, FaceIndex.EYE_LEFT_LOWER),
    (FaceIndex.EYE_RIGHT_UPPER, FaceIndex.EYE_RIGHT_LOWER),
)
# The lower edge of each eye's brow (the face mesh's brow contours, the side of the eye above).
BROWS_LOWER = ((46, 53, 52, 65, 55), (276, 283, 282, 295, 285))


@dataclass(frozen=True)
class FaceFrame:
    """A face's own axes (unit 3D vectors), a centre and its outer-eye-corner distance."""

    right: np.ndarray
    down: np.ndarray
    forward: np.ndarray
    length: float

    @classmethod
    def of(cls, landmarks: np.ndarray) -> FaceFrame:
        right, down, length = face_axes(landmarks)
        return cls(right=right, down=down, forward=np.cross(right, down), length=float(length))

    def coordinates(self, points: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, v): positions along "right" and "down" from ``origin``, in units of ``length``."""
        offset = (points - origin) / self.length
        return offset @ self.right, offset @ self.down


def face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A face's unit "right" and "down" axes (..., 3) and outer-eye-corner distance (...,).

    Works on one face (478, 3) or many (..., 478, 3) at once: retargeting measures every frame
    of a clip, and a Python loop over frames cost more than rendering them.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    right = landmarks[..., FaceIndex.EYE_OUTER_RIGHT, :] - landmarks[..., FaceIndex.EYE_OUTER_LEFT, :]
    length = np.linalg.norm(right, axis=-1)
    right = right / length[..., None]
    down = landmarks[..., FaceIndex.CHIN, :] - landmarks[..., FaceIndex.FOREHEAD, :]
    down = down - right * np.sum(down * right, axis=-1, keepdims=True)
    down = down / np.linalg.norm(down, axis=-1, keepdims=True)
    return right, down, length


def _smoothstep(x: np.ndarray, start: float, end: float) -> np.ndarray:
    t = np.clip((x - start) / (end - start), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@functools.lru_cache(maxsize=1)
def _mesh_neighbours() -> tuple[frozenset[int], ...]:
    neighbours: list[set[int]] = [set() for _ in range(NUM_MESH_LANDMARKS)]
    for a, b, c in face_mesh_triangles():
        neighbours[a] |= {b, c}
        neighbours[b] |= {a, c}
        neighbours[c] |= {a, b}
    return tuple(frozenset(n) for n in neighbours)


def mouth_gap(landmarks: np.ndarray) -> np.ndarray:
    """(T,) or scalar: inner-lip gap at the mouth's centre along the face's "down", in units of L."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    _, down, length = face_axes(landmarks)
    gap = landmarks[..., _MOUTH_CENTRE_PAIR[1], :] - landmarks[..., _MOUTH_CENTRE_PAIR[0], :]
    gaps = np.sum(gap * down, axis=-1) / length
    return float(gaps) if gaps.ndim == 0 else gaps


def eye_gaps(landmarks: np.ndarray) -> np.ndarray:
    """(T, 2) or (2,): mean eyelid gap of each eye along the face's "down", in units of L."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    _, down, length = face_axes(landmarks)
    gaps = []
    for upper, lower in EYES:
        lids = landmarks[..., list(lower[1:-1]), :] - landmarks[..., list(upper[1:-1]), :]
        gaps.append(np.einsum("...nc,...c->...n", lids, down).mean(axis=-1) / length)
    return np.stack(gaps, axis=-1)


def mouth_open_weights(landmarks: np.ndarray, lens: float = 0.0) -> np.ndarray:
    """(478,) how far each landmark moves when the lower lip drops by one unit.

    Lower lip and chin 1, upper lip 0, mouth corners 1/2; below the mouth the weight fades
    towards the jaw's hinge at the sides.  ``lens`` in [0, 1] shapes the lower lip's drop: 0
    drops it as one piece (a box-shaped opening), 1 by an ellipse across the mouth, the full
    drop at the middle falling to none at the corners (a lens, as a real opening mouth).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    frame = FaceFrame.of(landmarks)
    origin = (landmarks[78] + landmarks[308]) / 2
    u, v = frame.coordinates(landmarks, origin)
    half_width = abs(u[308] - u[78]) / 2
    # The upper inner lip's height at each point's u, interpolated along the lip.
    upper = np.array(FaceIndex.LIPS_INNER_UPPER)
    order = np.argsort(u[upper])
    lip_line = np.interp(u, u[upper][order], v[upper][order])
    below = v - lip_line
    weights = _smoothstep(below, 0.0, 0.25) * (1.0 - _smoothstep(np.abs(u), half_width + 0.05, 0.9))
    # Inside the lips, membership decides: the lower lip moves with the jaw, the upper lip stays.
    lip_outer_lower = np.array(LIPS_OUTER_LOWER)
    outer_line = np.interp(u, np.sort(u[lip_outer_lower]), v[lip_outer_lower][np.argsort(u[lip_outer_lower])])
    in_lower_lip = (np.abs(u) <= half_width + 0.02) & (below > -1e-6) & (v <= outer_line + 0.02)
    # With ``lens``, the lower lip (its inner edge and its body) drops by an ellipse across the mouth.
    lower_lip = np.union1d(np.flatnonzero(in_lower_lip), FaceIndex.LIPS_INNER_LOWER)
    across = np.clip(np.abs(u[lower_lip]) / max(half_width, 1e-9), 0.0, 1.0)
    weights[lower_lip] = 1.0 - lens * (1.0 - np.sqrt(1.0 - across ** 2))
    weights[list(FaceIndex.LIPS_INNER_UPPER)] = 0.0
    weights[list(LIPS_OUTER_UPPER)] = 0.0
    weights[list(MOUTH_CORNERS)] = 0.5
    weights[NUM_MESH_LANDMARKS:] = 0.0  # irises
    return weights


def open_mouth(landmarks: np.ndarray, amount: float | np.ndarray, lens: float = 0.0) -> np.ndarray:
    """Offsets that widen the inner-lip gap by ``amount`` (units of L; negative closes).

    ``amount`` may be (T,) for many frames of the same face: the result is then (T, 478, 3).
    ``lens`` shapes an opening (:func:`mouth_open_weights`); a closing moves the lower lip as
    one piece.
    """
    frame = FaceFrame.of(landmarks)
    scale = frame.down * frame.length
    box = mouth_open_weights(landmarks)[:, None] * scale
    amount = np.asarray(amount, dtype=np.float64)
    if lens <= 0.0:
        return amount[..., None, None] * box
    shaped = mouth_open_weights(landmarks, lens)[:, None] * scale
    return np.maximum(amount, 0.0)[..., None, None] * shaped + np.minimum(amount, 0.0)[..., None, None] * box


def eyelid_weights(landmarks: np.ndarray, eye: int) -> tuple[np.ndarray, np.ndarray]:
    """(upper-lid landmarks, their lower partners) and (478,) weights of the skin that follows the lid.

    The lid itself has weight 1; the mesh rings above it 0.5 and 0.2, so the skin stretches
    instead of the lid sliding under it.
    """
    upper, lower = EYES[eye]
    lid = list(upper[1:-1])
    weights = np.zeros(len(landmarks))
    weights[lid] = 1.0
    frame = FaceFrame.of(landmarks)
    _, v = frame.coordinates(np.asarray(landmarks, dtype=np.float64), landmarks[lid].mean(axis=0))
    ring, seen = set(lid), set(lid) | set(upper) | set(lower)
    neighbours = _mesh_neighbours()
    for weight in (0.5, 0.2):
        ring = {n for i in ring for n in neighbours[i] if n not in seen and v[n] < 0}
        seen |= ring
        weights[list(ring)] = weight
    return weights, np.array(lid)


def eyelid_opening_weights(landmarks: np.ndarray, eye: int) -> np.ndarray:
    """(478,) how far each landmark moves when an upper lid rises by one unit.

    The lid 1, and the skin between it and the eyebrow in proportion to its distance from the
    brow (1 at the lid, 0 at the brow and beyond), fading out past the eye's corners.  The lid's
    margin (lashes, liner: what shows where the lid is) lies just above the lid points and so
    rises with them, the skin above gathers evenly towards the brow.  With the closing rings
    (:func:`eyelid_weights`: 0.5 and 0.2 whatever their height), the margin of a narrow eye,
    whose first ring is barely above it, rose by about two thirds of the lid, and the tracker
    read a widened narrow eye at half its widening.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    upper, _ = EYES[eye]
    brow = list(BROWS_LOWER[eye])
    frame = FaceFrame.of(landmarks)
    u, v = frame.coordinates(landmarks, landmarks[list(upper)].mean(axis=0))
    order = np.argsort(u[list(upper)])
    lid_u, lid_v = u[list(upper)][order], v[list(upper)][order]
    height = np.interp(u, lid_u, lid_v) - v  # above the lid line, units of L
    order = np.argsort(u[brow])
    room = np.maximum(np.interp(u, u[brow][order], height[brow][order]), 1e-3)  # up to the brow's lower edge
    half_width = (lid_u[-1] - lid_u[0]) / 2
    beyond = np.maximum(np.abs(u - (lid_u[0] + lid_u[-1]) / 2) - half_width, 0.0)
    weights = np.where(height > 0, np.clip(1.0 - height / room, 0.0, 1.0), 0.0)
    weights *= 1.0 - _smoothstep(beyond, 0.0, half_width)
    weights[list(upper[1:-1])] = 1.0
    weights[[upper[0], upper[-1]]] = 0.0  # the corners stay
    weights[NUM_MESH_LANDMARKS:] = 0.0  # irises
    return weights


def close_eyes(landmarks: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Offsets that close each eye by a fraction of its current gap: ``closure`` (..., 2), 1 = shut.

    Negative closure opens the eye, the skin above the lid following as
    :func:`eyelid_opening_weights` says; the result is (..., 478, 3).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    closure = np.asarray(closure, dtype=np.float64)
    frame = FaceFrame.of(landmarks)
    gaps = eye_gaps(landmarks) * frame.length  # pixels, per eye
    offsets = np.zeros(closure.shape[:-1] + landmarks.shape)
    for eye in range(2):
        closing, _ = eyelid_weights(landmarks, eye)
        opening = eyelid_opening_weights(landmarks, eye)
        amount = closure[..., eye, None, None]
        offsets += (np.maximum(amount, 0.0) * closing[:, None] + np.minimum(amount, 0.0) * opening[:, None]) \
            * frame.down * gaps[eye]
    return offsets


def smile(landmarks: np.ndarray, amount: float | np.ndarray) -> np.ndarray:
    """Offsets that pull the mouth corners out and up by ``amount`` (units of L), cheeks following."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    frame = FaceFrame.of(landmarks)
    amount = np.asarray(amount, dtype=np.float64)
    offsets = np.zeros(amount.shape + landmarks.shape)
    width = np.linalg.norm(landmarks[291] - landmarks[61])
    for corner, side in ((61, -1.0), (291, 1.0)):
        pull = (0.55 * side * frame.right - 0.45 * frame.down) * frame.length
        distance = np.linalg.norm(landmarks - landmarks[corner], axis=1)
        weight = np.exp(-0.5 * (distance / (0.45 * width)) ** 2)
        weight[NUM_MESH_LANDMARKS:] = 0.0
        offsets += amount[..., None, None] * weight[:, None] * pull
    return offsets
