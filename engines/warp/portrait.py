"""A reference portrait made ready to move: its mesh, warper and the colours its overlays need.

Built once per reference; :meth:`PortraitRig.render` turns one set of target landmarks (the
reference's 478 landmarks, moved) into a frame.  The face-mesh vertices go to the targets, the
two head loops follow the face's 3D motion as points on the skull behind it (fully, then partly), the border
loops stay, the eyelid copies expose as much eyeball as the lids leave open, and the overlays
paint what stretching cannot show (a mouth's inside, a
closing eye's lid).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from engines.warp.beyond import BORDER_LOOP_OUTSIDE, BeyondFill, beyond_margin, extend
from engines.warp.expressions import FaceFrame, eye_gaps
from engines.warp.mesh import NUM_MESH_LANDMARKS, MeshWarper, WarpMesh
from engines.warp.eyelids import LidStyle, ReferenceEye, paint_lid
from engines.warp.overlays import MouthPalette, OverlayStyle, cheek_colour, eyelid_colour, paint_mouth_interior
from engines.warp.retarget import fit_similarity, soft_limit
from faces.tracking import FaceIndex

# How much of the face's motion each head loop takes (near loop, far loop).
HEAD_LOOP_FOLLOW = (1.0, 0.45)


@dataclass(frozen=True)
class Framing:
    """How much of the face's change of size and place the mesh carries; the rest moves the whole picture.

    The mesh's border stays put, so a face it shrinks or moves far drags the triangles between
    them: a tiny head on a stretched neck, a swirled background.  A camera pulling out or
    panning moves head, shoulders and background together, so the part of the change beyond
    what the mesh shows cleanly is applied that way, a similarity of the whole portrait (its
    uncovered border filled by :func:`engines.warp.beyond.extend`).  Within the ranges the mesh
    takes all of it, so a clip whose face keeps its size and place renders as before; past
    them its share saturates smoothly (no kink in the motion, no time filter, no lag).
    """

    # Face scale (over the reference's) the mesh carries fully, and the width of the soft knee
    # past each end, in log scale: the mesh carries at most e^knee more than the range (0.90 to
    # 1.37).  Real clips' faces keep within 0.94-1.31 of their first frame's size.  Shrinking is
    # what the mesh shows worst (a face it shrinks to 0.81 stretches the neck below it by ~1.3),
    # so its range ends closer to 1.
    mesh_scale: tuple[float, float] = (0.95, 1.3)
    scale_knee: float = 0.05
    # Face-centre shift the mesh carries fully, in face widths, and the soft knee past it (at
    # most 0.8).  Real clips' faces move up to half a face width.
    mesh_shift: float = 0.6
    shift_knee: float = 0.2


class PortraitError(ValueError):
    """A reference image and its landmarks that do not fit together."""


@dataclass(frozen=True)
class RigConfig:
    """How a portrait is rendered."""

    raster_scale: float = 0.5  # resolution of the triangle-index raster relative to the image
    # Depth of the two head loops behind the face oval, in face half-widths: the loops turn with
    # the head's 3D motion as points on the skull would (a nod moves the hair line and the neck
    # less than the face), instead of with the face's 2D similarity.  None: 2D similarity.
    head_loop_depths: tuple[float, float] | None = (0.5, 1.0)
    mouth_fill: bool = True
    eye_close: bool = True
    overlay: OverlayStyle = field(default_factory=OverlayStyle)
    lid: LidStyle = field(default_factory=LidStyle)
    beyond: BeyondFill = field(default_factory=BeyondFill)  # what a tight portrait shows past its edge
    framing: Framing | None = field(default_factory=Framing)  # None: the mesh carries all scale and shift


def _gap(landmarks: np.ndarray, pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """(..., P) 3D distances of landmark pairs; ``landmarks`` is (..., 478, 3)."""
    upper = landmarks[..., [a for a, _ in pairs], :]
    lower = landmarks[..., [b for _, b in pairs], :]
    return np.linalg.norm(upper - lower, axis=-1)


def fit_similarity_2d(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity taking ``source`` (N, 2) points onto ``target``."""
    s = source[:, 0] + 1j * source[:, 1]
    t = target[:, 0] + 1j * target[:, 1]
    sm, tm = s.mean(), t.mean()
    a = np.vdot(s - sm, t - tm) / max(np.vdot(s - sm, s - sm).real, 1e-12)
    b = tm - a * sm
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


