"""How many metadata tags a clip holds (Matroska/WebM, MP4/MOV, Ogg), read from its headers alone.

ffmpeg's demuxers put every tag into a dictionary that is searched on each insert, as they open the
file: the time grows with the square of the tags.  A 2.9 MB Matroska clip of 40,000 tags took 17 s
to open in PyAV, an Ogg clip of 20,000 13 s, and a clip is opened four times by the prepare stage;
200,000 tags would take a worker past the row time limit.  This module reads the tag counts
(Matroska: the EBML tree's Segment, Tags, Tag, SimpleTag, clusters skipped by their sizes; MP4: the
items of ``moov/udta/meta/ilst``; Ogg: the counts in the Vorbis, Opus and Theora comment headers) so
such a clip can be refused before it is opened (:func:`mediaio.clips.probe`).

Bytes that do not parse end the count with what was counted so far: the demuxer then says what is
wrong with them.  Imports only the standard library.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Iterator

from mediaio import sample_tables

EBML_HEADER = 0x1A45DFA3
SEGMENT = 0x18538067
TAGS = 0x1254C367
TAG = 0x7373
SIMPLE_TAG = 0x67C8
# Elements walked at most (a Segment's children: clusters, cues, tags...; a long clip has thousands).
MAX_ELEMENTS = 1_000_000


# Comment headers of the Ogg codecs whose tags ffmpeg reads, and how far into the file they are looked for.
_OGG_COMMENTS = (b"\x03vorbis", b"OpusTags", b"\x81theora")
_OGG_HEAD_BYTES = 1 << 20


def tag_count(path: str, most: int) -> int:
    """The metadata tags the file holds, counted until the count passes ``most`` (0: another kind of file)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[:4] == EBML_HEADER.to_bytes(4, "big"):
        return _matroska_tags(path, most)
    if head[:4] == b"OggS":
        return _ogg_tags(path)
    if sample_tables.is_iso_media(path):
        return _mp4_tags(path)
    return 0


def _ogg_tags(path: str) -> int:
    """The counts the Ogg streams' comment headers claim (each stream's in the first MB of the file).

    A count the rest of the file could not hold (each comment takes 4 bytes at the least) is a damaged
    header's, which the demuxer passes over: not counted."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        data = handle.read(_OGG_HEAD_BYTES)
    total = 0
    for marker in _OGG_COMMENTS:
        at = data.find(marker)
        while at >= 0:
            vendor = at + len(marker)
            if vendor + 4 <= len(data):
                count_at = vendor + 4 + struct.unpack("<I", data[vendor:vendor + 4])[0]
                if count_at + 4 <= len(data):
                    claimed = struct.unpack("<I", data[count_at:count_at + 4])[0]
                    total += claimed if claimed <= (size - count_at - 4) // 4 else 0
            at = data.find(marker, at + 1)
    return total


def _mp4_tags(path: str) -> int:
    """Items in the ``ilst`` lists of ``moov/udta/meta`` and ``moov/meta`` (iTunes-style and QuickTime tags)."""
    size = os.path.getsize(path)
    total = 0
    with open(path, "rb") as handle:
        for kind, body, end in sample_tables.boxes(handle, 0, size):
            if kind != b"moov":
                continue
            for path_to_meta, full_box in (((b"udta", b"meta"), True), ((b"meta",), False)):
                meta = sample_tables.find_box(handle, body, end, path_to_meta)
                if meta is None:
                    continue
                # An ISO meta box starts with 4 bytes of version and flags; QuickTime's does not.
                for start in ((meta[0] + 4, meta[0]) if full_box else (meta[0], meta[0] + 4)):
                    items = sample_tables.find_box(handle, start, meta[1], (b"ilst",))
                    if items is not None:
                        total += sum(1 for _ in sample_tables.boxes(handle, *items))
                        break
    return total


def _matroska_tags(path: str, most: int) -> int:
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
