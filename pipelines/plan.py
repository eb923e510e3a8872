"""The job plan, made on the driver before any row runs: the job's config, the engine checked, every row decided.

Three settings types make a job, each decided once, here:

- :class:`JobConfig`: where inputs and outputs live, limits, and how the pipeline runs;
- :class:`engines.base.EngineSpec`: the engine and every one of its options, checked here
  (a bad ``--size`` or ``--window`` stops the job with the option named, before any row runs)
  and then sent to every render actor once;
- :class:`engines.base.RowSettings`: a row's own settings, with the defaults applied here.

The manifest is read on the driver, whole: it holds URIs and settings, not media, so even
thousands of rows are small.  Reading it whole lets the job check the schema first, fail later
rows that repeat an id (the first keeps it), refuse URIs outside the allow-list, normalise every
URI once, and skip rows whose output already exists with one listing of the output prefix.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import pyarrow as pa

from engines.base import EngineOptionError, EngineSpec, RowSettings
from engines.hellomeme_options import check_lora_name
from engines.registry import DEFAULT_ENGINE, ENGINES, UnknownEngineError, engine_spec
from mediaio import storage
from mediaio.media import MediaLimits
from mediaio.redaction import printable
from pipelines.manifest import (
    BESIDE_MANIFEST_COLUMNS,
    MIN_SECONDS,
    ManifestError,
    MemeSpec,
    RowError,
    describe_id,
    first_rows_by_id,
    parse_row,
    read_manifest,
)
from pipelines.outputs import (
    OutputRequest,
    check_output_prefix,
    clean_stale_partials,
    inspect_existing_output,
    not_owned_message,
    output_fingerprint,
    plan_outputs,
    probe_output_writable,
)
from pipelines.rows import FAILED, SKIPPED, STAGES, Row, planned_row
from reporting.previews import KINDS as PREVIEW_KINDS, preview_path
from reporting.results import result_row

logger = logging.getLogger(__name__)

# Output sizes every engine supports: x264's yuv420p needs even sides; the crops are square.
MIN_SIZE, MAX_SIZE = 64, 2048


@dataclass(frozen=True)
class JobConfig:
    """A render job: manifest in, memes under ``output_uri``, results table beside them."""

    manifest_uri: str
    output_uri: str
    engine: EngineSpec = field(default_factory=lambda: engine_spec(DEFAULT_ENGINE))
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    policy: storage.StoragePolicy = field(default_factory=storage.StoragePolicy)
    limits: MediaLimits = field(default_factory=MediaLimits)
    interpolate: bool = True  # motion-compensated interpolation up to the driving clip's frame rate
    skip_existing: bool = True  # a rerun skips rows whose output exists
    report: bool = True  # write {output}/index.html and the small previews it shows
    videos_per_batch: int = 1  # videos per render call (GPU engines batch their windows)
    max_input_bytes: int = storage.DEFAULT_MAX_READ_BYTES  # an input's bytes, whatever size it reports
    row_time_limit_s: float = 1800.0  # a stage still working on one row after this long is stopped; the row fails
    # Object-store memory the rows waiting between stages may hold, in MiB.  None: a share of the
    # cluster's object store that grows with the cluster (see pipelines/render_pipeline.py).
    queue_memory_mib: int | None = None
    # The results table is written this often while the job runs (finished rows as they ended, the
    # rest not_run), so a driver killed mid-job (out of memory, a lost head node) leaves its record.
    results_every_s: float = 300.0


class JobOptionError(ValueError):
    """A job option the job cannot run with; the message names the option as the command line spells it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


def check_job_settings(config: JobConfig) -> None:
    """Raise JobOptionError naming the first job option that no row could run with."""
    if not (math.isfinite(config.limits.max_seconds) and config.limits.max_seconds >= MIN_SECONDS):
        raise JobOptionError("--max-seconds", f"must be a number of seconds, at least {MIN_SECONDS:g}, "
                                              f"got {config.limits.max_seconds:g}")
    if not (math.isfinite(config.row_time_limit_s) and config.row_time_limit_s > 0):
        raise JobOptionError("--row-time-limit", f"must be a positive number of seconds, "
                                                 f"got {config.row_time_limit_s:g}")
    if not (math.isfinite(config.results_every_s) and config.results_every_s >= 0):
        raise JobOptionError("--results-every", f"must be a number of seconds (0: after every row), "
                                                f"got {config.results_every_s:g}")
    if config.queue_memory_mib is not None and config.queue_memory_mib < 1:
        raise JobOptionError("--queue-memory", f"must be at least 1 MiB, got {config.queue_memory_mib}")
    if config.videos_per_batch < 1:
        raise JobOptionError("--videos-per-batch", f"must be at least 1, got {config.videos_per_batch}")


