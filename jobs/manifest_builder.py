"""Writing manifests: from a folder of portraits and a folder of driving clips, or from a CSV.

The builder refuses what would make a manifest of rows that all fail (a CSV header without the
required columns, a row with an empty id or URI), so the mistake is named where it was made,
not as a failed row at render time.  It writes what the renderer reads back the same way:
folders are scanned for the suffixes the media readers accept, ids follow the renderer's id rule
and are unique, and relative paths are written to resolve from the manifest's own folder.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import itertools
import logging
import os
import re
import unicodedata
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from mediaio import storage
from mediaio.clips import VIDEO_SUFFIXES
from mediaio.media import IMAGE_SUFFIXES
from pipelines.manifest import (
    BESIDE_MANIFEST_COLUMNS,
    CELL_LIMITS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ManifestError,
    check_schema,
    file_kind,
    json_hint,
    misspelling_of,
)
from pipelines.outputs import inspect_existing_output
from reporting.results import path_tails, relative_to, videos_made_in

logger = logging.getLogger(__name__)

_ARROW_TYPES = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64()}

# Delimiters a CSV may use, tried in this order: spreadsheets in many locales write ';', and a
# "CSV" exported as text is often tab-separated.  The one whose header names every required
# column is used.
CSV_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
# Letters that Unicode does not decompose into an ASCII letter and a mark, spelt as ASCII.
_ASCII_SPELLINGS = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                                  "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
                                  "ı": "i"})
_ID_HASH_CHARS = 8  # hex digits that keep apart names whose letters an id cannot spell (日本, 中国)
_FALLBACK_ID = "meme"
_NAMED_SKIPS = 5  # left-out folder entries named in the warning; the rest are counted


def _files(folder: str, suffixes: Iterable[str], storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The media files of ``folder`` (a local folder or a bucket prefix) with one of ``suffixes``, in name order.

    Hidden names are left out: a folder copied from a Mac holds an AppleDouble ``._name.jpg`` beside
    each file (metadata, not an image), whose stem is the real file's and which sorts before it, so
    it would take the real file's id and shift every ``zip`` pair.  So are sub-folders and empty
    files, which no reader opens.  What was left out is logged once, named.
    """
    suffixes = tuple(suffixes)
    try:
        entries = storage.folder_entries(folder, storage_options)
    except storage.NotFoundError:
        if storage.is_local_uri(folder) and os.path.isfile(storage.normalize(folder)):
            raise ManifestError(f"{storage.printable(folder)} is a file, not a folder: give the folder that holds "
                                "the files (or list rows in a CSV with --csv)") from None
        raise ManifestError(f"no folder {storage.printable(folder)}") from None
    found, skipped = [], []
    for entry in entries:
        if not entry.name.lower().endswith(suffixes):
            if not entry.is_file and not entry.name.startswith("."):  # a sub-folder: not searched, but said
                skipped.append(f"{entry.name}/ (a sub-folder: not searched)")
            continue
        if entry.name.startswith("."):
            skipped.append(f"{entry.name} (hidden)")
        elif not entry.is_file:
            skipped.append(f"{entry.name} (not a file)")
        elif entry.size == 0:
            skipped.append(f"{entry.name} (empty)")
        else:
            found.append(entry.uri)
    if skipped:
        shown = ", ".join(skipped[:_NAMED_SKIPS]) + (f" and {len(skipped) - _NAMED_SKIPS} more"
                                                     if len(skipped) > _NAMED_SKIPS else "")
        logger.warning("%d names in %s were left out: %s", len(skipped), folder, shown)
    if not found:
        raise ManifestError(f"no {'/'.join(suffixes)} files in {folder}")
    return found


def _ascii_stem(path: str) -> tuple[str, bool]:
    """A file's stem in the id alphabet, and whether letters or digits were lost on the way.

    Accents are dropped (``été`` -> ``ete``), a few letters are spelt out (``ß`` -> ``ss``); the
    renderer's id rule is ASCII, so letters of other scripts cannot be kept.
    """
    stem = unicodedata.normalize("NFKD", os.path.splitext(os.path.basename(path))[0].translate(_ASCII_SPELLINGS))
    lost = any(char.isalnum() and not char.isascii() for char in stem)
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", stem.encode("ascii", "ignore").decode("ascii"))
    return text.strip("._-"), lost


