"""Colour tags (CICP: ITU-T H.273 code points) of AVIF, HEIF and PNG portraits, and their conversion to sRGB.

An AVIF or HEIF photo may say what its numbers mean by code points instead of an ICC profile (an
``nclx`` colour box: primaries, transfer, matrix), as HDR exports do (BT.2020 with PQ or HLG), and
so may a PNG (its ``cICP`` chunk).  The decoders apply the matrix but hand back the numbers in the
tagged primaries and transfer; read as sRGB, a PQ portrait came out grey and flat (a third of its
saturation) and a Display P3 one duller.  So the tags are read from the file's own boxes or chunks,
the numbers linearised by their transfer (PQ and HLG relative to HDR reference white, 203 nits,
with highlights above it rolled off smoothly), converted to BT.709 primaries and encoded as sRGB.
Tags this module does not know leave the numbers as they are.  A driving clip's frames tagged HDR or
wide-gamut (an iPhone's HLG, an HDR10 export) are converted the same way, through a table
(:func:`video_frame_to_srgb`), with a fixed highlight level so the picture does not pump from frame
to frame.  Imports nothing of this project.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Code points (ITU-T H.273) this module converts.
UNSPECIFIED = 2  # primaries or transfer left unsaid
BT709, BT470BG, SMPTE170M, SMPTE240M, BT2020, P3_D65 = 1, 5, 6, 7, 9, 12
LINEAR, PQ, HLG = 8, 16, 18
# CIE xy of red, green, blue; all with the D65 white.
_PRIMARIES = {
    BT709: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),
    BT470BG: ((0.640, 0.330), (0.290, 0.600), (0.150, 0.060)),
    SMPTE170M: ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070)),
    SMPTE240M: ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070)),
    BT2020: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
    P3_D65: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),
}
_D65 = (0.3127, 0.3290)
# Transfers of SDR pictures: BT.709 and its kin (BT.601, BT.2020 10 and 12 bit), sRGB, gamma 2.2 and
# unspecified.  Viewers show them all about as sRGB, which is how this project reads untagged images.
_SDR_TRANSFERS = {1, 2, 4, 6, 13, 14, 15}
HDR_WHITE_NITS = 203.0  # HDR reference white (ITU-R BT.2408): SDR white in a PQ or HLG picture
KNEE = 0.75  # above this share of SDR white, HDR highlights are rolled off towards white, not clipped
STRIP_ROWS = 256  # rows converted at a time: bounds the float copies of a large portrait
# A video's highlights are taken to reach this (the usual HDR mastering level, and HLG's reference
# display), the same for every frame: measured frame by frame, the picture's brightness would pump.
VIDEO_PEAK_NITS = 1000.0
VIDEO_TABLE_BITS = 7  # per channel: a video frame's colours are looked up in a table of 2**21 entries (6 MiB)


@dataclass(frozen=True)
class ColourTags:
    """An image's code points: colour primaries, transfer characteristics, matrix coefficients."""

    primaries: int
    transfer: int
    matrix: int = 0

    @property
    def gamut(self) -> int:
        """The primaries, with PQ's and HLG's own (BT.2020) where they are left unspecified, as some
        encoders write them (ffmpeg's AVIF muxer)."""
        if self.primaries == UNSPECIFIED and self.transfer in (PQ, HLG):
            return BT2020
        return self.primaries

    @property
    def convertible(self) -> bool:
        """Whether :func:`to_srgb` knows these primaries and this transfer."""
        return self.gamut in _PRIMARIES and (self.transfer in _SDR_TRANSFERS or self.transfer in (LINEAR, PQ, HLG))

    @property
    def is_srgb(self) -> bool:
        """BT.709 primaries with an SDR transfer: the numbers already are what this project takes as sRGB."""
        return self.gamut == BT709 and self.transfer in _SDR_TRANSFERS


