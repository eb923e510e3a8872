"""What a mesh warp cannot invent: the inside of an opened mouth (the lid over a closing eye is
:mod:`engines.warp.eyelids`).

Stretching a closed mouth open only smears the lip line, so the opened part is painted over
with a dark mouth cavity and bands of upper and lower teeth.  It works on a small region of
interest around the mouth, so it costs little next to the warp.  The eyelid's skin colour and the
cheeks' (what the lid colour is checked against) are measured here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from faces.tracking import FaceIndex

_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_CAVITY = np.array([52.0, 18.0, 22.0])
_TONGUE = np.array([140.0, 62.0, 66.0])
_TEETH = np.array([222.0, 214.0, 198.0])


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (L 0-100, a and b in their own units) of RGB values 0-255, any leading shape."""
    flat = np.asarray(rgb, dtype=np.float32).reshape(-1, 1, 3) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(np.shape(rgb))


def _rgb(lab: np.ndarray) -> np.ndarray:
    flat = np.asarray(lab, dtype=np.float32).reshape(-1, 1, 3)
    return np.clip(cv2.cvtColor(flat, cv2.COLOR_LAB2RGB).reshape(np.shape(lab)) * 255.0, 0.0, 255.0)


@dataclass(frozen=True)
class MouthPalette:
    """The colours of a painted mouth: a dark cavity, the tongue, the teeth, in the portrait's own colours.

    A black-and-white, sepia or monochrome portrait (an old family photo, a statue) got a dark-red
    mouth with white teeth pasted in.  Its colourfulness (the spread of its pixels' Lab chroma) is
    near 0; colour photographs and drawings measure 4-25.  So the painted colours keep their own
    chroma on colourful portraits and take the portrait's mean tint on monochrome ones, in between
    in proportion.
    """

    cavity: np.ndarray
    tongue: np.ndarray
    teeth: np.ndarray

    @classmethod
    def natural(cls) -> "MouthPalette":
        return cls(cavity=_CAVITY, tongue=_TONGUE, teeth=_TEETH)

    @classmethod
    def for_portrait(cls, image: np.ndarray, monochrome_below: float = 1.5,
                     colour_from: float = 4.0) -> "MouthPalette":
        """The palette for an RGB portrait: its own colours below ``monochrome_below``, natural ones
        from ``colour_from`` (colourfulness, Lab units)."""
        lab = _lab(image[::4, ::4])
        chroma = lab[..., 1:].reshape(-1, 2).astype(np.float64)
        colourfulness = float(np.sqrt(chroma.var(axis=0).sum()))
        keep = float(np.clip((colourfulness - monochrome_below) / (colour_from - monochrome_below), 0.0, 1.0))
        if keep >= 1.0:
            return cls.natural()
        tint = chroma.mean(axis=0)

        def toned(colour: np.ndarray) -> np.ndarray:
            own = _lab(colour)
            own[1:] = keep * own[1:] + (1.0 - keep) * tint
            return _rgb(own).astype(np.float64)

        return cls(cavity=toned(_CAVITY), tongue=toned(_TONGUE), teeth=toned(_TEETH))


