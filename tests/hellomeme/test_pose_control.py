"""The head-pose control image drawn as HelloMeme draws it."""

from __future__ import annotations

import numpy as np
import pytest

from hellomeme.pose_control import (
    EDGE_COLOURS_RGB,
    HeadPoseTrack,
    draw_pose_image,
    draw_pose_images,
    driving_pose_track,
    estimate_translation,
    project_square,
)


def _mask(image, colour):
    return np.all(image == np.array(colour, dtype=np.uint8), axis=-1)


def test_frontal_square_sits_on_the_face_with_four_coloured_edges():
    landmarks = np.array([[200.0, 180.0], [320.0, 180.0], [200.0, 330.0], [320.0, 330.0]])
    translation = estimate_translation(landmarks, 512)
    corners = project_square(np.zeros(3), translation, 512)
    np.testing.assert_allclose(corners.mean(axis=0), [260.0, 255.0], atol=0.5)
    side = corners[:, 0].max() - corners[:, 0].min()
    assert side == pytest.approx(0.66 * 150, rel=0.01)
    image = draw_pose_image(np.zeros(3), translation, 512)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    for colour in EDGE_COLOURS_RGB:
        assert _mask(image, colour).sum() > 15 * side * 0.5
    background = np.all(image == 0, axis=-1)
    assert background.mean() > 0.8


def test_edges_keep_their_sides_and_follow_roll():
    translation = estimate_translation(np.array([[156.0, 156.0], [356.0, 356.0]]), 512)
    upright = draw_pose_image(np.zeros(3), translation, 512)
    # upright: green is the image-left edge, blue the top, red the right, magenta the bottom
    sides = [np.nonzero(_mask(upright, colour)) for colour in EDGE_COLOURS_RGB]
    assert sides[0][1].mean() < 236 and sides[1][0].mean() < 236
    assert sides[2][1].mean() > 276 and sides[3][0].mean() > 276
    rolled = project_square(np.array([0.0, 0.0, 0.3]), translation, 512)
    flat = project_square(np.zeros(3), translation, 512)
    assert not np.allclose(rolled, flat)
    # roll > 0 turns the square counter-clockwise on screen: the top edge rises to the right
    assert rolled[2, 1] < rolled[1, 1]


def test_yaw_foreshortens_and_pitch_foreshortens_the_other_way():
    translation = np.array([0.0, 0.0, -5.0])
    flat = project_square(np.zeros(3), translation, 512)
    yawed = project_square(np.array([0.0, 0.6, 0.0]), translation, 512)
    pitched = project_square(np.array([0.6, 0.0, 0.0]), translation, 512)

    def width(corners):
        return corners[:, 0].max() - corners[:, 0].min()

    def height(corners):
        return corners[:, 1].max() - corners[:, 1].min()

    assert width(yawed) < 0.9 * width(flat) and height(yawed) > 0.95 * height(flat)
    assert height(pitched) < 0.9 * height(flat) and width(pitched) > 0.95 * width(flat)


def test_driving_track_follows_the_driver_by_trans_ratio():
    reference = np.array([0.01, 0.0, -5.0])
    driving = np.array([[0.0, 0.0, -4.0], [0.02, 0.0, -4.0]])
    track = driving_pose_track(np.zeros((2, 3)), driving, reference, trans_ratio=0.5)
    np.testing.assert_allclose(track.translation, [[0.01, 0.0, -5.0], [0.02, 0.0, -5.0]])
    images = draw_pose_images(track, 128)
    assert images.shape == (2, 128, 128, 3)
    with pytest.raises(ValueError):
        HeadPoseTrack(np.zeros((2, 3)), np.zeros((3, 3)))


def test_opencv_head_pose_converts_to_hellomeme_axes():
    """Same physical rotation: S R_cv S (S flips y and z) must be HelloMeme's Rz Ry Rx of the converted angles."""
    from hellomeme.pose_control import rotation_from_opencv, rotation_matrix
    from faces.tracking import euler_to_rotation

    opencv_angles = np.array([0.2, -0.35, 0.1])
    flip = np.diag([1.0, -1.0, -1.0])
    expected = flip @ euler_to_rotation(*opencv_angles) @ flip
    converted = rotation_from_opencv(opencv_angles[None])[0]
    np.testing.assert_allclose(rotation_matrix(converted).T, expected, atol=1e-12)


def test_camera_translation_places_the_square_on_the_projected_head():
    from hellomeme.pose_control import SQUARE_SIDE_CM, translation_from_camera

    focal, canvas = 3.0 * 512, 512
    head = np.array([4.0, -2.0, 60.0])  # cm: right of and above the optical axis
    corners = project_square(np.zeros(3), translation_from_camera(head, focal, canvas), canvas)
    np.testing.assert_allclose(corners.mean(axis=0), [256 + focal * 4 / 60, 256 - focal * 2 / 60], atol=0.5)
    assert corners[:, 0].max() - corners[:, 0].min() == pytest.approx(focal * SQUARE_SIDE_CM / 60, rel=0.01)
