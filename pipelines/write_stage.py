"""Write stage: publish the MP4 under its final name in one step, and describe the row's outcome.

The write is create-only: if the name is already taken (a retried task, or a rerun racing
another), the existing file is kept -- renders are deterministic per row, so it holds the same
video -- and the row still counts as done.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

from mediaio import storage
from pipelines.rows import OK, MemeWork
from pipelines.config import RenderJobConfig

logger = logging.getLogger(__name__)


def make_write_fn(config: RenderJobConfig) -> Callable[[MemeWork], MemeWork]:
    """A work -> work function that writes ``video`` to ``output_uri`` and marks the row ok."""

    def write(work: MemeWork) -> MemeWork:
        try:
            storage.write_create_only(work.output_uri, work.video, config.storage_options)
        except FileExistsError:
            logger.info("output of %r already exists at %s; keeping it", work.id, storage.redact(work.output_uri))
        return replace(work, video=None, status=OK)

    return write

