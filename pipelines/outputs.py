"""Where each row's video goes, settled on the driver before any row runs: owned, distinct, lasting.

A row may only say ``ok`` if its video is there afterwards and is its own.  Everything that could
break that is decided here, once, over all the rows together, without Ray:

- Confinement: by default every output lies under ``--output``.  A row's own ``output_uri`` that
  is relative is taken under ``--output`` (never the driver's working directory); one elsewhere
  is refused unless ``--allow-root`` roots are given and it lies under one of them.  Local paths
  are compared with their symlinks resolved.
- Reserved names: ``_results/``, ``_report/`` and ``index.html`` under ``--output`` belong to the
  job's results and report, hidden ``.*.partial`` files to writes in flight; no row may target them.
- Distinct targets: two rows aiming at the same final path would leave one video under two ``ok``
  rows.  Both fail, each naming the other, before anything runs.
- Lasting: a target that is an existing directory cannot receive a file; ``memory://`` lives in
  the memory of the process that writes it, so outside a single-process job it is gone with the
  worker.  Both are refused at planning.
- Ownership: "already exists" counts as done only when the existing file is this row's own
  earlier output: a complete MP4 (boxes consistent with its size, a ``moov`` box, media data)
  whose metadata carries this row's :func:`output_fingerprint`.  The encode stage writes that
  fingerprint into the MP4's comment (:func:`fingerprint_comment`); a 0-byte file, a truncated one or
  someone else's video is not this row's, and the row fails saying so.
- Writability is probed (:func:`probe_output_writable`) and the temp files of a crashed run are
  removed (:func:`clean_stale_partials`) before the first row runs.

The flow: the driver calls :func:`check_output_prefix`, :func:`probe_output_writable` and
:func:`clean_stale_partials` once, then :func:`plan_outputs` over the parsed rows; for each row
whose plan says ``exists``, :func:`inspect_existing_output` decides skipped (owned) or failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import struct
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Sequence

from mediaio import storage
from mediaio.redaction import printable
from mediaio.storage import StorageError, StoragePolicy
from reporting.previews import PREVIEW_DIR
from reporting.report import REPORT_FILE
from reporting.results import RESULTS_DIR

logger = logging.getLogger(__name__)

# Names directly under --output that belong to the job itself (compared case-insensitively, so a
# case-insensitive file system cannot alias them either).
RESERVED_NAMES = (RESULTS_DIR, PREVIEW_DIR, REPORT_FILE)
PARTIAL_NAME = re.compile(r"^\..+\.partial$")  # storage's temp files: .<name>.<random>.partial
PROBE_PREFIX = ".hellomeme-probe-"
OUTPUT_SUFFIX = ".mp4"
FINGERPRINT_TAG = "hellomeme-batch:"  # the MP4 comment is FINGERPRINT_TAG + fingerprint
CUT_MARK = " cut by --max-seconds at "  # follows the fingerprint where the job's cap cut the clip
FINGERPRINT_VERSION = 1
DEFAULT_MIN_FREE_BYTES = 16 * 1024**2  # a local --output with less free space is refused up front
DEFAULT_STALE_AGE_S = 600.0  # a temp file this old is no write in flight: storage writes take seconds
MAX_MOOV_BYTES = 64 * 1024**2  # a moov box larger than this is not one of ours
MAX_TOP_LEVEL_BOXES = 4096
MAX_NAMED_ROWS = 3  # a collision message names at most this many other rows
MAX_FILE_NAME_BYTES = 255  # a file name's limit on Linux and macOS file systems (NAME_MAX)
MAX_OBJECT_KEY_BYTES = 1024  # S3's and GCS's limit on an object's key
_HEADER_BLOCK_BYTES = 256 * 1024  # object-store reads while walking an MP4's boxes: headers, then moov


class OutputError(StorageError):
    """A row's output cannot be used; the message names the output and the cause."""


@dataclass(frozen=True)
class OutputRequest:
    """One row as output planning sees it: its manifest index, id and requested ``output_uri`` (or None)."""

    row_index: int
    row_id: str
    output_uri: str | None = None


