"""The warp engine: mesh, retargeting, rendering, and whether its output follows the clip.

"Follows" is measured the way a viewer would judge it, from the pixels: the FaceTracker is run
on the rendered video and its mouth opening, eye opening, head yaw and head pitch are
correlated (Pearson) with the same signals of the driving clip.  A signal is only judged where
the driving clip moves it beyond its noise floor (:data:`faces.tracking.SIGNAL_NOISE_FLOORS`:
five times the tracker's own jitter on a still portrait); a clip that never blinks says
nothing about eyes.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from engines.base import Engine, RenderInput
from engines.registry import engine_spec
from engines.warp import WarpEngine, WarpInputError
from engines.warp.expressions import LIPS_OUTER_LOWER, LIPS_OUTER_UPPER, mouth_gap, open_mouth
from engines.warp.mesh import WarpMesh, _target_to_source_affines, face_mesh_triangles
from engines.warp.portrait import PortraitRig
from engines.warp.retarget import RetargetConfig, retarget
from faces import tracking
from faces.tracking import FaceTrack, crop_frames, stable_crop_box
from tests.face_follow import read_clip

MIN_CORRELATION = 0.8

WARP = engine_spec("warp")



@pytest.fixture(scope="module")
def reference(tracker):
    """The astronaut's stable face crop at 512 and its face, as the pipeline hands them over."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut())
    box = stable_crop_box(tracker.detect(image))
    crop = crop_frames(image, box, 512)
    return crop, tracker.detect(crop)


def still_driving(face: FaceTrack, num_frames: int) -> FaceTrack:
    repeat = lambda a: np.repeat(a, num_frames, axis=0)  # noqa: E731
    return FaceTrack(landmarks=repeat(face.landmarks), rotation=repeat(face.rotation),
                     translation=repeat(face.translation), detected=np.ones(num_frames, bool),
                     image_size=face.image_size)


def render_input(reference_crop, reference_face, driving_face, driving_frames=None, meme_id="test") -> RenderInput:
    if driving_frames is None:
        driving_frames = np.zeros((len(driving_face),) + reference_crop.shape, np.uint8)
    return RenderInput(meme_id=meme_id, reference=reference_crop, reference_face=reference_face,
                       driving_frames=driving_frames, driving_face=driving_face)


def test_engine_declares_what_it_needs():
    engine = WarpEngine(WARP)
    assert isinstance(engine, Engine)
    assert engine.name == "warp" and engine.needs_gpu is False and engine.default_fps is None


def test_face_mesh_triangles_and_warp_mesh_tile_the_plane(reference):
    assert face_mesh_triangles().shape == (852, 3)
    crop, face = reference
    mesh = WarpMesh.build(face.landmarks[0], crop.shape[:2])
    corners = mesh.source[mesh.triangles].astype(np.float64)
    areas = 0.5 * np.abs(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]))
    far = mesh.source[mesh.loop(3)].astype(np.float64)
    hull = 0.5 * abs(np.dot(far[:, 0], np.roll(far[:, 1], 1)) - np.dot(far[:, 1], np.roll(far[:, 0], 1)))
    assert areas.sum() == pytest.approx(hull, rel=1e-4)  # no gaps, no overlaps


def test_still_driving_face_leaves_the_reference_unchanged(reference):
    crop, face = reference
    out = WarpEngine(WARP).render([render_input(crop, face, still_driving(face, 5))])[0]
    assert out.shape == (5, 512, 512, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - crop).max() <= 1


