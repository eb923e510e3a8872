"""Driver-side planning: which manifest rows can run, which fail up front, which are already done.

The manifest is read on the driver, whole: it holds URIs and settings, not media, so even
thousands of rows are small.  Reading it whole lets the job check the schema before any work
starts, fail later rows that repeat an id (the first keeps it), refuse URIs outside the
allow-list, and skip rows whose output already exists with one listing of the output prefix.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from engines.registry import UnknownEngineError
from mediaio import storage
from pipelines.manifest import RowError, describe_id, first_rows_by_id, parse_row
from pipelines.rows import FAILED, PENDING, SKIPPED, MemeWork
from pipelines.config import RenderJobConfig

logger = logging.getLogger(__name__)


def default_output_uri(config: RenderJobConfig, meme_id: str) -> str:
    """Where a row's MP4 goes when the manifest names no ``output_uri``: always under the output prefix."""
    return storage.join(config.output_uri, f"{meme_id}.mp4")


def plan_rows(table: pa.Table, config: RenderJobConfig, known_engines: tuple[str, ...]) -> list[MemeWork]:
    """One MemeWork per manifest row, in manifest order: pending, failed (with why) or skipped."""
    rows = table.to_pylist()
    first_index = first_rows_by_id(row.get("id") for row in rows)
    existing = storage.list_names(config.output_uri, config.storage_options) if config.skip_existing else set()
    works = []
    for index, row in enumerate(rows):
        shown_id = describe_id(row.get("id"))
        try:
            spec = parse_row(index, row)
            if first_index[spec.id] != index:
                raise RowError(f"duplicate id {spec.id!r} (first used by row {first_index[spec.id]})")
            engine = spec.engine or config.engine
            if engine not in known_engines:
                raise UnknownEngineError(f"unknown engine {engine!r} (known: {', '.join(known_engines)})")
            if engine != config.engine:
                raise RowError(f"engine {engine!r} differs from this job's engine {config.engine!r}")
            config.policy.check(spec.reference_uri, "reference_uri")
            config.policy.check(spec.driving_uri, "driving_uri")
            output_uri = spec.output_uri or default_output_uri(config, spec.id)
            output_uri = config.policy.check(output_uri, "output_uri")
        except (RowError, storage.StorageError, UnknownEngineError, TypeError, ValueError) as exc:
            works.append(MemeWork(row_index=index, id=shown_id, spec=None, output_uri=None, engine=config.engine,
                                  status=FAILED, error=storage.redact(f"row {index} ({shown_id}): manifest: {exc}")))
            continue
        done = (f"{spec.id}.mp4" in existing) if spec.output_uri is None else (
            config.skip_existing and storage.exists(output_uri, config.storage_options))
        works.append(MemeWork(row_index=index, id=spec.id, spec=spec, output_uri=output_uri, engine=engine,
                              status=SKIPPED if done else PENDING, time_limit_s=config.row_time_limit_s))
    return works
