"""Rows between the stages: named, typed columns, and the per-row error boundary every stage runs in.

A row is a plain dict of columns, which Ray Data stores as Arrow columns: scalars (ids, URIs,
settings, status, error, per-stage seconds) as Arrow scalars, pixels and face tracks as numpy
tensors (Arrow tensor columns), the clip's audio as binary.  A column that is null in every row
of a block (a clip without audio) reaches the next stage as NaN, so nullable cells are read with
``engines.base.null_as_none``.  Nothing is pickled, so
``Dataset.schema()`` shows what each stage hands the next.  The planned row's columns are listed
in :data:`PLANNED_COLUMNS`; each actor declares what it adds (see ``pipelines/render_pipeline.py``).

The error boundary (:func:`run_stage`, :func:`run_batch_stage`): a row that already failed passes
untouched, with the stage's output columns filled with empty values so every row keeps one schema;
an exception fails the row with the stage's name and the cause; the time the stage took is added to
the row's ``seconds_<stage>``.  What an exception cannot report -- a stage that hangs, a worker that
dies -- the row guard handles (:mod:`pipelines.row_guard`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from engines.base import RowSettings
from mediaio.redaction import printable, redact
from reporting.results import STAGES  # the stages timed in seconds_<stage>, as the results table records them

logger = logging.getLogger(__name__)

PENDING, OK, FAILED, SKIPPED = "pending", "ok", "failed", "skipped"
NOT_RUN = "not_run"  # the job was stopped before the row finished; a rerun renders it

# name -> Arrow type, of the row the driver plans (one row per manifest row that will run).
PLANNED_COLUMNS: dict[str, str] = {
    "row_index": "int64",
    "id": "string",
    "reference_uri": "string",  # normalised and checked against the allow-list on the driver
    "driving_uri": "string",
    "output_uri": "string",  # the row's final MP4, owned by this row alone (pipelines/outputs.py)
    "fingerprint": "string",  # what makes this row's video; embedded in the MP4 so a rerun knows its own
    "replace_output": "bool (the target holds this tool's earlier video, to be replaced: --no-skip-existing)",
    "seed": "int64",
    "steps": "int64",
    "guidance": "float64",
    "prompt": "string",
    "lora": "string (null: none)",
    "lora_scale": "float64",
    "fps": "float64 (null: the engine's rate)",
    "max_seconds": "float64 (null: the whole clip)",
    "status": "string",
    "error": "string",
    "time_limit_s": "float64 (seconds one stage may work on this row)",
    **{f"seconds_{stage}": "float64" for stage in STAGES},
}

Row = dict[str, Any]
Outputs = Mapping[str, Callable[[], Any]]  # column -> empty value, for rows that do not run the stage


def planned_row(row_index: int, meme_id: str, reference_uri: str, driving_uri: str, output_uri: str,
                settings: RowSettings, time_limit_s: float, fingerprint: str = "", replace_output: bool = False) -> Row:
    """A row as it enters the pipeline, every setting in its own column."""
    return {
        "row_index": row_index, "id": meme_id, "reference_uri": reference_uri, "driving_uri": driving_uri,
        "output_uri": output_uri, "fingerprint": fingerprint, "replace_output": replace_output,
        "seed": settings.seed, "steps": settings.steps, "guidance": settings.guidance,
        "prompt": settings.prompt, "lora": settings.lora, "lora_scale": settings.lora_scale, "fps": settings.fps,
        "max_seconds": settings.max_seconds, "status": PENDING, "error": "", "time_limit_s": time_limit_s,
        **{f"seconds_{stage}": 0.0 for stage in STAGES},
    }


def describe_error(exc: BaseException) -> str:
    """One line naming the exception's kind and message (our own exceptions speak for themselves)."""
    message = str(exc).strip() or "no message"
    own = type(exc).__module__.startswith(("mediaio", "faces", "reporting", "engines", "hellomeme", "actors",
                                           "pipelines"))
    return message if own else f"{type(exc).__name__}: {message}"


def fail(row: Row, stage: str, message: str) -> Row:
    """``row`` as failed in ``stage``, the message naming the row."""
    return {**row, "status": FAILED,
            "error": redact(f"row {int(row['row_index'])} ({row['id']}): {stage}: {message}")}


def with_empty(row: Row, outputs: Outputs) -> Row:
    """``row`` with each of a stage's output columns set to its empty value (a row the stage did not run)."""
    return {**row, **{name: empty() for name, empty in outputs.items()}}


def _timed(row: Row, stage: str, seconds: float) -> Row:
    key = f"seconds_{stage}"
    if key in row:  # stages inside a larger step (decode, pose) record their own seconds
        return {**row, key: float(row[key]) + seconds}
    return row


def run_stage(stage: str, fn: Callable[[Row], Mapping[str, Any]], row: Row, outputs: Outputs) -> Row:
    """Run ``fn`` on one pending row and merge the columns it returns; errors fail the row alone."""
    row = dict(row)
    if row["status"] != PENDING:
        return with_empty(row, outputs)
    started = time.perf_counter()
    try:
        result = {**row, **fn(row)}
    except Exception as exc:  # the per-row error boundary: any failure is this row's alone
        cause = describe_error(exc)
        logger.warning("row %d (%s) failed in %s: %s", int(row["row_index"]), printable(row["id"]), stage,
                       printable(cause))
        result = with_empty(fail(row, stage, cause), outputs)
        # A stage may attach the columns it made before failing (the prepare stage's previews, so the
        # report shows the inputs of a row that failed); only the stage's own columns are kept.
        made = getattr(exc, "partial_columns", None) or {}
        result.update({name: value for name, value in made.items() if name in outputs})
    return _timed(result, stage, time.perf_counter() - started)


def run_batch_stage(stage: str, fn: Callable[[list[Row]], Sequence[Mapping[str, Any]]], rows: list[Row],
                    outputs: Outputs) -> list[Row]:
    """Run ``fn`` on the pending rows of a batch at once; if the batch fails, each row alone.

    One bad row cannot fail the good rows it was batched with: they are run again one by one,
    and only the rows that fail alone fail.
    """
    rows = [dict(row) for row in rows]
    begun: list[Row | None] = [None] * len(rows)
    for i, row in enumerate(rows):
        if row["status"] != PENDING:
            rows[i] = with_empty(row, outputs)
        else:
            begun[i] = row
    pending = [i for i, row in enumerate(begun) if row is not None]
    if len(pending) > 1:
        started = time.perf_counter()
        try:
            results = fn([begun[i] for i in pending])
        except Exception:  # isolate the bad row: each row alone below
            logger.warning("%s failed for a batch of %d rows; running them one by one", stage, len(pending),
                           exc_info=True)
        else:
            share = (time.perf_counter() - started) / len(pending)
            for i, result in zip(pending, results):
                rows[i] = _timed({**begun[i], **result}, stage, share)
            return rows
    for i in pending:
        rows[i] = run_stage(stage, lambda row: fn([row])[0], begun[i], outputs)
    return rows


def batch_rows(batch: Mapping[str, Any]) -> list[Row]:
    """The rows of a Ray Data numpy batch, as plain Python scalars and numpy arrays."""
    names = list(batch)
    count = len(batch[names[0]]) if names else 0
    return [{name: _plain(batch[name][i]) for name in names} for i in range(count)]


def rows_batch(rows: list[Row]) -> dict[str, list]:
    """A Ray Data batch from rows with the same columns."""
    return {name: [row[name] for row in rows] for name in rows[0]} if rows else {}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
