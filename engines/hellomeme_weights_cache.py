"""Weights from object storage (s3://, gs://) in a node-local cache: downloaded once per node, verified before use.

Every render actor needs the model on local disk, and a node may run eight of them.  The first
actor to arrive takes an exclusive ``fcntl`` lock on the cache entry, lists the remote files
(names and sizes), downloads what is missing or differs into temp files, checks each file's size
and, for ``.safetensors``, that its header parses and its tensors fit the file, then renames it
into place and writes a manifest.  Actors that were waiting on the lock find the manifest, verify
the local files the same way (sizes and headers, a few kilobytes each) and use them.  A file that
fails verification is fetched again; one that fails after download raises, so a job never loads
a truncated model.

Credentials come from the job's storage options (handed to the engine by its render actor) or the
provider's usual chain; nothing secret is logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hellomeme.weight_files import WeightFileError, WeightFiles
from mediaio.storage import filesystem_for, redact, scheme_of

logger = logging.getLogger(__name__)

CACHE_ENV = "HELLOMEME_WEIGHTS_CACHE"
REMOTE_SCHEMES = ("s3", "gs", "gcs", "memory")
MANIFEST = ".hellomeme-cache.json"
# Files in a weights tree that HelloMeme never reads.
SKIPPED = ("*fp16*", "*non_ema*", "*.ckpt", "*.msgpack", "*.onnx*", "*.h5", "*.ot", "*.md", ".git*")


class WeightsCacheError(RuntimeError):
    """Weights could not be brought to this node intact."""


def is_remote(location: str | None) -> bool:
    return location is not None and "://" in location and scheme_of(location) in REMOTE_SCHEMES


def default_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hellomeme-batch").expanduser()


@dataclass(frozen=True)
class SyncResult:
    path: Path  # the local folder (a tree) or file (a single object)
    downloaded: tuple[str, ...]  # relative names fetched by this call (empty when the cache was complete)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _entry_name(uri: str) -> str:
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in posixpath.basename(uri.rstrip("/")))[:48]
    return f"{stem or 'weights'}-{digest}"


def verify_file(path: Path, size: int) -> None:
    """Raise WeightsCacheError unless ``path`` has ``size`` bytes and, if safetensors, a sound header."""
    if not path.is_file():
        raise WeightsCacheError(f"{path} is missing")
    actual = path.stat().st_size
    if actual != size:
        raise WeightsCacheError(f"{path} has {actual} bytes, expected {size}")
    if path.name.endswith(".safetensors"):
        try:
            WeightFiles().safetensors_header(str(path))
        except WeightFileError as err:
            raise WeightsCacheError(str(err)) from err


def _remote_listing(fs, root: str, single: bool, select: Callable[[str], bool]) -> dict[str, int]:
    if single:
        return {posixpath.basename(root): int(fs.size(root))}
    found = fs.find(root, detail=True)
    listing = {}
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        relative = posixpath.relpath(path, root.rstrip("/"))
        if select(relative):
            listing[relative] = int(info["size"])
    if not listing:
        raise WeightsCacheError(f"nothing to fetch under {redact(root)}")
    return _prefer_safetensors(listing)


def _prefer_safetensors(listing: dict[str, int]) -> dict[str, int]:
    """Drop pickled weights (.bin) from folders that also hold safetensors: the loaders prefer those."""
    with_safetensors = {posixpath.dirname(r) for r in listing if r.endswith(".safetensors")}
    return {r: s for r, s in listing.items() if not (r.endswith(".bin") and posixpath.dirname(r) in with_safetensors)}


def _read_manifest(target: Path) -> dict[str, int] | None:
    try:
        return {str(k): int(v) for k, v in json.loads((target / MANIFEST).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return None


def _fetch(fs, remote: str, local: Path, size: int) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
    os.close(handle)
    try:
        fs.get_file(remote, temp)
        actual = os.path.getsize(temp)
        if actual != size:
            raise WeightsCacheError(f"{redact(remote)}: downloaded {actual} bytes, expected {size}")
        if local.name.endswith(".safetensors"):
            try:
                WeightFiles().safetensors_header(temp)
            except WeightFileError as err:
                raise WeightsCacheError(f"{redact(remote)}: {err}") from err
        with open(temp, "rb") as data:
            os.fsync(data.fileno())
        os.replace(temp, local)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def sync(uri: str, cache_root: str | Path | None = None, storage_options: Mapping[str, Any] | None = None,
         select: Callable[[str], bool] | None = None, single: bool | None = None) -> SyncResult:
    """Bring ``uri`` (a folder prefix, or one object with ``single``) into the node-local cache; safe across processes.

    ``select`` chooses which relative paths of a folder are needed (all but :data:`SKIPPED` by default).
    """
    if not is_remote(uri):
        raise WeightsCacheError(f"{redact(uri)} is not an object-storage URI ({', '.join(REMOTE_SCHEMES)})")
    root = Path(cache_root).expanduser() if cache_root else default_cache_root()
    name = _entry_name(uri)
    target = root / name
    fs, remote_root = filesystem_for(uri, storage_options)
    if single is None:
        single = not fs.isdir(remote_root)
    wanted = select or (lambda rel: not any(fnmatch.fnmatch(posixpath.basename(rel), p) for p in SKIPPED))
    with _locked(root / f"{name}.lock"):
        try:
            listing = _remote_listing(fs, remote_root, single, wanted)
        except FileNotFoundError:
            raise WeightsCacheError(f"{redact(uri)} does not exist") from None
        downloaded = []
        cached = _read_manifest(target)
        for relative, size in sorted(listing.items()):
            local = target / relative
            if cached is not None and cached.get(relative) == size:
                try:
                    verify_file(local, size)
                    continue
                except WeightsCacheError as err:
                    logger.warning("cached weight file fails verification, fetching again: %s", err)
            remote = remote_root if single else posixpath.join(remote_root.rstrip("/"), relative)
            _fetch(fs, remote, local, size)
            downloaded.append(relative)
        if downloaded or cached != listing:
            manifest = target / MANIFEST
            temp = manifest.with_suffix(".tmp")
            temp.write_text(json.dumps(listing, sort_keys=True))
            os.replace(temp, manifest)
    if downloaded:
        total = sum(listing[r] for r in downloaded)
        logger.info("synced %d files (%.1f MB) from %s into %s", len(downloaded), total / 1e6, redact(uri), target)
    path = target / posixpath.basename(remote_root) if single else target
    return SyncResult(path=path, downloaded=tuple(downloaded))


def folder_selector(folders: tuple[str, ...]) -> Callable[[str], bool]:
    """Select files under ``folders`` (relative), skipping :data:`SKIPPED`."""
    prefixes = tuple(f.strip("/") + "/" for f in folders)

    def select(relative: str) -> bool:
        base = posixpath.basename(relative)
        if any(fnmatch.fnmatch(base, p) for p in SKIPPED):
            return False
        return relative.startswith(prefixes)

    return select
