"""How many metadata tags a Matroska or WebM file holds, read from its element headers alone.

ffmpeg's Matroska demuxer puts every tag into a dictionary that it searches on each insert, as it
opens the file: the time grows with the square of the tags.  A 2.9 MB clip of 40,000 tags took
17 s to open in PyAV, and a clip is opened four times by the prepare stage; 200,000 tags would
take a worker past the row time limit.  This module walks the EBML element tree (Segment, Tags,
Tag, SimpleTag) with seeks and small reads, skipping clusters by their sizes, so such a clip can be
refused before it is opened (:func:`mediaio.clips.probe`).

Bytes that do not parse as elements, or an element of unknown size (a live recording's cluster),
end the walk with what was counted so far.  Imports only the standard library.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator

EBML_HEADER = 0x1A45DFA3
SEGMENT = 0x18538067
TAGS = 0x1254C367
TAG = 0x7373
SIMPLE_TAG = 0x67C8
# Elements walked at most (a Segment's children: clusters, cues, tags...; a long clip has thousands).
MAX_ELEMENTS = 1_000_000


def is_matroska(path: str) -> bool:
    """Whether the file starts with an EBML header (Matroska, WebM)."""
    with open(path, "rb") as handle:
        return handle.read(4) == EBML_HEADER.to_bytes(4, "big")


def tag_count(path: str, most: int) -> int:
    """SimpleTag elements in the file's Tags, counted until the count passes ``most``."""
    size = os.path.getsize(path)
    count, walked = 0, 0
    with open(path, "rb") as handle:
        for element, body, end in _elements(handle, 0, size):
            if element != SEGMENT:
                continue
            for child, child_body, child_end in _elements(handle, body, end):
                walked += 1
                if walked > MAX_ELEMENTS or count > most:
                    return count
                if child == TAGS:
                    count += _simple_tags(handle, child_body, child_end, most - count)
    return count


def _simple_tags(handle: BinaryIO, start: int, end: int, most: int, depth: int = 0) -> int:
    """SimpleTags under ``start``..``end`` (a Tags or Tag element's body; SimpleTags nest)."""
    count = 0
    for element, body, element_end in _elements(handle, start, end):
        if count > most or depth > 8:
            break
        if element == SIMPLE_TAG:
            count += 1 + _simple_tags(handle, body, element_end, most - count, depth + 1)
        elif element == TAG:
            count += _simple_tags(handle, body, element_end, most - count, depth + 1)
    return count


def _vint(handle: BinaryIO, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-length integer at the handle's position; None if invalid.
    An element ID keeps its marker bit; a size drops it, and all ones is -1 (unknown size)."""
    first = handle.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()
    rest = handle.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = int.from_bytes(first + rest, "big")
    if keep_marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    return (-1 if value == (1 << (7 * length)) - 1 else value), length


def _elements(handle: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(ID, body start, element end) of each element between ``start`` and ``end``."""
    position = start
    while position + 2 <= end:
        handle.seek(position)
        element = _vint(handle, keep_marker=True)
        size = _vint(handle, keep_marker=False) if element else None
        if element is None or size is None:
            return
        body = position + element[1] + size[1]
        if size[0] < 0:  # unknown size: only a Segment's is followed (to the end of what holds it)
            if element[0] != SEGMENT:
                return
            yield element[0], body, end
            return
        yield element[0], body, min(body + size[0], end)
        position = body + size[0]