def read_tags(data: bytes) -> ColourTags | None:
    """The colour code points of a PNG (``cICP``) or of an AVIF or HEIF file's primary image (``nclx``), if it has any."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png_tags(data)
        if data[4:8] == b"ftyp":
            return _isobmff_tags(data)
    except (struct.error, IndexError, ValueError):  # a damaged header: the decoder will say what is wrong
        return None
    return None


def _png_tags(data: bytes) -> ColourTags | None:
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind == b"cICP" and length >= 4:
            primaries, transfer, matrix, _ = data[position + 8:position + 12]
            return ColourTags(primaries, transfer, matrix)
        if kind in (b"IDAT", b"IEND"):  # cICP must come before the image data
            return None
        position += 12 + length
    return None


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO-BMFF boxes between ``start`` and ``end``."""
    boxes = []
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[start + 8:start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            break
        boxes.append((kind, start + header, start + size))
        start += size
    return boxes


def _isobmff_tags(data: bytes) -> ColourTags | None:
    """The ``nclx`` colour box associated with the primary item (its ``ipma`` entry), not any item's:
    an alpha plane or an HDR gain map carries boxes of its own."""
    meta = next(((payload, end) for kind, payload, end in _boxes(data, 0, len(data)) if kind == b"meta"), None)
    if meta is None:
        return None
    children = {kind: (payload, end) for kind, payload, end in _boxes(data, meta[0] + 4, meta[1])}  # meta is a FullBox
    if b"pitm" not in children or b"iprp" not in children:
        return None
    payload, _ = children[b"pitm"]
    primary = struct.unpack(">H", data[payload + 4:payload + 6])[0] if data[payload] == 0 else \
        struct.unpack(">I", data[payload + 4:payload + 8])[0]
    iprp = {kind: (payload, end) for kind, payload, end in _boxes(data, *children[b"iprp"])}
    if b"ipco" not in iprp or b"ipma" not in iprp:
        return None
    properties = _boxes(data, *iprp[b"ipco"])
    for index in _associations(data, *iprp[b"ipma"]).get(primary, []):
        if 1 <= index <= len(properties):
            kind, payload, end = properties[index - 1]
            if kind == b"colr" and data[payload:payload + 4] == b"nclx" and end - payload >= 11:
                primaries, transfer, matrix = struct.unpack(">HHH", data[payload + 4:payload + 10])
                return ColourTags(primaries, transfer, matrix)
    return None


def _associations(data: bytes, start: int, end: int) -> dict[int, list[int]]:
    """Item id -> its property indices (1-based into ``ipco``), from an ``ipma`` box."""
    version, flags = data[start], int.from_bytes(data[start + 1:start + 4], "big")
    (count,), position = struct.unpack(">I", data[start + 4:start + 8]), start + 8
    found: dict[int, list[int]] = {}
    for _ in range(count):
        if version < 1:
            (item,), position = struct.unpack(">H", data[position:position + 2]), position + 2
        else:
            (item,), position = struct.unpack(">I", data[position:position + 4]), position + 4
        links, position = data[position], position + 1
        indices = []
        for _ in range(links):
            if flags & 1:
                (value,), position = struct.unpack(">H", data[position:position + 2]), position + 2
                indices.append(value & 0x7FFF)
            else:
                indices.append(data[position] & 0x7F)
                position += 1
        found[item] = indices
        if position > end:
            raise ValueError("ipma box overruns its size")
    return found


def to_srgb(image: Image.Image, tags: ColourTags, peak: float | None = None) -> Image.Image:
    """``image`` (RGB, grey or palette, with or without alpha, 8 bits) with its tagged colours as sRGB (grey
    comes back as RGB); unchanged if already sRGB or not convertible.  ``peak``: an HDR picture's highlight
    level (1 = SDR white) rolled off to white; None measures the picture's own (:func:`_peak`)."""
    if tags.is_srgb or not tags.convertible:
        return image
    if image.mode in ("P", "L", "LA"):  # a palette's colours and a grey's levels carry the tags too
        has_alpha = image.mode == "LA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    if image.mode not in ("RGB", "RGBA"):
        return image
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    rgb = np.asarray(image.convert("RGB"))
    # The numbers are 8-bit: each transfer is a 256-entry table, and the rest runs a strip of rows at
    # a time in float32 (a 16-MP portrait took 2.3 GB and 10 s whole in float64).
    table = _to_linear_table(tags)
    matrix = _to_bt709(_PRIMARIES[tags.gamut]).astype(np.float32).T
    hdr = tags.transfer in (PQ, HLG)

    def light(numbers: np.ndarray) -> np.ndarray:
        linear = table[numbers]
        if tags.transfer == HLG:
            linear = _hlg_display(linear, _PRIMARIES[tags.gamut])
        return linear @ matrix

    if peak is None:
        peak = _peak(light(rgb[::4, ::4])) if hdr else 0.0
    out = np.empty_like(rgb)
    for top in range(0, rgb.shape[0], STRIP_ROWS):
        linear = light(rgb[top:top + STRIP_ROWS])
        if hdr:
            linear = _roll_off(linear, peak)
        out[top:top + STRIP_ROWS] = np.round(_linear_to_srgb(np.clip(linear, 0.0, 1.0)) * 255.0)
    converted = Image.fromarray(out, "RGB")
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def is_wide_or_hdr(tags: ColourTags) -> bool:
    """Whether a video's tags say HDR (PQ, HLG) or wide-gamut (BT.2020, Display P3) colours this module converts.

    Other SDR tags (BT.601's primaries, an SD clip's) are within rounding of sRGB: read as they are."""
    return tags.convertible and (tags.transfer in (PQ, HLG) or tags.gamut in (BT2020, P3_D65))


def video_frame_to_srgb(rgb: np.ndarray, tags: ColourTags) -> np.ndarray:
    """A video frame's 8-bit RGB (H, W, 3) tagged ``tags`` as sRGB, looked up in :func:`_video_table`.

    Converted pixel by pixel in float, a frame took ~56 ms a megapixel; looked up, ~9 ms, so an HDR
    phone clip (an iPhone records HLG) costs its reader little more than an SDR one."""
    shift = 8 - VIDEO_TABLE_BITS
    index = ((rgb[..., 0].astype(np.uint32) >> shift) << (2 * VIDEO_TABLE_BITS)
             | (rgb[..., 1].astype(np.uint32) >> shift) << VIDEO_TABLE_BITS | (rgb[..., 2] >> shift))
    return np.take(_video_table(tags), index, axis=0)


@functools.lru_cache(maxsize=4)
def _video_table(tags: ColourTags) -> np.ndarray:
    """(n**3, 3) uint8: the sRGB of each RGB by its top VIDEO_TABLE_BITS bits per channel (red most
    significant), the bin's centre converted by :func:`to_srgb` with the highlights rolled off at
    VIDEO_PEAK_NITS.  Built once per process and tags (1.4 s)."""
    levels = 1 << VIDEO_TABLE_BITS
    step = 256 // levels
    centres = (np.arange(levels, dtype=np.uint16) * step + step // 2).astype(np.uint8)
    cube = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1).reshape(levels * levels, levels, 3)
    converted = to_srgb(Image.fromarray(cube, "RGB"), tags, peak=VIDEO_PEAK_NITS / HDR_WHITE_NITS)
    return np.asarray(converted.convert("RGB"), dtype=np.uint8).reshape(-1, 3)


def _to_linear_table(tags: ColourTags) -> np.ndarray:
    """(256,) float32: an 8-bit number's light, 1 = SDR white (HLG: scene light, its display gamma applied later)."""
    signal = np.arange(256, dtype=np.float64) / 255.0
    if tags.transfer == PQ:
        linear = _pq_to_nits(signal) / HDR_WHITE_NITS
    elif tags.transfer == HLG:
        linear = _hlg_to_scene(signal)
    elif tags.transfer == LINEAR:
        linear = signal
    else:
        linear = _srgb_to_linear(signal)
    return linear.astype(np.float32)


def _xyz_matrix(primaries: tuple[tuple[float, float], ...], white: tuple[float, float] = _D65) -> np.ndarray:
    """RGB (linear, these primaries) -> CIE XYZ, white at Y = 1."""
    columns = np.array([[x / y, 1.0, (1.0 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    scale = np.linalg.solve(columns, np.array([wx / wy, 1.0, (1.0 - wx - wy) / wy]))
    return columns * scale


def _to_bt709(primaries: tuple[tuple[float, float], ...]) -> np.ndarray:
    return np.linalg.inv(_xyz_matrix(_PRIMARIES[BT709])) @ _xyz_matrix(primaries)


def _pq_to_nits(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 (PQ) signal in [0, 1] -> display light in nits."""
    m1, m2 = 2610.0 / 16384.0, 2523.0 / 4096.0 * 128.0
    c1, c2, c3 = 3424.0 / 4096.0, 2413.0 / 4096.0 * 32.0, 2392.0 / 4096.0 * 32.0
    powered = np.power(np.clip(signal, 0.0, 1.0), 1.0 / m2)
    return 10000.0 * np.power(np.maximum(powered - c1, 0.0) / (c2 - c3 * powered), 1.0 / m1)


def _hlg_to_scene(signal: np.ndarray) -> np.ndarray:
    """ARIB STD-B67 (HLG) signal in [0, 1] -> scene light in [0, 1] (BT.2100's inverse OETF)."""
    a = 0.17883277
    b, c = 1.0 - 4.0 * a, 0.5 - a * np.log(4.0 * a)
    signal = np.clip(signal, 0.0, 1.0)
    return np.where(signal <= 0.5, signal ** 2 / 3.0, (np.exp((np.maximum(signal, 0.5) - c) / a) + b) / 12.0)


def _hlg_display(scene: np.ndarray, primaries: tuple[tuple[float, float], ...], peak: float = 1000.0) -> np.ndarray:
    """HLG scene light (..., 3) -> display light on a ``peak``-nit display (BT.2100's OOTF), 1 = SDR white."""
    gamma = 1.2 + 0.42 * np.log10(peak / 1000.0)
    luminance = scene @ _xyz_matrix(primaries)[1].astype(np.float32)
    scale = (peak / HDR_WHITE_NITS) * np.power(np.maximum(luminance, 1e-12), gamma - 1.0)
    return scene * scale.astype(np.float32)[..., None]


def _peak(linear: np.ndarray) -> float:
    """The picture's highlight level: the 99.9th percentile of its luminance (1 = SDR white)."""
    luminance = linear @ _xyz_matrix(_PRIMARIES[BT709])[1].astype(np.float32)
    return float(np.percentile(luminance, 99.9)) if luminance.size else 0.0


def _roll_off(linear: np.ndarray, peak: float) -> np.ndarray:
    """HDR light (1 = SDR white) with luminance above :data:`KNEE` compressed so the picture's ``peak`` lands on white.

    Below the knee nothing changes (skin, mid-tones keep their brightness); above it an extended
    Reinhard curve, continuous in value and slope, takes the peak (:func:`_peak`) to 1.  Colours
    are scaled, not clipped channel by channel, so a bright highlight keeps its hue.
    """
    if peak <= 1.0:
        return linear
    luminance = linear @ _xyz_matrix(_PRIMARIES[BT709])[1].astype(np.float32)
    top = (peak - KNEE) / (1.0 - KNEE)
    over = np.maximum(luminance - KNEE, 0.0) / (1.0 - KNEE)
    mapped = np.where(luminance > KNEE, KNEE + (1.0 - KNEE) * over * (1.0 + over / top ** 2) / (1.0 + over), luminance)
    return linear * (mapped / np.maximum(luminance, 1e-12)).astype(np.float32)[..., None]


def _srgb_to_linear(signal: np.ndarray) -> np.ndarray:
    return np.where(signal <= 0.04045, signal / 12.92, ((signal + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)