def test_every_frame_is_rendered_from_its_own_target(reference):
    crop, face = reference
    num_frames = 37
    landmarks = face.landmarks[0] + open_mouth(face.landmarks[0], np.linspace(0.0, 0.3, num_frames))
    driving = FaceTrack(landmarks=landmarks.astype(np.float32), rotation=np.zeros((num_frames, 3), np.float32),
                        translation=np.zeros((num_frames, 3), np.float32), detected=np.ones(num_frames, bool),
                        image_size=(512, 512))
    item = render_input(crop, face, driving)
    out = WarpEngine(WARP).render([item])[0]
    rig = PortraitRig(crop, face.landmarks[0])
    targets = retarget(face.landmarks[0], driving.landmarks, reference_pose=face.rotation[0],
                       driving_pose=driving.rotation, image_size=face.image_size)
    for t in (0, 13, 14, 26, 36):
        np.testing.assert_array_equal(out[t], rig.render(targets[t]))


def test_opening_the_driving_mouth_opens_the_rendered_mouth(tracker, reference):
    """No shared media needed: the driving face is the reference's own landmarks with the jaw dropping."""
    crop, face = reference
    amount = np.concatenate([np.linspace(0.0, 0.3, 10), np.linspace(0.3, 0.0, 10)])
    landmarks = face.landmarks[0] + open_mouth(face.landmarks[0], amount)
    driving = FaceTrack(landmarks=landmarks.astype(np.float32), rotation=np.zeros((20, 3), np.float32),
                        translation=np.zeros((20, 3), np.float32), detected=np.ones(20, bool), image_size=(512, 512))
    out = WarpEngine(WARP).render([render_input(crop, face, driving)])[0]
    measured = tracking.mouth_opening(tracker.track(out))
    assert np.corrcoef(measured, amount)[0, 1] > 0.95
    assert measured[9] > measured[0] + 0.2
    x, y = landmarks[9, [13, 14], :2].mean(axis=0).astype(int)  # the middle of the opened mouth
    assert out[9, y - 2:y + 3, x - 2:x + 3].mean() < 90  # dark: the inside of a mouth, not stretched lips


def _posed(landmarks: np.ndarray, pitch: float, yaw: float, roll: float) -> np.ndarray:
    """``landmarks`` (478, 3) turned by Euler angles about their rigid centre."""
    centre = landmarks[list(tracking.FaceIndex.RIGID)].mean(axis=0)
    return (landmarks - centre) @ tracking.euler_to_rotation(pitch, yaw, roll).T + centre


def test_head_turn_stays_a_turn_whatever_the_starting_poses(reference):
    """A driver who starts looking down, turned and tilted, then turns: the reference (posed otherwise) turns.

    The driving rotation relative to its first frame, applied as is to a reference in another pose,
    also nods and tilts it; moving each solvePnP angle by the driver's change keeps them apart.
    """
    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    own = face.rotation[0].astype(np.float64)
    start = own + np.array([0.2, 0.4, 0.25])
    poses = start + np.outer(np.linspace(0.0, -0.6, 8), [0.0, 1.0, 0.0])  # only the yaw changes
    centre = landmarks[list(tracking.FaceIndex.RIGID)].mean(axis=0)
    driving = np.stack([(landmarks - centre) @ (tracking.euler_to_rotation(*p) @ tracking.euler_to_rotation(*own).T).T
                        + centre for p in poses])
    driving_pose, _ = tracking.head_pose(driving.astype(np.float32), (512, 512))
    still = RetargetConfig(motion_smoothing_sigma=0.0, pose_gains=(1.0, 1.0, 1.0), pose_limits=None)
    targets = retarget(landmarks, driving, still, reference_pose=face.rotation[0], driving_pose=driving_pose,
                       image_size=(512, 512))
    solved, _ = tracking.head_pose(targets.astype(np.float32), (512, 512))
    np.testing.assert_allclose(solved - solved[0], driving_pose - driving_pose[0], atol=np.radians(0.5))
    assert np.ptp(solved[:, 1]) > np.radians(25)
    assert np.abs(solved[:, [0, 2]] - solved[0, [0, 2]]).max() < np.radians(2)  # no nod, no tilt
    # The relative 3D rotation of the driving landmarks, applied to the reference, mixes them.
    mixed = retarget(landmarks, driving, replace(still, pose_rotation=False))
    mixed_pose, _ = tracking.head_pose(mixed.astype(np.float32), (512, 512))
    assert np.abs(mixed_pose[:, [0, 2]] - mixed_pose[0, [0, 2]]).max() > np.radians(4)


