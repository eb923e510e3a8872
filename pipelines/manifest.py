"""The manifest: one Parquet row per meme, checked before any work starts.

Job-level problems (a missing required column, a column of the wrong type) raise
:class:`ManifestError` naming the column: nothing can run.  Row-level problems (a bad or
duplicate id, an empty URI, a negative seed) raise :class:`RowError` from :func:`parse_row`:
that row fails, the others go on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from mediaio import storage


class ManifestError(Exception):
    """The manifest as a whole cannot be used (job-level)."""


class RowError(Exception):
    """One manifest row cannot be used; the row fails, the job goes on."""


REQUIRED_COLUMNS: dict[str, str] = {"id": "string", "reference_uri": "string", "driving_uri": "string"}
OPTIONAL_COLUMNS: dict[str, str] = {
    "output_uri": "string",
    "engine": "string",
    "seed": "integer",
    "fps": "number",
    "max_seconds": "number",
    "steps": "integer",
    "guidance": "number",
    "prompt": "string",
    "lora": "string",
    "lora_scale": "number",
}

ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_SEED = 2**63 - 1


def _type_matches(arrow_type: pa.DataType, kind: str) -> bool:
    if pa.types.is_null(arrow_type):  # an all-null optional column is fine
        return True
    if kind == "string":  # binary is accepted so that a row with bytes that are not UTF-8 fails alone
        return any(check(arrow_type) for check in (pa.types.is_string, pa.types.is_large_string,
                                                   pa.types.is_binary, pa.types.is_large_binary))
    if kind == "integer":
        return pa.types.is_integer(arrow_type)
    if kind == "number":
        return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
    raise ValueError(kind)


def check_schema(schema: pa.Schema) -> None:
    """Raise ManifestError naming the first missing required column or mistyped known column."""
    names = set(schema.names)
    for column, kind in REQUIRED_COLUMNS.items():
        if column not in names:
            raise ManifestError(f"manifest has no required column {column!r} (columns: {sorted(names)})")
    for column, kind in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items():
        if column in names and not _type_matches(schema.field(column).type, kind):
            raise ManifestError(
                f"manifest column {column!r} has type {schema.field(column).type}, expected {kind}"
            )


def read_manifest(uri: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Read and schema-check a Parquet manifest from a local path or fsspec URI."""
    try:
        fs, path = storage.filesystem_for(uri, storage_options)
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
    except FileNotFoundError as exc:
        raise ManifestError(f"manifest not found: {storage.redact(uri)}") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"manifest {storage.redact(uri)} is not readable Parquet: {exc}") from exc
    check_schema(table.schema)
    return table


@dataclass(frozen=True)
class MemeSpec:
    """One validated manifest row: what to render and how."""

    row_index: int
    id: str
    reference_uri: str
    driving_uri: str
    output_uri: str | None = None
    engine: str | None = None
    seed: int | None = None
    fps: float | None = None
    max_seconds: float | None = None
    steps: int | None = None
    guidance: float | None = None
    prompt: str | None = None
    lora: str | None = None
    lora_scale: float | None = None


def _optional_number(row: Mapping[str, Any], column: str) -> float | None:
    value = row.get(column)
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise RowError(f"{column} must be a finite number, got {value}")
    return value


def describe_id(raw_id: Any) -> str:
    """A printable form of a (possibly invalid) id for error messages and results."""
    if isinstance(raw_id, bytes):
        return raw_id.decode("utf-8", errors="backslashreplace")
    text = str(raw_id)
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _as_text(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RowError(f"{column} {describe_id(value)!r} is not valid UTF-8") from None
    return value


def parse_row(row_index: int, row: Mapping[str, Any]) -> MemeSpec:
    """Validate one manifest row's values; RowError names the column and the cause."""
    row = {**row, **{column: _as_text(row, column) for column, kind in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items()
                     if kind == "string"}}
    raw_id = row.get("id")
    if not isinstance(raw_id, str) or not ID_PATTERN.fullmatch(raw_id) or raw_id in (".", ".."):
        raise RowError(
            f"id {describe_id(raw_id)!r} is invalid: use 1 to 128 letters, digits, '.', '_' or '-'"
        )
    for column in ("reference_uri", "driving_uri"):
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            raise RowError(f"{column} is empty")
    seed = row.get("seed")
    if seed is not None and not 0 <= int(seed) <= MAX_SEED:
        raise RowError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    steps = row.get("steps")
    if steps is not None and not 1 <= int(steps) <= 1000:
        raise RowError(f"steps must be between 1 and 1000, got {steps}")
    fps = _optional_number(row, "fps")
    if fps is not None and not 0 < fps <= 60:
        raise RowError(f"fps must be in (0, 60], got {fps}")
    max_seconds = _optional_number(row, "max_seconds")
    if max_seconds is not None and max_seconds <= 0:
        raise RowError(f"max_seconds must be positive, got {max_seconds}")
    lora_scale = _optional_number(row, "lora_scale")
    if lora_scale is not None and not -10 <= lora_scale <= 10:
        raise RowError(f"lora_scale must be in [-10, 10], got {lora_scale}")
    guidance = _optional_number(row, "guidance")
    if guidance is not None and not 0 <= guidance <= 50:
        raise RowError(f"guidance must be in [0, 50], got {guidance}")
    output_uri = row.get("output_uri") or None
    engine = row.get("engine") or None
    return MemeSpec(
        row_index=row_index,
        id=raw_id,
        reference_uri=row["reference_uri"].strip(),
        driving_uri=row["driving_uri"].strip(),
        output_uri=output_uri.strip() if output_uri else None,
        engine=engine,
        seed=None if seed is None else int(seed),
        fps=fps,
        max_seconds=max_seconds,
        steps=None if steps is None else int(steps),
        guidance=guidance,
        prompt=row.get("prompt"),
        lora=(row.get("lora") or "").strip() or None,
        lora_scale=lora_scale,
    )


def first_rows_by_id(ids: Iterable[Any]) -> dict[str, int]:
    """Map each id to the index of its first row, so later rows with the same id can fail."""
    first: dict[str, int] = {}
    for index, raw_id in enumerate(ids):
        key = describe_id(raw_id)
        first.setdefault(key, index)
    return first
