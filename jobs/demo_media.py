"""Media for the built-in demo: portraits that ship inside installed packages, and driving clips
synthesised from them, so ``hellomeme-batch demo`` runs on a fresh machine with nothing downloaded.

A driving clip is a portrait animated along a scripted track -- nod, turn, smile, open mouth,
blink -- by the warp engine's mesh warp (:mod:`engines.warp`), with scripted target landmarks
in place of a retargeted driving face.  The script's moves are kept apart in time so that each
expression signal moves on its own, which lets tests check that an engine follows each one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from faces.tracking import FaceTracker

log = logging.getLogger(__name__)

Keyframes = tuple[tuple[float, float], ...]  # (time as a fraction of the clip, value), in time order


class DemoMediaError(RuntimeError):
    """A demo portrait could not be loaded or animated."""


def demo_portraits() -> dict[str, np.ndarray]:
    """RGB uint8 portraits shipped with scikit-image and matplotlib, by name."""
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    try:
        astronaut = np.ascontiguousarray(data.astronaut())
        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
            grace_hopper = np.asarray(image.convert("RGB")).copy()
    except (OSError, ValueError) as error:
        raise DemoMediaError(f"a demo portrait is missing from the installed packages: {error}") from error
    return {"astronaut": astronaut, "grace_hopper": grace_hopper}


@dataclass(frozen=True)
class DrivingScript:
    """Keyframed head pose and expression of a synthesised driving clip (linear in between).

    Angles in degrees, changes of the portrait's own angles (pitch > 0 looks down, yaw > 0 turns
    the nose towards image left, roll > 0 tilts clockwise);
    ``mouth``: extra inner-lip gap and ``smile``: corner pull, both in outer-eye-corner
    distances; ``blink``: eyelid closure, 1 = shut.
    """

    pitch: Keyframes = ((0.0, 0.0), (0.06, 9.0), (0.14, -7.0), (0.22, 8.0), (0.28, 0.0))
    yaw: Keyframes = ((0.0, 0.0), (0.28, 0.0), (0.36, 18.0), (0.46, -18.0), (0.54, 0.0))
    roll: Keyframes = ((0.0, 0.0), (0.40, 0.0), (0.46, 4.0), (0.54, 0.0))
    smile: Keyframes = ((0.0, 0.0), (0.54, 0.0), (0.62, 0.18), (0.70, 0.18), (0.76, 0.0))
    mouth: Keyframes = ((0.0, 0.0), (0.74, 0.0), (0.82, 0.3), (0.88, 0.3), (0.96, 0.0))
    blink: Keyframes = ((0.0, 0.0), (0.09, 0.0), (0.12, 1.0), (0.15, 1.0), (0.18, 0.0), (0.57, 0.0), (0.60, 1.0),
                        (0.63, 1.0), (0.66, 0.0), (0.88, 0.0), (0.91, 1.0), (0.94, 1.0), (0.97, 0.0))

    def sample(self, times: np.ndarray) -> dict[str, np.ndarray]:
        """Each channel's value at ``times`` (fractions of the clip)."""
        return {name: np.interp(times, [k for k, _ in keys], [v for _, v in keys])
                for name, keys in (("pitch", self.pitch), ("yaw", self.yaw), ("roll", self.roll),
                                   ("smile", self.smile), ("mouth", self.mouth), ("blink", self.blink))}


DEFAULT_SCRIPT = DrivingScript()
STILL: Keyframes = ((0.0, 0.0), (1.0, 0.0))


def oscillation(amplitude: float, cycles: float, start: float = 0.05, end: float = 0.95, phase: float = 0.0,
                samples: int = 48) -> Keyframes:
    """Keyframes of a sine of ``amplitude`` over ``cycles`` periods between ``start`` and ``end`` (still outside).

    ``phase`` in radians; the sine fades in and out over the first and last tenth of the span, so
    the motion starts from and returns to the still pose whatever the phase.
    """
    times = np.linspace(start, end, samples)
    position = (times - start) / (end - start)
    envelope = np.sin(np.pi / 2 * np.clip(np.minimum(position, 1 - position) / 0.1, 0.0, 1.0)) ** 2
    values = amplitude * envelope * np.sin(2 * np.pi * cycles * position + phase)
    return ((0.0, 0.0),) + tuple((float(t), float(v)) for t, v in zip(times, values)) + ((1.0, 0.0),)


_BLINKS: Keyframes = ((0.0, 0.0), (0.2, 0.0), (0.25, 1.0), (0.3, 1.0), (0.35, 0.0), (0.6, 0.0), (0.65, 1.0),
                      (0.7, 1.0), (0.75, 0.0), (1.0, 0.0))