_EYES = (
    (FaceIndex.EYE_LEFT_UPPER, FaceIndex.EYE_LEFT_LOWER, FaceIndex.EYEBROW_LEFT),
    (FaceIndex.EYE_RIGHT_UPPER, FaceIndex.EYE_RIGHT_LOWER, FaceIndex.EYEBROW_RIGHT),
)
_EYE_PAIRS = tuple(tuple(zip(upper[1:-1], lower[1:-1])) for upper, lower, _ in _EYES)
_MOUTH_PAIRS = tuple(zip(FaceIndex.LIPS_INNER_UPPER[1:-1], FaceIndex.LIPS_INNER_LOWER[1:-1]))


class PortraitRig:
    """One reference portrait, ready to render frames from target landmarks."""

    def __init__(self, image: np.ndarray, landmarks: np.ndarray, config: RigConfig = RigConfig()) -> None:
        image = np.ascontiguousarray(image)
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise PortraitError(f"expected an RGB uint8 image (H, W, 3), got {image.shape} {image.dtype}")
        if landmarks.shape != (478, 3):
            raise PortraitError(f"expected (478, 3) landmarks, got {landmarks.shape}")
        self.image = image
        self.landmarks = landmarks
        self.config = config
        self.mesh = WarpMesh.build(landmarks, image.shape[:2])
        # A tight portrait (its mesh past the picture's edge) is warped from an extension of
        # itself, so what a turning head uncovers is a plausible continuation, not edge streaks.
        self._margin = -1
        self._extend_to(beyond_margin(self.mesh, config.beyond))
        self.warper = MeshWarper(self.mesh, config.raster_scale)
        self._rigid = list(FaceIndex.RIGID)
        self._centre = landmarks[self._rigid].mean(axis=0)  # the camera's moves are about the face's centre
        oval = landmarks[list(FaceIndex.FACE_OVAL)]
        self._oval_depth = float(oval[:, 2].mean())
        self._face_half_width = float(np.ptp(oval[:, 0])) / 2.0
        self._face_length = float(np.linalg.norm(landmarks[FaceIndex.EYE_OUTER_LEFT] - landmarks[FaceIndex.EYE_OUTER_RIGHT]))
        self._eye_gaps = [_gap(landmarks, pairs) for pairs in _EYE_PAIRS]
        # Lid gaps along the face's "down" (units of the eye-corner distance): how shut an eye is.
        # Drawn eyes' lid points do not pair up across the eye, so 3D pair distances never reach 0.
        self._eye_openings = np.maximum(eye_gaps(landmarks), 1e-6)
        self._mouth_gap = float(_gap(landmarks, _MOUTH_PAIRS).max())
        self._mouth_palette = MouthPalette.for_portrait(image)  # a monochrome portrait's mouth in its own tint
        self._eyes = [ReferenceEye.measure(image, landmarks[list(upper), :2], landmarks[list(lower), :2],
                                           landmarks[list(brow), :2],
                                           eyelid_colour(image, landmarks[list(upper), :2], landmarks[list(brow), :2]),
                                           config.lid)
                      for upper, lower, brow in _EYES]
        skin = cheek_colour(image, landmarks)
        self._painted_lids = [eye.takes_painted_lid(skin, config.lid) for eye in self._eyes]
        # Eyelid copies: source positions measured from their lower-lid partner.
        src = self.mesh.source
        self._lid_partner_source = src[self.mesh.eyelid_partner].astype(np.float64)
        self._lid_offset_source = src[self.mesh.eyelid_copies].astype(np.float64) - self._lid_partner_source
        self._copy_slice = slice(NUM_MESH_LANDMARKS, NUM_MESH_LANDMARKS + len(self.mesh.eyelid_copies))

    def _extend_to(self, margin: int) -> None:
        """Extend the portrait by ``margin`` pixels on every side, unless it already reaches that far."""
        if margin <= self._margin:
            return
        self._margin = margin
        # Warped as RGBA: OpenCV's remap has a vectorised path for four channels that does a
        # 512x512 frame in half the time of three, and dropping the channel again costs little.
        self._image_rgba = cv2.cvtColor(extend(self.image, margin, self.config.beyond), cv2.COLOR_RGB2RGBA)

    def camera(self, target: np.ndarray) -> tuple[float, np.ndarray]:
        """(scale, shift (2,)) of the whole picture, about the reference's face centre, for target landmarks (478, 3).

        The part of the face's change of size and place that the mesh does not carry
        (:class:`Framing`); (1, 0) while the face stays within the mesh's ranges.
        """
        framing = self.config.framing
        if framing is None:
            return 1.0, np.zeros(2)
        rigid = target[self._rigid]
        scale = float(fit_similarity(self.landmarks[self._rigid], rigid).scale[0])
        low, high = framing.mesh_scale
        log_scale = np.log(max(scale, 1e-6))
        camera_scale = float(np.exp(log_scale - soft_limit(log_scale, np.log(low), np.log(high), framing.scale_knee)))
        shift = rigid[:, :2].mean(axis=0) - self._centre[:2]
        distance = float(np.linalg.norm(shift)) / (2.0 * self._face_half_width)
        mesh_distance = float(soft_limit(distance, 0.0, framing.mesh_shift, framing.shift_knee))
        mesh_shift = shift * (mesh_distance / distance) if distance > 0 else shift
        # The face centre lands at centre + camera shift + camera scale * mesh shift.
        return camera_scale, shift - camera_scale * mesh_shift

    def margin_for(self, target: np.ndarray) -> int:
        """Pixels of extension the frame of ``target`` samples: the mesh's reach, or what the camera uncovers."""
        scale, shift = self.camera(target)
        height, width = self.image.shape[:2]
        corners = np.array([[-0.5, -0.5], [width - 0.5, height - 0.5]])
        seen = self._centre[:2] + (corners - self._centre[:2] - shift) / scale  # the output's corners in the source
        over = float(max(corners[0, 0] - seen[:, 0].min(), seen[:, 0].max() - corners[1, 0],
                         corners[0, 1] - seen[:, 1].min(), seen[:, 1].max() - corners[1, 1], 0.0))
        if over <= BORDER_LOOP_OUTSIDE:
            return 0
        fill = self.config.beyond
        # In steps, so a camera pulling out extends the portrait a few times, not every frame.
        step = 32
        wanted = step * int(np.ceil((over + fill.slack) / step))
        return int(min(wanted, np.ceil(fill.max_margin * max(height, width))))

    def prepare(self, targets: np.ndarray) -> None:
        """Extend the portrait once as far as any of ``targets`` (T, 478, 3) needs, before rendering them.

        Rendering extends it on demand too, but then a frame's fill far past the edge would
        depend on the frames rendered before it.
        """
        self._extend_to(max((self.margin_for(target) for target in np.asarray(targets, dtype=np.float64)), default=0))

    def _scale_of(self, target: np.ndarray) -> float:
        """How much larger the face is drawn in ``target`` than in the reference."""
        length = np.linalg.norm(target[FaceIndex.EYE_OUTER_LEFT] - target[FaceIndex.EYE_OUTER_RIGHT])
        return float(length / self._face_length)

    def vertices(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target, source) vertex positions and target depths of the mesh for target landmarks (478, 3).

        The mesh carries the face with the camera's move (:meth:`camera`) undone; then every
        vertex, the border loops too, takes that move, so the face lands on its targets.
        """
        scale, shift = self.camera(target)
        if scale == 1.0 and not shift.any():
            return self._mesh_vertices(target)
        centre = self._centre
        undone = centre + (target - centre - np.append(shift, 0.0)) / scale
        moved, source, depth = self._mesh_vertices(undone)
        return centre[:2] + shift + scale * (moved - centre[:2]), source, depth

    def _mesh_vertices(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mesh = self.mesh
        target_xy = target[:NUM_MESH_LANDMARKS, :2]
        moved = mesh.source.astype(np.float64).copy()
        moved[:NUM_MESH_LANDMARKS] = target_xy
        moved[self._copy_slice] = target_xy[mesh.eyelid_copies]
        motion = fit_similarity_2d(self.landmarks[self._rigid, :2], target[self._rigid, :2])
        depths = self.config.head_loop_depths
        if depths is not None:
            motion_3d = fit_similarity(self.landmarks[self._rigid], target[self._rigid])
        inner_source = mesh.source[list(FaceIndex.FACE_OVAL)].astype(np.float64)
        inner_target = target_xy[list(FaceIndex.FACE_OVAL)]
        for k, follow in enumerate(HEAD_LOOP_FOLLOW):
            loop = mesh.source[mesh.loop(k)].astype(np.float64)
            if depths is None:
                carried = loop @ motion[:, :2].T + motion[:, 2]
            else:
                on_skull = np.column_stack([loop, np.full(len(loop), self._oval_depth + depths[k] * self._face_half_width)])
                carried = motion_3d.apply(on_skull)[0, :, :2]
            placed = loop + follow * (carried - loop)
            # Keep at least half the original clearance from the loop inside (the face oval or
            # the near loop), so the hair and background between them never fold.
            gap = loop - inner_source
            width = np.linalg.norm(gap, axis=1)
            normal = (gap / np.maximum(width, 1e-9)[:, None]) @ motion[:, :2].T
            normal /= np.maximum(np.linalg.norm(normal, axis=1), 1e-9)[:, None]
            clearance = np.einsum("nc,nc->n", placed - inner_target, normal)
            short = np.maximum(0.5 * width - clearance, 0.0)
            placed += short[:, None] * normal
            moved[mesh.loop(k)] = placed
            inner_source, inner_target = loop, placed

        source = mesh.source.astype(np.float64).copy()
        # An eye that closes shows the lower part of its eyeball, unsquashed, as a lid would.
        scale = self._scale_of(target)
        openness = np.concatenate([np.minimum(_gap(target, pairs) / np.maximum(scale * ref, 1e-6), 1.0)
                                   for pairs, ref in zip(_EYE_PAIRS, self._eye_gaps)])
        source[self._copy_slice] = self._lid_partner_source + self._lid_offset_source * openness[:, None]
        depth = np.zeros(mesh.num_vertices)
        depth[:NUM_MESH_LANDMARKS] = target[:NUM_MESH_LANDMARKS, 2]
        depth[self._copy_slice] = target[mesh.eyelid_copies, 2]
        return moved, source, depth

    def mouth_paint_strength(self, gap: float) -> float:
        """Opacity of the painted mouth for an inner-lip ``gap`` (portrait pixels, at its own scale).

        The paint stands for what the warp cannot invent, so it grows with the opening past the
        portrait's own.  A closed mouth is fully painted by ``mouth_full_at``; a mouth open already
        (a laughing or shouting template) has its own teeth and tongue, which the warp stretches:
        its paint grows with the stretch, opaque only at twice its own gap.  Before, its real teeth
        were swapped for painted ones whenever the driver opened a little wider, and back in one
        frame as it closed.
        """
        own = self._mouth_gap / self._face_length
        extra = gap / self._face_length - own
        return float(np.clip(extra / max(self.config.overlay.mouth_full_at, own), 0.0, 1.0))

    def render(self, target: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 frame of the portrait with its landmarks at ``target`` (478, 3)."""
        target = np.asarray(target, dtype=np.float64)
        self._extend_to(self.margin_for(target))
        moved, source, depth = self.vertices(target)
        frame = cv2.cvtColor(self.warper.warp(self._image_rgba, moved.astype(np.float32), source.astype(np.float32),
                                              depth, self._margin), cv2.COLOR_RGBA2RGB)
        style = self.config.overlay
        scale = self._scale_of(target)
        if self.config.mouth_fill:
            strength = self.mouth_paint_strength(float(_gap(target, _MOUTH_PAIRS).max()) / scale)
            if strength > 0:
                down = FaceFrame.of(target).down
                down2d = down[:2] / max(np.linalg.norm(down[:2]), 1e-9)
                paint_mouth_interior(frame, target[list(FaceIndex.LIPS_INNER_UPPER), :2],
                                     target[list(FaceIndex.LIPS_INNER_LOWER), :2], down2d, strength, style,
                                     self._mouth_palette)
        if self.config.eye_close:
            closures = 1.0 - eye_gaps(target) / self._eye_openings
            for (upper, lower, _), closure, eye, painted in zip(_EYES, closures, self._eyes, self._painted_lids):
                if closure > 0 and painted:
                    paint_lid(frame, self.image, eye, target[list(upper), :2], target[list(lower), :2], closure,
                              self.config.lid)
        return frame
