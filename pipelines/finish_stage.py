"""The finish stage: encode a row's rendered frames, publish the MP4, and make its results row.

One task per row does all three, explicitly: the MP4's bytes never
pass through the object store, and a finished video does not wait for further hops.  Each step runs in the row's error
boundary and is timed on its own (``seconds_encode``, ``seconds_write``).  Only the small results
row leaves this stage.

- encode: H.264 at the driving clip's rate (frames between generated ones interpolated), the
  clip's audio muxed back; the report's animated meme preview is made from the same frames.
- write: a create-only, all-or-nothing publish through fsspec.  If the name is already taken, the
  row is ok only if the file there is this row's own video (a retried task, or a rerun racing
  another: it carries the row's fingerprint, which the encode embeds); anything else fails the row.
  A row planned to replace this tool's earlier video (``--no-skip-existing``) is published over it,
  still in one step.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from engines.base import null_as_none
from mediaio import media, storage
from mediaio.redaction import printable
from mediaio.threads import AUTO
from pipelines.outputs import (
    OutputError,
    cut_by_cap,
    fingerprint_comment,
    inspect_existing_output,
    not_owned_message,
)
from pipelines.plan import JobConfig
from pipelines.row_guard import RowGuard
from pipelines.rows import OK, PENDING, Row, fail, run_stage
from reporting import previews
from reporting.metrics import worker_metrics
from reporting.results import STAGES, result_row

logger = logging.getLogger(__name__)

STAGE = "finish"  # its name in the row ledger (pipelines/row_ledger.py)

def make_finish_fn(config: JobConfig, ledger: Any = None, threads: int = AUTO) -> Callable[[Row], dict[str, Any]]:
    """A row -> results-row function for the job's outputs (``ledger``: see pipelines/row_guard.py;
    ``threads``: ffmpeg's, see mediaio/threads.py)."""

    def encode(row: Row) -> dict[str, Any]:
        frames = row["rendered"]
        cap = config.limits.max_seconds
        cut_at = cap if cut_by_cap(float(row["duration"]), null_as_none(row["max_seconds"]), cap) else None
        video = media.encode_mp4(frames, fps=float(row["generation_fps"]), output_fps=float(row["output_fps"]),
                                 duration=float(row["duration"]), audio=null_as_none(row["audio"]), limits=config.limits,
                                 interpolate=config.interpolate, threads=threads,
                                 metadata={"comment": fingerprint_comment(str(row["fingerprint"]), cut_at)})
        columns: dict[str, Any] = {"video": video, "frames": int(len(frames))}
        if config.report:
            columns["preview_meme"] = previews.try_publish(
                str(row["id"]), "meme", lambda: previews.animated_webp(frames, float(row["generation_fps"])),
                config.output_uri, config.storage_options, str(row["fingerprint"]))
        return columns

    def write(row: Row) -> dict[str, Any]:
        if row.get("replace_output"):  # --no-skip-existing: the plan found this tool's earlier video there
            storage.write_replace(row["output_uri"], row["video"], config.storage_options)
            return {"status": OK}
        try:
            storage.write_create_only(row["output_uri"], row["video"], config.storage_options)
        except FileExistsError:
            verdict = inspect_existing_output(row["output_uri"], row["fingerprint"], config.storage_options)
            if not verdict.owned:
                raise OutputError(not_owned_message(row["output_uri"], verdict, after_planning=True)) from None
            logger.info("%s: its own video is already at %s; keeping it", printable(row["id"]),
                        printable(row["output_uri"]))
        return {"status": OK}

    def finish_row(row: Row) -> dict[str, Any]:
        row = {**row, "engine": config.engine.name}
        row = run_stage("encode", encode, row, {"video": lambda: b"", "preview_meme": lambda: None})
        row = {**row, "rendered": None}  # the frames are encoded: let them go before the write
        row = run_stage("write", write, row, {})
        if row["status"] == PENDING:  # every step returned without marking the row: a bug, not the row's fault
            row = {**row, "status": "failed", "error": f"row {row['row_index']} ({row['id']}): finish: not written"}
        return _finished(row)

    def finish(row: Row) -> dict[str, Any]:
        guard = RowGuard(ledger, STAGE)
        (result,) = guard.run([row], lambda rows: [finish_row(rows[0])],
                              lambda row, error: _finished({**fail(row, "finish", error), "engine": config.engine.name}))
        return result

    return finish


def _finished(row: Row) -> dict[str, Any]:
    result = result_row(row)
    worker_metrics().row_finished(result["status"], {stage: result[f"seconds_{stage}"] for stage in STAGES})
    return result

