"""The painted mouth takes the portrait's colours: a monochrome portrait gets no red mouth pasted in."""

import cv2
import numpy as np
from skimage import data

from engines.warp.overlays import MouthPalette, paint_mouth_interior


def _painted(palette: MouthPalette) -> np.ndarray:
    frame = np.full((120, 160, 3), 128, np.uint8)
    xs = np.linspace(40, 120, 9)
    upper = np.stack([xs, 60 - 6 * np.sin(np.linspace(0, np.pi, 9))], axis=1)
    lower = np.stack([xs, 60 + 20 * np.sin(np.linspace(0, np.pi, 9))], axis=1)
    paint_mouth_interior(frame, upper, lower, np.array([0.0, 1.0]), 1.0, palette=palette)
    return frame


def test_a_colour_portrait_keeps_the_natural_mouth():
    palette = MouthPalette.for_portrait(np.ascontiguousarray(data.astronaut()))
    assert all(np.array_equal(getattr(palette, name), getattr(MouthPalette.natural(), name))
               for name in ("cavity", "tongue", "teeth"))


def test_a_black_and_white_or_sepia_portrait_gets_a_mouth_in_its_own_tint():
    grey = cv2.cvtColor(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    painted = _painted(MouthPalette.for_portrait(grey))
    saturation = cv2.cvtColor(painted, cv2.COLOR_RGB2HSV)[..., 1]
    assert saturation.max() < 12, "no coloured pixel in a black-and-white portrait's mouth"
    natural = cv2.cvtColor(_painted(MouthPalette.natural()), cv2.COLOR_RGB2HSV)[..., 1]
    assert natural.max() > 80  # the painted mouth was red before
    sepia = np.clip(grey.astype(np.float32) * np.array([1.0, 0.85, 0.6]), 0, 255).astype(np.uint8)
    palette = MouthPalette.for_portrait(sepia)
    assert palette.teeth[0] > palette.teeth[1] > palette.teeth[2]  # toned like the photo, not white-blue
    assert palette.cavity[0] - palette.cavity[2] < 40
