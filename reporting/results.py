"""The results table: one row per manifest row, written beside the outputs as Parquet."""

from __future__ import annotations

import hashlib
import io
import logging
import math
import numbers
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from mediaio import clips, storage

logger = logging.getLogger(__name__)
RESULTS_DIR = "_results"
RESULTS_FILE = "results.parquet"
# Where the table of an earlier job of another manifest is kept when a job replaces it (see
# write_results), as results-<UTC time>-<digest>.parquet; reruns read the newest few of them back.
EARLIER_DIR = "earlier"
EARLIER_TABLES_READ = 20

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
    results_uri: str | None  # None: the table could not be written (the output's storage refused it)
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
    _keep_another_jobs_table(output_uri, {row.get("output_uri") for row in ordered}, storage_options)
    storage.write_replace(uri, buffer.getvalue(), storage_options)
    return count_results(ordered, uri)


def count_results(rows: Iterable[Mapping[str, Any]], results_uri: str | None) -> Summary:
    """The outcomes of ``rows``, and where their table was written (None: nowhere)."""
    statuses = [row["status"] for row in rows]
    return Summary(ok=statuses.count("ok"), failed=statuses.count("failed"), skipped=statuses.count("skipped"),
                   not_run=statuses.count("not_run"), results_uri=results_uri)


RESULTS_MAX_BYTES = 256 * 2**20  # a results table larger than this is not read back (20000 rows: ~2 MB)
CARRIED_COLUMNS = ("frames", "engine", *(f"seconds_{stage}" for stage in STAGES))


