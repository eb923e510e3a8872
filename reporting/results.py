"""The results table: one row per manifest row, written beside the outputs as Parquet."""

from __future__ import annotations

import io
import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from mediaio import storage

logger = logging.getLogger(__name__)
RESULTS_DIR = "_results"
RESULTS_FILE = "results.parquet"

RESULTS_SCHEMA = pa.schema([
    ("row_index", pa.int64()),
    ("id", pa.string()),
    ("status", pa.string()),
    ("output_uri", pa.string()),
    ("error", pa.string()),
    ("frames", pa.int64()),
    ("engine", pa.string()),
    ("seconds_decode", pa.float64()),
    ("seconds_pose", pa.float64()),
    ("seconds_render", pa.float64()),
    ("seconds_encode", pa.float64()),
    ("seconds_write", pa.float64()),
])


@dataclass(frozen=True)
class Summary:
    """Counts of a finished job."""

    ok: int
    failed: int
    skipped: int
    results_uri: str
    not_run: int = 0  # the job was stopped before these rows finished

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.skipped + self.not_run


STAGES = ("decode", "pose", "render", "encode", "write")
PREVIEW_COLUMNS = ("preview_meme", "preview_reference", "preview_driving")


def _text_or_none(value: Any) -> str | None:
    """A text column's value, or None where it is missing: None, empty, or the NaN that a missing value
    becomes when a batch passed through pandas."""
    return value if isinstance(value, str) and value else None


def _number_or_zero(value: Any) -> float:
    """A count or duration, 0 where it is missing (None or NaN)."""
    number = float(value) if isinstance(value, numbers.Real) else 0.0
    return number if math.isfinite(number) else 0.0


def result_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the results table (plus its preview paths, which the report reads) from a finished row."""
    output_uri = _text_or_none(row.get("output_uri"))
    result: dict[str, Any] = {
        "row_index": int(row["row_index"]),
        "id": row["id"],
        "status": row["status"],
        "output_uri": storage.redact(output_uri) if output_uri else None,
        "error": _text_or_none(row.get("error")),
        "frames": int(_number_or_zero(row.get("frames"))),
        "engine": _text_or_none(row.get("engine")),
    }
    for stage in STAGES:
        result[f"seconds_{stage}"] = round(_number_or_zero(row.get(f"seconds_{stage}")), 4)
    for column in PREVIEW_COLUMNS:
        result[column] = _text_or_none(row.get(column))
    return result


def results_uri(output_uri: str) -> str:
    return storage.join(output_uri, RESULTS_DIR, RESULTS_FILE)


def write_results(rows: Iterable[Mapping[str, Any]], output_uri: str,
                  storage_options: Mapping[str, Any] | None = None) -> Summary:
    """Write the results table (sorted by manifest row) in one step and count the outcomes."""
    ordered = sorted(rows, key=lambda row: row["row_index"])
    table = pa.Table.from_pylist([{name: row.get(name) for name in RESULTS_SCHEMA.names} for row in ordered],
                                 schema=RESULTS_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    uri = results_uri(output_uri)
    storage.write_replace(uri, buffer.getvalue(), storage_options)
    statuses = [row["status"] for row in ordered]
    return Summary(ok=statuses.count("ok"), failed=statuses.count("failed"), skipped=statuses.count("skipped"),
                   not_run=statuses.count("not_run"),
                   results_uri=uri)


RESULTS_MAX_BYTES = 256 * 2**20  # a results table larger than this is not read back (20000 rows: ~2 MB)
CARRIED_COLUMNS = ("frames", "engine", *(f"seconds_{stage}" for stage in STAGES))


def with_earlier_records(rows: Iterable[Mapping[str, Any]], output_uri: str,
                         storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``rows``, each skipped one with the frames, engine and stage seconds the run that made its video
    recorded (from the results table already under ``output_uri``), so a rerun's table still says what
    every video holds.  Rows the earlier table does not know keep their zeros."""
    rows = [dict(row) for row in rows]
    if not any(row.get("status") == "skipped" for row in rows):
        return rows
    try:
        earlier = read_results(output_uri, storage_options).to_pylist()
    except Exception as exc:  # no earlier table, or one we cannot read: nothing to carry over
        logger.debug("no earlier results to carry over: %s", type(exc).__name__)
        return rows
    made = {row.get("output_uri"): row for row in earlier
            if row.get("status") in ("ok", "skipped") and (row.get("frames") or 0) > 0}
    for row in rows:
        before = made.get(row.get("output_uri")) if row.get("status") == "skipped" else None
        if before is not None:
            row.update({name: before.get(name) for name in CARRIED_COLUMNS if before.get(name) is not None})
    return rows


def read_results(output_uri: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """The results table under ``output_uri`` (a bounded read: a huge file there is not one of ours)."""
    data = storage.read_bytes(results_uri(output_uri), storage_options, max_bytes=RESULTS_MAX_BYTES)
    return pq.read_table(io.BytesIO(data))
