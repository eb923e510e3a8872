"""A video split into parts, as rows: the part columns, a video row's part rows, and a part row's engine input.

When an engine splits a long video (:meth:`engines.base.Engine.render_or_split`), the render
stage replaces its row with one row per part.  A part row is the video's row (same
``row_index``, id, settings, audio, timings) plus these typed columns:

    part_index, part_count       int64: which part, of how many (part_count 0: a whole video's row)
    part_start, part_stop        int64: the driving frames the part renders
    part_keep_from               int64: the first of them its output keeps
    part_state                   float32 (N,): the engine's carry-over (HelloMeme: end-frame latents), flat
    part_state_shape             int64 (k,): its shape

Its ``driving_crops`` hold only frames ``part_start .. part_stop-1`` (a 60-second clip's crops
are hundreds of MB; each part carries its own tenth), while the face tracks stay whole (small,
and an engine may need the whole clip's motion).  Only the first part carries the audio and the
render seconds so far, so the stitched row counts them once.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from actors.face_columns import empty_track_columns
from actors.render_actor import CONSUMED_COLUMNS, PARTS_KEY, render_input
from engines.base import PartInput, VideoPart

Row = dict[str, Any]


def output_columns() -> dict[str, Callable[[], Any]]:
    """The part columns, with the values a whole video's row carries."""
    return {
        "part_index": lambda: 0,
        "part_count": lambda: 0,
        "part_start": lambda: 0,
        "part_stop": lambda: 0,
        "part_keep_from": lambda: 0,
        "part_state": lambda: np.zeros((0,), np.float32),
        "part_state_shape": lambda: np.zeros((0,), np.int64),
    }


PART_COLUMNS = tuple(output_columns())


def consumed_empty(size: int) -> dict[str, Callable[[], Any]]:
    """Empty values of the columns the render stages read (a row that needs them no more keeps the schema)."""
    empties = {"reference_crop": lambda: np.zeros((0, size, 3), np.uint8),
               "driving_crops": lambda: np.zeros((0, size, size, 3), np.uint8),
               **empty_track_columns("reference"), **empty_track_columns("driving")}
    return {name: empties[name] for name in CONSUMED_COLUMNS}


def is_part(row: Mapping[str, Any]) -> bool:
    return int(row.get("part_count", 0) or 0) > 0


def whole_row(row: Mapping[str, Any], size: int) -> Row:
    """A row rendered whole (or failed) beside part rows: no parts, its crops and tracks let go."""
    row = {name: value for name, value in row.items() if name != PARTS_KEY}
    return {**row, **{name: empty() for name, empty in output_columns().items()},
            **{name: empty() for name, empty in consumed_empty(size).items()}}


def part_rows(row: Mapping[str, Any], parts: Sequence[VideoPart]) -> list[Row]:
    """The rows of a split video, one per part, in order (see the module docstring)."""
    base = {name: value for name, value in row.items() if name != PARTS_KEY}
    crops = np.asarray(base["driving_crops"])
    rows = []
    for part in parts:
        state = np.ascontiguousarray(part.state, dtype=np.float32)
        rows.append({
            **base,
            "part_index": part.index, "part_count": part.count, "part_start": part.start, "part_stop": part.stop,
            "part_keep_from": part.keep_from, "part_state": state.reshape(-1),
            "part_state_shape": np.asarray(state.shape, np.int64),
            "driving_crops": np.ascontiguousarray(crops[part.start : part.stop]),
            "audio": base["audio"] if part.index == 0 else None,
            "seconds_render": float(base["seconds_render"]) if part.index == 0 else 0.0,
        })
    return rows


def video_part(row: Mapping[str, Any]) -> VideoPart:
    shape = tuple(int(n) for n in np.asarray(row["part_state_shape"]))
    return VideoPart(index=int(row["part_index"]), count=int(row["part_count"]), start=int(row["part_start"]),
                     stop=int(row["part_stop"]), keep_from=int(row["part_keep_from"]),
                     state=np.asarray(row["part_state"], dtype=np.float32).reshape(shape))


def part_input(row: Mapping[str, Any], size: int) -> PartInput:
    """The engine's view of a part row."""
    return PartInput(video=render_input(row, size), part=video_part(row))
