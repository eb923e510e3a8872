"""Where the reference's landmarks go in each frame: the driving clip's motion, moved onto another face.

Two parts, so that the reference's own expression and pose are the starting point:

* head rotation: the reference turns from its own (pitch, yaw, roll) by the driving clip's change
  of each angle since its first frame, both measured by the same solvePnP as the tracks'
  :attr:`~faces.tracking.FaceTrack.rotation`.  Moving the angles one by one keeps a nod a
  nod: the relative rotation ``R_t @ R_0.T`` of a driver who starts turned or tilted, applied
  to a reference posed differently, mixes yaw, pitch and roll.  The composed targets are then
  turned until their own solvePnP pose is the wanted one.  Scale and shift come from the 3D
  similarity that takes frame 0's rigid landmarks onto frame t's (also the rotation when no
  poses are given);
* expression: frame t's landmarks with that similarity undone, minus the clip's most neutral
  face (the frames with the least open and least wide mouth) -- offsets in a face-aligned
  frame -- scaled and rotated into the reference's face frame by the similarity between the
  driving frame 0 and the reference.

Offsets from a neutral face lose what that face already shows (a clip that smiles throughout
never makes the reference smile), so by default the openings are then set absolutely: the mouth
gap to the driving gap (scaled by the two mouths' widths), each eye to the reference's own
opening times the driving eye's openness.

The reference's landmarks plus the offsets, moved by the head motion about the reference's face
centre, are the targets.  Mediapipe's z is in pixels like x, so all of it is plain 3D geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.warp.expressions import MOUTH_CORNERS, FaceFrame, close_eyes, eye_gaps, mouth_gap, open_mouth
from faces.tracking import FaceIndex, euler_to_rotation, head_pose, smooth_in_time


class RetargetError(ValueError):
    """Landmark arrays with the wrong shape."""


@dataclass(frozen=True)
class RetargetConfig:
    """Gains on the driving clip's motion (1.0 copies it)."""

    expression_gain: float = 1.0
    rotation_gain: float = 1.0
    translation_gain: float = 1.0
    scale_gain: float = 1.0
    # Gaussian sigma (frames) smoothing the expression offsets against landmark jitter; blinks
    # last 2-4 frames at 15 fps, so keep it below 1.
    smoothing_sigma: float = 0.6
    # The same for the head motion (rotation, scale, shift), whose jitter moves the whole head.
    # Centred, so it never delays the motion; at 1 frame it shrank a nod of 8 frames (half a
    # second at 15 fps) to 0.75 of its size, at 0.6 to 0.9, and followed real clips as well.
    motion_smoothing_sigma: float = 0.6
    # Take the head rotation from the tracks' solvePnP poses (pitch, yaw and roll moved one by one
    # from the reference's own angles) when the engine is given them; otherwise from the 3D
    # similarity of the rigid landmarks.
    pose_rotation: bool = True
    # The driving expression is taken relative to the clip's most neutral frames: those whose
    # mouth is the least open and least wide (this percentile of the score, averaged).  None:
    # relative to frame 0, so a clip that starts mid-laugh purses the lips when it stops laughing.
    neutral_percentile: float | None = 10.0
    # Passes that turn each target face until its solvePnP pose is the wanted one (0: none).
    pose_corrections: int = 2
    # Gains on the (pitch, yaw, roll) changes taken from the poses, times rotation_gain.  A mesh
    # warp cannot show what a real nod shows (the nose's underside, the chin tucking in): the
    # targets' own solvePnP pitch follows the driver's at r >= 0.98, but mediapipe reads the
    # rendered nod at 0.56-0.88 of that angle (mean ~0.7 over photographic and drawn portraits;
    # turns and tilts read at 0.96-1.02).  Left at that, a nod shrinks next to the turn and
    # tilt that come with it, and the tracker's cross-talk from those (a few hundredths of their
    # angle) and its own jitter swamp small nods.  Pitch gets 1.6 so a nod reads at about the
    # driver's angle on most portraits, as turns do.
    pose_gains: tuple[float, float, float] = (1.6, 1.0, 1.0)
    # How far (radians, after the gains) the head may nod and turn from the portrait's own pitch
    # and yaw: within this it follows fully, past it the angle saturates smoothly
    # (:func:`soft_limit`), to at most this plus ``pose_knee``.  A 2D warp of a photograph cannot
    # show the far side of a head: turned ~40 degrees, the far cheek and temple became a
    # hard-edged cut-out with a notch into the hair; nodded ~45 degrees, the face squashed under
    # a stretched chin.  Roll is a turn in the picture's plane, which a warp shows exactly: never
    # limited.  None: no limit.
    pose_limits: tuple[float, float] | None = (0.38, 0.38)  # pitch, yaw: ~22 degrees
    pose_knee: float = 0.17  # ~10 degrees: a head turns at most ~32 degrees from the portrait's pose
    # Set openings from the driving face rather than adding its changes from frame 0: the mouth
    # gap as is (in eye-corner distances), each eye's gap relative to that eye's typical open
    # gap in the clip (:func:`eye_openness`).  A clip that starts mid-laugh or mid-blink then
    # still laughs and blinks on the reference.
    absolute_openings: bool = True
    # An eye's typical open gap: the median gap of the frames where it is open, i.e. at least
    # this fraction of its widest (95th percentile) gap.  Not a high percentile: a driver who
    # widens their eyes for part of the clip would then have their ordinary open eyes read as
    # a third closed, and the reference would squint through the whole clip (on a narrow eye
    # that covers most of it).
    eye_open_fraction: float = 0.6
    # Openness (gap over the typical open gap) is capped here: eyes widened in surprise open the
    # reference's eyes wider than its own, up to this.  (1.35 cut the driver's widening on
    # tbh, whose eyes open to 1.45-1.65 of their typical gap.)
    max_eye_openness: float = 1.6
    # An eye widened past its typical gap raises its lid by the driving eye's own rise (in
    # eye-corner distances), where the reference's eye is the narrower: a narrow eye widened in
    # proportion to its own gap barely moves (trump's, 0.043 of the eye-corner distance against
    # tbh's 0.05-0.06, rose 2 px at 512x512, within the tracker's frame-to-frame noise), while a
    # surprised face shows about as much more eye whatever its resting gap.  False: in
    # proportion to the reference's gap.
    widen_by_driving_rise: bool = True
    # Scale the mouth gap by the reference's mouth width over the driving face's (neutral) one,
    # clipped to this range; None copies the gap in eye-corner distances as it is.
    mouth_size_range: tuple[float, float] | None = (0.5, 1.2)
    # Shape of the opening the mouth gap is set with (:func:`~engines.warp.expressions.open_mouth`):
    # 1 drops the lower lip as a lens (all of the drop at the middle, none at the corners), as a
    # real mouth opens; 0 drops it as one piece, a box-shaped opening.  The opening set here is
    # most of the mouth's when the clip's most neutral frames already laugh (jgz: 0.15 of 0.18
    # eye-corner distances), and mediapipe read a box-shaped laugh as less open the wider the
    # mouth (jgz-show1 mouth r 0.83, jgz-chillout 0.88; with the lens 0.85 and 0.92).
    mouth_lens: float = 1.0
    # A cut in the driving clip (an edited clip: another shot, another person, another framing) starts
    # the head motion afresh from the new shot's first frame: taken from the clip's first frame, the
    # portrait shrank to the next shot's face size, jumped and turned at every cut.  A cut is a frame
    # whose face differs from the frame before by more than this scale ratio or this shift (in face
    # sizes), and stays so: real head motion in the shared clips moves at most 1.07x and 0.65 face
    # sizes a frame (at 10 fps), and a one-frame tracking glitch comes back.  None: no cuts.
    cut_scale_ratio: float | None = 1.2
    cut_shift: float = 1.0
    # A single frame whose face is away from both its neighbours (by this shift in face sizes, or a
    # scale ratio past cut_scale_ratio's square root) while they agree with each other (within a fifth
    # of that) is a tracking glitch or a one-frame flash of another face: it takes its neighbours'
    # mean.  Followed, the portrait jumped, shrank or grinned for that frame.  None: kept as tracked.
    spike_shift: float | None = 0.5


