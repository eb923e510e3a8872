"""Encoding with the real ffmpeg binary (shipped by imageio-ffmpeg), the clip's audio, and image loading.

ffmpeg-python builds the commands (its filter graphs say what each step does); this module runs
the binary itself: without a shell, on local temp files or pipes only (protocols limited to
``file`` and ``pipe``, and a user's clip opened only by plain demuxers: inputs are fetched through
fsspec first, never handed to ffmpeg as URLs), with a time limit.  Clips are read with PyAV
(:mod:`mediaio.clips`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from mediaio import colour_tags
from mediaio.threads import AUTO

# Portraits in HEIC/HEIF, an iPhone's default photo format, open like any other image (libheif turns
# them upright and clears their EXIF orientation, so exif_transpose cannot turn them twice).
pillow_heif.register_heif_opener()

# Photo formats a portrait may be in; load_image opens whatever Pillow can, and a folder of portraits
# (`manifest build --portraits`) is scanned for these formats' suffixes, as Pillow names them.
PORTRAIT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "HEIF", "AVIF", "TIFF", "GIF")
IMAGE_SUFFIXES: tuple[str, ...] = tuple(sorted(
    suffix for suffix, image_format in Image.registered_extensions().items()
    if image_format in PORTRAIT_FORMATS and image_format in Image.OPEN))

logger = logging.getLogger(__name__)


class MediaError(Exception):
    """An input cannot be decoded, or an output cannot be encoded; the message says why."""


# What shows through a transparent picture, a portrait's or a driving clip's: white, as a browser page
# shows a transparent PNG, WebP or WebM.  Decided once, so the face mesh sees both on the same ground.
TRANSPARENT_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class MediaLimits:
    """Caps that keep one bad input from exhausting a worker."""

    # An image is decoded at up to this many pixels; a larger photo (a 24 MP camera's, a 48 MP
    # phone's) is read reduced to fit, never refused for its size alone, up to the source caps below.
    max_image_pixels: int = 4096 * 4096
    # The largest photo accepted: JPEG decodes straight at 1/2, 1/4 or 1/8 of its size (so its
    # memory stays that of the reduced image), other formats decode whole and are then reduced.
    max_jpeg_pixels: int = 16 * 4096 * 4096  # 268 MP: read at 1/4 or less
    max_other_image_pixels: int = 4 * 4096 * 4096  # 67 MP: 200 MB of RGB while it is reduced
    max_video_pixels: int = 4096 * 2160
    max_seconds: float = 60.0
    # The longest side and the most unequal sides an image or a frame may have: decoders and the face
    # mesh (OpenCV inside) abort on sides past 32767, and a face needs a frame that is not a sliver.
    max_side: int = 16384
    max_aspect_ratio: float = 8.0
    landmark_side: int = 1024  # frames and portraits are scaled down to this longest side for the face mesh
    max_fps: float = 30.0  # generation frame rate cap
    max_output_fps: float = 60.0  # outputs keep the clip's rate up to this (a 1000 fps clip comes out at 60)
    # ... and at least this: a slideshow at 0.5 fps cut to 3 s came out 4 s long (two 2 s frames) over
    # 3 s of sound; at 1 fps its frames end within a second's step of the span.
    min_output_fps: float = 1.0
    ffmpeg_timeout_s: float = 300.0  # every ffmpeg call's time limit, at the least (see encode_timeout_s)
    # An encode's limit grows with its work: ffmpeg's motion interpolation makes ~4 output megapixels
    # a second on one core (21 frames/s at 512x512, 3.8 at 1024x1024), so a 60 s clip at 30 fps and
    # 1024x1024 takes ~8 minutes, which a fixed 300 s cut off after the whole render.  4x headroom.
    encode_seconds_per_megapixel: float = 1.0
    # A progressive JPEG decodes every scan over the whole picture: libjpeg's own progressive files
    # have about 10, tuned encoders a few more.  A 1.5 MB file of 20,000 empty scans took 44 s to
    # decode (4 MB: minutes), a small file that held the prepare actor far longer than a clip does.
    max_jpeg_scans: int = 100
    # Index entries an MP4 or MOV clip's sample tables may claim (mediaio/sample_tables.py): ffmpeg
    # builds ~36 bytes of index for each as it opens the file.  An hour at 60 fps with its sound is
    # under 0.5 million; a 121 KB clip claiming 80 million took 2.9 GB and 23 s on every open.
    max_index_entries: int = 5_000_000
    # Metadata tags a clip may hold (mediaio/metadata_tags.py): ffmpeg's demuxers take
    # time growing with their square as they open the file (40,000 took 17 s, on each of a row's four
    # opens).  A real clip has tens.
    max_metadata_tags: int = 10_000
    # Streams a clip may hold (video, audio, subtitles, data): opening a clip sets up a decoder for
    # each, ~0.7 MB an AAC track, so a 1.6 MB clip of 998 sound tracks took 720 MB and 0.7 s on every
    # open.  A broadcast recording of a whole multiplex holds tens; a film's remux a few dozen.
    max_streams: int = 128

    def encode_timeout_s(self, frames: int, width: int, height: int) -> float:
        """Seconds an encode of ``frames`` output frames of ``width`` x ``height`` may take."""
        return max(self.ffmpeg_timeout_s, frames * width * height / 1e6 * self.encode_seconds_per_megapixel)


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: $HELLOMEME_FFMPEG, else the one imageio-ffmpeg ships."""
    configured = os.environ.get("HELLOMEME_FFMPEG")
    if configured:
        return configured
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


