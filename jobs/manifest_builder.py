"""Writing manifests: from a folder of portraits and a folder of driving clips, or from a CSV."""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from mediaio import storage
from pipelines.manifest import CELL_LIMITS, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, ManifestError, check_schema

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")

_ARROW_TYPES = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64()}


def _files(folder: str, suffixes: tuple[str, ...]) -> list[str]:
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(suffixes))
    if not names:
        raise ManifestError(f"no {'/'.join(suffixes)} files in {folder}")
    return [os.path.abspath(os.path.join(folder, name)) for name in names]


def safe_id(*parts: str) -> str:
    """A manifest id from file stems: letters, digits, '.', '_' and '-' only, at most the id cell limit."""
    text = "-".join(os.path.splitext(os.path.basename(part))[0] for part in parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:CELL_LIMITS["id"]] or "meme"


def pair_folders(portraits: str, drivers: str, pairing: str = "zip") -> list[dict[str, Any]]:
    """Rows pairing portraits with driving clips: ``zip`` (in name order, cycling the shorter) or ``all``."""
    images = _files(portraits, IMAGE_SUFFIXES)
    clips = _files(drivers, VIDEO_SUFFIXES)
    if pairing == "all":
        pairs = list(itertools.product(images, clips))
    elif pairing == "zip":
        count = max(len(images), len(clips))
        pairs = [(images[i % len(images)], clips[i % len(clips)]) for i in range(count)]
    else:
        raise ManifestError(f"unknown pairing {pairing!r}: use zip or all")
    return [{"id": safe_id(clip, image), "reference_uri": image, "driving_uri": clip} for image, clip in pairs]


def rows_from_csv(text: str) -> list[dict[str, Any]]:
    """Rows from CSV text with a header naming manifest columns; numbers are converted by column."""
    reader = csv.DictReader(io.StringIO(text))
    known = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    rows = []
    for line, record in enumerate(reader, start=2):
        row: dict[str, Any] = {}
        for column, value in record.items():
            if column is None:
                raise ManifestError(f"CSV line {line} has more fields than the header")
            value = (value or "").strip()
            kind = known.get(column, "string")
            try:
                row[column] = None if value == "" else int(value) if kind == "integer" else (
                    float(value) if kind == "number" else value)
            except ValueError:
                raise ManifestError(f"CSV line {line}: column {column!r} expects a {kind}, got {value!r}") from None
        rows.append(row)
    return rows


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