def test_a_far_turn_and_nod_saturate_where_a_warp_still_shows_them_and_a_tilt_does_not(reference):
    """A driver who turns 57 degrees, nods 34 and tilts 29: the portrait turns and nods fully at first,
    then ever less, never past ``pose_limits`` plus ``pose_knee`` (a warp turned further tore the far
    cheek into a cut-out); it tilts all the way (a tilt is a turn in the picture's plane).
    """
    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    own = face.rotation[0].astype(np.float64)
    steps = np.linspace(0.0, 1.0, 12)
    poses = own + np.outer(steps, [0.6, -1.0, 0.5])
    centre = landmarks[list(tracking.FaceIndex.RIGID)].mean(axis=0)
    driving = np.stack([(landmarks - centre) @ (tracking.euler_to_rotation(*p) @ tracking.euler_to_rotation(*own).T).T
                        + centre for p in poses])
    driving_pose, _ = tracking.head_pose(driving.astype(np.float32), (512, 512))
    config = RetargetConfig(motion_smoothing_sigma=0.0)
    targets = retarget(landmarks, driving, config, reference_pose=own, driving_pose=driving_pose, image_size=(512, 512))
    solved, _ = tracking.head_pose(targets.astype(np.float32), (512, 512))
    got = solved - own
    wanted = (driving_pose - driving_pose[0]) * np.asarray(config.pose_gains)
    most = np.asarray(config.pose_limits) + config.pose_knee
    for axis, name in ((0, "nod"), (1, "turn")):
        assert np.abs(got[:, axis]).max() < most[axis] + np.radians(1), f"the {name} went past its limit"
        assert np.all(np.diff(np.abs(got[:, axis])) > -np.radians(0.5)), f"the {name} turned back"
        small = np.abs(wanted[:, axis]) < 0.5 * config.pose_limits[axis]
        np.testing.assert_allclose(got[small, axis], wanted[small, axis], atol=np.radians(1))
    assert np.abs(wanted[:, 1]).max() > np.radians(50)  # the driver did turn further
    np.testing.assert_allclose(got[:, 2], wanted[:, 2], atol=np.radians(1))  # the tilt in full


def test_expression_is_taken_from_the_clips_most_neutral_face(reference):
    """A clip that starts with the mouth open and then closes it: the reference ends with its own mouth."""
    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    amount = np.concatenate([np.full(6, 0.3), np.linspace(0.3, 0.0, 6), np.zeros(8)])
    driving = landmarks + open_mouth(landmarks, amount)
    targets = retarget(landmarks, driving)
    closed = targets[-1]
    np.testing.assert_allclose(closed[:468, :2], landmarks[:468, :2], atol=0.5)  # not pursed: as it was
    assert mouth_gap(targets[0]) > mouth_gap(landmarks) + 0.2  # and the open start opens it


def test_a_small_mouth_opens_in_proportion_to_its_size(reference):
    """The mouth gap is copied in units of the mouth's width: a drawn face's small mouth opens less."""
    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    amount = np.concatenate([np.zeros(4), np.full(4, 0.3)])
    driving = landmarks + open_mouth(landmarks, amount)
    lips = sorted(set(tracking.FaceIndex.LIPS_INNER_UPPER + tracking.FaceIndex.LIPS_INNER_LOWER
                      + LIPS_OUTER_UPPER + LIPS_OUTER_LOWER))
    small = landmarks.copy()
    middle = small[lips, 0].mean()
    small[lips, 0] = middle + 0.7 * (small[lips, 0] - middle)  # the same face with a 0.7x narrower mouth
    opened = np.ptp(mouth_gap(retarget(small, driving)))
    full = np.ptp(mouth_gap(retarget(landmarks, driving)))
    assert full == pytest.approx(0.3, abs=0.02)
    assert opened == pytest.approx(0.7 * full, rel=0.08)