@dataclass(frozen=True)
class OverlayStyle:
    """Tuning of the painted mouth and eyelids."""

    # Extra lip gap (over eye-corner distance) at which the painted mouth is opaque; a portrait whose
    # mouth is open already reaches it only at twice its own gap (see PortraitRig.mouth_paint_strength).
    mouth_full_at: float = 0.05
    upper_teeth: float = 0.15  # upper-teeth band height over mouth width ...
    upper_teeth_gap: float = 0.4  # ... and at most this share of the lips' gap
    lower_teeth: float = 0.06  # lower-teeth band height over mouth width ...
    # ... and at most this share of the gap.  Lower front teeth are nearly as tall as the upper
    # ones and show as the jaw drops, the lower lip hiding their roots: a third of the gap, not a
    # fifth.  At a fifth, a talking mouth (6-12 px open in a 512 crop, less on a drawn face's small
    # mouth) showed a 1-2 px band, and a face tracker read its opening unsteadily.
    lower_teeth_gap: float = 0.3


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
                         strength: float, style: OverlayStyle = OverlayStyle(),
                         palette: MouthPalette | None = None) -> None:
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
    upper_depth = np.minimum(style.upper_teeth * width, style.upper_teeth_gap * np.maximum(gap, 0.0))
    lower_depth = np.minimum(style.lower_teeth * width, style.lower_teeth_gap * np.maximum(gap, 0.0))
    upper_teeth = np.concatenate([upper, (upper + upper_depth[:, None] * down)[::-1]])
    lower_teeth = np.concatenate([lower, (lower - lower_depth[:, None] * down)[::-1]])
    teeth_up = _polygon_mask(upper_teeth, (x0, y0), size, blur=0.6) * mouth
    teeth_low = _polygon_mask(lower_teeth, (x0, y0), size, blur=0.6) * mouth

    # Position across the mouth (-1 at one corner, 1 at the other) and down into it (0 at the
    # upper lip, 1 at the lower lip).
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    left, right = upper[0], upper[-1]
    centre = (left + right) / 2
    across_axis = (right - left) / max(width, 1e-6)
    across = ((xs - centre[0]) * across_axis[0] + (ys - centre[1]) * across_axis[1]) / max(width / 2, 1e-6)
    depth = ((xs - upper.mean(axis=0)[0]) * down[0] + (ys - upper.mean(axis=0)[1]) * down[1]) / max(middle_gap, 1.0)
    # Teeth fill the front of the mouth, darker and fading towards the corners, with faint gaps
    # between the incisors.
    front = 1.0 - np.clip((np.abs(across) - 0.5) / 0.4, 0.0, 1.0)
    shade = (0.72 + 0.28 * (1.0 - across ** 2))[..., None]
    seams = 1.0 - 0.18 * np.exp(-0.5 * ((np.abs(across * 0.5 / 0.11) + 0.5) % 1.0 - 0.5) ** 2 / 0.02)[..., None]
    teeth_up *= front
    teeth_low *= front
    # Cavity: dark, warmer towards the lower lip (a hint of tongue when wide open).
    tongue = np.clip((depth - 0.55) / 0.45, 0.0, 1.0)[..., None] * min(1.0, middle_gap / (0.3 * width))
    palette = palette or MouthPalette.natural()
    layer = (palette.cavity * (1 - tongue) + palette.tongue * tongue) * (0.75 + 0.25 * np.abs(across)[..., None].clip(0, 1))
    teeth = palette.teeth * shade * seams
    layer = layer * (1 - teeth_up[..., None]) + teeth * teeth_up[..., None]
    layer = layer * (1 - teeth_low[..., None]) + 0.85 * teeth * teeth_low[..., None]
    alpha = (strength * mouth)[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + layer * alpha + 0.5, 0, 255).astype(np.uint8)


# Face-mesh points on the cheeks, below the eyes and beside the nose: skin on photographs and
# drawings alike (a fringe or glasses rarely reach them).
CHEEKS = (50, 280, 205, 425)


def cheek_colour(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Median RGB of small patches of skin at the cheeks (``landmarks`` (478, 2+) in pixels)."""
    points = np.asarray(landmarks, dtype=np.float64)[list(CHEEKS), :2]
    corners = np.asarray(landmarks, dtype=np.float64)[[FaceIndex.EYE_OUTER_LEFT, FaceIndex.EYE_OUTER_RIGHT], :2]
    radius = max(2, int(round(0.03 * float(np.linalg.norm(corners[0] - corners[1])))))  # ~3 mm of skin
    height, width = image.shape[:2]
    patches = []
    for x, y in np.round(points).astype(int):
        x0, x1, y0, y1 = max(x - radius, 0), min(x + radius + 1, width), max(y - radius, 0), min(y + radius + 1, height)
        if x1 > x0 and y1 > y0:
            patches.append(image[y0:y1, x0:x1].reshape(-1, 3))
    if not patches:
        return image.reshape(-1, 3).mean(axis=0).astype(np.float64)
    return np.median(np.concatenate(patches), axis=0).astype(np.float64)


def eyelid_colour(image: np.ndarray, upper: np.ndarray, brow: np.ndarray) -> np.ndarray:
    """Median RGB of the (brighter half of the) skin between an upper eyelid (n, 2) and the eyebrow above it (m, 2)."""
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
    # The brighter half: lashes, a crease's shadow or a drawn eye's outline reach into the band.
    luminance = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.median(pixels[luminance >= np.median(luminance)], axis=0).astype(np.float64)
