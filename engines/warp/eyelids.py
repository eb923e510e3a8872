"""A closing eye covered with eyelid skin taken from the portrait itself, not with the eye stretched.

Mediapipe's upper-lid points sit on the lash line, a little inside the visible eye on
photographs and well inside it on drawn eyes.  When the lid comes down, the mesh triangles above
it stretch what lies between those points and the skin above -- lashes, the top of the iris --
over the eye, and a flat tint over what is left reads as a smear.  Here the part of the eye the
lid has swept over (from a little above the open lid line down to the lid's new edge; all of
the eye once shut) is painted with the reference's own lid skin: the band between the open lid
and the eyebrow, mirrored downwards, so its texture and shading run on from the skin above
without a seam.  A lash line marks the lid's edge as it closes.

Positions are taken in each eye's own frame (origin at one corner, x along the corners, y
across, in units of the corner distance), so the skin follows the eye through head motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4  # fixed-point bits for sub-pixel polyline drawing


@dataclass(frozen=True)
class LidStyle:
    """Tuning of the painted lid."""

    # The lid skin is fully opaque from this closure on (fades in from 0 so a blink starts smoothly).
    opaque_from: float = 0.3
    # The covered area starts this fraction of the way from the open lid to the eyebrow (more if
    # the eye's outline reaches further): the lashes and the crease above the lid points are
    # redrawn, not dragged down by the stretching mesh.
    cover_above: float = 0.45
    # The skin is sampled from this band, in fractions of the way from the open lid to the
    # eyebrow: above the lashes and the crease, below the brow (another band of the same width
    # where this one is not skin-coloured: a glasses frame, a fringe).
    band: tuple[float, float] = (0.5, 0.8)
    feather: float = 0.05  # softness of the covered area's edge, in eye-corner distances
    # The lash line at the lid's edge: what makes a closing eye read as closing, to a viewer and
    # to a face tracker, rather than as skin where an eye should be (a faint one let mediapipe
    # see an open eye under a narrow eye's painted lid).
    lash_opacity: float = 0.85  # darkness of the lash line at full closure
    lash_darkness: float = 0.35  # lash colour as a fraction of the lid skin colour
    lash_width: float = 0.05  # lash line thickness in eye-corner distances (at least a pixel)
    # A drawn eye can reach far below the tracker's lower-lid points (its iris, whites and
    # outline); how far is measured up to this many eye-corner distances below them.
    reach_down_most: float = 0.8
    # A pixel counts as skin, when measuring that reach, within this distance of the lid skin's
    # chromaticity (r, g, b over their sum): a drawn eye's pale whites and pink iris are as
    # bright as skin but not of its colour.
    skin_tolerance: float = 0.03
    # A drawn eye shows colours skin never has below its lid points: whites, an iris of another hue,
    # a black outline.  Where under this share of what the reach found is such (skin hues only, a
    # photograph's cheek in the shadow of a laughing or squinting eye, redder and darker than the
    # lid), the eye is not a drawn one: taken for one, its lid was painted 0.4-0.8 eye widths down
    # over the cheek.
    least_eye_colours: float = 0.2
    # A reference eye opened less than this (lid gap over eye width, in its middle) is not given a
    # painted lid: nearly shut already (a laugh, a squint), it has little to cover, its closure
    # (target gap over its own) swings with every small change of the target, and a painted lid
    # over it was a block of skin across the eye.  Open eyes measure 0.19-0.49 on photographs.
    least_opening: float = 0.1
    beyond_corners: float = 0.1  # how far a photograph's painted lid reaches past the eye's corners (eye widths)
    # A lid colour's hue counts (see ReferenceEye.takes_painted_lid) only from this chroma on
    # (largest minus smallest of R, G, B, 0-255): a near-black or grey colour's hue is noise.
    least_lid_chroma: float = 20.0


@dataclass(frozen=True)
class EyeFrame:
    """An eye's own 2D frame: ``origin`` + ``width`` * (a * ``along`` + b * ``across``)."""

    origin: np.ndarray
    along: np.ndarray
    across: np.ndarray
    width: float

    @classmethod
    def of(cls, upper: np.ndarray, lower: np.ndarray, handed: float | None = None) -> EyeFrame:
        """The frame of an eye from its lid polylines (corner to corner, (n, 2) each); b > 0 towards the lower lid.

        ``handed`` (+1 or -1, :attr:`handedness` of the same eye open) fixes which side is
        "across": a shut eye's lids coincide and cannot tell.
        """
        origin = np.asarray(upper[0], dtype=np.float64)
        span = np.asarray(upper[-1], dtype=np.float64) - origin
        width = float(np.linalg.norm(span))
        if width < 1e-6:
            raise ValueError("an eye with coincident corners")
        along = span / width
        across = np.array([-along[1], along[0]])
        if handed is None:
            handed = 1.0 if float((np.mean(lower, axis=0) - np.mean(upper, axis=0)) @ across) >= 0 else -1.0
        return cls(origin=origin, along=along, across=handed * across, width=width)

    @property
    def handedness(self) -> float:
        """+1 when "across" is "along" turned by +90 degrees in image coordinates, else -1."""
        return 1.0 if float(self.along[0] * self.across[1] - self.along[1] * self.across[0]) > 0 else -1.0

    def local(self, points: np.ndarray) -> np.ndarray:
        """(n, 2) (a, b) of image points."""
        offset = (np.asarray(points, dtype=np.float64) - self.origin) / self.width
        return np.stack([offset @ self.along, offset @ self.across], axis=-1)

    def image(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image (x, y) of local coordinates (arrays of any shape)."""
        x = self.origin[0] + self.width * (a * self.along[0] + b * self.across[0])
        y = self.origin[1] + self.width * (a * self.along[1] + b * self.across[1])
        return x, y


def _line(polyline_local: np.ndarray, a: np.ndarray) -> np.ndarray:
    """b of a lid polyline (local coordinates, corner to corner) at positions ``a`` (held past the corners)."""
    order = np.argsort(polyline_local[:, 0])
    return np.interp(a, polyline_local[order, 0], polyline_local[order, 1])


@dataclass(frozen=True)
class ReferenceEye:
    """What the painter needs of one eye of the reference portrait, measured once per portrait."""

    frame: EyeFrame
    open_lid: np.ndarray  # (n, 2) the upper lid in the eye's local coordinates
    lower_lid: np.ndarray  # (n, 2) the lower lid in the eye's local coordinates
    brow_height: float  # how far above the open lid the eyebrow is (local units, > 0)
    reach_up: float  # how far the visible eye (lashes, liner, a drawn eye's outline) reaches above the lid points
    reach_down: float  # ... and below the lower lid points (local units)
    colour: np.ndarray  # (3,) median lid skin colour
    band: tuple[float, float]  # the lid skin band, in fractions of the way from the open lid to the brow
    # How far a drawn eye goes on below its lower-lid points (its iris, whites and outline; local
    # units): the lid sweeps over it too.  0 where the lid points are the eye's edges (photographs).
    drawn_below: float = 0.0

    def takes_painted_lid(self, face_skin: np.ndarray, style: LidStyle = LidStyle()) -> bool:
        """Whether a closing lid is painted over this eye (else the mesh alone closes it).

        Not over an eye nearly shut already (``style.least_opening``), nor where the lid skin's
        colour is of a hue skin never has while the face's own skin (``face_skin``, RGB: the
        cheeks') is not: the band above the lid points was the eye's own lashes and iris (a drawn
        eye whose brow is hidden under a fringe, its tracked brow just above the eye), and the
        lid painted from it drew a dark bar across an open iris.  A portrait lit or tinted in a
        colour skin never has keeps its lids.
        """
        if self.opening < style.least_opening:
            return False

        def foreign(colour: np.ndarray) -> bool:
            colour = np.asarray(colour, dtype=np.float64)
            return bool(_foreign_hue(colour)) and float(np.ptp(colour)) >= style.least_lid_chroma

        return not (foreign(self.colour) and not foreign(face_skin))

    @property
    def opening(self) -> float:
        """The lid gap in the eye's middle (a 0.3-0.7), in eye widths."""
        a = np.linspace(0.3, 0.7, 5)
        return float(np.median(_line(self.lower_lid, a) - _line(self.open_lid, a)))

    @classmethod
    def measure(cls, image: np.ndarray, upper: np.ndarray, lower: np.ndarray, brow: np.ndarray,
                colour: np.ndarray, style: LidStyle = LidStyle(), least: float = 0.02,
                most: float = 0.35) -> ReferenceEye:
        """Measure an eye of ``image`` from its lid and brow polylines and its lid skin ``colour``.

        How far the visible eye reaches beyond the lid points is read from the image: along
        the eye's middle, from each lid outwards, up to where the brightness is back within
        15 % of the lid skin's (clipped to [``least``, ``most``] corner distances); below the
        lower lid, up to where the colour is back to the skin's too, over a run of pixels, and
        as far as ``style.reach_down_most``: a drawn eye's lower half (pale whites, a pink iris)
        is as bright as skin.  The skin
        band is the stretch between lid and brow that looks most like that skin (glasses'
        frames and hair cross it on some portraits), preferring ``style.band``.
        """
        frame = EyeFrame.of(upper, lower)
        open_lid, lower_lid = frame.local(upper), frame.local(lower)
        brow_local = frame.local(brow)
        brow_height = max(float(np.median(_line(open_lid, brow_local[:, 0]) - brow_local[:, 1])), 0.05)
        skin = float(_luminance(np.asarray(colour, dtype=np.float64)))
        a = np.linspace(0.3, 0.7, 9)
        steps = np.linspace(0.0, min(most, 0.8 * brow_height), 48)

        def sample(start: np.ndarray, direction: float, steps: np.ndarray) -> np.ndarray:
            b = start[None, :] + direction * steps[:, None]  # (steps, a)
            x, y = frame.image(np.broadcast_to(a, b.shape), b)
            return cv2.remap(image, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.float64)

        def reach(start: np.ndarray, direction: float) -> float:
            profile = _luminance(sample(start, direction, steps)).mean(axis=1)
            back = np.flatnonzero(profile >= 0.85 * skin)
            found = steps[back[0]] if len(back) else steps[-1]
            return float(np.clip(found + 0.01, least, most))

        def reach_below(start: np.ndarray) -> float:
            # Per column: the first run of skin-coloured pixels (bright enough and of the skin's
            # colour); the eye's reach is the median over the middle columns.
            deep = np.linspace(0.0, max(style.reach_down_most, most), 96)
            values = sample(start, 1.0, deep)
            skin_like = ((_luminance(values) >= 0.85 * skin)
                         & (np.linalg.norm(_chromaticity(values) - _chromaticity(np.asarray(colour, dtype=np.float64)),
                                           axis=-1) <= style.skin_tolerance))
            run = 3
            runs = np.ones(skin_like.shape, dtype=bool)
            for k in range(run):
                runs[:len(deep) - k] &= skin_like[k:]
            runs[len(deep) - run + 1:] = False
            first = np.where(runs.any(axis=0), runs.argmax(axis=0), len(deep) - 1)
            found = float(np.median(deep[first]))
            return float(np.clip(found + 0.01, least, max(style.reach_down_most, most)))

        # Rows between lid and brow: how far each is from the skin colour (mean distance, and spread).
        fractions = np.linspace(0.1, 0.9, 33)
        rows_b = _line(open_lid, np.linspace(0.15, 0.85, 11))[None, :] - fractions[:, None] * brow_height
        x, y = frame.image(np.broadcast_to(np.linspace(0.15, 0.85, 11), rows_b.shape), rows_b)
        rows = cv2.remap(image, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
        distance = np.linalg.norm(rows - np.asarray(colour, dtype=np.float64), axis=-1).mean(axis=1)
        width = style.band[1] - style.band[0]
        count = max(2, int(round(width / (fractions[1] - fractions[0]))))
        scores = np.array([distance[i:i + count].mean() for i in range(len(fractions) - count + 1)])
        starts = fractions[:len(scores)]
        scores = scores + 10.0 * np.abs(starts - style.band[0])  # ties go to the preferred band
        near = float(starts[int(np.argmin(scores))])
        # Brightness alone finds a photograph's lower lid (the skin below it is as bright as the
        # lid's); where it finds none as far as it looks, the eye goes on below the lid points
        # (a drawn eye), and colour tells where it ends.
        reach_down = reach(_line(lower_lid, a), 1.0)
        drawn_below = 0.0
        if reach_down >= min(most, steps[-1] + 0.01) - 1e-9:
            below = reach_below(_line(lower_lid, a))
            found = sample(_line(lower_lid, a), 1.0, np.linspace(0.0, below, 24))
            if float(np.mean(_eye_coloured(found, skin))) >= style.least_eye_colours:
                reach_down = drawn_below = max(reach_down, below)
        return cls(frame=frame, open_lid=open_lid, lower_lid=lower_lid, brow_height=brow_height,
                   reach_up=reach(_line(open_lid, a), -1.0), reach_down=reach_down,
                   colour=np.asarray(colour, dtype=np.float64), band=(near, near + width), drawn_below=drawn_below)


def _rounded(polyline: np.ndarray, passes: int = 2) -> np.ndarray:
    """``polyline`` (n, 2) with its corners cut (Chaikin), ends kept: a lid is a curve, and the
    tracker's lid points drawn as they are give a dark line with kinks."""
    for _ in range(passes):
        a, b = polyline[:-1], polyline[1:]
        cut = np.empty((2 * len(a), 2))
        cut[0::2], cut[1::2] = 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b
        polyline = np.concatenate([polyline[:1], cut, polyline[-1:]])
    return polyline


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _hue_and_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees and saturation 0-1 of RGB values (..., 3) 0-255."""
    hsv = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2HSV).reshape(np.shape(rgb))
    return hsv[..., 0].astype(np.float64) * 2.0, hsv[..., 1] / 255.0


def _foreign_hue(rgb: np.ndarray) -> np.ndarray:
    """Which colours (..., 3) are of a hue skin never has, lit or in shadow (outside its reds, oranges
    and yellows), and saturated enough for their hue to show: an iris, the whites' blue tint."""
    hue, saturation = _hue_and_saturation(rgb)
    return ~((hue <= 60.0) | (hue >= 340.0)) & (saturation >= 0.1)


def _eye_coloured(rgb: np.ndarray, skin_luminance: float) -> np.ndarray:
    """Which pixels (..., 3) have colours no skin has, lit or in shadow: near-neutral and bright (an
    eye's whites, a highlight), of a hue outside skin's reds, oranges and yellows (an iris, the
    whites' blue tint), or near black (a drawn outline)."""
    _, saturation = _hue_and_saturation(rgb)
    luminance = _luminance(rgb.astype(np.float64))
    whites = (saturation < 0.15) & (luminance >= 0.8 * skin_luminance)
    outline = luminance < 0.25 * skin_luminance
    return whites | outline | _foreign_hue(rgb)


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    """(r, g, b) over their sum: a colour without its brightness (shading changes little of it)."""
    return rgb / np.maximum(rgb.sum(axis=-1, keepdims=True), 1.0)


def paint_lid(frame: np.ndarray, reference: np.ndarray, eye: ReferenceEye, upper: np.ndarray, lower: np.ndarray,
              closure: float, style: LidStyle = LidStyle()) -> None:
    """Cover, in place, the part of an eye its lid has swept over with the reference's lid skin.

    ``upper`` and ``lower`` are the eye's lid polylines in ``frame`` (corner to corner);
    ``closure`` is how far the lid has come down (0 open as in the reference, 1 shut).
    """
    if closure <= 0.0:
        return
    closure = min(float(closure), 1.0)
    target = EyeFrame.of(upper, lower, eye.frame.handedness)
    edge_local = target.local(upper)
    lower_local = target.local(lower)
    # Region of interest: the open eye, grown by its outline and the covered skin above it.
    # Past the corners: as far as a drawn eye's outline reaches; a photograph's lid, a little (its
    # lashes): reaching as far as the shadow around a deep-set or laughing eye, its skin was a
    # block across the face.
    side = max(eye.reach_up, eye.reach_down)
    if eye.drawn_below <= 0.0:
        side = min(side, style.beyond_corners)
    top_b = (float(min(eye.open_lid[:, 1].min(), edge_local[:, 1].min()))
             - max(eye.reach_up, min(style.cover_above, eye.band[0]) * eye.brow_height))
    bottom_b = float(max(lower_local[:, 1].max(), edge_local[:, 1].max())) + eye.reach_down + 0.05
    corners = np.array([[-side, top_b], [1 + side, top_b], [1 + side, bottom_b], [-side, bottom_b]])
    xs, ys = target.image(corners[:, 0], corners[:, 1])
    x0, y0 = int(np.floor(max(xs.min(), 0))), int(np.floor(max(ys.min(), 0)))
    x1, y1 = int(np.ceil(min(xs.max() + 1, frame.shape[1]))), int(np.ceil(min(ys.max() + 1, frame.shape[0])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    grid_y, grid_x = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    offset_x, offset_y = (grid_x - target.origin[0]) / target.width, (grid_y - target.origin[1]) / target.width
    a = offset_x * target.along[0] + offset_y * target.along[1]
    b = offset_x * target.across[0] + offset_y * target.across[1]

    open_b = _line(eye.open_lid, a)
    edge_b = _line(edge_local, a)
    low_b = _line(lower_local, a)
    # Covered: from above the open lid (lashes, crease) to the lid's edge; once nearly shut, also
    # the outline below the lower lid, where the rest of a drawn eye shows.  And at least
    # ``closure`` of the way down the whole visible eye, outline to outline: a drawn eye reaches
    # well below the tracker's lid points, and a lid that stops at them leaves half of it open
    # when shut (on a photograph, where the points are the eye's edges, the lid's edge leads).
    shut = float(np.clip((closure - 0.8) / 0.2, 0.0, 1.0))
    old_bottom = np.maximum(edge_b, low_b + shut * eye.reach_down) if shut > 0 else edge_b
    eye_top, eye_bottom = open_b - eye.reach_up, low_b + eye.drawn_below
    swept = eye_top + closure * (eye_bottom - eye_top)
    bottom = np.maximum(old_bottom, swept)
    top = open_b - max(eye.reach_up, min(style.cover_above, eye.band[0]) * eye.brow_height)
    inside = (b >= top) & (b <= bottom) & (a >= -side) & (a <= 1 + side)
    if not inside.any():
        return
    # Mirror the lid skin band into the covered area: its top samples the band's lower edge and
    # its deepest point the band's upper edge, so the skin runs on at the top without a seam.
    depth = np.clip(b - top, 0.0, None)
    deepest = float(np.max(np.where(inside, depth, 0.0))) + 1e-6
    near, far = (fraction * eye.brow_height for fraction in eye.band)
    source_b = open_b - near - (far - near) * np.clip(depth / deepest, 0.0, 1.0)
    map_x, map_y = eye.frame.image(a, source_b)
    skin = cv2.remap(reference, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE).astype(np.float32)

    # Soft where the painted skin meets the skin above and beside it, but only a pixel wide at
    # the lid's edge: a blur there spills the lid over the part of the eye still open, and on a
    # narrow eye (a slit of a few pixels) that blanks the whole eye at a third closed.
    pixel = 1.0 / target.width
    soft = max(style.feather, pixel)
    mask = (np.clip((b - top) / soft, 0.0, 1.0) * np.clip((bottom - b) / pixel + 0.5, 0.0, 1.0)
            * np.clip((a + side) / soft, 0.0, 1.0) * np.clip((1 + side - a) / soft, 0.0, 1.0))
    alpha = mask * float(np.clip(closure / style.opaque_from, 0.0, 1.0))
    region = frame[y0:y1, x0:x1].astype(np.float32)
    region = region * (1 - alpha[..., None]) + skin * alpha[..., None]

    lashes = float(np.clip(closure / style.opaque_from, 0.0, 1.0))
    if lashes > 0:
        line = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        edge_points = np.asarray(upper if shut == 0 else lower, dtype=np.float64)  # a shut lid rests on the lower lid
        # Where the sweep over the whole eye leads, the lash line marks its edge instead.
        along = target.local(edge_points)
        lead = np.maximum(_line(eye.open_lid, along[:, 0]) - eye.reach_up
                          + closure * (_line(lower_local, along[:, 0]) + eye.drawn_below
                                       - _line(eye.open_lid, along[:, 0]) + eye.reach_up) - along[:, 1], 0.0)
        if lead.any():
            edge_points = edge_points + target.width * lead[:, None] * target.across[None, :]
        smooth = _rounded(edge_points)
        points = np.round((smooth - np.array([x0, y0])) * (1 << _SHIFT)).astype(np.int32)
        thickness = max(1, int(round(style.lash_width * target.width)))
        cv2.polylines(line, [points], False, 255, thickness, cv2.LINE_AA, _SHIFT)
        weight = style.lash_opacity * lashes * cv2.GaussianBlur(line.astype(np.float32) / 255.0, (0, 0), 0.7)
        region = region * (1 - weight[..., None]) + style.lash_darkness * eye.colour * weight[..., None]
    frame[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
