"""The official script's face crop: 3x the mean face box, centred on the union of boxes, 0.115 of the side up."""

from __future__ import annotations

import numpy as np

from engines.base import import_object
from engines.hellomeme_crop import SHIFT_UP, hellomeme_crop_box
from engines.hellomeme_engine import HelloMemeEngine
from faces.tracking import NUM_LANDMARKS, FaceTrack


def _track(boxes, image_size=(1000, 1000)) -> FaceTrack:
    """One frame per (x0, y0, x1, y1) box: mesh points spread inside the box, four on its corners."""
    frames = len(boxes)
    landmarks = np.zeros((frames, NUM_LANDMARKS, 3), dtype=np.float32)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        landmarks[i, :, :2] = [(x0 + x1) / 2, (y0 + y1) / 2]
        landmarks[i, :4, :2] = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
    return FaceTrack(landmarks=landmarks, rotation=np.zeros((frames, 3), np.float32),
                     translation=np.zeros((frames, 3), np.float32), detected=np.ones(frames, bool),
                     image_size=image_size)


def test_crop_is_three_faces_wide_and_shifted_up_by_0_115():
    box = hellomeme_crop_box(_track([(400, 400, 500, 520), (420, 400, 520, 520)]))
    side = 3 * 120  # the larger mean box side (height 120) x 3
    assert box.side == side
    centre_x, centre_y = (400 + 520) / 2, (400 + 520) / 2 - SHIFT_UP * side
    assert box.x0 == int(centre_x - side / 2) and box.y0 == int(centre_y - side / 2)
    assert SHIFT_UP == 0.115


def test_crop_slides_inside_the_image_and_never_exceeds_it():
    box = hellomeme_crop_box(_track([(10, 5, 210, 205)], image_size=(480, 640)))
    assert box.x0 >= 0 and box.y0 >= 0
    assert box.side <= 479 and box.x0 + box.side <= 640 and box.y0 + box.side <= 480
    # The prepare stage cuts crops with the rule the engine names.
    assert import_object(HelloMemeEngine.crop_rule) is hellomeme_crop_box
