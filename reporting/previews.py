"""Small previews of a row for the report, made in the worker stages from frames already in memory.

Each row gets up to three images under ``{output}/_report/``: its reference portrait (a still),
its driving clip and its meme (animated, a few frames a second, real-time speed).  They are
~160 px WebP files made where the frames already are -- after decode for the inputs, before
the encode drops the rendered frames -- so the driver never decodes a video.  They are
published with storage's atomic writes and are best-effort: a preview that cannot be made or
written is logged and left out; it never fails the row.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image

from mediaio import storage

logger = logging.getLogger(__name__)

PREVIEW_DIR = "_report"
KINDS = ("meme", "reference", "driving")
SIDE = 160  # longest side of a preview, pixels
FPS = 6.0  # preview frame rate: enough to see the motion, small enough to load thousands
MAX_FRAMES = 60  # longer clips are sampled more sparsely; playback stays real-time
QUALITY = 70
# libwebp's effort (0-6).  The previews of every row are made in the worker stages, so this is paid
# once per row per animated preview: on 160 px frames of the shared clips, 4 took 6.6 ms a frame and
# 2 took 3.8 ms for files 6% larger (1 and 0: 3.1 and 2.7 ms, but 30-36% larger).
ANIMATION_EFFORT = 2


FINGERPRINT_CHARS = 16  # of the video's fingerprint, in a preview's name


def preview_path(meme_id: str, kind: str, fingerprint: str = "") -> str:
    """A preview's path relative to the job's output prefix.

    Named by the row's id and its video's fingerprint: another job's row with the same id (its
    own ``output_uri``, or the loser of a race for one output) never replaces this video's
    previews.  Without a fingerprint, the name earlier versions used (``{id}.{kind}.webp``).  Ids
    of rows that reach the workers are ``[A-Za-z0-9._-]``, fingerprints hex, and no kind's
    suffix ends another's, so every (id, fingerprint, kind) has its own name.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown preview kind {kind!r} (known: {', '.join(KINDS)})")
    video = f".{fingerprint[:FINGERPRINT_CHARS]}" if fingerprint else ""
    return f"{PREVIEW_DIR}/{meme_id}{video}.{kind}.webp"


def _fit(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def still_webp(image: np.ndarray, side: int = SIDE) -> bytes:
    """A (H, W, 3) uint8 image as a WebP fitting ``side``."""
    buffer = io.BytesIO()
    _fit(Image.fromarray(image), side).save(buffer, "WEBP", quality=QUALITY)
    return buffer.getvalue()


def animated_webp(frames: np.ndarray, fps: float, side: int = SIDE, preview_fps: float = FPS,
                  max_frames: int = MAX_FRAMES) -> bytes:
    """(T, H, W, 3) uint8 frames at ``fps`` as a looping animated WebP at about ``preview_fps``."""
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {frames.shape}")
    step = max(1, round(fps / preview_fps), -(-len(frames) // max_frames))
    picked = [_fit(Image.fromarray(frame), side) for frame in frames[::step]]
    buffer = io.BytesIO()
    picked[0].save(buffer, "WEBP", save_all=True, append_images=picked[1:], duration=round(1000 * step / fps),
                   loop=0, quality=QUALITY, method=ANIMATION_EFFORT)
    return buffer.getvalue()


def publish(meme_id: str, kind: str, data: bytes, output_uri: str,
            storage_options: Mapping[str, Any] | None = None, fingerprint: str = "") -> str:
    """Write one preview under the job's output; returns its path relative to the output prefix."""
    path = preview_path(meme_id, kind, fingerprint)
    storage.write_replace(storage.join(output_uri, path), data, storage_options)
    return path


def try_publish(meme_id: str, kind: str, make: Callable[[], bytes], output_uri: str,
                storage_options: Mapping[str, Any] | None = None, fingerprint: str = "") -> str | None:
    """Make and publish a preview, best-effort: a preview is a nicety, a failure only logs and gives None."""
    try:
        return publish(meme_id, kind, make(), output_uri, storage_options, fingerprint)
    except Exception as exc:  # a preview never fails its row
        logger.warning("%s: %s preview not written: %s", meme_id, kind, storage.redact(f"{type(exc).__name__}: {exc}"))
        return None