def _made_outputs(table: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The videos a results table says its job made or found made, by output URI."""
    return {row["output_uri"]: row for row in table
            if row.get("status") in ("ok", "skipped") and row.get("output_uri")}


KEPT_DIGEST_CHARS = 12  # of a kept table's SHA-256, in its name: an identical table is kept once
TAIL_DEPTH = 4  # folders above a video that still name it wherever its output folder moved


def path_tails(uri: str) -> set[str]:
    """A video's path tails (``a.mp4``, ``night2/a.mp4``, ...), by which a table recording it still knows it
    once its output folder is moved, copied, or reached another way (a symlink, a trailing slash)."""
    parts = storage.normalize(uri).rstrip("/").split("/")
    return {"/".join(parts[-count:]) for count in range(1, min(TAIL_DEPTH, len(parts)) + 1)}


def relative_to(uri: str, folder: str) -> str:
    """``uri``'s path under ``folder`` (the whole URI if it lies elsewhere)."""
    prefix = storage.normalize(folder).rstrip("/") + "/"
    uri = storage.normalize(uri)
    return uri[len(prefix):] if uri.startswith(prefix) else uri


def _keep_another_jobs_table(output_uri: str, outputs: set[str | None],
                             storage_options: Mapping[str, Any] | None) -> None:
    """Before this job's table replaces the one under ``output_uri``: keep that one under
    ``_results/earlier/`` if it records videos this job does not, with a warning naming where.

    A second manifest rendered into the same folder (a nightly batch) would otherwise leave the
    first batch's videos in no table, and their failure records gone.  A rerun of the same
    manifest records the same videos, so its table simply replaces the old one.
    """
    try:
        data = storage.read_bytes(results_uri(output_uri), storage_options, max_bytes=RESULTS_MAX_BYTES)
    except Exception as exc:  # nothing there, or nothing we can read: nothing to keep
        logger.debug("no earlier results table to keep: %s", type(exc).__name__)
        return
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - not Parquet: a file of the user's under our name
        table = None
    if table is None or not {"status", "output_uri"} <= set(table.schema.names):
        # Not a table this tool wrote (the user's own file under its name): kept, never lost.
        kept = _keep(data, output_uri, "foreign-{stamp}-results.parquet", storage_options)
        logger.warning("%s was not a results table of this tool's: it is kept as %s",
                       storage.redact(results_uri(output_uri)), storage.redact(kept))
        return
    # The same video wherever the folder was reached from: compared by its path under the output folder.
    ours = {relative_to(uri, output_uri) for uri in outputs if uri}
    others = [uri for uri in _made_outputs(table.to_pylist()) if uri not in outputs and not path_tails(uri) & ours]
    if not others:
        return
    # One copy of a table however often it is set aside (two manifests alternating into one folder).
    digest = hashlib.sha256(data).hexdigest()[:KEPT_DIGEST_CHARS]
    earlier_dir = storage.join(output_uri, RESULTS_DIR, EARLIER_DIR)
    if any(digest in name for name in storage.list_names(earlier_dir, storage_options)):
        return
    kept = _keep(data, output_uri, "results-{stamp}-" + digest + ".parquet", storage_options)
    logger.warning("the results table under %s records %d videos that this job's manifest does not make (another "
                   "job's, or rows no longer in this manifest): it is kept as %s", storage.redact(output_uri),
                   len(others), storage.redact(kept))


def _keep(data: bytes, output_uri: str, pattern: str, storage_options: Mapping[str, Any] | None) -> str:
    """Write ``data`` under ``_results/earlier/`` by ``pattern`` ({stamp}: now, UTC), never over a file; its URI."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for attempt in range(1, 100):
        name = pattern.format(stamp=stamp if attempt == 1 else f"{stamp}-{attempt}")
        kept = storage.join(output_uri, RESULTS_DIR, EARLIER_DIR, name)
        try:
            storage.write_create_only(kept, data, storage_options)
        except FileExistsError:
            continue
        return kept
    raise FileExistsError(f"no free name under {storage.redact(output_uri)}/{RESULTS_DIR}/{EARLIER_DIR}")


def with_earlier_records(rows: Iterable[Mapping[str, Any]], output_uri: str,
                         storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``rows``, each skipped one with the frames, engine and stage seconds the run that made its video
    recorded (from the results table already under ``output_uri``), so a rerun's table still says what
    every video holds.  Rows the earlier table does not know keep their zeros."""
    rows = [dict(row) for row in rows]
    if not any(row.get("status") == "skipped" for row in rows):
        return rows
    made: dict[str, Mapping[str, Any]] = {}
    by_tail: dict[str, Mapping[str, Any]] = {}  # the same, by path tail: the folder may have moved since
    for table in _earlier_tables(output_uri, storage_options):  # oldest first: the newest record wins
        for uri, record in _made_outputs(table).items():
            if (record.get("frames") or 0) > 0:
                made[uri] = record
                by_tail.update({tail: record for tail in path_tails(uri)})
    for row in rows:
        if row.get("status") != "skipped":
            continue
        uri = row.get("output_uri")
        before = made.get(uri) or (by_tail.get(relative_to(uri, output_uri)) if uri else None)
        if before is not None:
            row.update({name: before.get(name) for name in CARRIED_COLUMNS if before.get(name) is not None})
        elif row.get("output_uri"):  # written by a driver killed before its result was recorded
            row["frames"] = clips.frames_in_video(row["output_uri"])
    return rows


def kept_tables(output_uri: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Paths, relative to ``output_uri`` and oldest first, of the other jobs' results tables kept there."""
    earlier_dir = storage.join(output_uri, RESULTS_DIR, EARLIER_DIR)
    try:
        names = sorted(name for name in storage.list_names(earlier_dir, storage_options)
                       if name.startswith("results-") and name.endswith(".parquet"))
    except Exception as exc:
        logger.debug("no kept results tables: %s", type(exc).__name__)
        return []
    return [f"{RESULTS_DIR}/{EARLIER_DIR}/{name}" for name in names]


def _earlier_tables(output_uri: str, storage_options: Mapping[str, Any] | None) -> list[list[dict[str, Any]]]:
    """The results tables under ``output_uri``, oldest first: the newest kept ones of other jobs, then the current one."""
    kept = kept_tables(output_uri, storage_options)[-EARLIER_TABLES_READ:]
    uris = [storage.join(output_uri, path) for path in kept] + [results_uri(output_uri)]
    tables = []
    for uri in uris:
        try:
            data = storage.read_bytes(uri, storage_options, max_bytes=RESULTS_MAX_BYTES)
            tables.append(pq.read_table(io.BytesIO(data)).to_pylist())
        except Exception as exc:  # missing or unreadable: nothing to carry over from it
            logger.debug("results table %s not read: %s", storage.redact(uri), type(exc).__name__)
    return tables


def videos_made_in(output_uri: str, storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """The videos the results tables under ``output_uri`` (this job's and the kept ones) say this tool made."""
    return {uri for table in _earlier_tables(output_uri, storage_options) for uri in _made_outputs(table)}


def read_results(output_uri: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """The results table under ``output_uri`` (a bounded read: a huge file there is not one of ours)."""
    data = storage.read_bytes(results_uri(output_uri), storage_options, max_bytes=RESULTS_MAX_BYTES)
    return pq.read_table(io.BytesIO(data))
