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
    max_decode_side: int = 1024  # driving frames are scaled down to this longest side on decode
    max_fps: float = 30.0  # generation frame rate cap
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


@dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg says about a file (first video stream, first audio stream)."""

    container: str
    duration: float | None
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    pix_fmt: str = ""
    video_codec: str = ""
    rotation: int = 0  # degrees, clockwise display rotation from metadata

    @property
    def is_still_image(self) -> bool:
        return self.container in {"image2", "jpeg_pipe", "png_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe",
                                  "gif", "gif_pipe"} or self.video_codec in {"mjpeg", "png", "bmp"} and (
            self.duration is None or self.duration < 0.2)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) after applying rotation metadata."""
        if self.rotation % 180 == 90:
            return self.height, self.width
        return self.width, self.height


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_INPUT = re.compile(r"Input #0, ([^,]+(?:,[^ ]+)*?), from")
_VIDEO = re.compile(r"Stream #0:\d+[^:]*: Video: (\w+)[^,]*, ([\w]+)(?:\([^)]*\))?.*?, (\d{1,6})x(\d{1,6})")
_FPS = re.compile(r"(\d+(?:\.\d+)?) fps")
_TBR = re.compile(r"(\d+(?:\.\d+)?)k? tbr")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees|rotate\s*:\s*(-?\d+)")


def probe(path: str, timeout: float = 60.0) -> MediaInfo:
    """Read a local file's container, streams, size, rate, duration and rotation."""
    result = _run_ffmpeg([*_INPUT_OPTIONS, "-i", path], timeout=timeout)
    text = result.stderr.decode("utf-8", "replace")
    container_match = _INPUT.search(text)
    if container_match is None:
        raise MediaError(f"not a media file ffmpeg can read ({_last_error_line(result.stderr)})")
    duration_match = _DURATION.search(text)
    duration = None
    if duration_match:
        h, m, s = duration_match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    video_lines = [line for line in text.splitlines() if re.search(r"Stream #0:\d+.*: Video:", line)]
    has_audio = bool(re.search(r"Stream #0:\d+.*: Audio:", text))
    if not video_lines:
        return MediaInfo(container=container_match.group(1), duration=duration, has_video=False, has_audio=has_audio)
    line = video_lines[0]
    video = _VIDEO.search(line)
    if video is None:
        raise MediaError(f"cannot read the video stream's format: {line.strip()}")
    fps_match = _FPS.search(line) or _TBR.search(line)
    rotation_match = _ROTATION.search(text)
    rotation = 0
    if rotation_match:
        value = float(rotation_match.group(1) or rotation_match.group(2))
        rotation = int(round(value)) % 360
    return MediaInfo(
        container=container_match.group(1),
        duration=duration,
        has_video=True,
        has_audio=has_audio,
        video_codec=video.group(1),
        pix_fmt=video.group(2),
        width=int(video.group(3)),
        height=int(video.group(4)),
        fps=float(fps_match.group(1)) if fps_match else 0.0,
        rotation=rotation,
    )


@dataclass(frozen=True)
class DecodedClip:
    """A driving clip decoded at the generation frame rate, with its audio kept for the encode."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    fps: float  # generation frame rate of ``frames``
    source_fps: float
    duration: float  # seconds of the clip that the output must match
    audio: bytes | None  # AAC (ADTS) of the same span, or None when the clip has no audio


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def decode_clip(path: str, fps: float | None, limits: MediaLimits, max_seconds: float | None = None) -> DecodedClip:
    """Decode a local video file to RGB frames at ``fps`` (None: the clip's own rate, capped)."""
    info = probe(path)
    if not info.has_video:
        raise MediaError("has no video stream" + (" (audio only)" if info.has_audio else ""))
    if info.is_still_image:
        raise MediaError(f"is a still image ({info.video_codec}), not a video")
    if info.width * info.height > limits.max_video_pixels:
        raise MediaError(
            f"video is {info.width}x{info.height}, over the cap of {limits.max_video_pixels / 1e6:.1f} megapixels"
        )
    if info.duration is not None and info.duration > limits.max_seconds and max_seconds is None:
        raise MediaError(
            f"clip lasts {info.duration:.1f} s, over the cap of {limits.max_seconds:.0f} s "
            "(set max_seconds in the manifest to render its start)"
        )
    span = min(x for x in (info.duration, max_seconds, limits.max_seconds) if x)
    source_fps = info.fps if info.fps > 0 else 25.0
    generation_fps = min(fps or source_fps, limits.max_fps, source_fps)
    width, height = info.display_size
    scale = min(1.0, limits.max_decode_side / max(width, height))
    out_w, out_h = _even(width * scale), _even(height * scale)
    result = _run_ffmpeg(
        [
            "-v", "error", *_INPUT_OPTIONS, "-i", path, "-t", f"{span:.6f}", "-map", "0:v:0", "-an", "-sn",
            "-vf", f"fps={generation_fps:.6f},scale={out_w}:{out_h}:flags=area",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ],
        timeout=limits.ffmpeg_timeout_s,
    )
    frame_bytes = out_w * out_h * 3
    count = len(result.stdout) // frame_bytes
    if result.returncode != 0 and count == 0:
        raise MediaError(f"cannot decode video: {_last_error_line(result.stderr)}")
    if count == 0:
        raise MediaError("video has no decodable frames")
    frames = np.frombuffer(result.stdout[: count * frame_bytes], dtype=np.uint8).reshape(count, out_h, out_w, 3)
    duration = min(span, count / generation_fps) if info.duration is None else span
    audio = extract_audio(path, duration, limits) if info.has_audio else None
    return DecodedClip(frames=frames, fps=generation_fps, source_fps=source_fps, duration=duration, audio=audio)


def extract_audio(path: str, seconds: float, limits: MediaLimits) -> bytes | None:
    """The first audio stream's first ``seconds`` as AAC (ADTS), re-encoded so any codec works."""
    result = _run_ffmpeg(
        ["-v", "error", *_INPUT_OPTIONS, "-i", path, "-t", f"{seconds:.6f}", "-map", "0:a:0", "-vn",
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
        args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                 "-r", f"{output_fps:.6f}", "-movflags", "+faststart", "-y", output_path]
        result = _run_ffmpeg(args, timeout=limits.ffmpeg_timeout_s, stdin=np.ascontiguousarray(frames).tobytes())
        if result.returncode != 0 or not os.path.exists(output_path):
            raise MediaError(f"encoding failed: {_last_error_line(result.stderr)}")
        with open(output_path, "rb") as handle:
            return handle.read()


def count_frames(path: str, timeout: float = 120.0) -> int:
    """Decode the first video stream fully and count its frames (fails on undecodable data)."""
    result = _run_ffmpeg(["-v", "error", *_INPUT_OPTIONS, "-i", path, "-map", "0:v:0", "-f", "null", "-",
                          "-progress", "pipe:1", "-nostats"], timeout=timeout)
    if result.returncode != 0:
        raise MediaError(f"cannot decode: {_last_error_line(result.stderr)}")
    counts = re.findall(r"frame=(\d+)", result.stdout.decode())
    return int(counts[-1]) if counts else 0


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


def output_frame_rate(clip: DecodedClip) -> float:
    """Outputs keep the driving clip's frame rate."""
    return clip.source_fps if math.isfinite(clip.source_fps) and clip.source_fps > 0 else clip.fps