@dataclass(frozen=True)
class OutputPlan:
    """A row's final output URI, or why it has none; ``exists``: something is already there (a file)."""

    uri: str | None
    error: str | None = None
    exists: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


# --- the job's output prefix -------------------------------------------------------------------

def check_output_prefix(output_uri: str, policy: StoragePolicy, local_job: bool) -> str:
    """The normalised ``--output``, or StorageError: refused by the policy, an existing file, or
    ``memory://`` for a job whose rows are not written in this process.

    Call at driver planning, before anything else touches the output.  ``local_job``: True only
    when rows are written by the driver's own process (``memory://`` is per process; the workers
    of even a local Ray instance are other processes).
    """
    prefix = policy.check(output_uri, "--output")
    if storage.scheme_of(prefix) == "memory" and not local_job:
        raise StorageError(f"--output {printable(output_uri)} is memory://, which does not outlive the process "
                           "that writes it; use a path, s3:// or gs://")
    if storage.is_local_uri(prefix) and os.path.exists(prefix) and not os.path.isdir(prefix):
        raise StorageError(f"--output {printable(output_uri)} exists and is not a directory")
    return prefix.rstrip("/") or "/"


# --- each row's target ---------------------------------------------------------------------------

def _collapse(uri: str) -> str:
    """``a/./b//c/../d`` -> ``a/b/d``, for local paths and inside object URIs (the bucket kept)."""
    if storage.is_local_uri(uri):
        return os.path.normpath(storage.normalize(uri))
    scheme, rest = uri.split("://", 1)
    bucket, _, key = rest.partition("/")
    key = posixpath.normpath("/" + key).lstrip("/") if key else ""
    return f"{scheme}://{bucket}/{key}" if key else f"{scheme}://{bucket}"


def _relative_parts(uri: str, prefix: str) -> list[str] | None:
    """The path components of ``uri`` below ``prefix``, or None when it is not under it."""
    if storage.is_local_uri(uri) != storage.is_local_uri(prefix):
        return None
    if storage.is_local_uri(uri):
        uri, prefix = os.path.realpath(uri), os.path.realpath(prefix)
    prefix = prefix.rstrip("/")
    if uri == prefix:
        return []
    if not uri.startswith(prefix + "/"):
        return None
    return [part for part in uri[len(prefix) + 1:].split("/") if part]


