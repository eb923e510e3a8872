"""A manifest row on its way through the pipeline, and the per-row error boundary of every stage.

Ray Data moves rows as ``{"id": str, "work": bytes}``: the :class:`MemeWork` is pickled by us
(explicitly, so Arrow never has to guess a schema for frames and face tracks).  Every stage runs
through :func:`run_stage`: a row that already failed or was skipped passes untouched, an
exception turns the row into a failed row with the stage's name and the cause, and the time the
stage took is recorded.  One bad row never takes a block of good rows down with it.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from faces.tracking import FaceTrack
from pipelines.manifest import MemeSpec
from mediaio.media import DecodedClip
from mediaio.storage import redact
from hellomeme.windows import WindowPlan

logger = logging.getLogger(__name__)

PENDING, OK, FAILED, SKIPPED = "pending", "ok", "failed", "skipped"


@dataclass(frozen=True)
class MemeWork:
    """What a row is, how far it got, and the data the next stage needs (cleared once used)."""

    row_index: int
    id: str
    spec: MemeSpec | None
    output_uri: str | None
    engine: str
    status: str = PENDING
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    # The row's time limit (seconds from its first stage); ffmpeg calls also carry their own.
    time_limit_s: float | None = None
    started_at: float | None = None
    # Filled by decode:
    clip: DecodedClip | None = None
    reference_image: np.ndarray | None = None
    # Filled by pose (face crops of `size` pixels; landmarks in crop coordinates):
    reference: np.ndarray | None = None
    reference_face: FaceTrack | None = None
    driving_frames: np.ndarray | None = None
    driving_face: FaceTrack | None = None
    windows: WindowPlan | None = None
    # Filled by render, then encode:
    frames: np.ndarray | None = None
    video: bytes | None = None
    num_frames: int = 0
    # Report previews published so far: kind -> path relative to the job's output (kept on failure).
    previews: dict[str, str] = field(default_factory=dict)

    def failed(self, message: str) -> "MemeWork":
        """This row as failed, its payload dropped so nothing heavy travels further."""
        return replace(
            self, status=FAILED, error=redact(message), clip=None, reference_image=None, reference=None,
            reference_face=None, driving_frames=None, driving_face=None, frames=None, video=None,
        )

    def timed(self, stage: str, seconds: float) -> "MemeWork":
        return replace(self, timings={**self.timings, stage: self.timings.get(stage, 0.0) + seconds})


def pack(work: MemeWork) -> dict[str, Any]:
    """The Ray Data row for a work item."""
    return {"id": work.id, "work": pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)}


def unpack(row: dict[str, Any]) -> MemeWork:
    return pickle.loads(row["work"])


def unpack_batch(batch: dict[str, Any]) -> list[MemeWork]:
    """The work items of a Ray Data batch (as given to actor pools)."""
    return [pickle.loads(item) for item in batch["work"]]


def pack_batch(works: list[MemeWork]) -> dict[str, list]:
    """A Ray Data batch of work items."""
    return {"id": [work.id for work in works],
            "work": [pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL) for work in works]}


def describe_error(exc: BaseException) -> str:
    """One line naming the exception's kind and message."""
    message = str(exc).strip() or "no message"
    return f"{type(exc).__name__}: {message}" if not _is_own_error(exc) else message


def _is_own_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("mediaio", "faces", "reporting", "engines", "hellomeme", "actors", "pipelines"))


def run_stage(stage: str, fn: Callable[[MemeWork], MemeWork], work: MemeWork) -> MemeWork:
    """Run one stage on one pending row; errors become a failed row naming the row and the stage."""
    if work.status != PENDING:
        return work
    if work.started_at is None:
        work = replace(work, started_at=time.time())
    elif work.time_limit_s is not None and time.time() - work.started_at > work.time_limit_s:
        return work.failed(f"row {work.row_index} ({work.id}): {stage}: the row exceeded its time limit "
                           f"of {work.time_limit_s:.0f} s")
    started = time.perf_counter()
    try:
        result = fn(work)
    except Exception as exc:  # the per-row error boundary: any failure is this row's alone
        cause = describe_error(exc)
        logger.warning("row %d (%s) failed in %s: %s", work.row_index, work.id, stage, redact(cause))
        result = work.failed(f"row {work.row_index} ({work.id}): {stage}: {cause}")
    return result.timed(stage, time.perf_counter() - started)


def row_stage(stage: str, fn: Callable[[MemeWork], MemeWork]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Wrap a work -> work function as a Ray Data ``map`` function with the per-row error boundary."""

    def apply(row: dict[str, Any]) -> dict[str, Any]:
        return pack(run_stage(stage, fn, unpack(row)))

    apply.__name__ = stage
    return apply
