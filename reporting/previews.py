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
from dataclasses import replace
from typing import Any, Mapping

import numpy as np
from PIL import Image

from mediaio import storage
from pipelines.rows import MemeWork

logger = logging.getLogger(__name__)

PREVIEW_DIR = "_report"
KINDS = ("meme", "reference", "driving")
SIDE = 160  # longest side of a preview, pixels
FPS = 6.0  # preview frame rate: enough to see the motion, small enough to load thousands
MAX_FRAMES = 60  # longer clips are sampled more sparsely; playback stays real-time
QUALITY = 70


def preview_path(meme_id: str, kind: str) -> str:
    """A preview's path relative to the job's output prefix.

    Ids of rows that reach the workers are ``[A-Za-z0-9._-]``, and no kind's suffix ends
    another's, so every (id, kind) pair has its own name.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown preview kind {kind!r} (known: {', '.join(KINDS)})")
    return f"{PREVIEW_DIR}/{meme_id}.{kind}.webp"


def result_fields(work: MemeWork) -> dict[str, str | None]:
    """The results-row columns naming a row's previews (relative to the output prefix), None when absent."""
    return {f"preview_{kind}": work.previews.get(kind) for kind in KINDS}


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
                   loop=0, quality=QUALITY, method=4)
    return buffer.getvalue()


def _published(work: MemeWork, kind: str, data: bytes, output_uri: str,
               storage_options: Mapping[str, Any] | None) -> MemeWork:
    path = preview_path(work.id, kind)
    storage.write_replace(storage.join(output_uri, path), data, storage_options)
    return replace(work, previews={**work.previews, kind: path})


def with_input_previews(work: MemeWork, output_uri: str, storage_options: Mapping[str, Any] | None = None) -> MemeWork:
    """Publish the reference and driving previews of a decoded row (best-effort)."""
    try:
        if work.reference_image is not None:
            work = _published(work, "reference", still_webp(work.reference_image), output_uri, storage_options)
        if work.clip is not None and len(work.clip.frames):
            work = _published(work, "driving", animated_webp(work.clip.frames, work.clip.fps), output_uri,
                              storage_options)
    except Exception as exc:  # a preview is a nicety: the row goes on without it
        logger.warning("row %d (%s): input preview not written: %s", work.row_index, work.id,
                       storage.redact(f"{type(exc).__name__}: {exc}"))
    return work


def with_meme_preview(work: MemeWork, frames: np.ndarray, fps: float, output_uri: str,
                      storage_options: Mapping[str, Any] | None = None) -> MemeWork:
    """Publish the animated preview of a row's rendered frames (best-effort)."""
    try:
        return _published(work, "meme", animated_webp(frames, fps), output_uri, storage_options)
    except Exception as exc:  # a preview is a nicety: the row goes on without it
        logger.warning("row %d (%s): meme preview not written: %s", work.row_index, work.id,
                       storage.redact(f"{type(exc).__name__}: {exc}"))
        return work
