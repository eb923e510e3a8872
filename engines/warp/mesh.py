"""A triangle mesh over the whole portrait and the fast piecewise-affine warp that moves it.

The mesh is the face mesh's own triangles, strips that close its three holes (mouth, eyes), and
four loops of points around the face: two that follow the head (hair, neck), one on the image
border and one far outside it, both fixed, so the background stays put and every pixel lies in
some triangle.  Its topology is fixed by the reference; per frame only the vertex positions move.

Warping is a backward map: for each output pixel, which target triangle holds it (a triangle
index raster drawn at reduced resolution), that triangle's target->source affine map, then one
``cv2.remap``.  No per-triangle image warps, so a 512x512 frame costs a few milliseconds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from faces.tracking import FaceIndex

NUM_MESH_LANDMARKS = 468  # the iris points (468..477) are not mesh vertices
# Radii of the two head-following loops around the face oval, in multiples of the oval's radius.
HEAD_LOOP_RADII = (1.45, 2.1)
_SUBPIXEL_BITS = 2  # fillConvexPoly fixed-point precision
# A face-skin triangle under a raster cell's height and under this fraction of its source area is
# squashed: drawn first, so its neighbours claim the cells its outline touches.
SQUASHED_AREA = 0.25
_IDENTITY_AFFINE = np.array([1, 0, 0, 0, 1, 0], dtype=np.float32)
# cv2.remap taking displacements rather than positions (OpenCV >= 4.10): saves two full-size adds.
_RELATIVE_MAP = getattr(cv2, "WARP_RELATIVE_MAP", None)


class MeshError(ValueError):
    """The reference landmarks cannot carry a warp mesh (wrong shape, face outside the image)."""


@functools.lru_cache(maxsize=1)
def face_mesh_triangles() -> np.ndarray:
    """(852, 3) triangles of mediapipe's face mesh, recovered from its tessellation edges.

    mediapipe publishes the mesh as edges only; its faces are the edge triangles, less the two
    3-cycles that are not faces (each of their edges already borders two triangles).
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(edge)) for edge in FACEMESH_TESSELATION}
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triangles = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    edge_use: dict[tuple[int, int], int] = {}
    for a, b, c in triangles:
        for edge in ((a, b), (a, c), (b, c)):
            edge_use[edge] = edge_use.get(edge, 0) + 1
    faces = [t for t in triangles
             if not all(edge_use[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))]
    return np.array(sorted(faces), dtype=np.int32)


def _strip(upper: list[int], lower: list[int]) -> list[tuple[int, int, int]]:
    """Triangles between two polylines that share their first and last points."""
    triangles = [(upper[0], upper[1], lower[1])]
    for i in range(1, len(upper) - 2):
        triangles += [(upper[i], upper[i + 1], lower[i]), (upper[i + 1], lower[i + 1], lower[i])]
    triangles.append((upper[-2], upper[-1], lower[-2]))
    return triangles