def resolve_output(output_prefix: str, row_id: str, requested: str | None, policy: StoragePolicy,
                   local_job: bool) -> str:
    """The final URI of one row's video, or OutputError saying why the request is refused.

    No storage access: confinement, reserved names, ``.mp4`` and ``memory://`` only (collisions
    and existing directories need all rows or the storage; see :func:`plan_outputs`).
    ``output_prefix`` is what :func:`check_output_prefix` returned.
    """
    prefix = output_prefix.rstrip("/") or "/"
    shown = printable(requested if requested is not None else row_id)
    if requested is None:
        uri = storage.join(prefix, f"{row_id}{OUTPUT_SUFFIX}")
    else:
        if not isinstance(requested, str) or not requested.strip():
            raise OutputError("output_uri is empty")
        requested = requested.strip()
        if storage.WINDOWS_PATH.match(requested) or "\\" in requested:
            raise OutputError(f"output_uri {shown} looks like a Windows path; give a path with '/' (relative to "
                              "--output), an absolute path or a URI")
        if "::" in requested:
            raise OutputError(f"output_uri {shown} is a chained URL ('::'): chained URLs are not allowed")
        try:
            requested = storage.explicit_form(requested)  # as input URIs are read (storage.relative_to_file)
        except StorageError as error:
            raise OutputError(f"output_uri {error}") from None
        if "://" not in requested and not requested.startswith("/"):
            if requested.startswith("~"):
                raise OutputError(f"output_uri {shown}: '~' is not expanded; give a path relative to --output, "
                                  "an absolute path or a URI")
            uri = storage.join(prefix, requested)  # relative: under --output, never the driver's cwd
        else:
            uri = requested
        if not storage.is_local_uri(uri) and ("?" in uri or "#" in uri):
            raise OutputError(f"output_uri {shown} carries a query or fragment")
    uri = policy.check(_collapse(uri), "output_uri")  # collapsed first: the roots see the path that is written
    parts = _relative_parts(uri, prefix)
    if parts is None and not policy.allowed_roots:
        raise OutputError(f"output_uri {shown} is outside --output {printable(prefix)} "
                          "(pass --allow-root to allow outputs elsewhere)")
    if parts is not None:
        if not parts:
            raise OutputError(f"output_uri {shown} is --output itself")
        if parts[0].casefold() in {reserved.casefold() for reserved in RESERVED_NAMES}:
            where = "" if len(parts) == 1 else "under "
            raise OutputError(f"output_uri {shown} is {where}{printable(parts[0])}, reserved under --output for "
                              "the job's results and report")
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if not name.lower().endswith(OUTPUT_SUFFIX) or name.lower() == OUTPUT_SUFFIX:
        raise OutputError(f"output_uri {shown} must name an {OUTPUT_SUFFIX} file")
    _check_name_lengths(uri, shown)
    for part in uri.split("/"):
        if PARTIAL_NAME.match(part) or part.startswith(PROBE_PREFIX):
            raise OutputError(f"output_uri {shown} uses a hidden temp name ({printable(part)}), reserved for "
                              "writes in flight")
    if storage.scheme_of(uri) == "memory" and not local_job:
        raise OutputError(f"output_uri {shown} is memory://, which is gone with the worker that writes it")
    return uri


def _check_name_lengths(uri: str, shown: str) -> None:
    """Refuse, at planning, a name the storage would refuse only at the write, after the whole render."""
    if storage.is_local_uri(uri):
        for part in storage.normalize(uri).split("/"):
            size = len(part.encode("utf-8"))
            if size > MAX_FILE_NAME_BYTES:
                raise OutputError(f"output_uri {shown}: the name {printable(part[:40])}... is {size} bytes, "
                                  f"over the {MAX_FILE_NAME_BYTES} a file name may have")
    elif len(uri.split("://", 1)[-1].split("/", 1)[-1].encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
        raise OutputError(f"output_uri {shown}: its object key is over the {MAX_OBJECT_KEY_BYTES} bytes "
                          "a bucket allows")


def _collision_key(uri: str) -> str:
    """Two URIs with the same key are the same file (local: symlinks resolved; case kept)."""
    return os.path.realpath(uri) if storage.is_local_uri(uri) else uri


def _fail_outputs_under_other_outputs(rows: Sequence[OutputRequest], plans: list[OutputPlan],
                                      keys: Mapping[int, str]) -> None:
    """Fail each row whose output lies under another row's output (``a.mp4`` and ``a.mp4/b.mp4``): one
    name cannot be both a video and a folder.  Whichever ran first won; the other rendered in full and
    then failed at its write, as "exists and is not this row's video", over a file that did not exist.
    ``keys``: each planned row's :func:`_collision_key`, by index."""
    targets = {key: index for index, key in keys.items() if plans[index].ok}
    for index, plan in enumerate(plans):
        if not plan.ok or not storage.is_local_uri(plan.uri):  # a bucket holds keys a.mp4 and a.mp4/b.mp4 both
            continue
        folder = keys[index]
        while True:
            folder, _, name = folder.rstrip("/").rpartition("/")
            if not name or not folder:
                break
            if folder in targets and targets[folder] != index:
                plans[index] = OutputPlan(None, f"output {printable(plan.uri)} lies in the folder "
                                                f"{printable(plans[targets[folder]].uri)}, which is the output of "
                                                f"{_name_rows([rows[targets[folder]]])}: a name cannot be both a "
                                                "video and a folder; give one of the rows another output_uri")
                break


def _warn_of_case_twins(rows: Sequence[OutputRequest], plans: Sequence[OutputPlan]) -> None:
    """Log the rows whose outputs differ only in letter case (``Cat.mp4``, ``cat.mp4``) or in how their
    accents are encoded (``café`` as one character or as ``e`` and a combining accent).

    Both are written: they are two files here and two keys in a bucket.  But copied or synced to
    a Mac's or Windows' disk one overwrites the other, silently, so the job says so up front.
    """
    by_folded: dict[str, list[int]] = {}
    for index, plan in enumerate(plans):
        if plan.ok:
            folded = unicodedata.normalize("NFC", _collision_key(plan.uri)).casefold()
            by_folded.setdefault(folded, []).append(index)
    for indices in by_folded.values():
        if len(indices) > 1:
            logger.warning("outputs that differ only in letter case or accent encoding, which a Mac's or Windows' "
                           "disk holds as one file: %s",
                           ", ".join(f"{printable(plans[i].uri)} ({_name_rows([rows[i]])})"
                                     for i in indices[:MAX_NAMED_ROWS + 1]))


# File names Windows reserves for devices, whatever their extension (CON.mp4 is the console there).
WINDOWS_DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"com{n}" for n in range(1, 10)),
                                  *(f"lpt{n}" for n in range(1, 10))})


