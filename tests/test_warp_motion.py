"""The warp engine follows head motion it was never tuned on, and closes eyes without smearing them.

The validation set (:mod:`tests.validation_clips`) is generated here from the demo portraits:
scripted small and large nods, turns, tilts and combined motion, mirrored, re-framed, shrunk and
re-timed.  Each moving signal -- mouth and eye opening, solvePnP yaw, pitch and roll, and the
nose-against-eye-corner proxies of yaw and pitch that use no pose model -- must follow the
driving clip.  The bench (bench/quality.py) holds the stricter targets and the shared clips.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engines.warp.expressions import close_eyes
from engines.warp.portrait import PortraitRig
from engines.warp.retarget import RetargetConfig, retarget
from faces import tracking
from faces.tracking import FaceIndex, crop_frames, euler_to_rotation, stable_crop_box
from tests.validation_clips import MOVES, SPECS, build, follow, mirrored, off_centre_wide, retimed, shrunk

MIN_CORRELATION = 0.8


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_output_follows_each_moving_signal_of_the_validation_clip(tracker, portraits, spec):
    clip = build(spec, tracker, portraits)
    result = follow(clip.frames, clip.reference, tracker)
    assert result.output.detected.all(), f"{spec.name}: the face is lost in the output"
    judged = {name: value for name, value in result.correlations.items() if value is not None}
    assert MOVES[spec.script] <= set(judged), (
        f"{spec.name}: the clip should move {sorted(MOVES[spec.script])} beyond their floors: {result.correlations}")
    weak = {name: round(value, 2) for name, value in judged.items() if value < MIN_CORRELATION}
    assert not weak, f"{spec.name}: output does not follow {weak} (all: {judged})"


def test_clip_variants_keep_the_motion_and_change_the_framing():
    frames = np.random.default_rng(0).integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    flipped, fps = mirrored(frames, 15.0)
    np.testing.assert_array_equal(flipped[:, :, 0], frames[:, :, -1])
    wide, _ = off_centre_wide(frames, 15.0)
    assert wide.shape == (12, 64, 113, 3)
    small, _ = shrunk(frames, 15.0)
    assert small.shape == frames.shape
    faster, fps = retimed(frames, 15.0, 25.0)
    slower, slow_fps = retimed(frames, 15.0, 10.0)
    assert (len(faster), fps, len(slower), slow_fps) == (20, 25.0, 8, 10.0)
    np.testing.assert_array_equal(slower[1], frames[2])  # nearest frame in time: 0.1 s


def _nodding_driver(landmarks: np.ndarray, own: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    centre = landmarks[list(FaceIndex.RIGID)].mean(axis=0)
    start = euler_to_rotation(*own)
    return np.stack([(landmarks - centre) @ (euler_to_rotation(*(own + [p, 0.0, 0.0])) @ start.T).T + centre
                     for p in pitch])


@pytest.fixture(scope="module")
def astronaut_face(tracker, portraits):
    image = portraits["astronaut"]
    crop = crop_frames(image, stable_crop_box(tracker.detect(image)), 512)
    return crop, tracker.detect(crop)


def test_small_quick_nods_keep_their_timing_and_size(astronaut_face):
    """A 3-degree nod every 8 frames: the retargeted head nods on the same frames, by the pitch gain."""
    _, face = astronaut_face
    landmarks = face.landmarks[0].astype(np.float64)
    own = face.rotation[0].astype(np.float64)
    frames = np.arange(48)
    pitch = np.radians(3.0) * np.sin(2 * np.pi * frames / 8)
    driving = _nodding_driver(landmarks, own, pitch)
    driving_pose, _ = tracking.head_pose(driving.astype(np.float32), (512, 512))
    config = RetargetConfig()
    targets = retarget(landmarks, driving, config, reference_pose=own, driving_pose=driving_pose, image_size=(512, 512))
    solved, _ = tracking.head_pose(targets.astype(np.float32), (512, 512))
    wanted, got = driving_pose[:, 0] - driving_pose[0, 0], solved[:, 0] - solved[0, 0]
    lags = range(-3, 4)
    best = max(lags, key=lambda lag: np.corrcoef(np.roll(wanted, lag)[4:-4], got[4:-4])[0, 1])
    assert best == 0, f"the retargeted nod lags the driver by {best} frames"
    size = np.ptp(got[4:-4]) / np.ptp(wanted[4:-4])
    assert size > 0.8 * config.pose_gains[0], f"smoothing shrank a quick nod to {size:.2f} of its size"


def _framed(landmarks: np.ndarray, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """The same face in another framing: scaled about its centre and moved (pixels)."""
    centre = landmarks[..., list(FaceIndex.RIGID), :].mean(axis=-2, keepdims=True)
    return (landmarks - centre) * scale + centre + np.array([shift[0], shift[1], 0.0])


def _head_size_and_place(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rigid = targets[:, list(FaceIndex.RIGID), :2]
    centre = rigid.mean(axis=1)
    return np.linalg.norm(rigid - centre[:, None], axis=-1).mean(axis=1), centre


def test_a_cut_in_the_driving_clip_starts_the_head_motion_afresh_and_a_glitch_does_not(astronaut_face):
    """An edited clip cuts to another framing (a smaller face, elsewhere): the portrait shrank to 75%, jumped
    and turned at every cut.  After the cut the head moves on from where it was; a one-frame tracking
    glitch (a face found half the size for one frame) does not restart anything."""
    _, face = astronaut_face
    landmarks = face.landmarks[0].astype(np.float64)
    own = face.rotation[0].astype(np.float64)
    frames = np.arange(40)
    driving = _nodding_driver(landmarks, own, np.radians(4.0) * np.sin(2 * np.pi * frames / 20))
    cut = driving.copy()
    cut[20:] = _framed(driving[20:], 0.7, (60.0, -25.0))
    kwargs = dict(reference_pose=own, image_size=(512, 512))

    def pose(track: np.ndarray) -> np.ndarray:
        return tracking.head_pose(track.astype(np.float32), (512, 512))[0]

    steady = retarget(landmarks, driving, RetargetConfig(), driving_pose=pose(driving), **kwargs)
    across = retarget(landmarks, cut, RetargetConfig(), driving_pose=pose(cut), **kwargs)
    naive = retarget(landmarks, cut, RetargetConfig(cut_scale_ratio=None), driving_pose=pose(cut), **kwargs)
    sizes, centres = _head_size_and_place(across)
    naive_sizes, _ = _head_size_and_place(naive)
    assert naive_sizes[25] / naive_sizes[15] < 0.8  # taken from the first frame, the portrait shrank
    assert abs(sizes[21] / sizes[19] - 1) < 0.03 and np.linalg.norm(centres[21] - centres[19]) < 6
    np.testing.assert_allclose(across[:18], steady[:18], atol=0.01)  # nothing changes before the cut
    # The mesh's landmarks of a new face settle over a few frames (a 1.6x zoom read 1.49x first): the shot's
    # motion is taken once they have settled, so the portrait does not stay 13% larger for the rest of it.
    settling = driving.copy()
    for t, zoom in zip(range(20, 40), [1.49, 1.6, 1.68] + [1.71] * 17):
        settling[t] = _framed(driving[t], zoom, (0.0, 0.0))
    zoomed = retarget(landmarks, settling, RetargetConfig(), driving_pose=pose(settling), **kwargs)
    zoomed_sizes, _ = _head_size_and_place(zoomed)
    assert abs(zoomed_sizes[30] / sizes[15] - 1) < 0.03
    # A glitch: one frame of a face half the size somewhere else, then back.
    glitch = driving.copy()
    glitch[12] = _framed(driving[12], 0.5, (80.0, 90.0))
    glitched = retarget(landmarks, glitch, RetargetConfig(), driving_pose=pose(glitch), **kwargs)
    np.testing.assert_allclose(glitched[16:], steady[16:], atol=0.01)
    # ... nor is that frame followed, nor a one-frame flash of another face (80 px away, 8% smaller): the
    # portrait jumped, shrank or grinned for that frame.
    flash = driving.copy()
    flash[12] = _framed(driving[12], 0.92, (80.0, 0.0))
    for spiked in (glitch, flash):
        kept = retarget(landmarks, spiked, RetargetConfig(), driving_pose=pose(spiked), **kwargs)
        followed = retarget(landmarks, spiked, RetargetConfig(spike_shift=None), driving_pose=pose(spiked), **kwargs)
        jump = np.abs(kept[12] - steady[12]).max()
        assert jump < 4 and np.abs(followed[12] - steady[12]).max() > 4 * max(jump, 1.0)


def test_after_a_cut_to_another_person_their_own_face_shape_is_not_an_expression(tracker, portraits, astronaut_face):
    """Expressions are offsets from the shot's most neutral face: taken from the clip's, a cut to another
    person made the second person's own face shape (a lower mouth, higher brows) a standing expression."""
    _, face = astronaut_face
    reference = face.landmarks[0].astype(np.float64)
    other_image = portraits["grace_hopper"]
    other_crop = crop_frames(other_image, stable_crop_box(tracker.detect(other_image)), 512)
    other = _framed(tracker.detect(other_crop).landmarks[0].astype(np.float64), 0.7, (40.0, 30.0))
    driving = np.stack([reference] * 20 + [other] * 20)
    still = tracking.head_pose(driving.astype(np.float32), (512, 512))[0]
    kwargs = dict(reference_pose=face.rotation[0].astype(np.float64), driving_pose=still, image_size=(512, 512))
    per_shot = retarget(reference, driving, RetargetConfig(), **kwargs)
    whole_clip = retarget(reference, driving, RetargetConfig(cut_scale_ratio=None), **kwargs)
    brows = list(FaceIndex.EYEBROW_LEFT) + list(FaceIndex.EYEBROW_RIGHT)

    def standing(targets: np.ndarray) -> float:  # how far the second shot's still face is from the portrait's own
        moved = targets[30] - targets[30][list(FaceIndex.RIGID)].mean(axis=0)
        own = reference - reference[list(FaceIndex.RIGID)].mean(axis=0)
        return float(np.abs(moved[brows, :2] - own[brows, :2]).mean())

    assert standing(per_shot) < 2.0 and standing(whole_clip) > 2 * max(standing(per_shot), 1.0)