@dataclass(frozen=True)
class JobPlan:
    """Every manifest row decided: pending rows for the pipeline, the others already with their result."""

    pending: list[Row]
    settled: list[dict[str, Any]]  # results rows of rows failed or skipped at planning
    inputs: dict[int, tuple[str, str]]  # row_index -> (reference_uri, driving_uri), for the report

    @property
    def total(self) -> int:
        return len(self.pending) + len(self.settled)


def check_engine_options(spec: EngineSpec) -> None:
    """Raise EngineOptionError naming the option the engine cannot run with (no I/O: the weights are not looked at)."""
    if not MIN_SIZE <= spec.size <= MAX_SIZE or spec.size % 2:
        raise EngineOptionError("--size", f"must be an even number of pixels from {MIN_SIZE} to {MAX_SIZE}, "
                                          f"got {spec.size}")
    spec.options.check(spec.size)


def check_engine(spec: EngineSpec, storage_options: Mapping[str, Any] | None = None) -> None:
    """Raise EngineOptionError naming the option the engine cannot run with, then check its weights."""
    check_engine_options(spec)
    spec.engine_class().check_ready(spec, storage_options)


def row_settings(spec: MemeSpec, engine: EngineSpec) -> RowSettings:
    """The row's settings: what the manifest gives, the job's (or the engine's) defaults for the rest."""
    defaults = RowSettings(lora=engine.option("lora"), lora_scale=engine.option("lora_scale", 1.0))
    chosen = {name: getattr(spec, name) for name in ("seed", "steps", "guidance", "prompt", "lora", "lora_scale",
                                                    "fps", "max_seconds")}
    return RowSettings(**{name: getattr(defaults, name) if value is None else value for name, value in chosen.items()})


class IgnoredSettings:
    """Counts the rows that set a setting this job's engine does not read, to warn once at planning.

    A manifest written for the diffusion engine and rendered with the warp engine (a preview on a
    laptop) is fine, but its prompts and LoRAs do nothing there: the user should hear it, not guess.
    """

    def __init__(self, engine: EngineSpec) -> None:
        self.engine_name = engine.name
        self.unused = engine.unused_settings()
        self.rows = {name: 0 for name in self.unused}

    def note(self, spec: MemeSpec) -> None:
        for name in self.unused:
            if getattr(spec, name) not in (None, ""):
                self.rows[name] += 1

    def warn(self) -> None:
        counts = [f"{name} ({count} row{'s' if count > 1 else ''})" for name, count in self.rows.items() if count]
        if counts:
            logger.warning("the %s engine does not use these per-row settings, which are ignored: %s",
                           self.engine_name, ", ".join(counts))


def _settled(index: int, meme_id: str, status: str, error: str = "", output_uri: str | None = None,
             engine: str = "") -> dict[str, Any]:
    row = {"row_index": index, "id": meme_id, "status": status, "error": storage.redact(error), "output_uri": output_uri,
           "engine": engine, **{f"seconds_{stage}": 0.0 for stage in STAGES}}
    return result_row(row)


def pixel_settings(settings: RowSettings, config: JobConfig, as_set: bool = False) -> dict[str, Any]:
    """Everything besides the inputs that decides a row's pixels: its fingerprint's settings.

    A setting the engine does not read (a prompt under the warp engine) enters at its default, so
    adding it to a manifest does not make the finished videos "not this row's".  ``as_set``: as
    given, the way videos made before that rule carry them.
    """
    if not as_set:
        settings = replace(settings, **{name: getattr(RowSettings(), name) for name in config.engine.unused_settings()})
    return {**dataclasses.asdict(settings), **config.engine.describe(), "interpolate": config.interpolate}