@dataclass(frozen=True)
class Similarity3D:
    """``y = scale * rotation @ x + translation`` per frame: (T,), (T, 3, 3), (T, 3)."""

    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(T, N, 3) points moved frame by frame; ``points`` is (N, 3) or (T, N, 3)."""
        return (self.scale[:, None, None] * (points @ self.rotation.transpose(0, 2, 1))
                + self.translation[:, None, :])

    def invert(self, points: np.ndarray) -> np.ndarray:
        """(T, N, 3) points with the motion undone."""
        return ((points - self.translation[:, None, :]) @ self.rotation) / self.scale[:, None, None]


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity3D:
    """Least-squares similarity (Umeyama) from ``source`` onto ``target``; (N, 3) or (T, N, 3) each."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim == 2:
        source = source[None]
    if target.ndim == 2:
        target = target[None]
    source, target = np.broadcast_arrays(source, target)
    mean_s, mean_t = source.mean(axis=1), target.mean(axis=1)
    centred_s, centred_t = source - mean_s[:, None], target - mean_t[:, None]
    covariance = centred_t.transpose(0, 2, 1) @ centred_s
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt))
    correction = np.ones_like(singular)
    correction[:, -1] = sign
    rotation = u @ (correction[:, :, None] * vt)
    variance = (centred_s ** 2).sum(axis=(1, 2))
    scale = (singular * correction).sum(axis=1) / np.maximum(variance, 1e-12)
    translation = mean_t - scale[:, None] * (rotation @ mean_s[:, :, None])[:, :, 0]
    return Similarity3D(scale=scale, rotation=rotation, translation=translation)