def _warn_of_names_other_disks_refuse(rows: Sequence[OutputRequest], plans: Sequence[OutputPlan]) -> None:
    """Log the rows whose output names Windows cannot hold (``CON.mp4``, ``nul.mp4``) or hides (``.x.mp4``).

    Both are written here; a copy to a Windows disk fails on the first, and a file browser (or a
    sync that skips dot files) misses the second, so the job says so up front.
    """
    reserved, hidden = [], []
    for index, plan in enumerate(plans):
        if plan.ok:
            name = plan.uri.rstrip("/").rsplit("/", 1)[-1]
            if name.split(".", 1)[0].lower() in WINDOWS_DEVICE_NAMES:
                reserved.append(index)
            elif name.startswith("."):
                hidden.append(index)
    for indices, why in ((reserved, "names Windows reserves for devices (a copy there fails)"),
                         (hidden, "hidden names (starting with '.': file browsers and some syncs skip them)")):
        if indices:
            logger.warning("outputs with %s: %s", why, ", ".join(
                f"{printable(plans[i].uri)} ({_name_rows([rows[i]])})" for i in indices[:MAX_NAMED_ROWS + 1]))


def _name_rows(others: Sequence[OutputRequest]) -> str:
    named = ", ".join(f"row {other.row_index} ({printable(other.row_id)})" for other in others[:MAX_NAMED_ROWS])
    more = len(others) - MAX_NAMED_ROWS
    return named + (f" and {more} more" if more > 0 else "")


def plan_outputs(output_prefix: str, rows: Sequence[OutputRequest], policy: StoragePolicy, local_job: bool,
                 storage_options: Mapping[str, Any] | None = None) -> list[OutputPlan]:
    """Each row's :class:`OutputPlan`, in the order given.  Call at driver planning, over every parsed row.

    Per row, :func:`resolve_output`'s refusals; then over all rows, every row of a group that
    shares a final path fails ("output X is also the output of row 3 (b)"); then, with one
    listing per distinct target folder, a target that is an existing directory fails and one
    that is an existing file is marked ``exists`` (decide with :func:`inspect_existing_output`).
    """
    plans: list[OutputPlan] = []
    for row in rows:
        try:
            plans.append(OutputPlan(resolve_output(output_prefix, row.row_id, row.output_uri, policy, local_job)))
        except StorageError as exc:
            plans.append(OutputPlan(None, str(exc)))

    keys = {index: _collision_key(plan.uri) for index, plan in enumerate(plans) if plan.ok}
    by_key: dict[str, list[int]] = {}
    for index, key in keys.items():
        by_key.setdefault(key, []).append(index)
    for indices in by_key.values():
        if len(indices) > 1:
            for index in indices:
                others = [rows[other] for other in indices if other != index]
                plans[index] = OutputPlan(None, f"output {printable(plans[index].uri)} is also the output of "
                                                f"{_name_rows(others)}; each row needs its own output_uri")
    _fail_outputs_under_other_outputs(rows, plans, keys)
    _warn_of_case_twins(rows, plans)
    _warn_of_names_other_disks_refuse(rows, plans)

    listings: dict[str, dict[str, str] | str] = {}
    for index, plan in enumerate(plans):
        if not plan.ok:
            continue
        folder, _, name = plan.uri.rstrip("/").rpartition("/")
        if folder not in listings:
            listings[folder] = _list_types(folder or "/", storage_options)
        listing = listings[folder]
        if isinstance(listing, str):
            plans[index] = OutputPlan(None, f"output {printable(plan.uri)}: {listing}")
        elif listing.get(name) == "directory":
            plans[index] = OutputPlan(None, f"output {printable(plan.uri)} is an existing directory")
        elif name in listing:
            plans[index] = OutputPlan(plan.uri, exists=True)
    return plans


