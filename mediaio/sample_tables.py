"""How big an index an MP4 or MOV file makes its demuxer build, read from its box headers alone.

ffmpeg's MP4 demuxer builds an index entry (~36 bytes with its tables) for every sample that a
track's sample table claims, as it opens the file, before anything is checked or decoded.  The
claim is a number in a box header: a 121 KB clip with one extra track claiming 80 million
constant-size samples took 2.9 GB and 23 s to open, on every open.  This module walks the box
tree (ISO/IEC 14496-12) with seeks and small reads and adds up what each track and fragment
claims, so a clip can be refused before it is opened (:func:`mediaio.clips.probe`).

Only counts are read, never whole tables: a legitimate hour-long clip's tables are tens of MB.
Bytes that do not parse as boxes end the walk with what was counted so far; the demuxer then
says what is wrong with them.  The box walk (:func:`boxes`, :func:`find_box`) is shared with
mediaio/metadata_tags.py, which counts an MP4's tags.  Imports only the standard library.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Iterator

# First boxes an MP4, MOV or 3GP file starts with (QuickTime files may start with any of these).
_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"sidx"})
# Top-level boxes walked at most: a real fragmented clip has two per fragment (a few thousand an hour).
MAX_TOP_LEVEL_BOXES = 1_000_000
# Uncompressed audio (one sample per PCM frame) is indexed in pieces of up to this many samples.
_PCM_SAMPLES_PER_ENTRY = 1024


def is_iso_media(path: str) -> bool:
    """Whether the file starts like an MP4, MOV or 3GP (an ISO base media file)."""
    with open(path, "rb") as handle:
        return handle.read(8)[4:8] in _FIRST_BOXES


def index_entries(path: str, most: int) -> int:
    """Index entries the file's tracks and fragments claim, counted until the count passes ``most``."""
    size = os.path.getsize(path)
    total = 0
    with open(path, "rb") as handle:
        for visited, (kind, body, end) in enumerate(boxes(handle, 0, size)):
            if visited >= MAX_TOP_LEVEL_BOXES or total > most:
                break
            if kind == b"moov":
                movie = find_box(handle, body, end, (b"mvhd",))
                movie_timescale = _timescale_and_duration(handle, movie)[0] if movie else 0
                for name, trak, trak_end in boxes(handle, body, end):
                    if name == b"trak" and total <= most:
                        samples = _track_entries(handle, trak, trak_end)
                        total += _edited_entries(handle, trak, trak_end, samples, movie_timescale, most - total)
            elif kind == b"moof":
                total += _fragment_entries(handle, body, end)
    return total