def plan_rows(table: pa.Table, config: JobConfig) -> JobPlan:
    """Each manifest row, in order: pending (typed columns), failed (with why) or skipped.

    Outputs are owned: each row's target is decided here for all rows at once (see
    pipelines/outputs.py), and an existing file counts as done only if it is this row's own video.
    """
    rows = table.to_pylist()
    first_index = first_rows_by_id(row.get("id") for row in rows)
    engine = config.engine
    prefix = check_output_prefix(config.output_uri, config.policy, local_job=False)
    settled, inputs = [], {}
    ignored = IgnoredSettings(engine)
    unused = engine.unused_settings()
    over_cap = 0  # rows whose max_seconds asks for more than the job's cap
    parsed: list[tuple[int, MemeSpec, str, str, RowSettings]] = []
    for index, row in enumerate(rows):
        shown_id = describe_id(row.get("id"))
        try:
            spec = parse_row(index, row)
            if first_index[spec.id] != index:
                raise RowError(f"duplicate id {spec.id!r} (first used by row {first_index[spec.id]})")
            if spec.engine and spec.engine not in ENGINES and spec.engine != engine.name:
                raise UnknownEngineError(f"unknown engine {spec.engine!r} (known: {', '.join(sorted(ENGINES))})")
            if spec.engine and spec.engine != engine.name:
                raise RowError(f"engine {spec.engine!r} differs from this job's engine {engine.name!r}")
            # A row's relative paths are taken beside the manifest (the job's own --lora, from the
            # command line, is taken from where the command ran).
            written = spec
            spec = replace(spec, **{column: storage.relative_to_file(getattr(spec, column), config.manifest_uri)
                                    for column in BESIDE_MANIFEST_COLUMNS if getattr(spec, column)})
            reference_uri = config.policy.check(spec.reference_uri, "reference_uri")
            driving_uri = config.policy.check(spec.driving_uri, "driving_uri")
            settings = row_settings(spec, engine)
            ignored.note(spec)
            if settings.max_seconds is not None and settings.max_seconds > config.limits.max_seconds:
                over_cap += 1
            if settings.lora:
                if "lora" not in unused:  # the engine loads it: a pickled file is refused here, not after prepare
                    check_lora_name(settings.lora)
                settings = replace(settings, lora=config.policy.check(settings.lora, "lora"))
        except (RowError, storage.StorageError, UnknownEngineError, TypeError, ValueError) as exc:
            settled.append(_settled(index, shown_id, FAILED, f"row {index} ({shown_id or 'no id'}): manifest: {exc}",
                                    engine=engine.name))
            continue
        # The inputs as the video's identity: a path relative to the manifest as written, so a project
        # moved, renamed or mounted elsewhere as a whole still knows its own videos; others resolved.
        identity = [getattr(written, column) if getattr(written, column) != getattr(spec, column) else resolved
                    for column, resolved in (("reference_uri", reference_uri), ("driving_uri", driving_uri))]
        parsed.append((index, spec, reference_uri, driving_uri, settings, identity))
    ignored.warn()
    if over_cap:
        logger.warning("%d row%s set max_seconds above this job's cap (--max-seconds %g): they render at most %g s "
                       "of their clips; raise --max-seconds to render more", over_cap, "s" if over_cap > 1 else "",
                       config.limits.max_seconds, config.limits.max_seconds)
    # A mistyped bucket or prefix fails its rows here, not one at a time in the prepare stage.
    empty = storage.prefixes_holding_nothing(
        (uri for _, _, reference_uri, driving_uri, _, _ in parsed for uri in (reference_uri, driving_uri)),
        config.storage_options)
    requests = [OutputRequest(index, spec.id, spec.output_uri) for index, spec, *_ in parsed]
    plans = plan_outputs(prefix, requests, config.policy, local_job=False, storage_options=config.storage_options)
    pending = []
    recut = 0  # rows whose earlier video the job's cap cut short, rendered again (a higher cap now)
    for (index, spec, reference_uri, driving_uri, settings, identity), output in zip(parsed, plans):
        absent = [(column, uri) for column, uri in (("reference_uri", reference_uri), ("driving_uri", driving_uri))
                  if storage.parent_of(uri) in empty]
        if absent:
            column, uri = absent[0]
            settled.append(_settled(index, spec.id, FAILED, f"row {index} ({spec.id}): {column} {printable(uri)} "
                                    f"not found: nothing is under {printable(storage.parent_of(uri))}/ (a mistyped "
                                    "bucket or prefix?)", engine=engine.name))
            continue
        if not output.ok:
            settled.append(_settled(index, spec.id, FAILED, f"row {index} ({spec.id}): output: {output.error}",
                                    engine=engine.name))
            continue
        if output.uri in (reference_uri, driving_uri):
            which = "reference" if output.uri == reference_uri else "driving clip"
            settled.append(_settled(index, spec.id, FAILED, f"row {index} ({spec.id}): output: output "
                                    f"{printable(output.uri)} is this row's own {which}; give the row another "
                                    "output_uri or the job another --output", engine=engine.name))
            continue
        inputs[index] = (reference_uri, driving_uri)
        pixels = pixel_settings(settings, config)
        fingerprint = output_fingerprint(spec.id, identity, pixels, engine.name)
        replace_output = False
        if output.exists:
            # Videos made by earlier versions are still this row's own: before relative inputs entered
            # the fingerprint as written (5eb1ff1) every input entered resolved, and before settings the
            # engine ignores entered at their defaults they entered as set.
            as_set = pixel_settings(settings, config, as_set=True)
            earlier = {output_fingerprint(spec.id, inputs, chosen, engine.name)
                       for inputs in (identity, [reference_uri, driving_uri]) for chosen in (pixels, as_set)}
            verdict = inspect_existing_output(output.uri, fingerprint, config.storage_options,
                                              also=tuple(sorted(earlier - {fingerprint})))
            # A rerun skips the row's own video; --no-skip-existing renders it again and replaces it, or
            # an earlier video of this tool's from other inputs or settings.  Anything else at the target
            # fails the row now, before any work is spent on it.  The row's own video that the job's cap
            # cut short, where this job's cap and the row's max_seconds allow more, is rendered again and
            # replaced too: raising --max-seconds, as the warning above advises, asks for the rest.
            longer = verdict.owned and verdict.cut_at is not None and \
                min(settings.max_seconds or math.inf, config.limits.max_seconds) > verdict.cut_at + 1e-9
            if longer:
                recut += 1
            if config.skip_existing and verdict.owned and not longer:
                skipped = _settled(index, spec.id, SKIPPED, output_uri=output.uri, engine=engine.name)
                # Where the run that made the video left its previews, for the report.
                settled.append({**skipped, **{f"preview_{kind}": preview_path(spec.id, kind, fingerprint)
                                              for kind in PREVIEW_KINDS}})
                continue
            if not longer and (config.skip_existing or not verdict.ours):
                settled.append(_settled(index, spec.id, FAILED, f"row {index} ({spec.id}): output: "
                                        f"{not_owned_message(output.uri, verdict)}", engine=engine.name))
                continue
            replace_output = True
        pending.append(planned_row(index, spec.id, reference_uri, driving_uri, output.uri, settings,
                                   config.row_time_limit_s, fingerprint, replace_output))
    if recut:
        logger.info("%d row%s whose earlier video a lower --max-seconds cut short: rendered again, up to %g s",
                    recut, "s" if recut > 1 else "", config.limits.max_seconds)
    # Rows that share a LoRA next to each other, so render batches mostly share one adapter.
    pending.sort(key=lambda row: (row["lora"] or "", row["lora_scale"], row["row_index"]))
    return JobPlan(pending=pending, settled=settled, inputs=inputs)


def plan_job(config: JobConfig) -> JobPlan:
    """Check the engine and the output, read the manifest and plan every row; job-level problems raise here.

    Nothing runs before this returns: a bad option, unusable weights, an output that cannot be
    written or an unreadable manifest stop the job with one message.
    """
    check_job_settings(config)
    check_engine(config.engine, config.storage_options)
    check_output_prefix(config.output_uri, config.policy, local_job=False)
    manifest = read_manifest(config.manifest_uri, config.storage_options)  # before the probe makes --output
    if manifest.num_rows == 0:  # a nightly query that returned nothing: say so, and leave last night's report
        raise ManifestError(f"manifest {printable(config.manifest_uri)} has no rows: nothing to render (the output "
                            "folder is left as it was)")
    probe_output_writable(config.output_uri, config.storage_options)
    plan = plan_rows(manifest, config)
    folders = sorted({row["output_uri"].rsplit("/", 1)[0] for row in plan.pending})
    removed = clean_stale_partials(config.output_uri, config.storage_options, directories=folders)
    if removed:
        logger.info("removed %d temp files an earlier run left behind", len(removed))
    return plan
