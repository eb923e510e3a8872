"""How many metadata tags a clip holds (Matroska/WebM, MP4/MOV, Ogg, AVI, FLV, ASF/WMV), read from its headers alone.

ffmpeg's demuxers put every tag into a dictionary that is searched on each insert, as they open the
file: the time grows with the square of the tags.  A 2.9 MB Matroska clip of 40,000 tags took 17 s
to open in PyAV, an Ogg clip of 20,000 13 s, a WMV of 20,000 8.4 s, an AVI 3.0 s and an FLV 2.0 s,
and a clip is opened four times by the prepare stage; 200,000 tags would take a worker past the row
time limit.  This module reads the tag counts (Matroska: the EBML tree's Segment, Tags, Tag,
SimpleTag, clusters skipped by their sizes; MP4: the items of ``moov/udta/meta/ilst``; Ogg: the
counts in the Vorbis, Opus and Theora comment headers; AVI: the chunks of its ``LIST INFO`` lists;
FLV: the keys of its script tags' AMF objects, ``onMetaData``; ASF: the descriptor counts of its
extended content description and metadata objects) so such a clip can be refused before it is
opened (:func:`mediaio.clips.probe`).  MPEG-TS and PS carry a few names per program, not a
dictionary a file can fill.

Bytes that do not parse end the count with what was counted so far: the demuxer then says what is
wrong with them.  Imports only the standard library.
"""

from __future__ import annotations

import itertools
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
        head = handle.read(16)
    if head[:4] == EBML_HEADER.to_bytes(4, "big"):
        return _matroska_tags(path, most)
    if head[:4] == b"OggS":
        return _ogg_tags(path)
    if sample_tables.is_iso_media(path):
        return _mp4_tags(path)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return _avi_tags(path, most)
    if head[:4] == b"RIFF":
        return 0
    if head[:3] == b"FLV":
        return _flv_tags(path, most)
    if head[:16] == _ASF_HEADER:
        return _asf_tags(path)
    return 0


