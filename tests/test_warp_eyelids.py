"""The painted lid closes a drawn eye that reaches well below the tracker's lid points.

On drawn (anime) portraits mediapipe's eye contour sits in the top third of the drawn eye; a
lid that only sweeps down to those points leaves the lower half of the eye (iris, whites,
outline) open when shut.  Synthesised here: flat skin, an eye drawn as an outlined ellipse with
whites and an iris, and lid points in its top third as the tracker places them.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.warp.eyelids import ReferenceEye, paint_lid

SKIN = (230, 185, 170)


def _lid(left: float, right: float, y: float, bulge: float, count: int = 9) -> np.ndarray:
    """A lid polyline, corner to corner, bulging by ``bulge`` pixels (negative: upwards) at the middle."""
    t = np.linspace(0.0, 1.0, count)
    return np.column_stack([left + t * (right - left), y + bulge * np.sin(np.pi * t)])


def _portrait(eye_bottom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, upper, lower, brow): an eye between y 86 and ``eye_bottom``, lid points at y 92-104."""
    image = np.empty((240, 260, 3), np.uint8)
    image[:] = SKIN
    centre_y, half_height = (86 + eye_bottom) / 2, (eye_bottom - 86) / 2
    cv2.ellipse(image, (130, int(round(centre_y))), (34, int(round(half_height))), 0, 0, 360, (225, 215, 240), -1)
    cv2.circle(image, (130, int(round(centre_y)) + 2), int(min(14, half_height - 2)), (60, 90, 200), -1)
    cv2.ellipse(image, (130, int(round(centre_y))), (34, int(round(half_height))), 0, 0, 360, (40, 30, 60), 3)
    cv2.line(image, (96, 58), (164, 58), (90, 60, 50), 5)  # the eyebrow
    return image, _lid(100, 160, 100, -8), _lid(100, 160, 100, 4), _lid(98, 162, 58, 0)


def _eye_coloured(image: np.ndarray, region: np.ndarray) -> float:
    """Fraction of ``region`` that is bluer than it is red: the drawn whites, iris and outline; not skin or lashes."""
    pixels = image[region].astype(int)
    return float(np.mean(pixels[:, 2] > pixels[:, 0] + 10))


def test_a_shut_lid_covers_a_drawn_eye_below_the_lid_points():
    image, upper, lower, brow = _portrait(eye_bottom=138.0)  # 34 px (0.57 eye widths) below the lower lid
    eye = ReferenceEye.measure(image, upper, lower, brow, np.array(SKIN, dtype=np.float64))
    assert eye.reach_down > 0.45, f"the drawn eye's reach below the lid points reads {eye.reach_down:.2f}"
    below = np.zeros(image.shape[:2], bool)
    below[108:138, 100:160] = True  # the drawn eye's lower half, below the tracker's lower lid
    below &= cv2.ellipse(np.zeros(image.shape[:2], np.uint8), (130, 112), (31, 23), 0, 0, 360, 1, -1) > 0
    assert _eye_coloured(image, below) > 0.9
    for closure, most_left in ((1.0, 0.1), (0.5, 0.75)):
        frame = image.copy()
        shut_upper = upper + closure * (lower - upper)
        paint_lid(frame, image, eye, shut_upper, lower, closure)
        left = _eye_coloured(frame, below)
        assert left < most_left, f"closure {closure}: {left:.0%} of the drawn eye below the lid points is still open"
    # Half shut covers about the upper half of the whole drawn eye, not all of it.
    half = image.copy()
    paint_lid(half, image, eye, upper + 0.5 * (lower - upper), lower, 0.5)
    assert _eye_coloured(half, below & (np.arange(240)[:, None] > 126)) > 0.8


