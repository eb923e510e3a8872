"""Decode stage: fetch a row's inputs through fsspec and decode them (CPU, one row at a time).

Inputs are copied to a local temp file first: ffmpeg only ever sees a local file, never a URL,
and MP4s whose index sits at the end of the file still decode.  The report's reference and
driving previews are made here from the decoded pixels, and the row counts as started.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from typing import Callable

from mediaio import media, storage
from reporting import previews
from reporting.metrics import worker_metrics
from pipelines.rows import MemeWork
from pipelines.config import RenderJobConfig


class InputError(Exception):
    """An input of a row cannot be used; the message names the input and the cause."""


def _fetch(uri: str, what: str, config: RenderJobConfig) -> bytes:
    try:
        data = storage.read_bytes(uri, config.storage_options, max_bytes=config.max_input_bytes)
    except FileNotFoundError:
        raise InputError(f"{what} {storage.redact(uri)} not found") from None
    except storage.StorageError as exc:
        raise InputError(f"{what}: {exc}") from None
    except IsADirectoryError:
        raise InputError(f"{what} {storage.redact(uri)} is a directory") from None
    if not data:
        raise InputError(f"{what} {storage.redact(uri)} is empty")
    return data


def make_decode_fn(config: RenderJobConfig, generation_fps: float | None) -> Callable[[MemeWork], MemeWork]:
    """A work -> work function that fills ``clip`` and ``reference_image``.

    ``generation_fps`` is the engine's default rate (None: the clip's own); a row's ``fps`` wins.
    """

    def decode(work: MemeWork) -> MemeWork:
        metrics = worker_metrics()
        metrics.row_started()
        spec = work.spec
        reference_bytes = _fetch(spec.reference_uri, "reference", config)
        try:
            reference_image = media.load_image(reference_bytes, config.limits)
        except media.MediaError as exc:
            raise InputError(f"reference {storage.redact(spec.reference_uri)} {exc}") from None
        driving_bytes = _fetch(spec.driving_uri, "driving video", config)
        with tempfile.TemporaryDirectory(prefix="hm-decode-") as scratch:
            local_path = os.path.join(scratch, "driving")
            with open(local_path, "wb") as handle:
                handle.write(driving_bytes)
            del driving_bytes
            try:
                clip = media.decode_clip(local_path, spec.fps or generation_fps, config.limits, spec.max_seconds)
            except media.MediaError as exc:
                raise InputError(f"driving video {storage.redact(spec.driving_uri)} {exc}") from None
        metrics.frames_decoded(len(clip.frames))
        work = replace(work, clip=clip, reference_image=reference_image)
        if config.report:
            work = previews.with_input_previews(work, config.output_uri, config.storage_options)
        return work

    return decode
