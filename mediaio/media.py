"""Decoding and encoding with the real ffmpeg binary (shipped by imageio-ffmpeg), and image loading.

ffmpeg is always run without a shell, on local temp files or pipes only (its protocols are
limited to ``file`` and ``pipe``: inputs are fetched through fsspec first, never handed to ffmpeg
as URLs), with a time limit, and with caps on pixels and duration checked before decoding.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)


class MediaError(Exception):
    """An input cannot be decoded, or an output cannot be encoded; the message says why."""


@dataclass(frozen=True)
class MediaLimits:
    """Caps that keep one bad input from exhausting a worker."""

    max_image_pixels: int = 4096 * 4096
    max_video_pixels: int = 4096 * 2160
    max_seconds: float = 60.0
    # The longest side and the most unequal sides an image or a frame may have: decoders and the face
    # mesh (OpenCV inside) abort on sides past 32767, and a face needs a frame that is not a sliver.
    max_side: int = 16384
    max_aspect_ratio: float = 8.0
    landmark_side: int = 1024  # frames and portraits are scaled down to this longest side for the face mesh
    max_fps: float = 30.0  # generation frame rate cap
    max_output_fps: float = 60.0  # outputs keep the clip's rate up to this (a 1000 fps clip comes out at 60)
    ffmpeg_timeout_s: float = 300.0


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: $HELLOMEME_FFMPEG, else the one imageio-ffmpeg ships."""
    configured = os.environ.get("HELLOMEME_FFMPEG")
    if configured:
        return configured
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


_INPUT_OPTIONS = ["-protocol_whitelist", "file,pipe"]
# Reading a user's clip (its audio): plain containers only, no demuxer that opens other files.
_CLIP_INPUT_OPTIONS = ["-protocol_whitelist", "file", "-format_whitelist",
                       "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf,gif,h264,hevc"]


def _run_ffmpeg(args: list[str], timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", *args]
    if stdin is not None:
        command.remove("-nostdin")
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


def extract_audio(path: str, seconds: float, limits: MediaLimits) -> bytes | None:
    """The first audio stream's first ``seconds`` as AAC (ADTS), re-encoded so any codec works."""
    result = _run_ffmpeg(
        ["-v", "error", *_CLIP_INPUT_OPTIONS, "-i", path, "-t", f"{seconds:.6f}", "-map", "0:a:0", "-vn",
         "-c:a", "aac", "-b:a", "160k", "-f", "adts", "pipe:1"],
        timeout=limits.ffmpeg_timeout_s,
    )
    if result.returncode != 0 or not result.stdout:
        logger.warning("audio could not be extracted, the output will be silent: %s", _last_error_line(result.stderr))
        return None
    return result.stdout


def encode_mp4(
    frames: np.ndarray,
    fps: float,
    output_fps: float,
    duration: float,
    audio: bytes | None,
    limits: MediaLimits,
    interpolate: bool = True,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Encode frames generated at ``fps`` to an H.264/yuv420p MP4 at ``output_fps`` lasting ``duration``.

    Frames between generated ones are made by ffmpeg's motion-compensated interpolation; the
    last frame is held if the generated frames end early, so the video and the audio (muxed
    from the driving clip) both last exactly ``duration``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MediaError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    count, height, width, _ = frames.shape
    # Hold the last frame first, so the interpolation has a frame to move towards at the end.
    filters = ["tpad=stop_mode=clone:stop_duration=2"]
    if interpolate and output_fps > fps * 1.01:
        # scd=none: a scene-change guess would repeat frames instead of interpolating them.
        filters.append(f"minterpolate=fps={output_fps:.6f}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd=none")
    else:
        filters.append(f"fps={output_fps:.6f}")
    if width % 2 or height % 2:
        filters.append(f"scale={_even(width)}:{_even(height)}")
    with tempfile.TemporaryDirectory(prefix="hm-encode-") as scratch:
        output_path = os.path.join(scratch, "out.mp4")
        args = ["-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                "-framerate", f"{fps:.6f}", *_INPUT_OPTIONS, "-i", "pipe:0"]
        if audio:
            audio_path = os.path.join(scratch, "audio.aac")
            with open(audio_path, "wb") as handle:
                handle.write(audio)
            args += [*_INPUT_OPTIONS, "-i", audio_path]
        args += ["-filter:v", ",".join(filters), "-t", f"{duration:.6f}", "-map", "0:v:0"]
        if audio:
            args += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "160k"]
        for key, value in (metadata or {}).items():  # container tags, e.g. the row's fingerprint
            args += ["-metadata", f"{key}={value}"]
        args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                 "-r", f"{output_fps:.6f}", "-movflags", "+faststart", "-y", output_path]
        result = _run_ffmpeg(args, timeout=limits.ffmpeg_timeout_s, stdin=np.ascontiguousarray(frames).tobytes())
        if result.returncode != 0 or not os.path.exists(output_path):
            raise MediaError(f"encoding failed: {_last_error_line(result.stderr)}")
        with open(output_path, "rb") as handle:
            return handle.read()


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


def load_image(data: bytes, limits: MediaLimits) -> np.ndarray:
    """Decode an image to RGB uint8, EXIF rotation applied, pixel cap checked before decoding."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise MediaError("is not an image (unrecognised format)") from exc
    except Image.DecompressionBombError as exc:
        raise MediaError(f"image is too large to decode safely: {exc}") from exc
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise MediaError(
            f"image is {width}x{height}, over the cap of {limits.max_image_pixels / 1e6:.1f} megapixels"
        )
    check_sides(width, height, limits, "image")
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"image cannot be decoded: {exc}") from exc
