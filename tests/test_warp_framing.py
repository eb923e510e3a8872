"""A driving face that shrinks (a person stepping back, a camera pulling out) shrinks the whole picture.

The mesh's border stays put, so a face the mesh alone shrank to half size left a tiny head on a
neck stretched down to the bottom edge and a swirled background.  The part of the change the
mesh cannot show moves the whole portrait, as a camera would; the mesh keeps small changes, so
clips whose face keeps its size render as before.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.warp.portrait import Framing, PortraitRig, RigConfig
from engines.warp.retarget import retarget
from faces.tracking import FaceIndex, crop_frames, head_pose, stable_crop_box
from jobs.demo_media import demo_portraits


@pytest.fixture(scope="module")
def reference(tracker):
    """Grace Hopper's face crop at 512 (head, uniform and background) and its face."""
    image = demo_portraits()["grace_hopper"]
    crop = crop_frames(image, stable_crop_box(tracker.detect(image)), 512)
    return crop, tracker.detect(crop)


def _scaled_driving(landmarks: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 3) landmarks of the same face scaled about its centre, and their solvePnP poses."""
    centre = landmarks[list(FaceIndex.RIGID)].mean(axis=0)
    driving = centre + scales[:, None, None] * (landmarks - centre)
    poses, _ = head_pose(driving.astype(np.float32), (512, 512))
    return driving, poses


def _eye_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[FaceIndex.EYE_OUTER_LEFT, :2] - landmarks[FaceIndex.EYE_OUTER_RIGHT, :2]))


def test_a_face_shrinking_to_half_shrinks_the_picture_without_stretching_the_neck(tracker, reference):
    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    driving, poses = _scaled_driving(landmarks, np.linspace(1.0, 0.5, 12))
    targets = retarget(landmarks, driving, reference_pose=face.rotation[0], driving_pose=poses, image_size=(512, 512))
    rig = PortraitRig(crop, landmarks)
    rig.prepare(targets)
    frame = rig.render(targets[-1])

    # The head is drawn at half size, as the tracker reads it on the rendered frame.
    drawn = tracker.detect(frame)
    assert drawn.detected[0], "the shrunken face should still be a face"
    assert _eye_distance(drawn.landmarks[0]) / _eye_distance(landmarks) == pytest.approx(0.5, abs=0.06)

    # Below the chin, the output shows the reference's neck and shoulders at about half size
    # too: down the chin's column, output rows a distance d below the drawn chin sample the
    # reference about 2d below its own chin.  A mesh pinned at the border sampled 1.0-1.3d there
    # (a neck stretched by up to 2); the small share of the shrinking the mesh keeps still
    # stretches it by up to ~1.2.
    moved, source, depth = rig.vertices(targets[-1])
    map_x, map_y = rig.warper.backward_map(moved.astype(np.float32), source.astype(np.float32), depth)
    chin_source = landmarks[FaceIndex.CHIN, :2]
    chin_drawn = targets[-1][FaceIndex.CHIN, :2]
    column = int(round(chin_drawn[0]))
    below = 511 - chin_source[1]  # the reference's rows under the chin
    for fraction in (0.25, 0.5, 0.75, 0.95):
        row = int(round(chin_drawn[1] + 0.5 * fraction * below))
        sampled = map_y[row, column] - chin_source[1]
        assert sampled / (fraction * below) == pytest.approx(1.0, abs=0.2), f"{fraction} of the way down"
    # And across: the shoulders' width, halved (columns a distance d aside sample about 2d aside).
    row = int(round(chin_drawn[1] + 0.5 * 0.8 * below))
    for offset in (-0.4, 0.4):
        out_column = int(round(chin_drawn[0] + 0.5 * offset * 512))
        sampled = map_x[row, out_column] - chin_source[0]
        assert sampled / (offset * 512) == pytest.approx(1.0, abs=0.2)


def test_a_face_that_keeps_its_size_and_place_renders_as_before(reference):
    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    centre = landmarks[list(FaceIndex.RIGID)].mean(axis=0)
    target = centre + 1.05 * (landmarks - centre) + np.array([0.1 * np.ptp(landmarks[:, 0]), 0.0, 0.0])
    framed, unframed = PortraitRig(crop, landmarks), PortraitRig(crop, landmarks, RigConfig(framing=None))
    scale, shift = framed.camera(target)
    assert scale == 1.0 and not shift.any()
    np.testing.assert_array_equal(framed.render(target), unframed.render(target))


def test_the_camera_and_mesh_together_put_the_face_on_its_targets(reference):
    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    centre = landmarks[list(FaceIndex.RIGID)].mean(axis=0)
    rig = PortraitRig(crop, landmarks)
    previous = None
    for factor in np.linspace(1.6, 0.4, 25):
        target = centre + factor * (landmarks - centre) + np.array([(1.0 - factor) * 300.0, 0.0, 0.0])
        moved, _, _ = rig.vertices(target)
        np.testing.assert_allclose(moved[:468], target[:468, :2], atol=1e-6)
        scale, _ = rig.camera(target)
        mesh_scale = factor / scale
        low, high = Framing().mesh_scale
        assert low * np.exp(-Framing().scale_knee) - 1e-9 <= mesh_scale <= high * np.exp(Framing().scale_knee) + 1e-9
        if previous is not None:  # the camera's share grows steadily with the change: no jumps
            assert scale <= previous + 1e-12
        previous = scale