def test_mismatched_inputs_are_refused(reference):
    crop, face = reference
    with pytest.raises(WarpInputError, match="reference must be"):
        WarpEngine(WARP).render([render_input(crop[:256], face, still_driving(face, 3))])
    item = render_input(crop, face, still_driving(face, 3))
    bad = RenderInput(meme_id="x", reference=crop, reference_face=face, driving_frames=item.driving_frames[:2],
                      driving_face=item.driving_face)
    with pytest.raises(WarpInputError, match="2 driving frames but 3 driving face entries"):
        WarpEngine(WARP).render([bad])


@pytest.fixture(scope="module")
def shared_reference(tracker, media_dir):
    path = media_dir / "reference_images" / "harris.jpg"
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    box = stable_crop_box(tracker.detect(image))
    crop = crop_frames(image, box, 512)
    return crop, tracker.detect(crop)


@pytest.mark.parametrize("clip", ["nice", "qie"])
def test_output_follows_the_driving_clip(tracker, shared_reference, clip, media_dir):
    """nice: talking, eyes shut for ~2 s, head turns and nods; qie: a child looks down, then up, and speaks."""
    frames = read_clip(media_dir / "drive_videos" / f"{clip}.mp4")
    track = tracker.track(frames)
    box = stable_crop_box(track)
    driving = track.cropped(box, 512)
    crop, face = shared_reference
    item = render_input(crop, face, driving, crop_frames(frames, box, 512), meme_id=clip)
    out = WarpEngine(WARP).render([item])[0]

    assert out.shape == (len(frames), 512, 512, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - crop).mean(axis=(1, 2, 3)).max() > 3  # not the reference unchanged
    rendered = tracker.track(out)
    assert rendered.detected.all()
    correlations = tracking.follow_correlations(driving, rendered)
    judged = {name: value for name, value in correlations.items() if value is not None}
    assert len(judged) >= 3, f"{clip} should move at least three signals beyond their floors: {correlations}"
    weak = {name: round(value, 2) for name, value in judged.items() if value < MIN_CORRELATION}
    assert not weak, f"{clip}: output does not follow {weak} (all: {correlations})"


def test_eye_openness_is_relative_to_the_eyes_typical_open_gap():
    """Widened eyes for a third of the clip do not make the ordinary open eyes read as closing;
    a blink still reads as shut and the widening as wider than open (up to the cap)."""
    from engines.warp.retarget import eye_openness

    gaps = np.full(30, 0.06)
    gaps[10:20] = 0.09  # surprise
    gaps[24:26] = 0.005  # a blink
    openness = eye_openness(np.column_stack([gaps, gaps]), most=RetargetConfig().max_eye_openness)
    np.testing.assert_allclose(openness[:10], 1.0, atol=0.01)
    assert openness[12, 0] == pytest.approx(1.5)  # 1.5x wider
    assert eye_openness(np.column_stack([gaps, gaps]), most=1.35)[12, 0] == pytest.approx(1.35)  # capped
    assert openness[24, 0] < 0.1


def test_an_opening_mouth_is_a_lens_and_a_closing_one_moves_as_one_piece(reference):
    """Opened by retargeting, the lower lip drops most at the middle and less towards the corners
    (a box-shaped opening read as less open the wider the laugh); the middle opens by the amount
    asked either way, and closing still lifts the whole lower lip."""
    from engines.warp.expressions import FaceFrame
    from faces.tracking import FaceIndex

    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    frame = FaceFrame.of(landmarks)
    upper, lower = list(FaceIndex.LIPS_INNER_UPPER[1:-1]), list(FaceIndex.LIPS_INNER_LOWER[1:-1])

    def opening(offsets):  # how much each inner-lip pair opens, corner to corner, in eye-corner distances
        return (offsets[lower] - offsets[upper]) @ frame.down / frame.length

    box, lens = opening(open_mouth(landmarks, 0.2)), opening(open_mouth(landmarks, 0.2, lens=1.0))
    middle = len(lens) // 2
    assert mouth_gap(landmarks + open_mouth(landmarks, 0.2, lens=1.0)) - mouth_gap(landmarks) == pytest.approx(0.2, abs=0.01)
    assert lens[middle] == pytest.approx(0.2, abs=0.01)
    assert box[0] > 0.9 * box[middle] and box[-1] > 0.9 * box[middle]  # a box
    assert lens[0] < 0.7 * lens[middle] and lens[-1] < 0.7 * lens[middle]  # a lens
    assert np.all(np.diff(lens[:middle + 1]) >= -1e-9) and np.all(np.diff(lens[middle:]) <= 1e-9)
    np.testing.assert_allclose(open_mouth(landmarks, -0.05, lens=1.0), open_mouth(landmarks, -0.05))