def test_a_photographs_eye_ending_at_its_lid_points_keeps_its_lid_edge():
    """An eye that ends at the lid points (as on a photograph): no reach below them, and a half-closed
    lid leaves the lower half of the opening as it was."""
    image = np.empty((240, 260, 3), np.uint8)
    image[:] = SKIN
    upper, lower, brow = _lid(100, 160, 100, -12), _lid(100, 160, 100, 10), _lid(98, 162, 58, 0)
    opening = np.concatenate([upper, lower[::-1]])
    cv2.fillPoly(image, [np.round(opening).astype(np.int32)], (225, 215, 240))
    cv2.circle(image, (130, 99), 10, (60, 90, 200), -1)
    cv2.line(image, (96, 58), (164, 58), (90, 60, 50), 5)
    eye = ReferenceEye.measure(image, upper, lower, brow, np.array(SKIN, dtype=np.float64))
    assert eye.reach_down < 0.1
    frame = image.copy()
    paint_lid(frame, image, eye, upper + 0.5 * (lower - upper), lower, 0.5)
    np.testing.assert_array_equal(frame[105:109, 110:150], image[105:109, 110:150])


def test_a_squinting_photographs_eye_over_a_shadowed_cheek_is_not_taken_for_a_drawn_one():
    """A laughing or squinting eye on a photograph: a slit, the cheek below it in shadow (redder and
    darker than the lid skin) down to where the light skin resumes.  Taken for a drawn eye reaching
    that far below its lid points, its lid was painted as a block of skin over the cheek, reaching
    0.8 eye widths past the corners; its skin hues say it is no eye."""
    image = np.empty((240, 260, 3), np.uint8)
    image[:] = (200, 120, 100)
    upper, lower, brow = _lid(100, 160, 100, -2), _lid(100, 160, 100, 2), _lid(98, 162, 70, 0)
    for row in range(102, 150):  # the shadow under the eye, darkest near it
        depth = 1.0 - (row - 102) / 48.0
        image[row, 80:180] = np.round(np.array([200, 120, 100]) * (1.0 - 0.55 * depth) * [1.0, 0.8, 0.7])
    cv2.fillPoly(image, [np.round(np.concatenate([upper, lower[::-1]])).astype(np.int32)], (60, 25, 20))
    cv2.line(image, (96, 70), (164, 70), (60, 35, 30), 5)
    eye = ReferenceEye.measure(image, upper, lower, brow, np.array((200, 120, 100), dtype=np.float64))
    assert eye.drawn_below == 0.0
    assert eye.opening < 0.1  # nearly shut: the rig paints no lid over it (LidStyle.least_opening)
    frame = image.copy()
    paint_lid(frame, image, eye, upper + 0.5 * (lower - upper), lower, 0.5)
    changed = np.nonzero(np.abs(frame.astype(int) - image.astype(int)).sum(axis=-1) > 6)
    assert changed[0].size and changed[0].max() <= 106  # nothing painted over the cheek
    assert changed[1].min() >= 100 - 0.15 * 60 and changed[1].max() <= 160 + 0.15 * 60  # nor far past the corners


def test_an_eye_whose_lid_colour_is_its_own_iris_gets_no_painted_lid():
    """A drawn eye whose brow is hidden under a fringe has its tracked brow just above the eye, so
    the lid skin sampled between them is the eye's own lashes and iris: a lid painted from it drew a
    dark bar across the open iris at every blink.  Such an eye is closed by the mesh alone, as one
    nearly shut already is; a portrait tinted all over (its cheeks of the same hue) keeps its lids,
    and so does a near-black lid colour (sunglasses, deep shadow: no hue to speak of)."""
    image, upper, lower, brow = _portrait(eye_bottom=138.0)
    skin = np.array(SKIN, dtype=np.float64)
    iris = np.array([62.0, 73.0, 115.0])
    assert ReferenceEye.measure(image, upper, lower, brow, skin).takes_painted_lid(skin)
    sampled_the_iris = ReferenceEye.measure(image, upper, lower, brow, iris)
    assert not sampled_the_iris.takes_painted_lid(skin)
    assert sampled_the_iris.takes_painted_lid(np.array([90.0, 120.0, 200.0]))  # a blue-lit portrait
    assert ReferenceEye.measure(image, upper, lower, brow, np.array([27.0, 28.0, 25.0])).takes_painted_lid(skin)
