"""What the warp shows where it samples beyond the portrait's edge: a plausible continuation, not streaks.

A portrait cropped tight (the face filling the picture, chin or hair cut by its edge: profile
pictures, ID-style crops, a face cut from a group photo) has mesh vertices outside the picture:
the face oval past the edge, and the border loop pushed out beyond the oval.  When the head
turns or nods, output pixels sample there, and a replicated border draws each edge row and
column out into a long streak.  So such a portrait is extended once, before warping: a mirror
image of the band along its edge (grain and texture continue across the seam) fading into a
heavy blur of the nearby border (its colours spread outward, smooth in every direction).

A portrait whose mesh stays inside the picture (the usual face crop, about 3x the face) samples
at most the border loop's pixel beyond its edge and is not extended: it renders as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from engines.warp.mesh import WarpMesh

# The border loop sits this far (pixels) beyond the picture's pixel area: samples there replicate
# the edge pixel, which is also what a mirror image holds, so a mesh that reaches no farther
# needs no extension.
BORDER_LOOP_OUTSIDE = 1.0


@dataclass(frozen=True)
class BeyondFill:
    """How a tight portrait is extended beyond its edge."""

    # Distance beyond the edge, in picture sides, over which the mirror image fades into the
    # blur: long enough to carry texture across the seam, short enough not to mirror a feature
    # (half a mouth cut by the edge) into a second one.
    mirror_fade: float = 0.03
    # Push-pull: how strongly each pyramid level keeps its own average where it has only some of
    # the picture under it; higher keeps the nearby border's colours farther out (1: a haze of the
    # whole picture's mean a few pixels past the edge; 8: blocky).
    keep_near: float = 4.0
    # Pixels of extension past the farthest sampled vertex: the displacement raster's
    # interpolation between cells reaches a little beyond the triangles' own source.
    slack: int = 4
    max_margin: float = 1.0  # cap on the extension, in picture sides (a face far larger than its picture)


def reach_beyond(mesh: WarpMesh) -> float:
    """How far (pixels) past the picture's pixel area the warp can sample: its farthest non-fixed vertex.

    Output pixels inside the picture lie inside the fixed border loop or, past its chords, in
    triangles between it and the far loop, which map to themselves; so every sample lies among
    the source vertices short of the far loop.
    """
    height, width = mesh.image_size
    points = mesh.source[:mesh.loop_start + 3 * mesh.loop_length].astype(np.float64)
    over_x = np.maximum(-0.5 - points[:, 0], points[:, 0] - (width - 0.5))
    over_y = np.maximum(-0.5 - points[:, 1], points[:, 1] - (height - 0.5))
    return float(max(over_x.max(), over_y.max(), 0.0))


def beyond_margin(mesh: WarpMesh, fill: BeyondFill = BeyondFill()) -> int:
    """Pixels to extend the portrait by on every side; 0 when its mesh stays inside the picture."""
    reach = reach_beyond(mesh)
    if reach <= BORDER_LOOP_OUTSIDE + 1e-3:
        return 0
    height, width = mesh.image_size
    return int(min(math.ceil(reach) + fill.slack, math.ceil(fill.max_margin * max(height, width))))


def extend(image: np.ndarray, margin: int, fill: BeyondFill = BeyondFill()) -> np.ndarray:
    """``image`` (H, W, C) uint8 with ``margin`` pixels added on every side: mirror faded into blur."""
    if margin <= 0:
        return image
    height, width = image.shape[:2]
    mirrored = cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_REFLECT)
    inside = np.zeros(mirrored.shape[:2], np.float32)
    inside[margin:margin + height, margin:margin + width] = 1.0
    blurred = _push_pull(mirrored.astype(np.float32), inside, fill.keep_near)
    # Distance of each pixel beyond the picture's edge, and how much of the mirror image it keeps.
    ys = np.abs(np.arange(-margin, height + margin, dtype=np.float32) - (height - 1) / 2.0) - (height - 1) / 2.0
    xs = np.abs(np.arange(-margin, width + margin, dtype=np.float32) - (width - 1) / 2.0) - (width - 1) / 2.0
    beyond = np.hypot(np.maximum(ys, 0.0)[:, None], np.maximum(xs, 0.0)[None, :])
    fade = max(fill.mirror_fade * max(height, width), 1.0)
    keep = np.clip(1.0 - beyond / fade, 0.0, 1.0)
    keep = (keep * keep * (3.0 - 2.0 * keep))[:, :, None]  # smoothstep: no crease where the fade ends
    out = keep * mirrored + (1.0 - keep) * blurred
    out[margin:margin + height, margin:margin + width] = image  # the picture itself, untouched
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _push_pull(image: np.ndarray, weight: np.ndarray, keep_near: float) -> np.ndarray:
    """``image`` (float32) filled where ``weight`` is 0 from the nearby weighted pixels, blurrier with distance.

    Push-pull: halve the weighted image and its weights down a pyramid, then, back up, keep each
    level's own average where it has weight and the coarser level's fill where it has little.
    """
    levels = [(image * weight[:, :, None], weight)]
    while min(levels[-1][1].shape) > 4:
        colour, weights = levels[-1]
        levels.append((cv2.pyrDown(colour), cv2.pyrDown(weights)))
    colour, weights = levels[-1]
    total = float(weights.sum())
    mean = colour.reshape(-1, colour.shape[2]).sum(axis=0) / max(total, 1e-6)
    filled = np.where(weights[:, :, None] > 1e-6, colour / np.maximum(weights, 1e-6)[:, :, None], mean)
    for colour, weights in reversed(levels[:-1]):
        coarse = cv2.pyrUp(filled, dstsize=(colour.shape[1], colour.shape[0]))
        own = np.clip(keep_near * weights, 0.0, 1.0)[:, :, None]
        filled = own * colour / np.maximum(weights, 1e-6)[:, :, None] + (1.0 - own) * coarse
    return filled.astype(np.float32)