def test_a_narrow_eye_widens_by_the_driving_eyes_rise(reference):
    """The driver widens their eyes: a narrow reference eye's lids part by as much more as the
    driver's do (in eye-corner distances), not by the same fraction of its own small gap, which
    moved trump's lids by 2 px, within the tracker's noise; an eye as open as the driver's widens
    as the driver's does either way."""
    from engines.warp.expressions import EYES, close_eyes, eye_gaps

    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    closure = np.concatenate([np.zeros(12), np.full(4, -0.4), np.zeros(4)])  # 1.4x as open
    driving = landmarks + close_eyes(landmarks, np.column_stack([closure, closure]))
    rise = eye_gaps(driving)[13:15] - eye_gaps(landmarks)
    narrow = landmarks.copy()
    for upper, lower in EYES:
        lids = list(upper[1:-1]) + list(lower[1:-1])
        middle = narrow[lids].mean(axis=0)
        narrow[lids] = middle + 0.45 * (narrow[lids] - middle)
    got = eye_gaps(retarget(narrow, driving))[13:15] - eye_gaps(narrow)
    np.testing.assert_allclose(got / rise, 1.0, atol=0.1)
    proportional = eye_gaps(retarget(narrow, driving, RetargetConfig(widen_by_driving_rise=False)))[13:15]
    np.testing.assert_allclose((proportional - eye_gaps(narrow)) / rise, 0.45, atol=0.06)
    same = eye_gaps(retarget(landmarks, driving))[13:15] - eye_gaps(landmarks)
    np.testing.assert_allclose(same / rise, 1.0, atol=0.1)