def _list_types(folder: str, storage_options: Mapping[str, Any] | None) -> dict[str, str] | str:
    """{name: "file" | "directory"} directly under ``folder`` ({} if it does not exist), or why it cannot be used."""
    fs, path = storage.filesystem_for(folder, storage_options)
    try:
        entries = fs.ls(path, detail=True, refresh=True)  # never an earlier listing from the cache
    except FileNotFoundError:
        return {}
    except NotADirectoryError:
        return f"its folder {printable(folder)} is a file"
    except OSError as exc:
        return f"its folder {printable(folder)} cannot be listed: {printable(exc)}"
    if any(entry["name"].rstrip("/") == path.rstrip("/") and entry.get("type") != "directory" for entry in entries):
        return f"its folder {printable(folder)} is a file"  # ls of a file lists the file itself
    return {entry["name"].rstrip("/").rsplit("/", 1)[-1]: entry.get("type", "file") for entry in entries}


# --- before the first row ------------------------------------------------------------------------

def probe_output_writable(output_uri: str, storage_options: Mapping[str, Any] | None = None,
                          min_free_bytes: int | None = DEFAULT_MIN_FREE_BYTES) -> None:
    """Write and remove a small hidden object under ``--output``; StorageError naming the output if it cannot.

    Call once at driver planning, before any row runs: a read-only folder, a full disk or a
    bucket that denies writes fails the job in one line instead of every row at its end.  The
    probe is written as rows are (create-only, temp then publish), under a fresh hidden name.
    On local disk the folder is created if missing, and less than ``min_free_bytes`` free fails.
    """
    fs, path = storage.filesystem_for(output_uri, storage_options, "--output")
    shown = printable(output_uri)
    if storage.is_local_uri(output_uri):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"--output {shown} cannot be created: {exc.strerror or exc}") from None
        if min_free_bytes:
            status = os.statvfs(path)
            free = status.f_bavail * status.f_frsize
            if free < min_free_bytes:
                raise StorageError(f"--output {shown} has only {free} bytes free (at least {min_free_bytes} needed)")
    # In a bucket one fixed name, replaced by every run: where deletes are denied (a delivery bucket)
    # a fresh name per run piled up one object a night.  On disk, a fresh name written as rows are.
    remote = not storage.is_local_uri(output_uri)
    probe = storage.join(output_uri, f"{PROBE_PREFIX}{'bucket' if remote else uuid.uuid4().hex}")
    write = storage.write_replace if remote else storage.write_create_only
    try:
        write(probe, b"hellomeme-batch write probe\n", storage_options)
    except Exception as exc:  # any refusal (permissions, read-only, full, denied bucket) means: not writable
        raise StorageError(f"--output {shown} is not writable: {printable(f'{type(exc).__name__}: {exc}')}") from None
    try:
        storage.list_names(output_uri, storage_options)
    except Exception as exc:  # a write-only drop box: every row would fail at planning, one by one
        cause = printable(f"{type(exc).__name__}: {exc}")
        raise StorageError(f"--output {shown} can be written but not listed ({cause}): the job lists and reads it "
                           "too, to skip finished rows and never replace a file it did not make") from None
    try:
        probe_fs, probe_path = storage.filesystem_for(probe, storage_options)
        probe_fs.rm_file(probe_path)
    except Exception as exc:  # writing works, which is what the job needs; say what is left behind
        logger.warning("write probe %s could not be removed: %s", printable(probe), printable(exc))


