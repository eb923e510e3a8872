"""The pose stage: face tracks (mediapipe), head pose, the stable crop and the expression signals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faces import tracking
from faces.tracking import (
    CropBox,
    CropConfig,
    FaceTrack,
    FaceTrackError,
    NoFaceError,
    crop_frames,
    euler_to_rotation,
    head_pose,
    stable_crop_box,
)
from tests.face_follow import read_clip


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def test_detect_finds_the_face(tracker, astronaut):
    track = tracker.detect(astronaut)
    assert len(track) == 1 and track.detected.all()
    assert track.landmarks.shape == (1, 478, 3) and track.landmarks.dtype == np.float32
    assert track.image_size == (512, 512)
    xy = track.landmarks[0, :, :2]
    assert (xy > 0).all() and (xy < 512).all()
    # The face is in the upper middle of the picture, not left or right of it.
    assert 150 < xy[:, 0].mean() < 300 and 50 < xy[:, 1].mean() < 250
    assert abs(np.degrees(track.rotation[0, 1])) < 15  # she faces the camera


def test_no_face_raises_a_clear_error(tracker):
    blank = np.full((256, 256, 3), 127, np.uint8)
    with pytest.raises(NoFaceError, match="no face"):
        tracker.detect(blank)
    with pytest.raises(NoFaceError, match="any of the 3 frames"):
        tracker.track(np.stack([blank] * 3))


def test_a_small_face_in_a_large_photo_is_found_in_its_parts(tracker, astronaut):
    # A full-body shot or a group photo: scaled down whole to the mesh's side, the face is too small to see.
    photo = np.full((3000, 4000, 3), 90, np.uint8)
    small = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)  # a face ~110 px wide
    photo[2500:2884, 300:684] = small
    with pytest.raises(NoFaceError):
        tracker.detect(cv2.resize(photo, (1024, 768), interpolation=cv2.INTER_AREA))
    track = tracker.find(photo, 1024)
    assert track.image_size == (3000, 4000)
    expected = tracker.detect(small).landmarks[0, :, :2] + np.array([300, 2500])
    assert np.abs(track.landmarks[0, :, :2] - expected).mean() < 4  # the same face, in the photo's pixels
    with pytest.raises(NoFaceError, match="no face found in the 4000x3000 image, whole or in parts"):
        tracker.find(np.full((3000, 4000, 3), 90, np.uint8), 1024)


def test_a_clip_with_a_face_in_almost_no_frame_fails_instead_of_driving_a_video(tracker, astronaut):
    # The mesh's false finds on a clip without a face (colour bars) rendered "ok": a still portrait
    # that jumped to a stray pose.  Scattered finds under FaceTrackerConfig.min_found_share fail.
    blank = np.full_like(astronaut, 90)
    with pytest.raises(NoFaceError, match="found in only 1 of the 41 frames"):
        tracker.track(np.stack([blank] * 20 + [astronaut] + [blank] * 20))
    assert tracker.track(np.stack([blank] * 18 + [astronaut] * 2)).detected.sum() == 2  # 10%: a face that shows
    # A real face seen briefly is a run of frames: 4 of 100 in a row drive the clip.
    assert tracker.track(np.stack([blank] * 96 + [astronaut] * 4)).detected.sum() == 4


def test_bad_frames_are_rejected(tracker):
    with pytest.raises(FaceTrackError):
        tracker.track(np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(FaceTrackError):
        tracker.track(np.zeros((2, 64, 64, 3), np.float32))


def test_lost_frames_hold_the_nearest_detected_pose_and_none_is_dropped(tracker, astronaut):
    blank = np.full_like(astronaut, 90)
    shifted = np.roll(astronaut, 12, axis=1)
    frames = np.stack([blank, astronaut, shifted, blank, blank, astronaut])
    track = tracker.track(frames)
    assert len(track) == len(frames)
    assert track.detected.tolist() == [False, True, True, False, False, True]
    # Leading lost frames take the first detection; later ones hold the last one.
    np.testing.assert_array_equal(track.landmarks[0], track.landmarks[1])
    np.testing.assert_array_equal(track.landmarks[3], track.landmarks[2])
    np.testing.assert_array_equal(track.rotation[4], track.rotation[2])
    assert track.landmarks[2, :, 0].mean() > track.landmarks[1, :, 0].mean() + 8  # the shift was seen


def test_largest_face_wins(tracker, astronaut):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 768, 3), 200, np.uint8)
    canvas[:256, :256] = small
    canvas[:, 256:] = astronaut
    track = tracker.detect(canvas)
    assert track.landmarks[0, :, 0].min() > 256  # the face of the full-size astronaut


def test_a_clip_of_two_people_follows_one_even_when_the_other_grows_larger(tracker, astronaut):
    # Two people side by side; the right one leans in until larger.  Taking the largest face in every
    # frame switched to them half way, and the portrait jumped across the picture after them.
    head = astronaut[20:300, 90:370]
    frames = []
    for step in range(8):
        left, right = 300 - 16 * step, 190 + 16 * step
        canvas = np.full((400, 640, 3), 200, np.uint8)
        canvas[20:20 + left, 10:10 + left] = cv2.resize(head, (left, left), interpolation=cv2.INTER_AREA)
        canvas[20:20 + right, 330:330 + right] = cv2.resize(head, (right, right), interpolation=cv2.INTER_AREA)
        frames.append(canvas)
    track = tracker.track(np.stack(frames))
    assert track.detected.all()
    assert (track.landmarks[:, :, 0].mean(axis=1) < 320).all()  # the left person throughout


def test_a_face_leaving_the_frame_and_a_stray_find_after_it_hold_the_last_whole_pose(tracker, astronaut):
    # The person walks out to the left; then, for two frames, a face shows elsewhere.  The mesh guesses
    # the part of a leaving face it cannot see (a warped, half-cut pose), and a stray find held to the end
    # moved and resized the portrait after it: both are lost frames, holding the last whole face's pose.
    head = cv2.resize(astronaut[20:300, 90:370], (200, 200), interpolation=cv2.INTER_AREA)
    frames = []
    for left in (220, 150, 80, 20, -40, -60, -68, -76, -84, -92, -100, -110, -120, -140, -180):
        canvas = np.full((400, 480, 3), 120, np.uint8)
        shown = head[:, max(0, -left):]
        canvas[100:300, max(0, left):max(0, left) + shown.shape[1]] = shown
        frames.append(canvas)
    stray = np.full((400, 480, 3), 120, np.uint8)
    stray[230:390, 310:470] = cv2.resize(head, (160, 160), interpolation=cv2.INTER_AREA)
    tracker.detect(stray)  # a face the mesh finds
    frames += [stray, stray, frames[-1], frames[-1]]
    track = tracker.track(np.stack(frames))
    x = track.landmarks[:, :, 0]
    outside = ((x < 0) | (x >= track.image_size[1])).mean(axis=1)
    assert track.detected[:6].all()  # whole faces are kept
    assert not track.detected[15:17].any()  # the stray find is not followed
    last_kept = int(np.flatnonzero(track.detected).max())
    assert outside[last_kept] <= 0.2  # no half-cut pose was kept
    np.testing.assert_array_equal(track.landmarks[-1], track.landmarks[last_kept])  # held to the end

def test_tracker_is_reset_between_clips(tracker, astronaut):
    clip = np.stack([astronaut, np.roll(astronaut, 6, axis=0), np.roll(astronaut, 12, axis=0)])
    other = np.stack([np.roll(astronaut, -40, axis=1)] * 3)
    first = tracker.track(clip)
    tracker.track(other)
    again = tracker.track(clip)
    np.testing.assert_allclose(first.landmarks, again.landmarks, atol=1e-3)


@pytest.mark.parametrize("pitch, yaw, roll", [(0.0, 0.0, 0.0), (0.25, 0.0, 0.0), (0.0, 0.35, 0.0), (-0.2, -0.3, 0.15)])
def test_head_pose_recovers_a_known_rotation(pitch, yaw, roll):
    """Project the canonical face at a known pose, solve it back; also pins the angle conventions."""
    index = np.array(sorted(tracking.CANONICAL_FACE))
    model = np.array([tracking.CANONICAL_FACE[i] for i in index])
    rotation = euler_to_rotation(pitch, yaw, roll)
    camera = tracking._camera_matrix((512, 512))
    projected, _ = cv2.projectPoints(model, cv2.Rodrigues(rotation)[0], np.array([0.0, 0.0, 90.0]), camera, np.zeros(4))
    landmarks = np.zeros((1, 478, 3), np.float32)
    landmarks[0, index, :2] = projected[:, 0]
    solved, translation = head_pose(landmarks, (512, 512))
    np.testing.assert_allclose(solved[0], [pitch, yaw, roll], atol=1e-3)
    assert translation[0, 2] == pytest.approx(90.0, rel=1e-3)
    # Positive yaw turns the nose tip (landmark 1) towards image left; positive pitch moves it down.
    frontal, _ = cv2.projectPoints(model, np.zeros(3), np.array([0.0, 0.0, 90.0]), camera, np.zeros(4))
    nose = list(index).index(1)
    shift = projected[nose, 0] - frontal[nose, 0]
    if yaw > 0 and pitch == 0:
        assert shift[0] < -5
    if pitch > 0 and yaw == 0:
        assert shift[1] > 5


def test_face_track_checks_its_shapes():
    with pytest.raises(FaceTrackError):
        FaceTrack(landmarks=np.zeros((2, 468, 3), np.float32), rotation=np.zeros((2, 3)),
                  translation=np.zeros((2, 3)), detected=np.ones(2, bool), image_size=(8, 8))
    with pytest.raises(FaceTrackError):
        FaceTrack(landmarks=np.zeros((2, 478, 3), np.float32), rotation=np.zeros((3, 3)),
                  translation=np.zeros((2, 3)), detected=np.ones(2, bool), image_size=(8, 8))


def test_stable_crop_is_one_square_around_the_face_shifted_up(tracker, astronaut):
    track = tracker.detect(astronaut)
    loose = stable_crop_box(track, CropConfig(fit_inside=False))
    face = track.face_size()[0]
    assert loose.side == pytest.approx(3.0 * face, rel=1e-6)
    lm = track.landmarks[0]
    face_centre_y = (lm[:, 1].min() + lm[:, 1].max()) / 2
    assert loose.y0 + loose.side / 2 < face_centre_y  # shifted up: more room above the head
    box = stable_crop_box(track)  # default: never larger than the image, slid inside it
    assert box.side <= 512 and box.x0 >= 0 and box.y0 >= 0
    assert box.x0 + box.side <= 512 + 1e-6 and box.y0 + box.side <= 512 + 1e-6
    assert lm[:, 0].min() > box.x0 and lm[:, 0].max() < box.x0 + box.side


def test_crop_pads_outside_the_image_by_replicating_its_edge():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = 200
    image[:, 50:] = 50
    crop = crop_frames(image[None], CropBox(x0=-100.0, y0=0.0, side=200.0), 64)
    assert crop.shape == (1, 64, 64, 3)
    assert (crop[0, :, :10] == 200).all()  # left of the image: its left edge repeated
    assert (crop[0, :, -10:] == 50).all()


def test_cropped_track_matches_the_face_found_in_the_crop(tracker, astronaut):
    track = tracker.detect(astronaut)
    box = stable_crop_box(track, CropConfig(fit_inside=False))
    crop = crop_frames(astronaut, box, 512)
    moved = track.cropped(box, 512)
    found = tracker.detect(crop)
    assert moved.image_size == (512, 512)
    error = np.linalg.norm(moved.landmarks[0, :, :2] - found.landmarks[0, :, :2], axis=1)
    assert np.median(error) < 4.0  # pixels of the 512 crop; the crop is ~1.5x the original scale
    np.testing.assert_allclose(moved.rotation, found.rotation, atol=np.radians(6))


def test_signals_follow_a_real_clip(tracker, media_dir):
    """nice.mp4: a man talks, closes his eyes for about two seconds, opens them and turns his head."""
    frames = read_clip(media_dir / "drive_videos" / "nice.mp4")
    track = tracker.track(frames)
    assert len(track) == len(frames) and track.detected.mean() > 0.95
    eye = tracking.eye_opening(track)
    mouth = tracking.mouth_opening(track)
    yaw = np.degrees(tracking.head_yaw(track))
    assert eye.max() > 0.1 and np.percentile(eye, 10) < 0.05  # eyes open, then closed
    assert mouth.max() > 0.15 and mouth.min() < 0.03  # speaks: the mouth opens and shuts
    assert np.ptp(yaw) > 15
    signals = tracking.expression_signals(track)
    assert set(signals) == {"mouth", "eye", "yaw", "pitch"}
    assert all(values.shape == (len(frames),) for values in signals.values())
    correlations = tracking.follow_correlations(track, track)
    assert all(value == pytest.approx(1.0) for value in correlations.values() if value is not None)


def test_crop_and_transformed_track_of_a_real_clip(tracker, media_dir):
    frames = read_clip(media_dir / "drive_videos" / "qie.mp4")
    track = tracker.track(frames)
    box = stable_crop_box(track)
    crops = crop_frames(frames, box, 512)
    moved = track.cropped(box, 512)
    assert crops.shape == (len(frames), 512, 512, 3) and len(moved) == len(frames)
    found = tracker.track(crops)
    error = np.linalg.norm(moved.landmarks[..., :2] - found.landmarks[..., :2], axis=-1)
    assert np.median(error) < 4.0
