"""The official HelloMeme script's face crop: one square per clip, 3x the mean face size, shifted up by 0.115.

The script (``crop_and_resize`` in its utils) takes each frame's landmark box, the mean box size
over the clip and the union of the boxes; the square's side is 3x the larger mean box side
(capped at the image's shorter side less one pixel), centred on the union and moved up by 0.115
of the side, then slid back inside the image and rounded to whole pixels.  The reference
portrait is cropped the same way (its one frame).  Our landmarks are mediapipe's mesh, not the
script's 222-point model, so boxes are close but not identical in extent.
"""

from __future__ import annotations

import numpy as np

from faces.tracking import CropBox, FaceTrack

SCALE = 3.0
SHIFT_UP = 0.115


def hellomeme_crop_box(track: FaceTrack) -> CropBox:
    """The script's crop square for ``track`` (landmarks in image pixels), inside the image."""
    points = track.landmarks[track.detected] if np.any(track.detected) else track.landmarks
    points = np.asarray(points, dtype=np.float64)[:, :, :2]
    top_left, bottom_right = points.min(axis=1), points.max(axis=1)  # (T, 2): per-frame boxes
    mean_size = (bottom_right - top_left).mean(axis=0)
    height, width = track.image_size
    side = min(float(mean_size.max()) * SCALE, min(height, width) - 1.0)
    centre = (top_left.min(axis=0) + bottom_right.max(axis=0)) * 0.5
    centre[1] -= side * SHIFT_UP
    low, high = centre - side * 0.5, centre + side * 0.5
    for axis, limit in ((0, width), (1, height)):
        if low[axis] < 0:
            high[axis] -= low[axis]
            low[axis] = 0.0
        if high[axis] >= limit:
            low[axis] -= high[axis] - limit + 1
            high[axis] = limit - 1.0
    centre = (low + high) * 0.5
    whole = float(np.floor(high - low).min())
    x0, y0 = (int(v) for v in centre - whole * 0.5)  # the script truncates towards zero
    x1 = int(centre[0] + whole * 0.5)
    return CropBox(x0=float(x0), y0=float(y0), side=float(max(1, x1 - x0)))