def safe_id(*parts: str) -> str:
    """A manifest id from file stems that the renderer's id rule accepts (:data:`pipelines.manifest.ID_PATTERN`).

    Stems are joined with '-', transliterated to ASCII letters, digits, '.', '_' and '-'.  Where
    letters could not be spelt (another script), a short hash of the names keeps the id stable
    and apart from other such names.
    """
    stems = [_ascii_stem(part) for part in parts]
    text = "-".join(stem for stem, _ in stems if stem)
    suffix = ""
    if any(lost for _, lost in stems):
        names = "\0".join(unicodedata.normalize("NFC", os.path.basename(part)) for part in parts)
        suffix = "-" + hashlib.sha256(names.encode("utf-8")).hexdigest()[:_ID_HASH_CHARS]
    text = text[: CELL_LIMITS["id"] - len(suffix)].strip("._-") or _FALLBACK_ID
    return text + suffix


def unique_ids(ids: Iterable[str]) -> list[str]:
    """``ids`` with repeats made unique: the first keeps its id, later ones get ``-2``, ``-3``... in order.

    Names that differ only by extension (``a.jpg``, ``a.png``) or by accents give the same id; the
    renderer would fail every repeat as a duplicate.  Ids that differ only in case (``Cat``,
    ``cat``) count as repeats too: their videos would overwrite each other wherever names ignore
    case (a Mac's or Windows' disk, a folder synced there).  Each renamed id is logged.
    """
    ids = list(ids)
    taken = {meme_id.casefold() for meme_id in ids}
    seen: dict[str, str] = {}  # casefolded id -> the id that took it
    unique = []
    for meme_id in ids:
        if meme_id.casefold() in seen:
            first = seen[meme_id.casefold()]
            number = 2
            while True:
                suffix = f"-{number}"
                candidate = meme_id[: CELL_LIMITS["id"] - len(suffix)] + suffix
                if candidate.casefold() not in taken:
                    break
                number += 1
            if first == meme_id:
                logger.warning("id %r is made by more than one row: this one is %r", meme_id, candidate)
            else:
                logger.warning("id %r differs only in letter case from %r (one file on a Mac's or Windows' disk): "
                               "this one is %r", meme_id, first, candidate)
            taken.add(candidate.casefold())
            meme_id = candidate
        seen[meme_id.casefold()] = meme_id
        unique.append(meme_id)
    return unique


def _same_folder(first: str, second: str) -> bool:
    if storage.is_local_uri(first) and storage.is_local_uri(second):
        return os.path.realpath(storage.normalize(first)) == os.path.realpath(storage.normalize(second))
    return storage.normalize(first).rstrip("/") == storage.normalize(second).rstrip("/")