def _loop_strip(inner: np.ndarray, outer: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangles between two closed loops of equal length, point i of one facing point i of the other."""
    n = len(inner)
    triangles = []
    for i in range(n):
        j = (i + 1) % n
        triangles += [(inner[i], inner[j], outer[i]), (inner[j], outer[j], outer[i])]
    return triangles


@dataclass(frozen=True)
class WarpMesh:
    """Vertices and triangles of the warp mesh of one reference portrait.

    Vertex layout: 0..467 face-mesh landmarks; then ``eyelid_copies`` (second copies of the
    upper-eyelid points, used only by the triangles inside the eyes so the eyeball can be
    uncovered or covered by the lid instead of being squashed); then four loops of ``n`` points
    around the face: two head loops, the image border loop, the far loop.
    """

    source: np.ndarray  # (V, 2) float32 vertex positions in the reference image
    triangles: np.ndarray  # (K, 3) int32
    image_size: tuple[int, int]  # (height, width)
    eyelid_copies: np.ndarray  # (E,) landmark index of each copied upper-eyelid vertex
    eyelid_partner: np.ndarray  # (E,) the lower-eyelid landmark facing each copy
    loop_start: int  # first vertex of the loops
    loop_length: int  # points per loop
    hole_triangle_start: int  # first triangle inside the mouth or an eye
    loop_triangle_start: int  # first triangle between the loops (all later triangles are too)

    @classmethod
    def build(cls, landmarks: np.ndarray, image_size: tuple[int, int]) -> WarpMesh:
        """Mesh of a reference from its (478, 2+) landmarks in pixels."""
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.ndim != 2 or landmarks.shape[0] < NUM_MESH_LANDMARKS:
            raise MeshError(f"expected (478, 2|3) landmarks, got {landmarks.shape}")
        points = landmarks[:NUM_MESH_LANDMARKS, :2]
        height, width = image_size

        # Eyelid copies: the inner points of both upper lids, facing the lower lid's inner points.
        uppers = [FaceIndex.EYE_LEFT_UPPER, FaceIndex.EYE_RIGHT_UPPER]
        lowers = [FaceIndex.EYE_LEFT_LOWER, FaceIndex.EYE_RIGHT_LOWER]
        copies = [i for upper in uppers for i in upper[1:-1]]
        partners = [i for lower in lowers for i in lower[1:-1]]
        copy_vertex = {landmark: NUM_MESH_LANDMARKS + k for k, landmark in enumerate(copies)}

        triangles = [tuple(t) for t in face_mesh_triangles()]
        hole_triangle_start = len(triangles)
        triangles += _strip(list(FaceIndex.LIPS_INNER_UPPER), list(FaceIndex.LIPS_INNER_LOWER))
        for upper, lower in zip(uppers, lowers):
            upper_copy = [upper[0]] + [copy_vertex[i] for i in upper[1:-1]] + [upper[-1]]
            triangles += _strip(upper_copy, list(lower))

        loops = _surrounding_loops(points, (height, width))
        loop_start = NUM_MESH_LANDMARKS + len(copies)
        n = loops.shape[1]
        loop_index = loop_start + np.arange(4 * n).reshape(4, n)
        oval = np.array(FaceIndex.FACE_OVAL)
        loop_triangle_start = len(triangles)
        triangles += _loop_strip(oval, loop_index[0])
        for inner, outer in zip(loop_index[:-1], loop_index[1:]):
            triangles += _loop_strip(inner, outer)

        source = np.concatenate([points, points[copies], loops.reshape(-1, 2)]).astype(np.float32)
        return cls(source=source, triangles=np.array(triangles, dtype=np.int32), image_size=(height, width),
                   eyelid_copies=np.array(copies), eyelid_partner=np.array(partners),
                   loop_start=loop_start, loop_length=n, hole_triangle_start=hole_triangle_start,
                   loop_triangle_start=loop_triangle_start)

    @property
    def num_vertices(self) -> int:
        return int(self.source.shape[0])

    def loop(self, k: int) -> slice:
        """Vertex slice of loop ``k`` (0, 1: head loops; 2: image border; 3: far outside)."""
        start = self.loop_start + k * self.loop_length
        return slice(start, start + self.loop_length)


def _surrounding_loops(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(4, 36, 2) loops on rays from the oval's centre through each oval point.

    Radii grow monotonically (oval < head loops < border < far), so the strips between loops
    never fold; near the image border the head loops are squeezed in between.
    """
    height, width = image_size
    oval = points[list(FaceIndex.FACE_OVAL)]
    centre = oval.mean(axis=0)
    offsets = oval - centre
    radius = np.linalg.norm(offsets, axis=1)
    if np.any(radius < 1e-6):
        raise MeshError("degenerate face oval")
    direction = offsets / radius[:, None]
    # Distance along each ray to the image border (half a pixel outside the pixel centres).
    low, high = np.array([-0.5, -0.5]) - 1.0, np.array([width - 0.5, height - 0.5]) + 1.0
    with np.errstate(divide="ignore"):
        to_high = np.where(direction > 0, (high - centre) / direction, np.inf)
        to_low = np.where(direction < 0, (low - centre) / direction, np.inf)
    border = np.minimum(to_high, to_low).min(axis=1)
    border = np.maximum(border, radius * 1.15)  # a face reaching out of the image: border loop beyond it
    head_near = np.minimum(radius * HEAD_LOOP_RADII[0], radius + 0.55 * (border - radius))
    head_far = np.minimum(radius * HEAD_LOOP_RADII[1], radius + 0.8 * (border - radius))
    far = np.full_like(radius, 3.0 * max(height, width)) + border
    radii = np.stack([head_near, head_far, border, far])
    return centre[None, None] + radii[:, :, None] * direction[None]


class MeshWarper:
    """Warps an image by moving the mesh vertices from their source to target positions."""

    def __init__(self, mesh: WarpMesh, raster_scale: float = 0.5) -> None:
        if not 0 < raster_scale <= 1:
            raise MeshError(f"raster_scale must be in (0, 1], got {raster_scale}")
        self.mesh = mesh
        height, width = mesh.image_size
        self.raster_size = (max(1, int(round(width * raster_scale))), max(1, int(round(height * raster_scale))))
        self._raster_scale = (self.raster_size[0] / width, self.raster_size[1] / height)
        rw, rh = self.raster_size
        # Output-pixel coordinates (full resolution) of each raster cell's centre.
        xs = (np.arange(rw, dtype=np.float32) + 0.5) / self._raster_scale[0] - 0.5
        ys = (np.arange(rh, dtype=np.float32) + 0.5) / self._raster_scale[1] - 0.5
        self._grid_x, self._grid_y = np.meshgrid(xs, ys)
        self._full_x, self._full_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        self._raster = np.empty((rh, rw), dtype=np.int32)
        oval = mesh.source[list(FaceIndex.FACE_OVAL)]
        self._hole_depth_bias = 0.02 * float(np.ptp(oval[:, 0]))

    def backward_map(self, target: np.ndarray, source: np.ndarray | None = None,
                     depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution (map_x, map_y) for ``cv2.remap``: where each output pixel samples the source.

        ``depth`` (V,) of the target vertices (larger is farther) orders the face's triangles
        back to front, so where the mesh folds over (a turned head) the nearer surface shows.
        """
        shift_x, shift_y = self.displacement(target, source, depth)
        return shift_x + self._full_x, shift_y + self._full_y

    def displacement(self, target: np.ndarray, source: np.ndarray | None = None,
                     depth: np.ndarray | None = None, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution (dx, dy): how far from itself each output pixel samples the source.

        ``margin``: the source is the reference with that many pixels added on every side.
        """
        source = self.mesh.source if source is None else source
        affine = _target_to_source_affines(target, source, self.mesh.triangles)  # (K, 2, 3)
        raster = self._rasterise(target, self._draw_order(depth), self._squashed(target, source))
        # Per triangle, the displacement (affine minus identity) as six coefficient rows, each
        # gathered through the raster with ``take`` into a contiguous plane: several times
        # cheaper than indexing (K, 2, 3) by the raster and reading strided views of the result.
        coefficients = affine.reshape(-1, 6) - _IDENTITY_AFFINE
        if margin:
            coefficients[:, [2, 5]] += margin  # per triangle, not per pixel: free
        a_xx, a_xy, b_x, a_yx, a_yy, b_y = (row.take(raster) for row in np.ascontiguousarray(coefficients.T))
        gx, gy = self._grid_x, self._grid_y
        # Displacements, not positions, are upsampled: resizing clamps at the image edge, which
        # is exact for a displacement that is constant there (the fixed background).
        shift_x = a_xx * gx
        shift_x += a_xy * gy
        shift_x += b_x
        shift_y = a_yx * gx
        shift_y += a_yy * gy
        shift_y += b_y
        height, width = self.mesh.image_size
        if self.raster_size != (width, height):
            shift_x = cv2.resize(shift_x, (width, height), interpolation=cv2.INTER_LINEAR)
            shift_y = cv2.resize(shift_y, (width, height), interpolation=cv2.INTER_LINEAR)
        return shift_x, shift_y

    def warp(self, image: np.ndarray, target: np.ndarray, source: np.ndarray | None = None,
             depth: np.ndarray | None = None, margin: int = 0) -> np.ndarray:
        """``image`` (the reference, ``margin`` pixels added on every side) with its mesh moved to ``target``.

        The output has the reference's size.  A margin holds what lies beyond the picture's edge
        (:mod:`engines.warp.beyond`); past it, and without one, the edge pixels are replicated.
        """
        shift_x, shift_y = self.displacement(target, source, depth, margin)
        if _RELATIVE_MAP is not None:  # OpenCV adds each pixel's own position itself
            return cv2.remap(image, shift_x, shift_y, interpolation=cv2.INTER_LINEAR | _RELATIVE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        return cv2.remap(image, shift_x + self._full_x, shift_y + self._full_y, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    def _draw_order(self, depth: np.ndarray | None) -> np.ndarray:
        """Triangle indices in drawing order: the loops (background), then the face back to front."""
        mesh = self.mesh
        loops = np.arange(mesh.loop_triangle_start, len(mesh.triangles))
        face = np.arange(mesh.loop_triangle_start)
        if depth is not None:
            triangle_depth = depth[mesh.triangles[:mesh.loop_triangle_start]].mean(axis=1)
            # Mouth and eye interiors sit behind the lips and lids around them.
            triangle_depth[mesh.hole_triangle_start:] += self._hole_depth_bias
            face = np.argsort(-triangle_depth, kind="stable")
        return np.concatenate([loops, face])

    def _squashed(self, target: np.ndarray, source: np.ndarray) -> np.ndarray:
        """(K,) face-skin triangles pressed to under a raster cell's height and ``SQUASHED_AREA`` of their source area.

        Lid skin pressed against the brow, say: their affine maps reach many pixels into the
        source within a cell of their line.  Mouth and eye interiors are left out (a closing
        mouth or eye collapses them on purpose, with lips and lids around them).
        """
        triangles = self.mesh.triangles
        t = target[triangles].astype(np.float64)
        s = source[triangles].astype(np.float64)
        e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
        f1, f2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
        target_area = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])  # doubled
        source_area = np.abs(f1[:, 0] * f2[:, 1] - f1[:, 1] * f2[:, 0])
        longest = np.sqrt(np.max([(e1 ** 2).sum(1), (e2 ** 2).sum(1), ((e2 - e1) ** 2).sum(1)], axis=0))
        cell = 1.0 / min(self._raster_scale)  # a raster cell's height in output pixels
        squashed = (target_area < cell * longest) & (target_area < SQUASHED_AREA * source_area)
        squashed[self.mesh.hole_triangle_start:self.mesh.loop_triangle_start] = False
        return squashed

    def _rasterise(self, target: np.ndarray, order: np.ndarray, squashed: np.ndarray | None = None) -> np.ndarray:
        """Index of the target triangle covering each raster cell (the last drawn wins on overlaps)."""
        raster = self._raster
        raster.fill(0)
        sx, sy = self._raster_scale
        # Cell centres sit at integer raster coordinates: full-res p -> (p + 0.5) * scale - 0.5.
        scaled = np.empty_like(target, dtype=np.float64)
        scaled[:, 0] = (target[:, 0] + 0.5) * sx - 0.5
        scaled[:, 1] = (target[:, 1] + 0.5) * sy - 0.5
        fixed = np.round(scaled * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        corners = fixed[self.mesh.triangles]  # (K, 3, 2)
        # Skip triangles wholly outside the raster (most of the far loop).
        limit = np.array(self.raster_size) << _SUBPIXEL_BITS
        inside = np.all(corners.max(axis=1) >= 0, axis=1) & np.all(corners.min(axis=1) < limit, axis=1)
        order = order[inside[order]]
        # Squashed triangles first, so their neighbours claim the cells: fillConvexPoly fills
        # every cell a triangle's outline touches, and a squashed one would paint a row of cells
        # with a map that, a cell's width from its line, samples the source far away.
        if squashed is not None and squashed.any():
            order = np.concatenate([order[squashed[order]], order[~squashed[order]]])
        # One call per triangle is the cost here: bind the function and hand it ready arrays.
        fill, line, bits = cv2.fillConvexPoly, cv2.LINE_8, _SUBPIXEL_BITS
        for k, polygon in zip(order.tolist(), corners[order]):
            fill(raster, polygon, k, line, bits)
        return raster


def _target_to_source_affines(target: np.ndarray, source: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(K, 2, 3) affine maps taking each target triangle onto its source triangle.

    Degenerate (zero-area) target triangles get the translation that maps their centroid, which
    is what any pixel that lands in them should sample.
    """
    t = target[triangles].astype(np.float64)  # (K, 3, 2)
    s = source[triangles].astype(np.float64)
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    f1, f2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(det) > 1e-9
    safe = np.where(ok, det, 1.0)
    # Inverse of the target edge matrix [e1 e2] (columns), times the source edge matrix.
    inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], -1), np.stack([-e1[:, 1], e1[:, 0]], -1)], 1) / safe[:, None, None]
    edges = np.stack([f1, f2], -1)  # (K, 2, 2): columns f1, f2
    linear = edges @ inv
    linear[~ok] = np.eye(2)
    centroid_t, centroid_s = t.mean(axis=1), s.mean(axis=1)
    offset = centroid_s - np.einsum("kij,kj->ki", linear, centroid_t)
    return np.concatenate([linear, offset[:, :, None]], axis=2).astype(np.float32)
