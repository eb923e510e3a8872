"""The stitch stage: a split video's part rows in, the video's one row out once every part has come back.

Parts come back from any render actor in any order, each as its own row (see
:mod:`actors.video_parts`).  One stitch actor holds the parts of each unfinished video, keyed by
``row_index``, and emits the video's row when the last one arrives: the parts' frames in order,
their render seconds summed (the GPU time the video took, wherever it ran), the part columns
dropped.  Rows of whole videos pass straight through.  If any part failed, the video fails with
that part's error and which part it was; it still leaves exactly one row.

It is one actor (the parts of a video must meet), and it does little: a concatenation per video.
Other videos keep flowing past it while a long one's parts are out.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from actors.video_parts import PART_COLUMNS, is_part

logger = logging.getLogger(__name__)

Row = dict[str, Any]
FAILED = "failed"


def _without_parts(row: Mapping[str, Any]) -> Row:
    return {name: value for name, value in row.items() if name not in PART_COLUMNS}


class Stitcher:
    """Holds the parts of unfinished videos; see the module docstring."""

    def __init__(self) -> None:
        self.waiting: dict[int, dict[int, Row]] = {}

    def __call__(self, row: Mapping[str, Any]) -> list[Row]:
        """The rows that are complete now: ``[row]`` for a whole video, ``[]`` or ``[video]`` for a part."""
        if not is_part(row):
            return [_without_parts(row)]
        key, index, count = int(row["row_index"]), int(row["part_index"]), int(row["part_count"])
        parts = self.waiting.setdefault(key, {})
        if index in parts:
            # A retried task delivered a part twice: the copies are the same computation.
            logger.warning("row %d: part %d of %d arrived twice; keeping the first", key, index + 1, count)
        parts.setdefault(index, dict(row))
        if len(parts) < count:
            return []
        del self.waiting[key]
        return [stitch([parts[i] for i in range(count)])]

    @property
    def videos_waiting(self) -> int:
        return len(self.waiting)


def stitch(parts: list[Row]) -> Row:
    """One video's row from all its part rows, in part order."""
    first = parts[0]
    row = _without_parts(first)
    row["seconds_render"] = float(sum(float(part["seconds_render"]) for part in parts))
    failed = [part for part in parts if part["status"] == FAILED]
    if failed:
        part = failed[0]
        where = (f"window group {int(part['part_index']) + 1} of {int(part['part_count'])}, frames "
                 f"{int(part['part_start'])}-{int(part['part_stop']) - 1}")
        row.update(status=FAILED, error=f"{part['error']} ({where})",
                   rendered=np.asarray(first["rendered"])[:0])
        return row
    row["rendered"] = np.concatenate([np.asarray(part["rendered"]) for part in parts])
    return row