def test_a_widening_lid_carries_its_margin_and_gathers_the_skin_below_the_brow(reference):
    """Opening an eye raises the skin just above the lid (its lashes and liner) nearly as far
    as the lid, and less the nearer the brow, which stays: a narrow eye whose first mesh ring
    above the lid took half the lid's rise, its margin two thirds, read at half its widening.
    No skin point overtakes one above it (no folds), and closing is as before."""
    from engines.warp.expressions import EYES, FaceFrame, close_eyes, eye_gaps, eyelid_weights
    from faces.tracking import FaceIndex

    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    frame = FaceFrame.of(landmarks)
    opened = close_eyes(landmarks, np.array([-0.5, -0.5]))
    rise = -(opened @ frame.down)  # pixels up, per landmark
    for eye, (upper, _) in enumerate(EYES):
        brow = FaceIndex.EYEBROW_LEFT if eye == 0 else FaceIndex.EYEBROW_RIGHT
        lid = rise[list(upper[1:-1])]
        closing, _ = eyelid_weights(landmarks, eye)
        first_ring = np.flatnonzero(np.isclose(closing, 0.5))
        assert np.all(rise[first_ring] > 0.5 * lid.mean()) and rise[first_ring].mean() > 0.55 * lid.mean()
        assert np.all(np.abs(rise[list(brow)]) < 0.05 * lid.mean())
        assert rise[[upper[0], upper[-1]]] == pytest.approx([0.0, 0.0])
        # Along the eye's middle, higher skin rises less, and stays above the skin below it.
        u, v = frame.coordinates(landmarks, landmarks[list(upper)].mean(axis=0))
        column = np.flatnonzero((np.abs(u - u[upper[len(upper) // 2]]) < 0.03) & (v < 0) & (rise > 0))
        column = column[np.argsort(-v[column])]  # from the lid upwards
        assert np.all(np.diff(rise[column]) <= 1e-9)
        moved_v = v - rise / frame.length
        assert np.all(np.diff(moved_v[column]) < 0)
    closed = sum(0.5 * eyelid_weights(landmarks, eye)[0][:, None] * frame.down * gap * frame.length
                 for eye, gap in enumerate(eye_gaps(landmarks)))
    np.testing.assert_allclose(close_eyes(landmarks, np.array([0.5, 0.5])), closed)


@pytest.mark.parametrize("narrowing", [1.0, 0.45])
def test_a_half_blink_closes_any_eye_by_half(reference, narrowing):
    """The driving face half-closes its eyes: the reference's eyes close to half of their own gap,
    whether they are as open as the driver's or a narrow slit."""
    from engines.warp.expressions import EYES, close_eyes, eye_gaps

    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    closure = np.concatenate([np.zeros(12), np.full(4, 0.5), np.zeros(4)])
    driving = landmarks + close_eyes(landmarks, np.column_stack([closure, closure]))
    narrow = landmarks.copy()
    for upper, lower in EYES:  # the same face with its lids pulled towards the eye's middle line
        lids = list(upper[1:-1]) + list(lower[1:-1])
        middle = narrow[lids].mean(axis=0)
        narrow[lids] = middle + narrowing * (narrow[lids] - middle)
    targets = retarget(narrow, driving)
    ratio = eye_gaps(targets) / eye_gaps(narrow)
    np.testing.assert_allclose(ratio[:10], 1.0, atol=0.03)  # (frames next to the blink are smoothed)
    np.testing.assert_allclose(ratio[13:15], 0.5, atol=0.06)


def test_warp_with_relative_maps_equals_the_backward_map(reference):
    """The warp remaps the RGBA portrait by displacements; it must sample where the backward map says."""
    crop, face = reference
    rig = PortraitRig(crop, face.landmarks[0])
    target = face.landmarks[0].astype(np.float64) + open_mouth(face.landmarks[0], 0.2)
    target[:, 0] += 3.5  # and a shift, so every pixel moves
    moved, source, depth = rig.vertices(target)
    moved, source = moved.astype(np.float32), source.astype(np.float32)
    map_x, map_y = rig.warper.backward_map(moved, source, depth)
    expected = cv2.remap(crop, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    got = rig.warper.warp(crop, moved, source, depth)
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_skin_pressed_flat_samples_no_far_away_pixels(reference):
    """Lid skin pressed against the brow collapses a mesh triangle to a sliver.  Its affine map is
    then steep across it, and cells of the (half-resolution) triangle raster that its outline only
    touches must not take that map: a cell from its line it samples the source many pixels away
    (a block of eye or lip colour drawn above a narrow eye).  Inside a triangle a pixel moves by a
    mix of its corners' motions, so no pixel may move much more than the farthest-moving vertex."""
    crop, face = reference
    rig = PortraitRig(crop, face.landmarks[0])
    target = face.landmarks[0].astype(np.float64).copy()
    # Landmark 223 (between the left upper lid and the brow) pushed up onto the brow line 52-53.
    brow = 0.5 * (target[52, :2] + target[53, :2])
    normal = np.array([-(target[53, 1] - target[52, 1]), target[53, 0] - target[52, 0]])
    normal /= np.linalg.norm(normal)
    side = np.sign(normal @ (target[223, :2] - target[52, :2]))
    target[223, :2] = brow + side * 0.2 * normal
    moved, source, depth = rig.vertices(target)
    moved, source = moved.astype(np.float32), source.astype(np.float32)
    triangle = [k for k, t in enumerate(rig.mesh.triangles) if sorted(t) == [52, 53, 223]]
    assert triangle, "the mesh has no triangle 52-53-223"
    (ax, ay), (bx, by) = moved[rig.mesh.triangles[triangle[0]][1:]] - moved[rig.mesh.triangles[triangle[0]][0]]
    assert abs(ax * by - ay * bx) / 2 < 3.0  # a sliver
    assert np.abs(_target_to_source_affines(moved, source, rig.mesh.triangles)[triangle[0]]).max() > 5  # steep
    dx, dy = rig.warper.displacement(moved, source, depth)
    most = float(np.linalg.norm(source[:468] - moved[:468], axis=1).max())
    assert float(np.hypot(dx, dy).max()) <= most + 1.5


def test_a_nearly_shut_reference_eye_gets_no_painted_lid(reference):
    """A portrait laughing or squinting, its eyes slits: a painted lid had nothing to cover, and its
    closure (the target's gap over its own tiny one) swung with every small change of the target, so
    a block of lid skin came and went over each eye.  Its slit is left to the mesh; an open eye
    closing half way is still painted."""
    from engines.warp.expressions import EYES, close_eyes
    from engines.warp.portrait import RigConfig

    crop, face = reference
    landmarks = face.landmarks[0].astype(np.float64)
    squint = landmarks.copy()
    for upper, lower in EYES:  # the same face with its lids pulled nearly together
        lids = list(upper[1:-1]) + list(lower[1:-1])
        middle = squint[lids].mean(axis=0)
        squint[lids] = middle + 0.15 * (squint[lids] - middle)
    for own, painted in ((squint, False), (landmarks, True)):
        half = own + close_eyes(own, np.array([0.5, 0.5]))
        with_lids = PortraitRig(crop, own).render(half)
        without = PortraitRig(crop, own, RigConfig(eye_close=False)).render(half)
        assert np.array_equal(with_lids, without) != painted


def test_a_portrait_whose_mouth_is_open_keeps_its_own_teeth_as_the_driver_opens_a_little_wider(reference, tracker):
    """A laughing or shouting template shows its own teeth and tongue, which the warp stretches.
    Its painted mouth grows with the stretch (opaque at twice its own gap), not with the few
    pixels past its gap that fully paint a closed mouth: before, its real teeth were swapped
    for painted ones as the driver opened a little wider, and back in one frame as it closed."""
    from engines.warp.portrait import _MOUTH_PAIRS, _gap
    from jobs.demo_media import demo_portraits

    hopper = demo_portraits()["grace_hopper"]
    hopper = crop_frames(hopper, stable_crop_box(tracker.detect(hopper)), 512)
    astronaut, face = reference  # smiling, teeth showing
    laughing = face.landmarks[0].astype(np.float64)
    laughing = laughing + open_mouth(laughing, 0.15)
    for image, landmarks, mouth_open in ((hopper, tracker.detect(hopper).landmarks[0], False),
                                         (astronaut, laughing, True)):
        rig = PortraitRig(image, landmarks)
        own = float(_gap(landmarks, _MOUTH_PAIRS).max())
        length = float(np.linalg.norm(landmarks[33] - landmarks[263]))
        assert rig.mouth_paint_strength(own) < 1e-6
        a_little_wider = rig.mouth_paint_strength(own + rig.config.overlay.mouth_full_at * length)
        if mouth_open:
            assert own / length > 0.2
            assert 0.0 < a_little_wider <= 0.25  # its own teeth still show
            assert rig.mouth_paint_strength(2 * own) == pytest.approx(1.0)
            gaps = np.linspace(own, 2.2 * own, 200)
            steps = np.abs(np.diff([rig.mouth_paint_strength(g) for g in gaps]))
            assert steps.max() <= (gaps[1] - gaps[0]) / own + 1e-9  # it fades as the mouth moves, never jumps
        else:
            assert own / length < 0.05
            assert a_little_wider == pytest.approx(1.0)
