"""Face tracks: per-frame landmarks and head pose of one face, and the stable crop around it.

The pose stage runs :class:`FaceTracker` (mediapipe face mesh, 478 landmarks) over the reference
portrait and the driving clip, picks one static square crop per clip (:func:`stable_crop_box`,
HelloMeme's convention: about 3x the face, shifted up) and hands the engines face crops plus
tracks whose landmarks are in crop pixels (:meth:`FaceTrack.cropped`).

A track always has one entry per input frame: frames where the face is lost (or is leaving the
frame, or is a stray find: :func:`_trusted_finds`) hold the nearest detected frame's values and
are flagged ``detected=False``.  Dropping them instead would
desynchronise the driving clip's audio (a known HelloMeme fault).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

NUM_LANDMARKS = 478  # face mesh with refined irises


class FaceError(Exception):
    """Base class of the errors raised by the pose stage."""


class NoFaceError(FaceError):
    """No face was found in any frame of an image or clip."""


class FaceTrackError(FaceError, ValueError):
    """A face track or its input has the wrong shape or content."""


class FaceIndex:
    """Names for the face-mesh landmark indices this project relies on.

    "Left"/"right" are as seen in the image (``EYE_LEFT`` is the subject's right eye).
    """

    # Closed loops, in order around the contour.
    FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
                 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
    # Inner lip contour as two polylines from corner (78) to corner (308).
    LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
    LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
    # Eyelids as polylines from the image-left corner to the image-right corner.
    EYE_LEFT_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
    EYE_LEFT_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
    EYE_RIGHT_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
    EYE_RIGHT_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
    EYEBROW_LEFT = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
    EYEBROW_RIGHT = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
    IRIS_LEFT = (468, 469, 470, 471, 472)
    IRIS_RIGHT = (473, 474, 475, 476, 477)

    EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 33, 263
    NOSE_TIP, FOREHEAD, CHIN = 1, 10, 152

    # Points that move with the skull, not with expressions: used to align faces and solve pose.
    RIGID = (1, 4, 5, 6, 168, 197, 195, 9, 151, 10, 33, 133, 362, 263, 98, 327, 116, 345, 50, 280,
             234, 454, 127, 356, 21, 251, 54, 284, 103, 332, 67, 297, 109, 338, 93, 323)

    # Upper/lower pairs that measure openings (inner lips; eyelid centres).
    MOUTH_GAP_PAIRS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))
    EYE_GAP_PAIRS_LEFT = ((159, 145), (158, 153), (160, 144))
    EYE_GAP_PAIRS_RIGHT = ((386, 374), (385, 380), (387, 373))


# Canonical 3D face for head pose, in face-mesh order, units ~ cm (outer eye corners 9 apart).
# Axes as mediapipe's: x to image right, y down, z away from the camera (the nose tip is at z<0).
# Derived for this project: generalised Procrustes mean of the face-mesh 3D landmarks of 167 faces
# (portraits and driving frames), rotated into the face's left/right symmetry frame and
# mirror-symmetrised.  The mediapipe 0.10.14 wheel does not ship canonical_face_model.obj.
# Only points anchored to visible features are kept (nose, eye corners, cheekbones, forehead):
# the side contour slides over the cheek as the head turns and made pitch twice as noisy.
CANONICAL_FACE: dict[int, tuple[float, float, float]] = {
    1: (0.00, 3.74, -3.44), 4: (0.00, 3.06, -3.58), 5: (0.00, 2.21, -3.25), 6: (0.00, 0.19, -1.46),
    168: (0.00, -0.62, -0.95), 197: (0.00, 0.89, -2.03), 195: (0.00, 1.53, -2.63),
    9: (0.00, -2.34, -0.93), 151: (0.00, -3.84, -0.54), 10: (0.00, -5.31, -0.05),
    33: (-4.50, 0.00, 1.18), 133: (-1.80, 0.09, 0.62), 362: (1.80, 0.09, 0.62), 263: (4.50, 0.00, 1.18),
    98: (-1.81, 4.31, -1.11), 327: (1.81, 4.31, -1.11), 116: (-6.38, 1.83, 2.31), 345: (6.38, 1.83, 2.31),
    50: (-4.92, 3.24, 0.35), 280: (4.92, 3.24, 0.35),
    67: (-3.51, -4.95, 0.74), 297: (3.51, -4.95, 0.74), 109: (-1.89, -5.26, 0.12), 338: (1.89, -5.26, 0.12),
}


@dataclass(frozen=True)
class CropBox:
    """A square region of an image in pixels; it may reach outside the image (padded on crop)."""

    x0: float
    y0: float
    side: float

    def __post_init__(self) -> None:
        if not self.side > 0:
            raise FaceTrackError(f"a crop box needs a positive side, got {self.side}")

    def to_crop(self, size: int) -> np.ndarray:
        """2x3 affine matrix from image pixels to the pixels of a ``size`` x ``size`` crop."""
        scale = size / self.side
        return np.array([[scale, 0.0, -self.x0 * scale], [0.0, scale, -self.y0 * scale]], dtype=np.float64)


@dataclass(frozen=True)
class FaceTrack:
    """One face over T frames (T == 1 for a still image).

    landmarks:   (T, 478, 3) float32, mediapipe face-mesh order; x, y in pixels, z in pixels too
    rotation:    (T, 3) float32 radians: pitch, yaw, roll of the head (solvePnP against a canonical face);
                 pitch > 0 looks down, yaw > 0 turns the nose towards image left, roll > 0 is clockwise
    translation: (T, 3) float32 translation of the head from the same solve (canonical units ~ cm,
                 camera focal length FOCAL_LENGTH_IN_IMAGE_SIZES x the larger image side)
    detected:    (T,) bool; frames without a detected face hold the nearest detected frame's values
    image_size:  (height, width) of the frames the landmarks refer to
    """

    landmarks: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    detected: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        t = self.landmarks.shape[0] if self.landmarks.ndim == 3 else -1
        if self.landmarks.ndim != 3 or self.landmarks.shape[1:] != (NUM_LANDMARKS, 3):
            raise FaceTrackError(f"landmarks must be (T, {NUM_LANDMARKS}, 3), got {self.landmarks.shape}")
        if self.rotation.shape != (t, 3) or self.translation.shape != (t, 3) or self.detected.shape != (t,):
            raise FaceTrackError(
                f"rotation/translation/detected must be ({t}, 3)/({t}, 3)/({t},), got "
                f"{self.rotation.shape}/{self.translation.shape}/{self.detected.shape}")

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])

    def frame(self, index: int) -> FaceTrack:
        """The one-frame track of frame ``index``."""
        s = slice(index, index + 1) if index >= 0 else slice(len(self) + index, len(self) + index + 1)
        return replace(self, landmarks=self.landmarks[s], rotation=self.rotation[s],
                       translation=self.translation[s], detected=self.detected[s])

    def face_size(self) -> np.ndarray:
        """(T,) size of the face in pixels: the larger side of its landmark bounding box."""
        extent = self.landmarks[:, :, :2].max(axis=1) - self.landmarks[:, :, :2].min(axis=1)
        return extent.max(axis=1)

    def cropped(self, box: CropBox, size: int) -> FaceTrack:
        """This track in the pixel coordinates of ``crop_frames(frames, box, size)``; pose is re-solved."""
        scale = size / box.side
        landmarks = self.landmarks.astype(np.float32).copy()
        landmarks[:, :, 0] = (landmarks[:, :, 0] - box.x0) * scale
        landmarks[:, :, 1] = (landmarks[:, :, 1] - box.y0) * scale
        landmarks[:, :, 2] *= scale
        rotation, translation = head_pose(landmarks, (size, size))
        return FaceTrack(landmarks=landmarks, rotation=rotation, translation=translation,
                         detected=self.detected.copy(), image_size=(size, size))


# ----------------------------------------------------------------------------------------------
# Head pose


# Focal length of the assumed camera, in image sizes (~19 degrees across: a portrait lens, or a
# face crop of a wider shot).  Shorter focal lengths read a face above the image centre as
# looking down, and measured pitch followed driving clips less well (mean Pearson 0.78 at 1x,
# 0.85 at 3x over 24 reference/clip pairs).
FOCAL_LENGTH_IN_IMAGE_SIZES = 3.0


def _camera_matrix(image_size: tuple[int, int]) -> np.ndarray:
    height, width = image_size
    focal = FOCAL_LENGTH_IN_IMAGE_SIZES * float(max(height, width))
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def rotation_to_euler(matrix: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) of ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``."""
    yaw = np.arcsin(np.clip(-matrix[2, 0], -1.0, 1.0))
    pitch = np.arctan2(matrix[2, 1], matrix[2, 2])
    roll = np.arctan2(matrix[1, 0], matrix[0, 0])
    return np.array([pitch, yaw, roll])


def euler_to_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)``, the inverse of :func:`rotation_to_euler`."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (pitch, yaw, roll) and translation of the head by solvePnP on the rigid landmarks.

    Each frame after the first starts from the previous solution, which keeps the solve on the
    same branch through a clip.
    """
    index = np.array(sorted(CANONICAL_FACE))
    model = np.array([CANONICAL_FACE[i] for i in index], dtype=np.float64)
    camera = _camera_matrix(image_size)
    no_distortion = np.zeros(4)
    rotations = np.zeros((len(landmarks), 3), dtype=np.float32)
    translations = np.zeros((len(landmarks), 3), dtype=np.float32)
    rvec = tvec = None
    for t, frame_landmarks in enumerate(landmarks):
        if t > 0 and np.array_equal(frame_landmarks, landmarks[t - 1]):
            rotations[t], translations[t] = rotations[t - 1], translations[t - 1]  # a held (lost) frame
            continue
        points = frame_landmarks[index, :2].astype(np.float64)
        if rvec is None:
            ok, rvec, tvec = _first_solve(model, points, camera, no_distortion)
            if ok:
                ok, rvec, tvec = cv2.solvePnP(model, points, camera, no_distortion, rvec, tvec,
                                              useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        else:
            ok, rvec, tvec = cv2.solvePnP(model, points, camera, no_distortion, rvec.copy(), tvec.copy(),
                                          useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            raise FaceTrackError(f"head pose solve failed on frame {t}")
        rotations[t] = rotation_to_euler(cv2.Rodrigues(rvec)[0])
        translations[t] = tvec.ravel()
    return rotations, translations


def _first_solve(model: np.ndarray, points: np.ndarray, camera: np.ndarray,
                 distortion: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray]:
    """A pose without a guess: SQPnP, or EPnP where the face is too small in the frame for SQPnP.

    SQPnP refuses points spread less than its threshold once divided by the focal length: a face
    ~100 px across in a 4000 px photo (or a distant face in a 4K clip).  EPnP takes any spread.
    """
    try:
        return cv2.solvePnP(model, points, camera, distortion, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:
        return cv2.solvePnP(model, points, camera, distortion, flags=cv2.SOLVEPNP_EPNP)


# ----------------------------------------------------------------------------------------------
# Tracking


@dataclass(frozen=True)
class FaceTrackerConfig:
    """How faces are found and tracked."""

    max_faces: int = 2  # faces the mesh looks for; the largest one is kept
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    # Gaussian sigma (frames) of the temporal smoothing of landmarks; 0 keeps mediapipe's output.
    smoothing_sigma: float = 0.0
    # A clip whose face is found in fewer than this share of its frames, and never in min_found_run
    # frames in a row, fails its row: such "faces" are the mesh's false finds, scattered frames of a
    # clip without one (colour bars, a title card), which would render as a still portrait jumping
    # to a stray pose.  A real face seen briefly is seen in a run of frames.
    min_found_share: float = 0.05
    min_found_run: int = 4
    # A frame whose face lies beyond the picture's edge by more than this share of its landmarks,
    # above the clip's usual share (a close-up cut at the chin in every frame is its usual), is
    # a face leaving the frame: the mesh guesses the part it cannot see, so its pose is not kept.
    max_cut_share: float = 0.2


class FaceTracker:
    """Mediapipe face mesh (refined, 478 landmarks), built once and used for many clips and images."""

    def __init__(self, config: FaceTrackerConfig = FaceTrackerConfig()) -> None:
        import mediapipe as mp  # heavy import, only where a tracker is built

        self.config = config
        options = dict(max_num_faces=config.max_faces, refine_landmarks=True,
                       min_detection_confidence=config.min_detection_confidence,
                       min_tracking_confidence=config.min_tracking_confidence)
        self._video_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, **options)
        self._image_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, **options)

    def close(self) -> None:
        self._video_mesh.close()
        self._image_mesh.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def detect(self, image: np.ndarray, image_size: tuple[int, int] | None = None) -> FaceTrack:
        """The largest face of one RGB image, as a one-frame track; :class:`NoFaceError` if none.

        ``image`` may be a scaled-down copy of an image of ``image_size`` (height, width): the
        landmarks are then given in ``image_size`` pixels.
        """
        image = _check_frames(image[None] if np.asarray(image).ndim == 3 else image)[0]
        landmarks = _largest_face(self._image_mesh.process(image), image.shape[:2])
        if landmarks is None:
            raise NoFaceError(f"no face found in the {image.shape[1]}x{image.shape[0]} image")
        size, landmarks = _in_full_size(landmarks[None], image.shape[:2], image_size)
        return _build_track(landmarks, np.array([True]), size, smoothing_sigma=0.0)

    def find(self, image: np.ndarray, max_side: int) -> FaceTrack:
        """The largest face of a full-size RGB image, looked for as the face mesh sees best.

        First the whole image scaled down to ``max_side``; where that finds none (a small face in a
        large photo: a full-body shot, a group), overlapping square parts of it in more detail: a
        half, a quarter, then an eighth of the longer side (none under :data:`MIN_TILE_SIDE`), keeping
        the largest face of the first size that finds one.  The mesh's detector needs a face across
        about a tenth of what it sees.  Only an image without a face pays for the whole search (206
        parts for a 4000x3000 photo, about 3 s).  Landmarks are in ``image`` pixels.  :class:`NoFaceError`
        if no part shows a face.
        """
        image = _check_frames(image[None] if np.asarray(image).ndim == 3 else image)[0]
        height, width = image.shape[:2]
        try:
            return self.detect(scaled_within(image, max_side), image_size=(height, width))
        except NoFaceError:
            pass
        for share in (2, 4, 8):
            tile = max(height, width) // share
            if tile < MIN_TILE_SIDE:
                break
            found = [face for face in (self._face_in(image, top, left, tile, max_side)
                                       for top, left in _tile_corners((height, width), tile)) if face is not None]
            if found:
                largest = max(found, key=_face_area)
                return _build_track(largest[None], np.array([True]), (height, width), smoothing_sigma=0.0)
        raise NoFaceError(f"no face found in the {width}x{height} image, whole or in parts")

    def _face_in(self, image: np.ndarray, top: int, left: int, side: int, max_side: int) -> np.ndarray | None:
        """The largest face in one square part of ``image``, in ``image`` pixels, or None."""
        part = image[top:top + side, left:left + side]
        seen = scaled_within(part, max_side)
        landmarks = _largest_face(self._image_mesh.process(np.ascontiguousarray(seen)), seen.shape[:2])
        if landmarks is None:
            return None
        _, landmarks = _in_full_size(landmarks[None], seen.shape[:2], part.shape[:2])
        return landmarks[0] + np.array([left, top, 0.0], dtype=np.float32)

    def track(self, frames: np.ndarray | Iterable[np.ndarray], image_size: tuple[int, int] | None = None,
              region: CropBox | None = None) -> FaceTrack:
        """The largest face through a clip of RGB frames; one track entry per frame.

        ``frames`` may be a stream (any iterable of (H, W, 3) frames of one size): nothing but the
        landmarks is kept.  Frames scaled down from ``image_size`` give landmarks in ``image_size`` pixels.
        With ``region``, the frames are square crops of that box of images of ``image_size`` (see
        :func:`face_region`), and the landmarks are given in the whole images' pixels.
        """
        if region is not None and image_size is None:
            raise FaceTrackError("frames of a region need the whole images' size")
        self._video_mesh.reset()  # no tracking state carried over from the previous clip
        landmarks: list[np.ndarray] = []
        detected: list[bool] = []
        followed: np.ndarray | None = None  # the last face found: the one the track goes on with
        shape = None
        for frame in frames:
            frame = _check_frames(np.asarray(frame)[None])[0]
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                raise FaceTrackError(f"frames of one clip differ in size: {shape} and {frame.shape}")
            found = _followed_face(self._video_mesh.process(np.ascontiguousarray(frame)), frame.shape[:2], followed)
            landmarks.append(found if found is not None else np.zeros((NUM_LANDMARKS, 3), dtype=np.float32))
            detected.append(found is not None)
            followed = found if found is not None else followed
        if shape is None:
            raise FaceTrackError("expected RGB frames (T, H, W, 3) with T >= 1, got no frames")
        height, width = shape[:2]
        if not any(detected):
            raise NoFaceError(f"no face found in any of the {len(detected)} frames ({width}x{height})")
        if (sum(detected) < self.config.min_found_share * len(detected)
                and _longest_run(detected) < self.config.min_found_run):
            raise NoFaceError(f"a face was found in only {sum(detected)} of the {len(detected)} frames "
                              f"({width}x{height}), scattered: too few to drive a video (is this the right "
                              "driving clip?)")
        if region is not None:
            _, points = _in_full_size(np.stack(landmarks), (height, width), (region.side, region.side))
            points = points + np.array([region.x0, region.y0, 0.0], dtype=np.float32)
            size = (int(image_size[0]), int(image_size[1]))
        else:
            size, points = _in_full_size(np.stack(landmarks), (height, width), image_size)
        kept = _trusted_finds(points, np.array(detected), size, self.config)
        lost = len(kept) - int(kept.sum())
        if lost:
            log.info("face lost, leaving the frame or a stray find in %d of %d frames; holding the nearest "
                     "trusted pose", lost, len(kept))
        return _build_track(points, kept, size, self.config.smoothing_sigma)


# A region for tracking a face that is small in its clip's frames: this many face sizes across, so
# the face fills about a quarter of what the mesh sees, with room for the head to move.
REGION_FACE_SIZES = 4.0


def face_region(tracker: FaceTracker, frames: Iterable[np.ndarray], max_side: int) -> CropBox | None:
    """A square box around a face that the mesh misses in whole frames scaled to ``max_side``, or None.

    Each of ``frames`` (a few frames of the clip at full size) is searched with
    :meth:`FaceTracker.find`; the box is centred on the union of the faces found,
    :data:`REGION_FACE_SIZES` times their mean size across (or more, to hold the union).
    """
    boxes = []
    for frame in frames:
        try:
            points = tracker.find(frame, max_side).landmarks[0, :, :2]
        except NoFaceError:
            continue
        boxes.append((points.min(axis=0), points.max(axis=0)))
    if not boxes:
        return None
    face_size = float(np.mean([(high - low).max() for low, high in boxes]))
    low = np.min([low for low, _ in boxes], axis=0)
    high = np.max([high for _, high in boxes], axis=0)
    side = max(REGION_FACE_SIZES * face_size, 1.5 * float((high - low).max()))
    centre = (low + high) / 2.0
    return CropBox(float(centre[0] - side / 2.0), float(centre[1] - side / 2.0), side)


MIN_TILE_SIDE = 256  # the smallest part of a portrait searched for a face, pixels


def scaled_within(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` scaled down (area filter) so its longer side is at most ``side``; a smaller one as it is."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def _tile_corners(size: tuple[int, int], side: int) -> list[tuple[int, int]]:
    """(top, left) of square parts of ``side`` covering an image of ``size``, each overlapping the next by half."""
    height, width = size

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        step = side // 2
        return sorted({*range(0, length - side, step), length - side})

    return [(top, left) for top in starts(height) for left in starts(width)]


def _face_area(landmarks: np.ndarray) -> float:
    """Area of the box around one face's (478, 2+) landmarks."""
    extent = landmarks[:, :2].max(axis=0) - landmarks[:, :2].min(axis=0)
    return float(extent[0] * extent[1])


