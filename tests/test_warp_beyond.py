"""A tight portrait (the face filling the picture, chin and cheek cut by its edge) turns its head without streaks.

Where the warp samples beyond the picture, it used to replicate the edge rows and columns into
long streaks.  A streak is measured as a viewer sees it: texture with one direction only
(structure-tensor coherence near 1) and strong enough to see; a blur or real image content
rarely is.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.warp.beyond import BeyondFill, beyond_margin, extend
from engines.warp.portrait import PortraitRig
from faces.tracking import FaceIndex, crop_frames, euler_to_rotation, stable_crop_box

# Streaked pixels: coherence above this and a gradient (Sobel, RMS over the window) above the next.
STREAK_COHERENCE = 0.9
STREAK_GRADIENT = 12.0


def streaked(image: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of ``mask`` pixels of ``image`` (H, W, 3) uint8 that lie in one-directional texture."""
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(luma, cv2.CV_32F, 1, 0), cv2.Sobel(luma, cv2.CV_32F, 0, 1)
    jxx, jyy, jxy = (cv2.GaussianBlur(g, (0, 0), 3.0) for g in (gx * gx, gy * gy, gx * gy))
    energy = jxx + jyy
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / np.maximum(energy, 1e-6)
    streak = (coherence > STREAK_COHERENCE) & (np.sqrt(energy) > STREAK_GRADIENT)
    return float(streak[mask].mean())


def _tight(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A crop the face fills: from mid-forehead to the lips, the right cheek cut by the edge."""
    xs, ys = landmarks[:, 0], landmarks[:, 1]
    x0, x1 = xs.min() - 0.15 * np.ptp(xs), xs.max() - 0.05 * np.ptp(xs)
    y0, y1 = ys.min() + 0.1 * np.ptp(ys), ys.max() - 0.12 * np.ptp(ys)
    crop = image[int(y0):int(y1), int(x0):int(x1)]
    side = max(crop.shape[:2])
    return cv2.resize(crop, (round(512 * crop.shape[1] / side), round(512 * crop.shape[0] / side)))


def _turned(landmarks: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """The landmarks of the same head turned by ``yaw`` and nodded by ``pitch`` (radians) about its centre."""
    centre = landmarks[list(FaceIndex.RIGID)].mean(axis=0)
    return (landmarks - centre) @ euler_to_rotation(pitch, yaw, 0.0).T + centre


def _deep_beyond(map_x: np.ndarray, map_y: np.ndarray, size: tuple[int, int], depth: float = 16.0) -> np.ndarray:
    """Output pixels that sample at least ``depth`` pixels beyond the picture, less a band along
    what they border (the face's edge there is a single line, not a streak)."""
    height, width = size
    beyond = (map_x < -depth) | (map_x > width - 1 + depth) | (map_y < -depth) | (map_y > height - 1 + depth)
    return cv2.erode(beyond.astype(np.uint8), np.ones((19, 19), np.uint8), borderType=cv2.BORDER_REPLICATE) > 0


def test_extension_keeps_the_picture_and_does_not_streak_its_edge():
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[40:260, 140:340])
    margin = 120
    extended = extend(image, margin)
    np.testing.assert_array_equal(extended[margin:-margin, margin:-margin], image)
    outside = np.ones(extended.shape[:2], bool)
    outside[margin - 8:-margin + 8, margin - 8:-margin + 8] = False
    replicated = cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
    assert streaked(replicated, outside) > 0.3  # the measure sees a replicated edge
    assert streaked(extended, outside) < 0.02
    assert extend(image, 0) is image


def test_a_portrait_with_margins_is_not_extended(tracker, portraits):
    image = portraits["astronaut"]
    crop = crop_frames(image, stable_crop_box(tracker.detect(image)), 512)
    rig = PortraitRig(crop, tracker.detect(crop).landmarks[0])
    assert beyond_margin(rig.mesh) == 0 and rig._image_rgba.shape[:2] == crop.shape[:2]


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_a_tight_portrait_turning_its_head_shows_no_streaks(tracker, portraits, name):
    image = portraits[name]
    tight = _tight(image, tracker.detect(image).landmarks[0])
    landmarks = tracker.detect(tight).landmarks[0].astype(np.float64)
    rig = PortraitRig(tight, landmarks)
    assert beyond_margin(rig.mesh, BeyondFill()) > 10, "the crop should cut the face"
    height, width = tight.shape[:2]
    worst, uncovered = 0.0, 0
    for yaw, pitch in ((-0.45, 0.0), (-0.3, -0.3), (-0.5, 0.2)):
        target = _turned(landmarks, yaw, pitch)
        moved, source, depth = rig.vertices(target)
        map_x, map_y = rig.warper.backward_map(moved.astype(np.float32), source.astype(np.float32), depth)
        beyond = _deep_beyond(map_x, map_y, (height, width))
        if beyond.mean() < 0.01:
            continue
        uncovered += 1
        worst = max(worst, streaked(rig.render(target), beyond))
    assert uncovered, f"{name}: the turns should uncover what lies beyond the picture"
    assert worst < 0.1, f"{name}: {worst:.0%} of what the turned head uncovers beyond the picture is streaked"