def _dark_fraction(image: np.ndarray, mask: np.ndarray, skin: np.ndarray) -> float:
    luminance = image[mask].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float(np.mean(luminance < 0.6 * (skin @ np.array([0.299, 0.587, 0.114]))))


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_a_shut_eye_is_covered_with_lid_skin_not_a_stretched_eye(tracker, portraits, name):
    """Blink to shut: where the open eye was, the frame shows skin (little of the dark iris and
    lashes is left) but for the new lash line along the lid's edge, and the tracker reads the
    eyes as closed."""
    import cv2

    image = portraits[name]
    crop = crop_frames(image, stable_crop_box(tracker.detect(image)), 512)
    landmarks = tracker.detect(crop).landmarks[0].astype(np.float64)
    rig = PortraitRig(crop, landmarks)
    shut_landmarks = landmarks + close_eyes(landmarks, np.array([1.0, 1.0]))
    shut = rig.render(shut_landmarks)
    # The same without the lash line: what covers the eye is skin.
    no_lashes = replace(rig.config, lid=replace(rig.config.lid, lash_opacity=0.0))
    skin_only = PortraitRig(crop, landmarks, no_lashes).render(shut_landmarks)
    opened = rig.render(landmarks)
    for eye, (upper, lower) in enumerate(((FaceIndex.EYE_LEFT_UPPER, FaceIndex.EYE_LEFT_LOWER),
                                          (FaceIndex.EYE_RIGHT_UPPER, FaceIndex.EYE_RIGHT_LOWER))):
        polygon = np.concatenate([landmarks[list(upper), :2], landmarks[list(lower)[::-1], :2]])
        mask = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
        skin = rig._eyes[eye].colour
        before, after = _dark_fraction(opened, mask > 0, skin), _dark_fraction(skin_only, mask > 0, skin)
        assert before > 0.2, f"{name} eye {eye}: the open eye should show its dark iris ({before:.2f})"
        assert after < min(0.15, before / 3), f"{name} eye {eye}: the shut eye still shows {after:.0%} dark pixels"
        # Skin colour, not a smear of the eye: nearer the lid skin's colour (the brighter half of the
        # lid, so a shaded lid sits a little below it) than the open eye was.
        shut_distance = np.linalg.norm(skin_only[mask > 0].mean(axis=0) - skin)
        assert shut_distance < min(60.0, np.linalg.norm(opened[mask > 0].mean(axis=0) - skin))
        # With the lash line, the dark pixels that differ from the skin-only frame lie along the
        # shut lid (a band 0.15 of the eye's width), not over the eye.
        width = np.linalg.norm(landmarks[upper[-1], :2] - landmarks[upper[0], :2])
        lid = np.zeros(crop.shape[:2], np.uint8)
        cv2.polylines(lid, [np.round(shut_landmarks[list(lower), :2]).astype(np.int32)], False, 1,
                      max(1, int(round(0.15 * width))))
        lashes = (np.abs(shut.astype(int) - skin_only).sum(axis=2) > 30) & (mask > 0)
        assert lashes.sum() > 0.3 * width, f"{name} eye {eye}: no lash line along the shut lid"
        assert (lashes & (lid > 0)).sum() >= 0.9 * lashes.sum(), f"{name} eye {eye}: lash line off the lid's edge"
    closed_track, open_track = tracker.detect(shut), tracker.detect(opened)
    # (mediapipe reads Grace Hopper's eyes, behind glasses, as closing only part way.)
    assert tracking.eye_opening(closed_track)[0] < 0.7 * tracking.eye_opening(open_track)[0]