def _rotation_power(rotation: np.ndarray, gain: float) -> np.ndarray:
    """Rotations scaled in angle by ``gain`` (axis-angle), (T, 3, 3)."""
    if gain == 1.0:
        return rotation
    angle = np.arccos(np.clip((np.trace(rotation, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0))
    axis = np.stack([rotation[:, 2, 1] - rotation[:, 1, 2], rotation[:, 0, 2] - rotation[:, 2, 0],
                     rotation[:, 1, 0] - rotation[:, 0, 1]], axis=1)
    norm = np.linalg.norm(axis, axis=1, keepdims=True)
    axis = np.where(norm > 1e-9, axis / np.maximum(norm, 1e-12), np.array([1.0, 0.0, 0.0]))
    theta = angle * gain
    k = np.zeros((len(axis), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(0, 2, 1)
    return np.eye(3) + np.sin(theta)[:, None, None] * k + (1 - np.cos(theta))[:, None, None] * (k @ k)


# Pairs that must not cross: (upper, lower) along the face's "down" axis.
_NON_CROSSING_PAIRS = tuple(
    pair
    for upper, lower in ((FaceIndex.LIPS_INNER_UPPER, FaceIndex.LIPS_INNER_LOWER),
                         (FaceIndex.EYE_LEFT_UPPER, FaceIndex.EYE_LEFT_LOWER),
                         (FaceIndex.EYE_RIGHT_UPPER, FaceIndex.EYE_RIGHT_LOWER))
    for pair in zip(upper[1:-1], lower[1:-1])
)


def uncross_lids_and_lips(landmarks: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Landmarks (T, N, 3) where no upper lip/lid point ends up below its lower partner."""
    upper = np.array([u for u, _ in _NON_CROSSING_PAIRS])
    lower = np.array([v for _, v in _NON_CROSSING_PAIRS])
    gap = np.einsum("tpc,c->tp", landmarks[:, lower] - landmarks[:, upper], down)
    overlap = np.minimum(gap, 0.0)[..., None] * down  # (T, P, 3), zero where the pair is in order
    fixed = landmarks.copy()
    fixed[:, upper] += overlap / 2
    fixed[:, lower] -= overlap / 2
    return fixed


def compose_targets(reference: np.ndarray, offsets: np.ndarray, head: Similarity3D,
                    centre: np.ndarray | None = None) -> np.ndarray:
    """(T, N, 3) reference landmarks plus expression ``offsets``, moved by ``head`` about ``centre``.

    ``head`` is a motion relative to the reference's own pose: identity leaves it where it is.
    The shared last step of retargeting and of scripted (demo) motion.
    """
    reference = np.asarray(reference, dtype=np.float64)
    if centre is None:
        centre = reference[list(FaceIndex.RIGID)].mean(axis=0)
    expressive = uncross_lids_and_lips(reference[None] + offsets, FaceFrame.of(reference).down)
    return head.apply(expressive - centre) + centre


def retarget(reference: np.ndarray, driving: np.ndarray, config: RetargetConfig = RetargetConfig(),
             reference_pose: np.ndarray | None = None, driving_pose: np.ndarray | None = None,
             image_size: tuple[int, int] | None = None) -> np.ndarray:
    """(T, 478, 3) target landmarks for the reference (478, 3) following the driving (T, 478, 3).

    ``reference_pose`` (3,) and ``driving_pose`` (T, 3) are the tracks' solvePnP angles
    (:attr:`faces.tracking.FaceTrack.rotation`); with them the head rotation moves the
    reference's angles by the driving ones' changes, and with ``image_size`` (of the frames the
    reference landmarks refer to) the targets are turned until their solvePnP pose is that
    wanted one.  Without them the rotation is the driving rigid landmarks' 3D similarity.
    """
    reference = np.asarray(reference, dtype=np.float64)
    driving = np.asarray(driving, dtype=np.float64)
    if reference.shape != (478, 3) or driving.ndim != 3 or driving.shape[1:] != (478, 3):
        raise RetargetError(f"expected reference (478, 3) and driving (T, 478, 3), got {reference.shape}, {driving.shape}")
    rigid = list(FaceIndex.RIGID)
    if config.spike_shift is not None:
        spikes = spike_frames(driving, config)
        driving = _neighbours_mean(driving, spikes)
        if driving_pose is not None:
            driving_pose = _neighbours_mean(np.asarray(driving_pose, dtype=np.float64), spikes)

    # Head motion of the driving face relative to its first frame (and, past a cut, to its shot's).
    motion = fit_similarity(driving[0, rigid], driving[:, rigid])
    anchors = shot_anchors(driving, motion.scale, config) if config.cut_scale_ratio else np.zeros(len(driving), int)
    # Expression: each frame with its head motion undone, as offsets from its shot's most neutral
    # face (frame 0 unless configured otherwise).  Per shot: across a cut to another person, the
    # first person's neutral face made the second one's own face shape (a lower mouth, higher brows)
    # a standing expression for the whole shot.
    aligned = smooth_in_time(motion.invert(driving), config.smoothing_sigma)
    if config.neutral_percentile is None:
        neutral = driving[0]
    else:
        neutral = np.empty_like(aligned)
        for shot in _shots(anchors):
            neutral[shot] = neutral_face(aligned[shot], config.neutral_percentile)
    offsets = aligned - neutral
    # Into the reference's face frame (size and orientation).
    to_reference = fit_similarity(driving[0, rigid], reference[rigid])
    offsets = to_reference.scale[0] * offsets @ to_reference.rotation[0].T * config.expression_gain
    if config.absolute_openings:
        offsets = offsets + _opening_corrections(reference, reference + offsets, aligned, config, neutral)

    # The driving face's centre shift, in reference pixels; the rotation and scale act about the
    # reference's face centre.
    centres = driving[:, rigid].mean(axis=1)
    shift = (centres - centres[anchors]) * to_reference.scale[0] * config.translation_gain
    shift[:, 2] = 0.0
    sigma = config.motion_smoothing_sigma
    use_pose = config.pose_rotation and reference_pose is not None and driving_pose is not None
    if use_pose:
        driving_pose = np.asarray(driving_pose, dtype=np.float64)
        in_shot = driving_pose - driving_pose[anchors] + driving_pose[0]  # each shot's change from its start
        wanted = wanted_poses(reference_pose, in_shot, config.rotation_gain * np.asarray(config.pose_gains), sigma)
        if config.pose_limits is not None:
            wanted = limit_turns(reference_pose, wanted, config.pose_limits, config.pose_knee)
        rotation = pose_rotations(reference_pose, wanted)
    else:
        in_shot = motion.rotation @ motion.rotation[anchors].transpose(0, 2, 1)
        rotation = _rotation_power(_smooth_rotations(in_shot, sigma), config.rotation_gain)
    scale = motion.scale / motion.scale[anchors]
    head = Similarity3D(scale=smooth_in_time(scale, sigma) ** config.scale_gain, rotation=rotation,
                        translation=smooth_in_time(shift, sigma))
    targets = compose_targets(reference, offsets, head)
    if use_pose and image_size is not None and config.pose_corrections > 0:
        targets = correct_poses(targets, wanted, image_size, config.pose_corrections)
    return targets


def _face_places(driving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) centres and (T,) sizes (mean distance from the centre) of each frame's rigid landmarks, in pixels."""
    rigid = driving[:, list(FaceIndex.RIGID), :2]
    centres = rigid.mean(axis=1)
    return centres, np.maximum(np.linalg.norm(rigid - centres[:, None], axis=-1).mean(axis=1), 1e-6)


def spike_frames(driving: np.ndarray, config: RetargetConfig) -> np.ndarray:
    """(T,) bool: the one-frame spikes of ``driving`` (T, 478, 3) (:attr:`RetargetConfig.spike_shift`)."""
    centres, sizes = _face_places(driving)
    jump_ratio = np.log(config.cut_scale_ratio or 1.2) / 2

    def away(a: int, b: int, shift: float, ratio: float) -> bool:
        return bool(abs(np.log(sizes[a] / sizes[b])) > ratio or np.linalg.norm(centres[a] - centres[b]) > shift * sizes[b])

    spikes = np.zeros(len(driving), dtype=bool)
    for t in range(1, len(driving) - 1):
        spikes[t] = (away(t, t - 1, config.spike_shift, jump_ratio) and away(t, t + 1, config.spike_shift, jump_ratio)
                     and not away(t + 1, t - 1, config.spike_shift / 5, jump_ratio / 5))
    return spikes


def _shots(anchors: np.ndarray) -> list[slice]:
    """The frames of each shot, from :func:`shot_anchors` (a shot starts where its anchor changes)."""
    starts = [0, *np.flatnonzero(np.diff(anchors) != 0) + 1]
    return [slice(start, end) for start, end in zip(starts, [*starts[1:], len(anchors)])]


def _neighbours_mean(values: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """``values`` (T, ...) with each of ``frames`` replaced by the mean of the frames either side of it."""
    fixed = values.copy()
    for t in np.flatnonzero(frames):
        fixed[t] = (values[t - 1] + values[t + 1]) / 2
    return fixed


def shot_anchors(driving: np.ndarray, scale: np.ndarray, config: RetargetConfig, settle: int = 3) -> np.ndarray:
    """(T,) the frame each frame's head motion is taken from: frame 0, and past a cut its shot's last
    settling frame (a new shot starts at a cut, :attr:`RetargetConfig.cut_scale_ratio`).

    A candidate frame jumps from the frame before it in size or place; it is a cut only if the
    ``settle`` frames after it stay near it and it is not the way back from a one-frame glitch (it
    is also far from the frame two before), so a tracking glitch never restarts the motion.
    """
    centres, sizes = _face_places(driving)
    log_ratio = np.log(config.cut_scale_ratio)

    def apart(a: int, b: int) -> bool:
        return bool(abs(np.log(scale[a] / scale[b])) > log_ratio
                    or np.linalg.norm(centres[a] - centres[b]) > config.cut_shift * sizes[b])

    anchors = np.zeros(len(driving), dtype=int)
    anchor = 0
    for t in range(1, len(driving)):
        after = range(t + 1, min(t + 1 + settle, len(driving)))
        if apart(t, t - 1) and (t < 2 or apart(t, t - 2)) and len(after) == settle \
                and not any(apart(k, t) for k in after):
            # The shot's motion is taken from its last settling frame: the mesh's landmarks of a new
            # face settle over a few frames (a 1.6x zoom read 1.49x, then 1.71x), and the first
            # frame's reading left the portrait 13% larger for the rest of the shot.
            anchor = t + settle
        anchors[t] = anchor
    return anchors


def neutral_face(aligned: np.ndarray, percentile: float = 10.0) -> np.ndarray:
    """(478, 3) mean of the frames of ``aligned`` (T, 478, 3) whose mouth is the least open and wide.

    Score: inner-lip gap plus mouth-corner distance, both in outer-eye-corner distances.
    """
    gap = mouth_gap(aligned)
    length = np.linalg.norm(aligned[:, FaceIndex.EYE_OUTER_LEFT] - aligned[:, FaceIndex.EYE_OUTER_RIGHT], axis=-1)
    width = np.linalg.norm(aligned[:, MOUTH_CORNERS[0]] - aligned[:, MOUTH_CORNERS[-1]], axis=-1) / length
    score = np.maximum(gap, 0.0) + width
    return aligned[score <= np.percentile(score, percentile)].mean(axis=0)


def wanted_poses(reference_pose: np.ndarray, driving_pose: np.ndarray, gain: float | np.ndarray = 1.0,
                 sigma: float = 0.0) -> np.ndarray:
    """(T, 3) (pitch, yaw, roll) for the reference: its own angles plus the driving's change of each."""
    reference_pose = np.asarray(reference_pose, dtype=np.float64).reshape(3)
    driving_pose = np.asarray(driving_pose, dtype=np.float64)
    return reference_pose + smooth_in_time(driving_pose - driving_pose[0], sigma) * np.asarray(gain)


def limit_turns(reference_pose: np.ndarray, wanted: np.ndarray, limits: tuple[float, float],
                knee: float) -> np.ndarray:
    """``wanted`` (T, 3) poses whose pitch and yaw changes from ``reference_pose`` saturate past ``limits``.

    Each angle's change is kept within ``limits`` and eased towards the limit plus ``knee``
    beyond (:func:`soft_limit`); roll is left as it is (:attr:`RetargetConfig.pose_limits`).
    """
    reference_pose = np.asarray(reference_pose, dtype=np.float64).reshape(3)
    limited = np.asarray(wanted, dtype=np.float64).copy()
    for axis, limit in enumerate(limits):  # pitch, yaw
        change = limited[:, axis] - reference_pose[axis]
        limited[:, axis] = reference_pose[axis] + soft_limit(change, -limit, limit, knee)
    return limited


def soft_limit(value: np.ndarray | float, low: float, high: float, knee: float) -> np.ndarray:
    """``value`` itself within [low, high]; past an end, approaching that end plus ``knee`` (C1 at the ends)."""
    value = np.asarray(value, dtype=np.float64)
    if knee <= 0:
        return np.clip(value, low, high)
    above = high + knee * -np.expm1(-np.maximum(value - high, 0.0) / knee)
    below = low - knee * -np.expm1(-np.maximum(low - value, 0.0) / knee)
    return np.where(value > high, above, np.where(value < low, below, value))


def correct_poses(targets: np.ndarray, wanted: np.ndarray, image_size: tuple[int, int],
                  iterations: int = 2) -> np.ndarray:
    """``targets`` (T, 478, 3) turned about their face centres until their solvePnP pose is ``wanted``.

    The expression offsets are found by undoing the driving head's 3D landmark motion, which
    disagrees a little with its solvePnP angles (mediapipe's depths are a guess), and the
    reference's face is not the canonical one; both leave the targets a few degrees off.
    """
    rigid = list(FaceIndex.RIGID)
    targets = np.asarray(targets, dtype=np.float64)
    for _ in range(iterations):
        measured, _ = head_pose(targets.astype(np.float32), image_size)
        fix = np.stack([euler_to_rotation(*w) @ euler_to_rotation(*m).T
                        for w, m in zip(wanted, measured.astype(np.float64))])
        centre = targets[:, rigid].mean(axis=1, keepdims=True)
        targets = np.einsum("tij,tnj->tni", fix, targets - centre) + centre
    return targets


def pose_rotations(reference_pose: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """(T, 3, 3) head rotations, about the reference's face centre, from its pose to ``wanted`` poses.

    Poses are (pitch, yaw, roll) as in :attr:`faces.tracking.FaceTrack.rotation`.
    """
    start = euler_to_rotation(*np.asarray(reference_pose, dtype=np.float64).reshape(3))
    return np.stack([euler_to_rotation(*angles) @ start.T for angles in np.asarray(wanted, dtype=np.float64)])


def _smooth_rotations(rotation: np.ndarray, sigma: float) -> np.ndarray:
    """Rotations (T, 3, 3) averaged over time and projected back onto rotations (fine for small spreads)."""
    if sigma <= 0 or len(rotation) < 2:
        return rotation
    u, _, vt = np.linalg.svd(smooth_in_time(rotation, sigma))
    fix = np.ones((len(rotation), 3))
    fix[:, -1] = np.sign(np.linalg.det(u @ vt))
    return u @ (fix[:, :, None] * vt)


def mouth_width(landmarks: np.ndarray) -> np.ndarray:
    """(...,) distance between the inner mouth corners over the outer-eye-corner distance."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    corners = np.linalg.norm(landmarks[..., MOUTH_CORNERS[1], :] - landmarks[..., MOUTH_CORNERS[2], :], axis=-1)
    eyes = np.linalg.norm(landmarks[..., FaceIndex.EYE_OUTER_LEFT, :] - landmarks[..., FaceIndex.EYE_OUTER_RIGHT, :], axis=-1)
    return corners / eyes


def eye_openness(gaps: np.ndarray, open_fraction: float = 0.6, most: float = 1.35) -> np.ndarray:
    """(T, 2) how open each driving eye is: 1 at its typical open gap, 0 shut, above 1 widened.

    ``gaps`` (T, 2) are the eyes' lid gaps over the clip.  The typical open gap is the median
    of the frames whose gap is at least ``open_fraction`` of the eye's widest (95th
    percentile): blinks, squints and a stretch of shut eyes do not lower it, and a moment of
    wide eyes does not raise it.  Normalising per eye and per clip makes the openness mean the
    same on any face, so a half-blink is half of whatever eye the reference has, narrow or wide.
    """
    gaps = np.asarray(gaps, dtype=np.float64)
    return np.clip(gaps / np.maximum(typical_open_gaps(gaps, open_fraction), 1e-3), 0.0, most)


def typical_open_gaps(gaps: np.ndarray, open_fraction: float = 0.6) -> np.ndarray:
    """(2,) each eye's typical open gap over a clip's (T, 2) ``gaps`` (:func:`eye_openness`)."""
    gaps = np.asarray(gaps, dtype=np.float64)
    widest = np.percentile(gaps, 95.0, axis=0)
    typical = np.empty(gaps.shape[1])
    for eye in range(gaps.shape[1]):
        opened = gaps[:, eye][gaps[:, eye] >= open_fraction * widest[eye]]
        typical[eye] = np.median(opened) if len(opened) else widest[eye]
    return typical


def _opening_corrections(reference: np.ndarray, expressive: np.ndarray, aligned: np.ndarray,
                         config: RetargetConfig, neutral: np.ndarray | None = None) -> np.ndarray:
    """(T, 478, 3) offsets that bring the mouth and eye openings of ``expressive`` to the driving's.

    Mouth: the driving gap itself.  Eyes: the reference's own gap times the driving eye's
    openness (:func:`eye_openness`); widened, by the driving eye's own rise where that is the
    larger (``config.widen_by_driving_rise``).
    """
    mouth_wanted = mouth_gap(aligned) * config.expression_gain
    if config.mouth_size_range is not None and neutral is not None:
        # Open the mouth in proportion to its size: a small (drawn) mouth opens less.
        low, high = config.mouth_size_range
        mouth_wanted = mouth_wanted * np.clip(mouth_width(reference) / mouth_width(neutral), low, high)
    correction = open_mouth(reference, mouth_wanted - mouth_gap(expressive), config.mouth_lens)
    driving_eyes = eye_gaps(aligned)
    openness = eye_openness(driving_eyes, config.eye_open_fraction, config.max_eye_openness)
    reference_eyes = np.maximum(eye_gaps(reference), 1e-3)
    wanted = reference_eyes * openness
    if config.widen_by_driving_rise:
        # Past the typical gap, the lid rises by the larger of the two eyes' gaps per unit of openness.
        step = np.maximum(reference_eyes, typical_open_gaps(driving_eyes, config.eye_open_fraction))
        wanted = np.where(openness > 1.0, reference_eyes + (openness - 1.0) * step, wanted)
    closure = (eye_gaps(expressive) - wanted) / reference_eyes
    return correction + close_eyes(reference, closure)