def _riff_chunks(handle: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(FourCC, body start, chunk end) of each RIFF chunk between ``start`` and ``end`` (bodies pad to even)."""
    position = start
    while position + 8 <= end:
        handle.seek(position)
        head = handle.read(8)
        if len(head) < 8:
            return
        size = struct.unpack("<I", head[4:])[0]
        yield head[:4], position + 8, min(position + 8 + size, end)
        position += 8 + size + (size & 1)


def _avi_tags(path: str, most: int) -> int:
    """Chunks of the AVI's ``LIST INFO`` lists (each a tag), in its header lists; the ``movi`` data is skipped."""
    size = os.path.getsize(path)
    count, walked = 0, 0
    with open(path, "rb") as handle:
        pending = [(12, size)]
        while pending:
            start, end = pending.pop()
            for chunk, body, chunk_end in _riff_chunks(handle, start, end):
                walked += 1
                if walked > MAX_ELEMENTS or count > most:
                    return count
                if chunk != b"LIST" or chunk_end - body < 4:
                    continue
                handle.seek(body)
                kind = handle.read(4)
                if kind == b"INFO":
                    count += sum(1 for _ in itertools.islice(_riff_chunks(handle, body + 4, chunk_end), most + 1))
                elif kind in (b"hdrl", b"strl"):
                    pending.append((body + 4, chunk_end))
    return count


_FLV_SCRIPT = 18  # an FLV tag of script data (AMF0: onMetaData and the like)


def _flv_tags(path: str, most: int) -> int:
    """Keys of the AMF objects in the FLV's script tags, counted until the count passes ``most``.

    ffmpeg reads every script tag as it meets it, opening the file and demuxing it."""
    size = os.path.getsize(path)
    count, walked = 0, 0
    with open(path, "rb") as handle:
        head = handle.read(9)
        position = struct.unpack(">I", head[5:9])[0] + 4 if len(head) == 9 else size
        while position + 11 <= size and count <= most:
            walked += 1
            if walked > MAX_ELEMENTS:
                break
            handle.seek(position)
            tag = handle.read(11)
            if len(tag) < 11:
                break
            length = int.from_bytes(tag[1:4], "big")
            if tag[0] & 0x1F == _FLV_SCRIPT:
                count += _amf_keys(handle.read(length), most - count)
            position += 11 + length + 4
    return count


def _amf_keys(data: bytes, most: int) -> int:
    """Keys of the objects and ECMA arrays in AMF0 ``data`` (values of strict arrays have none).

    Walked with an explicit stack of what each open container still holds; bytes that do not parse
    end the walk."""
    count, at = 0, 0
    stack: list[str] = ["values"]  # the open containers: "values" (a sequence of values), "keys" (key, value pairs)
    budget = [len(data)]  # values still to read in the innermost "values" container
    try:
        while stack and at < len(data) and count <= most:
            if stack[-1] == "keys":
                length = struct.unpack(">H", data[at:at + 2])[0]
                if length == 0 and data[at + 2:at + 3] == b"\x09":  # the object's end
                    at += 3
                    stack.pop()
                    budget.pop()
                    continue
                at += 2 + length
                count += 1
            else:
                if budget[-1] <= 0:
                    stack.pop()
                    budget.pop()
                    continue
                budget[-1] -= 1
            kind = data[at]
            at += 1
            if kind == 0:  # number
                at += 8
            elif kind == 1:  # boolean
                at += 1
            elif kind == 2:  # string
                at += 2 + struct.unpack(">H", data[at:at + 2])[0]
            elif kind == 12:  # long string
                at += 4 + struct.unpack(">I", data[at:at + 4])[0]
            elif kind == 11:  # date
                at += 10
            elif kind == 7:  # reference
                at += 2
            elif kind in (3, 8):  # object; ECMA array (its count is a hint, the end marker ends it)
                at += 4 if kind == 8 else 0
                stack.append("keys")
                budget.append(0)
            elif kind == 10:  # strict array
                stack.append("values")
                budget.append(struct.unpack(">I", data[at:at + 4])[0])
                at += 4
            elif kind in (5, 6, 9):  # null, undefined, a stray end marker
                continue
            else:
                break
    except (struct.error, IndexError):
        pass
    return count


def _guid(text: str) -> bytes:
    import uuid

    return uuid.UUID(text).bytes_le


_ASF_HEADER = _guid("75B22630-668E-11CF-A6D9-00AA0062CE6C")
# ASF objects that hold tags, each with a 16-bit count of them after its 24-byte object header, and
# the fewest bytes one takes (an extended content descriptor: three 16-bit lengths; a metadata record 12).
_ASF_TAG_OBJECTS = ((_guid("D2D0A440-E307-11D2-97F0-00A0C95EA850"), 6),  # extended content description
                    (_guid("C5F8CBEA-5BAF-4877-8467-AA8C44FA4CCA"), 12),  # metadata
                    (_guid("44231C94-9498-49D1-A141-1D134E457054"), 12))  # metadata library
_ASF_HEAD_BYTES = 64 << 20  # a header read at most: 64 MiB holds millions of tags


def _asf_tags(path: str) -> int:
    """The counts the ASF header's tag objects claim (wherever they lie in it: the header extension
    holds the metadata objects); a count its object could not hold is a damaged one's, not counted."""
    with open(path, "rb") as handle:
        head = handle.read(24)
        header_size = struct.unpack("<Q", head[16:24])[0] if len(head) == 24 else 0
        data = head + handle.read(max(0, min(header_size, _ASF_HEAD_BYTES) - 24))
    total = 0
    for guid, fewest_bytes in _ASF_TAG_OBJECTS:
        at = data.find(guid, 24)
        while 0 <= at <= len(data) - 26:
            object_size = struct.unpack("<Q", data[at + 16:at + 24])[0]
            claimed = struct.unpack("<H", data[at + 24:at + 26])[0]
            total += claimed if claimed * fewest_bytes <= object_size - 26 else 0
            at = data.find(guid, at + 1)
    return total


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