def clean_stale_partials(output_uri: str, storage_options: Mapping[str, Any] | None = None,
                         directories: Iterable[str] = (), min_age_s: float = DEFAULT_STALE_AGE_S) -> list[str]:
    """Remove the hidden temp files (``.<name>.<random>.partial``, write probes) a crashed run left; returns them.

    Call once at driver planning, after :func:`plan_outputs`, passing the folders of the planned
    outputs as ``directories`` (``--output``, its ``_results/`` and ``_report/`` are always
    looked at).  Only those folders are scanned, not recursively: ``--output`` may be a large
    tree.  Only files at least ``min_age_s`` old go, so a run writing to the same output right
    now keeps its temp files.  Local disk only: object stores publish in one PUT and leave nothing.
    """
    cutoff = time.time() - min_age_s
    removed = _remove_partials(output_uri, directories, lambda mtime: mtime <= cutoff)
    if removed:
        logger.info("removed %d temp file(s) left by an earlier run under %s", len(removed),
                    printable(storage.normalize(output_uri)))
    return removed


def clean_partials_since(output_uri: str, since: float, directories: Iterable[str] = (),
                         names: Iterable[str] | None = None) -> list[str]:
    """Remove the temp files made since ``since`` (epoch seconds): those of a run whose workers were stopped.

    Call after a stopped job's workers are gone (its local Ray instance ended), with the job's
    start time: their writes in flight can never finish.  Same folders as :func:`clean_stale_partials`.
    ``names``: the job's own outputs' file names; then, outside ``_results/`` and ``_report/``, only
    their temp files go, and another job's writes into the same folder are left alone.
    """
    prefixes = None if names is None else tuple(storage.temp_prefix(name) for name in names)
    removed = _remove_partials(output_uri, directories, lambda mtime: mtime >= since, prefixes)
    if removed:
        logger.info("removed %d temp file(s) of writes the stop cut short", len(removed))
    return removed


def _remove_partials(output_uri: str, directories: Iterable[str], chosen: Callable[[float], bool],
                     own_prefixes: tuple[str, ...] | None = None) -> list[str]:
    if not storage.is_local_uri(output_uri):
        return []
    prefix = storage.normalize(output_uri)
    job_folders = {storage.join(prefix, name) for name in (RESULTS_DIR, PREVIEW_DIR)}
    folders = dict.fromkeys([prefix, *job_folders,
                             *(storage.normalize(folder) for folder in directories if storage.is_local_uri(folder))])
    removed = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if not (PARTIAL_NAME.match(entry.name) or entry.name.startswith(PROBE_PREFIX)):
                continue
            if (own_prefixes is not None and folder not in job_folders and PARTIAL_NAME.match(entry.name)
                    and not entry.name.startswith(own_prefixes)):
                continue  # another job's write in flight
            try:
                if entry.is_file(follow_symlinks=False) and chosen(entry.stat(follow_symlinks=False).st_mtime):
                    os.unlink(entry.path)
                    removed.append(entry.path)
            except FileNotFoundError:
                continue  # removed meanwhile
    return removed


# --- whose video is this --------------------------------------------------------------------------