def boxes(handle: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(kind, body start, box end) of each box between ``start`` and ``end``."""
    position = start
    while position + 8 <= end:
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            return
        size, kind = struct.unpack(">I4s", header)
        body = position + 8
        if size == 1:  # a 64-bit size follows
            large = handle.read(8)
            if len(large) < 8:
                return
            size, body = struct.unpack(">Q", large)[0], position + 16
        elif size == 0:  # to the end of the enclosing box (or file)
            size = end - position
        if size < body - position:
            return
        yield kind, body, min(position + size, end)
        position += size


def find_box(handle: BinaryIO, start: int, end: int, path: tuple[bytes, ...]) -> tuple[int, int] | None:
    """(body start, end) of the first box at ``path`` below ``start``..``end``, or None."""
    for kind, body, box_end in boxes(handle, start, end):
        if kind == path[0]:
            return (body, box_end) if len(path) == 1 else find_box(handle, body, box_end, path[1:])
    return None


def _read(handle: BinaryIO, position: int, count: int) -> bytes:
    handle.seek(position)
    return handle.read(count)


def _track_entries(handle: BinaryIO, start: int, end: int) -> int:
    """Index entries one track's sample table makes: one per sample, or per piece of a PCM track's chunks."""
    table = find_box(handle, start, end, (b"mdia", b"minf", b"stbl"))
    if table is None:
        return 0
    samples, sample_size = 0, 0
    sizes = find_box(handle, *table, (b"stsz",))
    if sizes is not None:
        fields = _read(handle, sizes[0], 12)
        if len(fields) == 12:
            _, sample_size, samples = struct.unpack(">III", fields)
    else:
        compact = find_box(handle, *table, (b"stz2",))
        if compact is not None:
            fields = _read(handle, compact[0], 12)
            if len(fields) == 12:
                samples = struct.unpack(">I", fields[8:12])[0]
    if sample_size and _is_pcm_timing(handle, start, end, table):
        chunks = find_box(handle, *table, (b"stco",)) or find_box(handle, *table, (b"co64",))
        chunk_count = 0
        if chunks is not None:
            fields = _read(handle, chunks[0], 8)
            chunk_count = struct.unpack(">I", fields[4:8])[0] if len(fields) == 8 else 0
        return chunk_count + samples // _PCM_SAMPLES_PER_ENTRY
    return samples


# Edit list entries read at a time (12 or 20 bytes each).
_EDITS_PER_READ = 65536


def _timescale_and_duration(handle: BinaryIO, box: tuple[int, int]) -> tuple[int, int]:
    """(timescale, duration) of an ``mvhd`` or ``mdhd`` box's body; zeros where it is cut short."""
    fields = _read(handle, box[0], 32)
    if len(fields) < 20:
        return 0, 0
    if fields[0] == 1 and len(fields) >= 32:  # 64-bit times
        return struct.unpack(">I", fields[20:24])[0], struct.unpack(">Q", fields[24:32])[0]
    return struct.unpack(">II", fields[12:20])


def _edited_entries(handle: BinaryIO, start: int, end: int, samples: int, movie_timescale: int, most: int) -> int:
    """Index entries a track of ``samples`` samples makes through its edit list (``edts``/``elst``).

    ffmpeg's index holds each edit's own samples, one after another, plus one entry per edit:
    a phone's trim holds at most the track's samples, but an edit list that plays the whole track
    a million times (12 MB of edits in a 12 MB clip) made a 30-frame clip's index 30 million entries,
    1.2 GB and 9 s on each open.  Each edit's share of the track is its length over the track's
    (empty edits, a delay, hold none); a track of unknown length counts each edit as the whole track.
    """
    edits = find_box(handle, start, end, (b"edts", b"elst"))
    if edits is None:
        return samples
    header = _read(handle, edits[0], 8)
    if len(header) < 8:
        return samples
    entry_size = 20 if header[0] == 1 else 12
    count = min(struct.unpack(">I", header[4:8])[0], (edits[1] - edits[0] - 8) // entry_size)
    media = find_box(handle, start, end, (b"mdia", b"mdhd"))
    timescale, duration = _timescale_and_duration(handle, media) if media else (0, 0)
    track_seconds = duration / timescale if timescale and duration else 0.0
    layout = ">QqI" if entry_size == 20 else ">IiI"
    shares, position, read = 0.0, edits[0] + 8, 0
    while read < count and max(samples, samples * shares) + read <= most:
        block = _read(handle, position, min(_EDITS_PER_READ, count - read) * entry_size)
        if len(block) < entry_size:
            break
        for length, media_time, _ in struct.iter_unpack(layout, block[:len(block) // entry_size * entry_size]):
            if media_time < 0:  # an empty edit: time with no samples
                continue
            if not (track_seconds and movie_timescale):
                shares += 1.0
                continue
            left = track_seconds - media_time / timescale
            # A zero-length edit is read as playing the rest of the track: a million of them took 1.1 GB.
            played = left if length == 0 else min(length / movie_timescale, left)
            shares += max(0.0, played) / track_seconds
        read += len(block) // entry_size
        position += len(block)
    return int(max(samples, samples * shares)) + read


def _is_pcm_timing(handle: BinaryIO, start: int, end: int, table: tuple[int, int]) -> bool:
    """A sound track timed one sample per tick (one stts entry of duration 1): ffmpeg indexes it by chunk."""
    handler = find_box(handle, start, end, (b"mdia", b"hdlr"))
    if handler is None or _read(handle, handler[0] + 8, 4) != b"soun":
        return False
    timing = find_box(handle, *table, (b"stts",))
    if timing is None:
        return False
    fields = _read(handle, timing[0], 16)
    return len(fields) == 16 and struct.unpack(">II", fields[4:8] + fields[12:16]) == (1, 1)


def _fragment_entries(handle: BinaryIO, start: int, end: int) -> int:
    """Samples a movie fragment's track runs claim."""
    total = 0
    for kind, body, box_end in boxes(handle, start, end):
        if kind != b"traf":
            continue
        for run_kind, run, _ in boxes(handle, body, box_end):
            if run_kind == b"trun":
                fields = _read(handle, run, 8)
                total += struct.unpack(">I", fields[4:8])[0] if len(fields) == 8 else 0
    return total