# Head motions one at a time and combined, for checking that an engine follows each: small nods
# and turns (a few degrees, just above the tracker's noise floors) and large ones, tilts, and
# all at once at different rates, with blinks and a mouth opening.
MOTION_SCRIPTS: dict[str, DrivingScript] = {
    "nod_small": DrivingScript(pitch=oscillation(5.0, 2.0), yaw=STILL, roll=STILL, smile=STILL, mouth=STILL,
                               blink=STILL),
    "nod_large": DrivingScript(pitch=oscillation(15.0, 1.5), yaw=STILL, roll=STILL, smile=STILL, mouth=STILL,
                               blink=STILL),
    "turn_small": DrivingScript(pitch=STILL, yaw=oscillation(7.0, 2.0), roll=STILL, smile=STILL, mouth=STILL,
                                blink=STILL),
    "turn": DrivingScript(pitch=STILL, yaw=oscillation(20.0, 1.5), roll=STILL, smile=STILL, mouth=STILL,
                          blink=_BLINKS),
    "roll": DrivingScript(pitch=STILL, yaw=STILL, roll=oscillation(10.0, 1.5), smile=STILL, mouth=STILL,
                          blink=STILL),
    "combined": DrivingScript(pitch=oscillation(9.0, 2.5), yaw=oscillation(15.0, 1.5, phase=1.0),
                              roll=oscillation(5.0, 1.0, phase=0.5), smile=STILL,
                              mouth=((0.0, 0.0), (0.25, 0.0), (0.32, 0.25), (0.4, 0.0), (1.0, 0.0)),
                              blink=_BLINKS),
}
# Driving clips frame the face more tightly than the 3x crop the pipeline takes of them (the
# shared clips show it at about 1.5-2.2x), so the face is large and its details tracked well.
DRIVING_CROP_SCALE = 2.2


def synthesize_driving_clip(portrait: np.ndarray, script: DrivingScript = DEFAULT_SCRIPT, fps: float = 15.0,
                            seconds: float = 4.0, tracker: FaceTracker | None = None,
                            crop_size: int | None = 512) -> tuple[np.ndarray, float]:
    """(frames (T, H, W, 3) uint8 RGB, fps): ``portrait`` performing ``script`` over ``seconds``.

    Like a real driving clip, the frames show the face large: the portrait's stable face crop
    at ``crop_size`` pixels square (``None`` animates the whole portrait at its own size).  The
    first frame is the still face.  ``tracker`` finds the face (one is built if not given);
    :class:`faces.tracking.NoFaceError` if the portrait has none.
    """
    # The warp engine's mesh warp does the animation.  This is the one place the batch code
    # reaches into engines/, and only when a clip is synthesised.
    from engines.warp.expressions import close_eyes, open_mouth, smile
    from engines.warp.portrait import PortraitRig
    from engines.warp.retarget import Similarity3D, compose_targets, pose_rotations
    from faces.tracking import CropConfig, FaceTracker, crop_frames, stable_crop_box

    portrait = np.ascontiguousarray(portrait)
    if portrait.ndim != 3 or portrait.shape[2] != 3 or portrait.dtype != np.uint8:
        raise DemoMediaError(f"expected an RGB uint8 portrait, got {portrait.shape} {portrait.dtype}")
    if fps <= 0 or seconds <= 0:
        raise DemoMediaError(f"fps and seconds must be positive, got {fps} and {seconds}")
    num_frames = max(2, int(round(fps * seconds)))
    own_tracker = tracker is None
    tracker = FaceTracker() if own_tracker else tracker
    try:
        face = tracker.detect(portrait)
        if crop_size is not None:
            portrait = crop_frames(portrait, stable_crop_box(face, CropConfig(scale=DRIVING_CROP_SCALE)), crop_size)
            face = tracker.detect(portrait)
    finally:
        if own_tracker:
            tracker.close()
    landmarks = face.landmarks[0].astype(np.float64)

    channels = script.sample(np.arange(num_frames) / (num_frames - 1))
    offsets = (open_mouth(landmarks, channels["mouth"]) + smile(landmarks, channels["smile"])
               + close_eyes(landmarks, np.stack([channels["blink"]] * 2, axis=1)))
    # The script's angles move the portrait's own (pitch, yaw, roll) one by one, as retargeting
    # does, so the tracker reads the script back as its angles whatever the portrait's pose.
    own = face.rotation[0].astype(np.float64)
    rotation = pose_rotations(own, own + np.radians(np.stack([channels["pitch"], channels["yaw"], channels["roll"]], axis=1)))
    head = Similarity3D(scale=np.ones(num_frames), rotation=rotation, translation=np.zeros((num_frames, 3)))
    targets = compose_targets(landmarks, offsets, head)

    rig = PortraitRig(portrait, landmarks)
    frames = np.stack([rig.render(target) for target in targets])
    log.info("synthesised a %d-frame driving clip (%dx%d, %.3g fps)", num_frames, portrait.shape[1],
             portrait.shape[0], fps)
    return frames, float(fps)