def output_fingerprint(row_id: str, input_uris: Sequence[str], settings: Mapping[str, Any], engine: str) -> str:
    """A 32-hex-digit hash of what makes a row's video: id, input URIs, pixel-affecting settings, engine.

    ``settings`` are the resolved values that change pixels (size, fps, seed, steps, guidance,
    prompt, window, overlap, interpolation, engine options ...), JSON-serialisable, with the same
    types from run to run.  Called once, at planning, to recognise the row's own earlier video; the
    row carries it to the encode stage, which embeds it in the MP4's comment (:func:`fingerprint_comment`).
    """
    identity = {"version": FINGERPRINT_VERSION, "id": row_id, "inputs": list(input_uris), "engine": engine,
                "settings": dict(settings)}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def cut_by_cap(span: float, row_max_seconds: float | None, cap: float) -> bool:
    """Whether a row's rendered span was cut short by the job's ``--max-seconds`` ``cap``, not by the
    row's own ``max_seconds`` (a clip exactly as long as the cap counts too: it cannot be told apart)."""
    return span >= cap - 1e-6 and (row_max_seconds is None or row_max_seconds > cap + 1e-9)


def fingerprint_comment(fingerprint: str, cut_at: float | None = None) -> str:
    """The MP4 comment of a row's video: ``FINGERPRINT_TAG + fingerprint``, and where the job's cap cut
    its clip, ``CUT_MARK`` and the cap, so a rerun under a higher cap renders the rest of the clip.

    The encode stage writes it as the ``comment`` metadata; the MP4 muxer puts that in the ``moov``
    box (``udta/meta/ilst/©cmt``), where :func:`inspect_existing_output` looks for it.
    """
    if not re.fullmatch(r"[0-9a-f]{32}", fingerprint):
        raise ValueError(f"not an output fingerprint: {fingerprint!r}")
    return FINGERPRINT_TAG + fingerprint + ("" if cut_at is None else f"{CUT_MARK}{cut_at!r} s")  # exact: re-read


@dataclass(frozen=True)
class ExistingOutput:
    """What an existing file at a row's target is: ``owned`` (this row's own video) or why not.

    ``ours``: a complete video this tool made (it carries a fingerprint), this row's or one made
    from other inputs or settings: ``--no-skip-existing`` may replace it; anything else never is.
    """

    owned: bool
    reason: str = ""
    ours: bool = False
    cut_at: float | None = None  # an owned video whose clip the job's --max-seconds cut at this many seconds


_ANY_FINGERPRINT = re.compile(re.escape(FINGERPRINT_TAG).encode("ascii") + rb"[0-9a-f]{32}")
_CUT = re.compile(re.escape(CUT_MARK.encode("ascii")) + rb"([0-9.e+-]{1,32}) s")


def _cut_at(after_fingerprint: bytes) -> float | None:
    """The cap a video's comment says its clip was cut at (:func:`fingerprint_comment`); None if none, or unreadable."""
    cut = _CUT.match(after_fingerprint)
    try:
        return float(cut.group(1)) if cut else None
    except ValueError:  # a comment written by hand ("1.2.3"): no cut known, the video is still the row's
        return None


def inspect_existing_output(uri: str, fingerprint: str, storage_options: Mapping[str, Any] | None = None,
                            also: Sequence[str] = ()) -> ExistingOutput:
    """Whether the file at ``uri`` is this row's own earlier output, reading only box headers and ``moov``.

    Owned: a regular file or object whose top-level MP4 boxes start with ``ftyp``, add up exactly
    to its size, include media data and a ``moov`` box (at most :data:`MAX_MOOV_BYTES`) with a
    track, and whose metadata carries ``FINGERPRINT_TAG + fingerprint`` (or one of ``also``: the same
    row's fingerprint as an earlier version of this tool wrote it).  Anything else -- 0 bytes,
    a write cut short (no ``moov``), another row's or program's video, a pipe -- is not, with the
    reason.  Call at planning for each row whose plan ``exists``, and in the write stage when a
    create-only write finds the name taken.  Not owned: fail the row with :func:`not_owned_message`.
    """
    try:
        with storage.open_seekable(uri, storage_options, what="output", block_size=_HEADER_BLOCK_BYTES) as (
                handle, size):
            if size == 0:
                return ExistingOutput(False, "is empty (0 bytes)")
            moov = _read_moov(handle, size)
    except FileNotFoundError:
        return ExistingOutput(False, "does not exist")
    except StorageError as exc:
        return ExistingOutput(False, str(exc))
    except OSError as exc:
        return ExistingOutput(False, f"cannot be read: {printable(exc)}")
    if isinstance(moov, str):
        return ExistingOutput(False, f"is not a complete MP4 ({moov})")
    for known in (fingerprint, *also):
        tag = (FINGERPRINT_TAG + known).encode("ascii")
        if tag in moov:
            return ExistingOutput(True, ours=True, cut_at=_cut_at(moov[moov.index(tag) + len(tag):]))
    if _ANY_FINGERPRINT.search(moov):
        return ExistingOutput(False, "was made by hellomeme-batch from other inputs or settings", ours=True)
    return ExistingOutput(False, "is another video (it does not carry this row's fingerprint)")