def _without_our_videos(clips: list[str], folder: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    """``clips`` less the memes this tool rendered into ``folder`` (its results tables record them).

    A folder that is also a job's ``--output`` holds the job's videos beside the clips: built again
    (a nightly "build, then render into the same folder"), they would drive new memes of memes.
    A folder moved or copied since keeps its tables, which name the videos where they were first
    written: a clip whose path in the folder ends one of those (``path_tails``) and that carries
    this tool's fingerprint is one of them.
    """
    made = set().union(*(path_tails(uri) for uri in videos_made_in(folder, storage_options)))
    if not made:
        return clips
    ours = [clip for clip in clips if relative_to(clip, folder) in made
            and inspect_existing_output(clip, "0" * 32, storage_options).ours]
    if ours:
        logger.warning("%d video(s) in %s are memes this tool rendered there (its results table records them): left "
                       "out as driving clips", len(ours), folder)
    kept = [clip for clip in clips if clip not in set(ours)]
    if not kept:
        raise ManifestError(f"no driving clips in {folder} apart from the memes rendered there")
    return kept


def pair_folders(portraits: str, drivers: str, pairing: str = "zip",
                 storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows pairing portraits with driving clips: ``zip`` (in name order, cycling the shorter) or ``all``."""
    images = _files(portraits, IMAGE_SUFFIXES, storage_options)
    clips = _without_our_videos(_files(drivers, VIDEO_SUFFIXES, storage_options), drivers, storage_options)
    if _same_folder(portraits, drivers):
        # One mixed folder: a file both readers open (a GIF) is a clip there, never its own portrait.
        images = [image for image in images if image not in set(clips)]
        if not images:
            raise ManifestError(f"no portraits in {portraits} apart from its clips")
    if pairing == "all":
        pairs = list(itertools.product(images, clips))
    elif pairing == "zip":
        count = max(len(images), len(clips))
        pairs = [(images[i % len(images)], clips[i % len(clips)]) for i in range(count)]
    else:
        raise ManifestError(f"unknown pairing {pairing!r}: use zip or all")
    ids = unique_ids(safe_id(clip, image) for image, clip in pairs)
    return [{"id": meme_id, "reference_uri": image, "driving_uri": clip}
            for meme_id, (image, clip) in zip(ids, pairs)]


def _header(text: str, delimiter: str) -> list[str]:
    return [name.strip() for name in next(csv.reader(io.StringIO(text), delimiter=delimiter), [])]


def csv_delimiter(text: str) -> str:
    """The delimiter of :data:`CSV_DELIMITERS` whose header names every required column.

    ManifestError otherwise, naming the missing columns and the header found, with a hint when
    the header looks split by another delimiter or a name looks misspelt.
    """
    for delimiter in CSV_DELIMITERS:
        if set(REQUIRED_COLUMNS) <= set(_header(text, delimiter)):
            return delimiter
    header = _header(text, ",")
    if not any(header):
        raise ManifestError(f"CSV is empty: its first line must be a header naming {', '.join(REQUIRED_COLUMNS)}")
    hints = []
    widest = max(CSV_DELIMITERS, key=lambda delimiter: (len(_header(text, delimiter)), delimiter == ","))
    if widest != ",":
        header = _header(text, widest)
        hints.append(f"the header looks {_DELIMITER_NAMES[widest]}-separated")
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    for column in missing:
        # The render's own rule first (case, spaces and punctuation aside: a spreadsheet's 'Driving URI'),
        # so a header the render would call a misspelling gets the same hint here, for every column.
        close = [name for name in header if misspelling_of(name, header) == column] or \
            difflib.get_close_matches(column, header, n=1, cutoff=0.6)
        if close:
            hints.append(f"did you mean {column!r} for {close[0]!r}?")
    shown = [storage.printable(name)[:64] for name in header[:20]]
    raise ManifestError(f"CSV header has no required column(s) {', '.join(missing)} (header: {shown})"
                        + (f"; {'; '.join(hints)}" if hints else ""))


def _whole_number(text: str) -> int:
    """An integer cell: ``3``, or ``3.0`` as pandas writes an integer column with gaps (float64); ValueError else."""
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise
        return int(number)


def csv_text(data: bytes, uri: str) -> str:
    """A CSV file's text: UTF-8 (with or without a BOM) or UTF-16 with its BOM (Excel's "Unicode Text").

    Anything else is refused naming where it stops being UTF-8 and how to save it, rather than
    guessing a legacy code page, which would spell names wrong without a word.
    """
    kind = file_kind(data[:4096])
    if kind == "a Parquet file":
        raise ManifestError(f"--csv {storage.printable(uri)} is a Parquet file, a manifest already: render it "
                            f"(`hellomeme-batch render {storage.printable(uri)} --output DIR`)")
    if "spreadsheet" in kind:
        raise ManifestError(f"--csv {storage.printable(uri)} is {kind}, not a CSV: save the sheet as 'CSV UTF-8' "
                            "(Excel: File > Save As) and give that file")
    if kind == "JSON":
        raise ManifestError(f"--csv {storage.printable(uri)} looks like JSON, not a CSV: {json_hint(uri)}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ManifestError(f"CSV {storage.printable(uri)} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line "
                            f"{line}): save it as 'CSV UTF-8' (Excel) or convert it, e.g. `iconv -f cp1252 -t utf-8`") \
            from None


def rows_from_csv(text: str) -> list[dict[str, Any]]:
    """Rows from CSV text with a header naming manifest columns; numbers are converted by column.

    The header must name every required column (see :func:`csv_delimiter`, which also picks the
    delimiter), and every row must have a value in each.
    """
    delimiter = csv_delimiter(text)
    if delimiter != ",":
        logger.info("CSV is %s-separated", _DELIMITER_NAMES[delimiter])
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [name.strip() for name in next(reader)]
    while header and not header[-1]:
        header.pop()  # Excel's trailing empty columns ("a,b,c,,,"): no column at all
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ManifestError(f"CSV header names {', '.join(map(repr, repeated))} more than once")
    known = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    rows = []
    for record in reader:
        line = reader.line_num
        if not any(field.strip() for field in record):
            continue  # a blank line
        while len(record) > len(header) and not record[-1].strip():
            record.pop()  # the trailing empty cells of those columns
        if len(record) > len(header):
            raise ManifestError(f"CSV line {line} has more fields than the header")
        row: dict[str, Any] = {}
        for column, value in itertools.zip_longest(header, record, fillvalue=""):
            value = value.strip()
            kind = known.get(column, "string")
            if kind == "number" and delimiter != "," and re.fullmatch(r"[-+]?\d+,\d+", value):
                value = value.replace(",", ".")  # a decimal comma, as European spreadsheets write "1,5"
            try:
                row[column] = None if value == "" else _whole_number(value) if kind == "integer" else (
                    float(value) if kind == "number" else value)
            except ValueError:
                article = "an" if kind[0] in "aeiou" else "a"
                raise ManifestError(f"CSV line {line}: column {column!r} expects {article} {kind}, "
                                    f"got {value!r}") from None
        empty = [column for column in REQUIRED_COLUMNS if row[column] is None]
        if empty:
            raise ManifestError(f"CSV line {line}: {', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty")
        rows.append(row)
    if not rows:
        raise ManifestError("CSV has a header but no rows")
    return rows


def rebase_relative_paths(rows: Iterable[Mapping[str, Any]], source_uri: str,
                          manifest_uri: str) -> list[dict[str, Any]]:
    """Rows whose relative paths, written beside ``source_uri`` (a CSV), resolve the same from ``manifest_uri``.

    The renderer takes a manifest's relative paths beside the manifest
    (:data:`pipelines.manifest.BESIDE_MANIFEST_COLUMNS`), and a CSV's author wrote them beside
    the CSV.  Each is written relative to the manifest's folder when both are local files (the
    tree can still move as a whole), else absolute.
    """
    local = storage.is_local_uri(manifest_uri)
    manifest_folder = os.path.dirname(storage.normalize(manifest_uri)) if local else ""
    rebased = []
    for number, row in enumerate(rows, start=1):
        row = dict(row)
        for column in BESIDE_MANIFEST_COLUMNS:
            value = row.get(column)
            if not isinstance(value, str):
                continue
            try:
                resolved = storage.relative_to_file(value, source_uri)
            except storage.StorageError as exc:  # which of thousands of rows: its number, id and column
                raise ManifestError(f"row {number} (id {storage.printable(str(row.get('id')))[:64]}), {column}: "
                                    f"{exc}") from None
            if resolved == value:  # absolute, home-relative or a URI: the same from anywhere
                continue
            if local and storage.is_local_uri(resolved):
                resolved = os.path.relpath(storage.normalize(resolved), manifest_folder)
            row[column] = resolved
        rebased.append(row)
    return rebased


def rows_from_csv_file(csv_uri: str, manifest_uri: str,
                       storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rows of the CSV at ``csv_uri``, for a manifest to be written at ``manifest_uri``."""
    text = csv_text(storage.read_bytes(csv_uri, storage_options), csv_uri)
    return rebase_relative_paths(rows_from_csv(text), csv_uri, manifest_uri)


def manifest_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """An Arrow table with the manifest's column types (unknown columns kept as strings)."""
    rows = list(rows)
    for index, row in enumerate(rows):  # the job would fail these rows; say so while the manifest is made
        for column, limit in CELL_LIMITS.items():
            value = row.get(column)
            if isinstance(value, str) and len(value) > limit:
                raise ManifestError(f"row {index}: {column} is {len(value)} characters long, over the limit of {limit}")
    columns = list(dict.fromkeys(itertools.chain(REQUIRED_COLUMNS, *[row.keys() for row in rows])))
    known = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    schema = pa.schema([(name, _ARROW_TYPES[known.get(name, "string")]) for name in columns])
    table = pa.Table.from_pylist([{name: row.get(name) for name in columns} for row in rows], schema=schema)
    check_schema(table.schema)
    return table


def write_manifest(rows: Iterable[Mapping[str, Any]], uri: str,
                   storage_options: Mapping[str, Any] | None = None) -> int:
    """Write rows as a Parquet manifest; returns the number of rows."""
    table = manifest_table(rows)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_replace(uri, buffer.getvalue(), storage_options)
    return table.num_rows
