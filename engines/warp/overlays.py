"""What a mesh warp cannot invent: the inside of an opened mouth, and eyelids over a closing eye.

Stretching a closed mouth open only smears the lip line, so the opened part is painted over
with a dark mouth cavity and a band of upper (and a hint of lower) teeth; an eye that closes
further than in the reference gets its remaining visible part tinted with the eyelid's skin
colour, in proportion to the closure.  Both work on a small region of interest around the
feature, so they cost little next to the warp.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_CAVITY = np.array([52.0, 18.0, 22.0])
_TONGUE = np.array([140.0, 62.0, 66.0])
_TEETH = np.array([228.0, 222.0, 208.0])


@dataclass(frozen=True)
class OverlayStyle:
    """Tuning of the painted mouth and eyelids."""

    mouth_full_at: float = 0.05  # extra lip gap (over eye-corner distance) at which the cavity is opaque
    upper_teeth: float = 0.16  # upper-teeth band height over mouth width, at most half the gap
    lower_teeth: float = 0.07
    eyelid_opacity: float = 0.85  # tint of a fully closed eye's remaining opening


def _roi(points: np.ndarray, shape: tuple[int, ...], margin: int) -> tuple[int, int, int, int] | None:
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + margin + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def _polygon_mask(polygon: np.ndarray, origin: tuple[int, int], size: tuple[int, int], blur: float) -> np.ndarray:
    """Anti-aliased float mask (h, w) of a polygon given in frame pixels, in an ROI at ``origin``."""
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    pts = np.round((polygon - np.array(origin)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, _SHIFT)
    out = mask.astype(np.float32) / 255.0
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out


def paint_mouth_interior(frame: np.ndarray, upper: np.ndarray, lower: np.ndarray, down: np.ndarray,
                         strength: float, style: OverlayStyle = OverlayStyle()) -> None:
    """Paint, in place, an open mouth between the inner-lip polylines (corner to corner, (n, 2) each).

    ``down`` is the face's unit "down" direction in the image; ``strength`` in [0, 1] is the
    cavity's opacity (0 leaves the frame as it is).
    """
    if strength <= 0.0:
        return
    polygon = np.concatenate([upper, lower[::-1][1:-1]])
    roi = _roi(polygon, frame.shape, margin=3)
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    size = (x1 - x0, y1 - y0)
    mouth = _polygon_mask(polygon, (x0, y0), size, blur=0.7)
    width = float(np.linalg.norm(upper[-1] - upper[0]))
    gap = np.einsum("nc,c->n", lower - upper, down)
    middle_gap = float(gap[len(gap) // 2])
    # Teeth follow the lip they hang from; the band thins towards the mouth corners with the gap.
    upper_depth = np.minimum(style.upper_teeth * width, 0.45 * np.maximum(gap, 0.0))
    lower_depth = np.minimum(style.lower_teeth * width, 0.25 * np.maximum(gap, 0.0))
    upper_teeth = np.concatenate([upper, (upper + upper_depth[:, None] * down)[::-1]])
    lower_teeth = np.concatenate([lower, (lower - lower_depth[:, None] * down)[::-1]])
    teeth_up = _polygon_mask(upper_teeth, (x0, y0), size, blur=0.6) * mouth
    teeth_low = _polygon_mask(lower_teeth, (x0, y0), size, blur=0.6) * mouth

    # Cavity: dark, warmer towards the lower lip (a hint of tongue when wide open).
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    centre_top = upper.mean(axis=0)
    depth = ((xs - centre_top[0]) * down[0] + (ys - centre_top[1]) * down[1]) / max(middle_gap, 1.0)
    tongue = np.clip((depth - 0.55) / 0.45, 0.0, 1.0)[..., None] * min(1.0, middle_gap / (0.3 * width))
    layer = _CAVITY * (1 - tongue) + _TONGUE * tongue
    layer = layer * (1 - teeth_up[..., None]) + _TEETH * teeth_up[..., None]
    layer = layer * (1 - teeth_low[..., None]) + 0.85 * _TEETH * teeth_low[..., None]
    alpha = (strength * mouth)[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + layer * alpha + 0.5, 0, 255).astype(np.uint8)


def paint_eyelid(frame: np.ndarray, upper: np.ndarray, lower: np.ndarray, closure: float, lid_colour: np.ndarray,
                 style: OverlayStyle = OverlayStyle()) -> None:
    """Tint, in place, the visible eye between the lid polylines with skin, in proportion to ``closure``."""
    if closure <= 0.0:
        return
    polygon = np.concatenate([upper, lower[::-1][1:-1]])
    roi = _roi(polygon, frame.shape, margin=2)
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    eye = _polygon_mask(polygon, (x0, y0), (x1 - x0, y1 - y0), blur=0.8)
    alpha = (style.eyelid_opacity * min(closure, 1.0) * eye)[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + lid_colour * alpha + 0.5, 0, 255).astype(np.uint8)


def eyelid_colour(image: np.ndarray, upper: np.ndarray, brow: np.ndarray) -> np.ndarray:
    """Median RGB of the skin between an upper eyelid (n, 2) and the eyebrow above it (m, 2)."""
    brow_centre = brow.mean(axis=0)
    band_top = upper + 0.45 * (brow_centre - upper.mean(axis=0))
    band_bottom = upper + 0.15 * (brow_centre - upper.mean(axis=0))
    polygon = np.concatenate([band_bottom, band_top[::-1]])
    roi = _roi(polygon, image.shape, margin=1)
    if roi is None:
        return np.array([180.0, 140.0, 120.0])
    x0, y0, x1, y1 = roi
    mask = _polygon_mask(polygon, (x0, y0), (x1 - x0, y1 - y0), blur=0.0) > 0.5
    pixels = image[y0:y1, x0:x1][mask]
    if len(pixels) < 3:
        return image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0).astype(np.float64)
    return np.median(pixels, axis=0).astype(np.float64)