def _in_full_size(landmarks: np.ndarray, seen_size: tuple[int, int],
                  image_size: tuple[int, int] | None) -> tuple[tuple[int, int], np.ndarray]:
    """Landmarks found on frames of ``seen_size`` expressed in ``image_size`` pixels (x, y and z alike)."""
    if image_size is None or tuple(image_size) == tuple(seen_size):
        return (int(seen_size[0]), int(seen_size[1])), landmarks
    factor = np.array([image_size[1] / seen_size[1], image_size[0] / seen_size[0],
                       image_size[1] / seen_size[1]], dtype=np.float32)
    return (int(image_size[0]), int(image_size[1])), landmarks * factor


def _check_frames(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise FaceTrackError(f"expected RGB frames (T, H, W, 3) with T >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise FaceTrackError(f"expected uint8 frames, got {frames.dtype}")
    return frames


def _longest_run(flags: Sequence[bool]) -> int:
    """The most consecutive true flags."""
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def _trusted_finds(points: np.ndarray, detected: np.ndarray, image_size: tuple[int, int],
                   config: FaceTrackerConfig) -> np.ndarray:
    """Which frames' finds a track keeps: ``detected`` less faces leaving the frame and stray finds.

    A face leaving the frame: beyond the picture's edge by more than ``config.max_cut_share`` of
    its landmarks above the clip's usual share.  A stray find: a run of fewer than
    ``config.min_found_run`` frames after a loss whose face is not the one before it (another
    size or place): the mesh finding a "face" in the background once the person walked out,
    which held for the rest of the clip shrank the portrait to a thumbnail.  Where this would
    keep nothing, the finds stand as they were.
    """
    height, width = image_size
    x, y = points[:, :, 0], points[:, :, 1]
    outside = ((x < 0) | (x >= width) | (y < 0) | (y >= height)).mean(axis=1)
    usual = float(np.median(outside[detected]))
    kept = detected & (outside <= usual + config.max_cut_share)
    kept = _without_stray_runs(points, kept, config.min_found_run)
    return kept if kept.any() else detected


def _without_stray_runs(points: np.ndarray, kept: np.ndarray, min_run: int) -> np.ndarray:
    """``kept`` less short runs, after a gap, of a face unlike the last one kept before the gap."""
    kept = kept.copy()
    starts = np.flatnonzero(kept & ~np.concatenate([[False], kept[:-1]]))
    last_good: np.ndarray | None = None
    for start in starts:
        end = start
        while end < len(kept) and kept[end]:
            end += 1
        if last_good is not None and end - start < min_run and not _same_face(last_good, points[start]):
            kept[start:end] = False
            continue
        last_good = points[end - 1]
    return kept


def _same_face(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether two finds either side of a gap look like one face: a size within 1.5x, moved under its size."""
    size_before, size_after = (float(np.ptp(face[:, :2], axis=0).max()) for face in (before, after))
    moved = float(np.linalg.norm(before[:, :2].mean(axis=0) - after[:, :2].mean(axis=0)))
    return max(size_before, size_after) <= 1.5 * max(min(size_before, size_after), 1.0) and moved < size_before


def _faces(result: object, image_size: tuple[int, int]) -> list[np.ndarray]:
    """(478, 3) pixel landmarks of every face in a mediapipe result."""
    height, width = image_size
    return [np.array([(p.x * width, p.y * height, p.z * width) for p in face.landmark], dtype=np.float32)
            for face in getattr(result, "multi_face_landmarks", None) or ()]


def _largest_face(result: object, image_size: tuple[int, int]) -> np.ndarray | None:
    """(478, 3) pixel landmarks of the largest face in a mediapipe result, or None."""
    return max(_faces(result, image_size), key=_face_area, default=None)


def _followed_face(result: object, image_size: tuple[int, int], previous: np.ndarray | None) -> np.ndarray | None:
    """The face a clip's track goes on with: the one nearest to the last face it followed (the largest
    at first).  Taking the largest in every frame switched people in a clip of two as soon as the
    other one leaned in, and the portrait jumped across the picture after them."""
    faces = _faces(result, image_size)
    if previous is None or len(faces) < 2:
        return max(faces, key=_face_area, default=None)
    centre = previous[:, :2].mean(axis=0)
    return min(faces, key=lambda face: float(np.linalg.norm(face[:, :2].mean(axis=0) - centre)))


def _build_track(landmarks: np.ndarray, detected: np.ndarray, image_size: tuple[int, int],
                 smoothing_sigma: float) -> FaceTrack:
    landmarks = _fill_lost_frames(landmarks, detected)
    landmarks = smooth_in_time(landmarks, smoothing_sigma)
    rotation, translation = head_pose(landmarks, image_size)
    return FaceTrack(landmarks=landmarks.astype(np.float32), rotation=rotation, translation=translation,
                     detected=detected, image_size=(int(image_size[0]), int(image_size[1])))


def _fill_lost_frames(landmarks: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Lost frames take the last detected frame's landmarks; leading lost frames the first detected."""
    filled = landmarks.copy()
    found = np.flatnonzero(detected)
    source = np.maximum.accumulate(np.where(detected, np.arange(len(detected)), -1))
    source[source < 0] = found[0]
    return filled[source]


def smooth_in_time(values: np.ndarray, sigma: float) -> np.ndarray:
    """``values`` (T, ...) smoothed along time with a Gaussian of ``sigma`` frames (edges held)."""
    if sigma <= 0 or len(values) < 2:
        return values
    radius = max(1, int(round(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    index = np.clip(np.arange(len(values))[:, None] + offsets[None], 0, len(values) - 1)
    return np.tensordot(values[index], weights / weights.sum(), axes=([1], [0]))


# ----------------------------------------------------------------------------------------------
# Stable crop


@dataclass(frozen=True)
class CropConfig:
    """The stable crop's convention: one square per clip, ``scale`` x the face, shifted up.

    It is the default crop rule (``Engine.crop_rule``), the warp engine's; HelloMeme's own rule, the
    official script's, is ``engines/hellomeme_crop.py``.
    """

    scale: float = 3.0  # crop side / face size (mean over the clip)
    shift_up: float = 0.1  # fraction of the side the box moves up from the faces' centre
    # As HelloMeme: cap the side at the image's shorter side and slide the box inside, so a crop
    # is never padded.  False keeps the side and centre and pads with the image's edge instead.
    fit_inside: bool = True


def stable_crop_box(track: FaceTrack, config: CropConfig = CropConfig()) -> CropBox:
    """One static square for the whole clip, centred on the union of the face boxes.

    The side is ``config.scale`` times the mean face size, grown if needed so the union of the
    face boxes fits with some margin (a head that travels far stays in frame), then (with
    ``config.fit_inside``) capped at the image's shorter side.
    """
    points = track.landmarks[track.detected] if track.detected.any() else track.landmarks
    top_left = points[:, :, :2].min(axis=1)  # (T, 2)
    bottom_right = points[:, :, :2].max(axis=1)
    face_size = float((bottom_right - top_left).max(axis=1).mean())
    union_tl, union_br = top_left.min(axis=0), bottom_right.max(axis=0)
    side = max(config.scale * face_size, 1.2 * float((union_br - union_tl).max()))
    height, width = track.image_size
    if config.fit_inside:
        side = min(side, float(width), float(height))
    centre = (union_tl + union_br) / 2.0
    centre[1] -= config.shift_up * side
    x0, y0 = centre - side / 2.0
    if config.fit_inside:
        x0 = min(max(x0, 0.0), width - side)
        y0 = min(max(y0, 0.0), height - side)
    return CropBox(x0=float(x0), y0=float(y0), side=float(side))


def crop_frames(frames: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """(T, size, size, 3) crops of ``box`` from each frame; parts outside the image replicate its edge."""
    frames = np.asarray(frames)
    single = frames.ndim == 3
    frames = frames[None] if single else frames
    matrix = box.to_crop(size)
    interpolation = cv2.INTER_AREA if box.side > 1.5 * size else cv2.INTER_LINEAR
    if interpolation == cv2.INTER_AREA:
        # warpAffine has no area filter: shrink the frames first, then crop at the right scale.
        factor = size / box.side * 1.5
        frames = np.stack([cv2.resize(f, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) for f in frames])
        matrix = CropBox(box.x0 * factor, box.y0 * factor, box.side * factor).to_crop(size)
        interpolation = cv2.INTER_LINEAR
    out = np.stack([cv2.warpAffine(f, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
                    for f in frames])
    return out[0] if single else out


# ----------------------------------------------------------------------------------------------
# Expression signals


def _distances(landmarks: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    upper = landmarks[:, [a for a, _ in pairs]]
    lower = landmarks[:, [b for _, b in pairs]]
    return np.linalg.norm(upper - lower, axis=-1).mean(axis=1)


def reference_length(track: FaceTrack) -> np.ndarray:
    """(T,) distance between the outer eye corners in 3D: a face size that ignores head rotation."""
    lm = track.landmarks
    return np.linalg.norm(lm[:, FaceIndex.EYE_OUTER_LEFT] - lm[:, FaceIndex.EYE_OUTER_RIGHT], axis=-1)


def mouth_opening(track: FaceTrack) -> np.ndarray:
    """(T,) gap between the inner lips over the outer-eye-corner distance (0 closed, ~0.5 wide open)."""
    return _distances(track.landmarks, FaceIndex.MOUTH_GAP_PAIRS) / reference_length(track)


def eye_opening(track: FaceTrack) -> np.ndarray:
    """(T,) mean eyelid gap of both eyes over the outer-eye-corner distance (~0.1 open, ~0.02 closed)."""
    both = (_distances(track.landmarks, FaceIndex.EYE_GAP_PAIRS_LEFT)
            + _distances(track.landmarks, FaceIndex.EYE_GAP_PAIRS_RIGHT)) / 2.0
    return both / reference_length(track)


def head_yaw(track: FaceTrack) -> np.ndarray:
    """(T,) yaw in radians (nose towards image left is positive)."""
    return track.rotation[:, 1].copy()


def head_pitch(track: FaceTrack) -> np.ndarray:
    """(T,) pitch in radians (looking down is positive)."""
    return track.rotation[:, 0].copy()


def head_roll(track: FaceTrack) -> np.ndarray:
    """(T,) roll in radians (clockwise in the image is positive)."""
    return track.rotation[:, 2].copy()



# How far from a quarter turn a clip's usual roll may be for it to count as filmed sideways (or upside
# down): a head tilted 45 degrees is a pose to follow, one lying at 80-100 degrees a lost rotation tag.
SIDEWAYS_TOLERANCE_DEGREES = 30.0


def upright_turns(track: FaceTrack) -> int:
    """Quarter turns anticlockwise (``np.rot90``'s ``k``) that stand a clip's face upright, or 0.

    A clip filmed sideways whose rotation tag was lost shows its face lying at +-90 degrees in
    every frame; the mesh tracks such a face unsteadily (sizes jumping by half, which the warp
    renders as zooms and tilts), and the same frames turned upright track as well as any clip.
    """
    roll = np.degrees(np.median(track.rotation[track.detected, 2])) if track.detected.any() else 0.0
    turns = int(np.round(roll / 90.0))
    if turns % 4 == 0 or abs(roll - 90.0 * turns) > SIDEWAYS_TOLERANCE_DEGREES:
        return 0
    return turns % 4

_EYE_CORNERS = (33, 133, 362, 263)


def nose_proxies(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) proxies (T,) each: the nose tip against the eye corners, no pose model at all.

    The nose tip's 2D offset from the mean of the four eye corners, along the line through the
    outer corners (yaw: towards image left is positive) and across it (pitch: down is
    positive), over the outer corners' 3D distance.  An independent check on solvePnP's
    angles: it needs no canonical face or camera, only the tracker's points.  The 3D distance
    (not the 2D one, which shrinks as cos(yaw)) keeps a turn from reading as a nod.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    centre = landmarks[:, list(_EYE_CORNERS), :2].mean(axis=1)
    along = landmarks[:, FaceIndex.EYE_OUTER_RIGHT, :2] - landmarks[:, FaceIndex.EYE_OUTER_LEFT, :2]
    along /= np.maximum(np.linalg.norm(along, axis=1, keepdims=True), 1e-9)
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    length = np.linalg.norm(landmarks[:, FaceIndex.EYE_OUTER_RIGHT] - landmarks[:, FaceIndex.EYE_OUTER_LEFT], axis=1)
    offset = landmarks[:, FaceIndex.NOSE_TIP, :2] - centre
    length = np.maximum(length, 1e-9)
    return -np.einsum("tc,tc->t", offset, along) / length, np.einsum("tc,tc->t", offset, across) / length


# Standard deviation a signal must exceed over a clip to count as moving: five times the
# tracker's own noise, measured as the signal's standard deviation over a still portrait
# re-tracked under +-1 px shifts, +-1 % scale, +-0.5 degree rotation and pixel noise (worst of
# five photographic portraits: mouth 0.0027, eye 0.0034, yaw 0.0113 rad, pitch 0.0073 rad;
# of six for roll 0.0068 rad, which includes the +-0.5 degree rotation itself, and the nose
# proxies, yaw 0.0054 and pitch 0.0057).
SIGNAL_NOISE_FLOORS: dict[str, float] = {"mouth": 0.014, "eye": 0.017, "yaw": 0.057, "pitch": 0.037}
MOTION_NOISE_FLOORS: dict[str, float] = {**SIGNAL_NOISE_FLOORS, "roll": 0.034, "yaw_proxy": 0.027,
                                         "pitch_proxy": 0.029}


def expression_signals(track: FaceTrack) -> dict[str, np.ndarray]:
    """The per-frame signals by name: mouth and eye opening, head yaw and pitch."""
    return {"mouth": mouth_opening(track), "eye": eye_opening(track), "yaw": head_yaw(track), "pitch": head_pitch(track)}


def motion_signals(track: FaceTrack) -> dict[str, np.ndarray]:
    """:func:`expression_signals`, head roll, and the nose proxies of yaw and pitch (:func:`nose_proxies`).

    The proxies judge head motion without the solvePnP model the warp engine itself retargets
    with, so an engine cannot pass by agreeing with its own pose estimator.
    """
    yaw_proxy, pitch_proxy = nose_proxies(track.landmarks)
    return {**expression_signals(track), "roll": head_roll(track), "yaw_proxy": yaw_proxy, "pitch_proxy": pitch_proxy}


def follow_correlations(driving: FaceTrack, output: FaceTrack, floors: dict[str, float] | None = None,
                        signals: Callable[[FaceTrack], dict[str, np.ndarray]] = expression_signals,
                        ) -> dict[str, float | None]:
    """Pearson correlation of each signal between a driving clip and a video rendered from it.

    ``None`` for a signal that stays within its noise floor in the driving clip (nothing to follow).
    ``signals`` picks the set (:func:`motion_signals` adds roll and the nose proxies); ``floors``
    defaults to :data:`MOTION_NOISE_FLOORS`, which covers both sets.
    """
    if len(driving) != len(output):
        raise FaceTrackError(f"tracks differ in length: {len(driving)} and {len(output)} frames")
    floors = MOTION_NOISE_FLOORS if floors is None else floors
    wanted, got = signals(driving), signals(output)
    result: dict[str, float | None] = {}
    for name, values in wanted.items():
        if values.std() <= floors[name] or got[name].std() == 0:
            result[name] = None if values.std() <= floors[name] else 0.0
        else:
            result[name] = float(np.corrcoef(values, got[name])[0, 1])
    return result