_OWN_INPUT = {"protocol_whitelist": "file,pipe"}  # frames on a pipe, audio in our temp file
# A user's clip (its audio): the file protocol and plain demuxers only, none that opens other files.
_CLIP_INPUT = {"protocol_whitelist": "file",
               "format_whitelist": "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf,gif,h264,hevc"}


def _run_ffmpeg(stream, timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the command an ffmpeg-python graph compiles to, without a shell, within ``timeout``."""
    import ffmpeg

    quiet = ["-hide_banner", "-v", "error"] + ([] if stdin is not None else ["-nostdin"])
    command = ffmpeg.compile(stream.global_args(*quiet), cmd=ffmpeg_exe(), overwrite_output=True)
    try:
        return subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"ffmpeg did not finish within {timeout:.0f} s") from exc


_LOG_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


def _last_error_line(stderr: bytes, most: int = 2) -> str:
    """ffmpeg's own words for what went wrong: its first distinct messages, without addresses or temp paths."""
    causes: list[str] = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = _LOG_PREFIX.sub("", line.strip())
        if not line or "Error opening input file " in line or "Error opening output file " in line:
            continue  # these only name our temp file; the line before says why
        if line not in causes:
            causes.append(line)
    return "; ".join(causes[:most]) if causes else "no message"


# Audio starting this close to the picture is left as it is: offsets under ~45 ms cannot be seen
# (ITU-R BT.1359), and an encoder's priming samples move some clips' audio by ~20 ms.
AV_SYNC_TOLERANCE_S = 0.04
# What the extracted audio may be: the AAC the MP4 carries cannot hold 7.1 or stranger layouts
# ("channelConfiguration > 7 is not supported"), so a mono track stays mono and any other is
# downmixed to stereo, which is what a meme is played on.
AUDIO_CHANNEL_LAYOUTS = "mono|stereo"


def extract_audio(path: str, seconds: float, limits: MediaLimits, delay: float = 0.0,
                  stream: int | None = None) -> bytes:
    """One audio stream's first ``seconds`` as FLAC, re-encoded so any codec and layout works.

    FLAC, not AAC: it is lossless (the final mux encodes AAC once), and it has no encoder delay.
    AAC in ADTS, which carries no edit list, played its encoder's 1024 priming samples as sound,
    and every output's audio came 23 ms late.

    ``stream`` is the stream's index in the container (``ClipFacts.audio_index``: the track marked
    default, else the first); None takes the first audio stream.  ``delay`` (seconds the audio
    starts after the first video frame, ``ClipFacts.audio_delay``) is kept: the output's audio starts
    with the picture, so late audio is preceded by silence and early audio is cut, and holes in the audio's own
    timestamps are filled with silence; the sound plays on the picture it belongs to.  More than two
    channels are downmixed to stereo (:data:`AUDIO_CHANNEL_LAYOUTS`).  MediaError (with ffmpeg's
    cause) if no audio comes out: the caller decides whether a silent video will do.
    """
    import ffmpeg

    audio = ffmpeg.input(path, **_CLIP_INPUT)["a:0" if stream is None else str(int(stream))]
    if abs(delay) > AV_SYNC_TOLERANCE_S:
        audio = audio.filter("asetpts", "PTS-STARTPTS")  # the audio's own first sample at 0, then moved
        if delay > 0:
            audio = audio.filter("adelay", delays=f"{delay * 1000:.0f}", all=1)
        else:
            audio = audio.filter("atrim", start=f"{-delay:.6f}").filter("asetpts", "PTS-STARTPTS")
    # Placed by timestamp from the first sample on: a hole (a gap the sync tolerance can see) becomes
    # silence instead of being closed up, which moved everything after it early (async=1: samples
    # are only added or dropped, never stretched).
    audio = audio.filter("aresample", **{"async": 1, "min_hard_comp": f"{AV_SYNC_TOLERANCE_S:g}"})
    audio = audio.filter("aformat", channel_layouts=AUDIO_CHANNEL_LAYOUTS)
    output = ffmpeg.output(audio, "pipe:1", t=f"{seconds:.6f}", acodec="flac", format="flac")
    result = _run_ffmpeg(output, timeout=limits.ffmpeg_timeout_s)
    if result.returncode != 0:
        raise MediaError(f"audio could not be extracted: {_last_error_line(result.stderr)}")
    if not result.stdout:
        raise MediaError("audio could not be extracted: its stream gave no samples")
    return result.stdout


HELD_INTERVALS = 3  # generated frame intervals the last frame is held for before the cut to the duration
# What the output's pixels are, said in the stream (its YUV is made by this matrix, from sRGB-like RGB).
OUTPUT_COLOUR = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv"}


def frame_rate(fps: float) -> str:
    """A rate as ffmpeg's exact fraction: an NTSC clip's 29.97002997 fps is 30000/1001, not the 29.969999
    that six decimals make (979001/32666 in the output's header)."""
    rate = Fraction(fps).limit_denominator(1001)
    if not rate or abs(float(rate) - fps) > 1e-6 * fps:  # not a broadcast rate: as exact as ffmpeg takes it
        rate = Fraction(fps).limit_denominator(1_000_000)
    return f"{rate.numerator}/{rate.denominator}"


def encode_mp4(
    frames: np.ndarray,
    fps: float,
    output_fps: float,
    duration: float,
    audio: bytes | None,
    limits: MediaLimits,
    interpolate: bool = True,
    metadata: dict[str, str] | None = None,
    threads: int = AUTO,
) -> bytes:
    """Encode frames generated at ``fps`` to an H.264/yuv420p MP4 at ``output_fps`` lasting ``duration``.

    Frames between generated ones are made by ffmpeg's motion-compensated interpolation; the
    last frame is held if the generated frames end early, so the video and the audio (muxed
    from the driving clip) both last exactly ``duration``.  ``threads``: ffmpeg's threads for the
    filters and the encoder (mediaio/threads.py).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MediaError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    import ffmpeg

    count, height, width, _ = frames.shape
    video = ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=frame_rate(fps),
                         **_OWN_INPUT).video
    # Into YUV here, by the BT.709 matrix the output is tagged with: left to ffmpeg, RGB became BT.601
    # YUV with no tag, which players that take untagged video for BT.709 (browsers) show redder.
    video = (video.filter("scale", out_color_matrix="bt709", out_range="tv").filter("format", "yuv444p")
             .filter("setparams", colorspace="bt709", color_primaries="bt709", color_trc="bt709", range="tv"))
    # Hold the last frame first, so the interpolation has a frame to move towards at the end: for a few
    # generated intervals, since minterpolate ends one input interval before its input does (at 1 fps
    # a 2 s hold cut a 2.53 s video to 2.07 s).
    hold = min(max(2.0, HELD_INTERVALS / fps), duration + 2.0)  # never more than the video can show
    video = video.filter("tpad", stop_mode="clone", stop_duration=f"{hold:.6f}")
    if interpolate and output_fps > fps * 1.01:
        # scd=none: a scene-change guess would repeat frames instead of interpolating them.
        video = video.filter("minterpolate", fps=frame_rate(output_fps), mi_mode="mci", mc_mode="aobmc",
                             me_mode="bidir", vsbmc=1, scd="none")
    else:
        video = video.filter("fps", fps=frame_rate(output_fps))
    if width % 2 or height % 2:
        video = video.filter("scale", _even(width), _even(height))
    with tempfile.TemporaryDirectory(prefix="hm-encode-") as scratch:
        output_path = os.path.join(scratch, "out.mp4")
        streams = [video]
        codecs: dict[str, object] = {}
        if audio:
            audio_path = os.path.join(scratch, "audio.flac")
            with open(audio_path, "wb") as handle:
                handle.write(audio)
            streams.append(ffmpeg.input(audio_path, **_OWN_INPUT).audio)
            codecs = {"acodec": "aac", "audio_bitrate": "160k"}
        tags = [f"{key}={value}" for key, value in (metadata or {}).items()]  # e.g. the row's fingerprint
        stream = ffmpeg.output(*streams, output_path, t=f"{duration:.6f}", vcodec="libx264", preset="veryfast",
                               crf=18, pix_fmt="yuv420p", r=frame_rate(output_fps), movflags="+faststart",
                               **OUTPUT_COLOUR,
                               **codecs, **({"metadata": tags[0]} if len(tags) == 1 else {}),
                               **({"threads": threads} if threads != AUTO else {}))
        if len(tags) > 1:
            stream = stream.global_args(*[arg for tag in tags for arg in ("-metadata", tag)])
        if threads != AUTO:  # the encoder's threads are an output option, the filters' a global one
            stream = stream.global_args("-filter_threads", str(threads))
        timeout = limits.encode_timeout_s(math.ceil(duration * output_fps), width, height)
        result = _run_ffmpeg(stream, timeout=timeout, stdin=np.ascontiguousarray(frames).tobytes())
        if result.returncode != 0 or not os.path.exists(output_path):
            raise MediaError(f"encoding failed: {_last_error_line(result.stderr)}")
        if _indexed_video_frames(output_path) < 1:  # ffmpeg exits 0 on an empty output: never publish one
            raise MediaError(f"encoding made no video frames ({count} frames at {fps:g} fps cut to {duration:g} s "
                             f"at {output_fps:g} fps)")
        with open(output_path, "rb") as handle:
            return handle.read()


def _indexed_video_frames(path: str) -> int:
    """Frames in the first video stream of an MP4 we wrote, from its index (no decoding); 0 if it has none."""
    import av

    try:
        with av.open(path) as container:
            streams = container.streams.video
            return int(streams[0].frames) if streams else 0
    except av.error.FFmpegError:
        return 0


def check_sides(width: int, height: int, limits: MediaLimits, what: str) -> None:
    """MediaError if a picture's sides are more than the decoders and the face mesh can take."""
    if width < 1 or height < 1:
        raise MediaError(f"{what} has no pixels ({width}x{height})")
    if max(width, height) > limits.max_side:
        raise MediaError(f"{what} is {width}x{height}: a side over {limits.max_side} pixels is more than the "
                         "decoders can take")
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise MediaError(f"{what} is {width}x{height}: its sides differ more than {limits.max_aspect_ratio:g}:1, "
                         "too narrow to hold a face")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A grey image of more than 8 bits (16-bit PNG or TIFF, 32-bit integer or float TIFF) scaled to 8 bits.

    Pillow's own conversion to RGB clips such values at 255, so a 16-bit scan came out white and
    a float image (0 to 1) black, with no face to find.  Each is scaled from its nominal range: 16
    bits for 16-bit modes and for integers over 255, 0 to 1 for floats that stay within it.
    """
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = float(np.nanmax(values)) if values.size else 0.0
    if image.mode == "F":
        scale = 255.0 if top <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or top > 255 else 1.0
    return Image.fromarray(np.clip(np.nan_to_num(values * scale), 0, 255).astype(np.uint8), mode="L")


def _within_pixels(image: Image.Image, most: int, jpeg: bool) -> Image.Image:
    """``image`` decoded at no more than ``most`` pixels, its aspect kept (a JPEG decodes reduced)."""
    width, height = image.size
    if width * height <= most:
        return image
    scale = math.sqrt(most / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    if jpeg:
        image.draft(image.mode if image.mode in ("RGB", "L") else "RGB", size)  # 1/2, 1/4 or 1/8, at least size
    image.load()
    if image.size[0] * image.size[1] > most:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


# Leading bytes of the image formats the reader opens: a file that starts so is a damaged image of
# that kind, not "not an image".
_IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
                     (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


# ISO base media brands of still images (HEIF, AVIF): an 'ftyp' file with another brand is a video.
_STILL_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def _video_container_of(data: bytes) -> str | None:
    """The video container ``data`` starts as (MP4/MOV, Matroska/WebM, AVI, FLV), or None."""
    if data[4:8] == b"ftyp" and data[8:12] not in _STILL_BRANDS:
        return "MP4/MOV"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if data.startswith(b"RIFF") and data[8:12] == b"AVI ":
        return "AVI"
    if data.startswith(b"FLV"):
        return "FLV"
    return None


MAX_TIFF_PAGES = 64  # pages of a multi-page TIFF looked at for its main picture


def _main_page(image: Image.Image) -> Image.Image:
    """A multi-page TIFF at its largest page: DNG and scanner TIFFs put a small preview first, which
    would drive the meme from a thumbnail.  Other formats' first frame is their picture.

    Pages are visited one by one up to :data:`MAX_TIFF_PAGES`, never counted: Pillow's page count
    walks every page, with a check that grows with the pages walked (an 8 MB file of 80,000 empty
    pages took 98 s to count)."""
    if image.format != "TIFF":
        return image
    areas = []
    for index in range(MAX_TIFF_PAGES):
        try:
            image.seek(index)
        except EOFError:
            break
        areas.append(image.size[0] * image.size[1])
    image.seek(int(np.argmax(areas)))
    return image


def jpeg_scans(data: bytes, most: int) -> int:
    """How many scans (SOS segments) a JPEG's bytes hold, counting no further than ``most`` + 1.

    Walks the marker segments by their lengths and each scan's entropy-coded data to the next
    marker (0xFF00 is a stuffed byte and 0xFFD0-D7 a restart there, not markers), so bytes that
    merely look like a scan marker inside metadata (an EXIF thumbnail, a comment) are passed over.
    Stops where the bytes stop making sense: the decoder then says what is wrong.
    """
    position, scans, size = 2, 0, len(data)
    while position + 1 < size and scans <= most:
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker == 0xD9 or position + 4 > size:  # end of image
            break
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker != 0xDA:
            continue
        scans += 1
        while True:  # the scan's entropy-coded data, up to the next real marker
            position = data.find(b"\xff", position)
            if position < 0 or position + 1 >= size:
                return scans
            following = data[position + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                position += 2
            elif following == 0xFF:
                position += 1
            else:
                break
    return scans


def _in_srgb(image: Image.Image, profile: bytes | None) -> Image.Image:
    """An image's colours as sRGB, when it embeds a colour profile (Display P3 from iPhones, Adobe RGB from
    cameras), as colour-managed viewers show it; its numbers read as sRGB were duller (P3: about a sixth
    less saturated).  A profile that cannot be read, or is of another colour space than the pixels
    (a CMYK print file), leaves the numbers as they are."""
    if not profile:
        return image
    from PIL import ImageCms

    if image.mode == "P":  # a palette's colours are the profile's too
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    pixels = image.convert("L") if image.mode == "LA" else image.convert("RGB") if image.mode == "RGBA" else image
    if pixels.mode not in ("RGB", "L"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        converted = ImageCms.profileToProfile(pixels, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey+alpha, RGBA
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_rows_present(data: bytes) -> tuple[int, int] | None:
    """(bytes of image data the PNG's IDAT chunks hold, bytes its header says it has), or None if unparsable.

    Pillow decodes a PNG whose compressed data ends early but cleanly (a well-formed file with a
    short IDAT) without a word, leaving the missing rows black: the portrait rendered with its
    lower half black, ok.  Counted by inflating in pieces, never holding the whole image.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if colour not in _PNG_CHANNELS:
        return None
    bits = depth * _PNG_CHANNELS[colour]
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = max(0, (width - x0 + dx - 1) // dx), max(0, (height - y0 + dy - 1) // dy)
        if columns and rows:
            expected += rows * (1 + (columns * bits + 7) // 8)
    inflater, present, position = zlib.decompressobj(), 0, 8
    try:
        while position + 12 <= len(data) and present <= expected:
            length, kind = struct.unpack(">I4s", data[position:position + 8])
            if kind == b"IDAT":
                piece = inflater.decompress(data[position + 8:position + 8 + length], 1 << 20)
                present += len(piece)
                while inflater.unconsumed_tail and present <= expected:
                    piece = inflater.decompress(inflater.unconsumed_tail, 1 << 20)
                    present += len(piece)
            elif kind == b"IEND":
                break
            position += 12 + length
    except zlib.error:
        return None  # damaged data: the decoder says so itself
    return present, expected


def _image_format_of(data: bytes) -> str | None:
    """The format Pillow takes ``data`` for among all it knows (its header read, nothing decoded), or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format if image.format not in PORTRAIT_FORMATS else None
    except Exception:  # noqa: BLE001 - only naming the format: any failure means "not known"
        return None


# What Pillow and its plugins raise on a damaged file, besides OSError: a damaged AVIF raised RuntimeError
# ("Failed to decode image: Missing or empty image item") and a TIFF TypeError ("Missing dimensions"),
# which failed the row as "prepare: TypeError: Missing dimensions", naming neither the portrait nor the cause.
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, RuntimeError, TypeError, LookupError, EOFError,
                   ArithmeticError, struct.error)


def _decoder_message(exc: BaseException) -> str:
    """The decoder's own words; its exception's name where it has none."""
    return str(exc) or type(exc).__name__


def load_image(data: bytes, limits: MediaLimits) -> np.ndarray:
    """Decode an image to RGB uint8, EXIF rotation applied, pixel cap checked before decoding."""
    # Pillow's own guard refuses past twice its limit (179 MP) before our caps (up to 268 MP for a
    # JPEG, read reduced) can say anything: its limit is ours.
    Image.MAX_IMAGE_PIXELS = max(limits.max_jpeg_pixels, limits.max_other_image_pixels)
    # A PNG's colour profile may be a few MB (a camera's lookup tables): Pillow's 1 MB text-chunk guard
    # refused the whole image; 16 MB still bounds what one chunk can cost.
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, 16 * 1024**2)
    if data.startswith(b"\xff\xd8\xff") and jpeg_scans(data, limits.max_jpeg_scans) > limits.max_jpeg_scans:
        raise MediaError(f"is a JPEG of over {limits.max_jpeg_scans} progressive scans (its decode would take "
                         "minutes): save it again as a plain JPEG")
    try:
        # Only the portrait formats: Pillow knows dozens more, and opens EPS by running Ghostscript
        # (a PostScript interpreter) on the file where one is installed.
        image = _main_page(Image.open(io.BytesIO(data), formats=PORTRAIT_FORMATS))
    except UnidentifiedImageError as exc:
        other = _image_format_of(data)
        if other is not None:
            raise MediaError(f"is an image in {other} format, which is not read as a portrait (these are: "
                             f"{', '.join(PORTRAIT_FORMATS)}): convert it to JPEG or PNG") from None
        kind = next((name for signature, name in _IMAGE_SIGNATURES if data.startswith(signature)), None)
        if kind:  # Pillow says "cannot identify" for a file of a format it knows but cannot parse
            raise MediaError(f"is a {kind} image that cannot be decoded (damaged, or a variant the reader does not "
                             "support)") from exc
        video = _video_container_of(data)
        if video:  # the commonest way a portrait is a video: the two URI columns swapped
            raise MediaError(f"is a video ({video}), not an image: the portrait goes in reference_uri and the clip in "
                             "driving_uri (are they swapped?)") from None
        raise MediaError("is not an image (unrecognised format)") from exc
    except Image.DecompressionBombError:
        raise MediaError(f"image has over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, over the cap of "
                         f"{limits.max_jpeg_pixels / 1e6:.0f} (JPEG) and {limits.max_other_image_pixels / 1e6:.0f} "
                         "(other formats)") from None
    except _DECODER_ERRORS as exc:  # a header cut short ("Truncated File Read")
        raise MediaError(f"image cannot be decoded (damaged, or a variant the reader does not support): "
                         f"{_decoder_message(exc)}") from exc
    width, height = image.size
    jpeg = image.format == "JPEG"
    most = limits.max_jpeg_pixels if jpeg else limits.max_other_image_pixels
    if width * height > most:
        kind = "" if jpeg else f" for {image.format or 'this format'} (JPEG: {limits.max_jpeg_pixels / 1e6:.0f})"
        raise MediaError(f"image is {width}x{height}, over the cap of {most / 1e6:.0f} megapixels{kind}")
    check_sides(width, height, limits, "image")
    if image.format == "PNG" and not getattr(image, "is_animated", False):
        counted = png_rows_present(data)
        if counted is not None and counted[0] < counted[1]:
            raise MediaError(f"is a PNG whose image data stops {100 * counted[0] / counted[1]:.0f}% of the way "
                             "through (the file was cut short or damaged): its missing rows would show black")
    profile = image.info.get("icc_profile")
    # Colour code points (HDR and wide-gamut AVIF, HEIF, PNG): a PNG's cICP chunk overrides its ICC
    # profile (PNG, third edition); in AVIF and HEIF an ICC profile, where there is one, describes the colours.
    tags = colour_tags.read_tags(data)
    if tags is not None and profile and image.format != "PNG":
        tags = None
    try:
        image = _within_pixels(image, limits.max_image_pixels, jpeg)
        image = _eight_bit(ImageOps.exif_transpose(image))
        image = colour_tags.to_srgb(image, tags) if tags is not None else _in_srgb(image, profile)
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8).copy()
    except (*_DECODER_ERRORS, Image.DecompressionBombError) as exc:
        raise MediaError(f"image cannot be decoded (damaged, or a variant the reader does not support): "
                         f"{_decoder_message(exc)}") from exc