def owns_existing_output(uri: str, fingerprint: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True only when the file at ``uri`` is this row's own complete earlier output (see :func:`inspect_existing_output`)."""
    return inspect_existing_output(uri, fingerprint, storage_options).owned


def not_owned_message(uri: str, verdict: ExistingOutput, after_planning: bool = False) -> str:
    """The row's error when its target holds something else: names the output, what it is, and what to do.

    ``after_planning``: the file was not there when the job was planned, so something else wrote it
    while the row rendered (another job, a sync tool); said, as the user would otherwise look for a
    file that the job should have seen before it began.
    """
    remedy = ("rerun with --no-skip-existing to replace it if this row's inputs or settings changed, or give the "
              "row another output_uri if it is another job's video (the same id in another manifest: that flag "
              "would replace it)" if verdict.ours else "move it away or give the row another output_uri")
    when = (" (it appeared while this row rendered, after the job was planned: another job or program wrote it; "
            "this row's video was not written)" if after_planning else "")
    return f"output {printable(uri)} exists and is not this row's video{when}: it {verdict.reason}; {remedy}"


def _read_exact(handle: BinaryIO, count: int) -> bytes:
    chunks, remaining = [], count
    while remaining > 0:
        chunk = handle.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_moov(handle: BinaryIO, size: int) -> bytes | str:
    """The payload of the file's ``moov`` box after checking the top-level box structure, or what is wrong."""
    offset, count, moov, media_bytes = 0, 0, None, 0
    while offset < size:
        count += 1
        if count > MAX_TOP_LEVEL_BOXES:
            return f"more than {MAX_TOP_LEVEL_BOXES} top-level boxes"
        handle.seek(offset)
        header = _read_exact(handle, 8)
        if len(header) < 8:
            return f"a box header is cut off at byte {offset}"
        box_size, box_type = struct.unpack(">I4s", header)
        header_size = 8
        if box_size == 1:
            large = _read_exact(handle, 8)
            if len(large) < 8:
                return f"a box header is cut off at byte {offset}"
            box_size, header_size = struct.unpack(">Q", large)[0], 16
        elif box_size == 0:  # "to the end of the file"
            box_size = size - offset
        if not re.fullmatch(rb"[\x20-\x7e\xa9]{4}", box_type):
            return f"no MP4 box at byte {offset}"
        name = box_type.decode("latin-1")
        if count == 1 and box_type != b"ftyp":
            return f"it starts with a {printable(name)} box, not ftyp"
        if box_size < header_size:
            return f"the {printable(name)} box at byte {offset} has an impossible size"
        if offset + box_size > size:
            return f"the {printable(name)} box runs past the end of the file (a write cut short)"
        if box_type == b"moov":
            if box_size - header_size > MAX_MOOV_BYTES:
                return f"its moov box is over {MAX_MOOV_BYTES} bytes"
            moov = _read_exact(handle, box_size - header_size)
            if len(moov) < box_size - header_size:
                return "its moov box is cut off"
        elif box_type == b"mdat":
            media_bytes += box_size - header_size
        offset += box_size
    if moov is None:
        return "moov atom not found"
    if not media_bytes:
        return "no media data"
    if b"trak" not in moov:
        return "no tracks"
    return moov
