"""Object storage through fsspec: which URIs are allowed, bounded reads of regular files, safe writes.

Reads open only what the policy allowed, and only regular files or storage objects.  A chained
fsspec URL (``a.mp4::memory``) is refused outright: the allow-list would check one string while
fsspec opens another.  A local path is checked after its symlinks are resolved, and checked again
on the file actually opened (``/proc/self/fd``), so a link swapped in between cannot escape the
roots.  Named pipes, devices, sockets and directories are refused before any byte is read: a
pipe would hold the row forever, and a device reports size 0, so a size check alone would let
``/dev/zero`` stream without end.  Every read is bounded in bytes by counting what arrives (one
byte past the limit fails the read), whatever size the file or object reports.

Writes never expose a partial file under its final name: on local disk the bytes go to a temp
file in the same directory, are fsynced and then hard-linked into place (create-only) or
renamed over it (replace); on S3 one PUT is atomic, and ``If-None-Match: *`` makes it
create-only; on Google Cloud Storage an upload is atomic too, and ``ifGenerationMatch=0``
(gcsfs' create mode) makes it create-only.  Credentials never appear in messages: URIs in errors
go through
:func:`mediaio.redaction.printable` (credentials redacted, control characters escaped).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import stat
import queue
import re
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Iterator, Mapping
from urllib.parse import unquote, urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mediaio.redaction import printable, redact

# gcsfs (gs://) turns on its experimental zonal and hierarchical bucket support by default: it
# asks a bucket's type over gRPC before the first use of each bucket, which an endpoint other than
# Google's (an emulator, a proxy) never answers, so every worker's first access waited 60 s.  Plain
# object reads and writes need none of it.  Set before gcsfs is first imported; a user's own
# setting wins.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

__all__ = ["StorageError", "NotFoundError", "StoragePolicy", "redact", "printable", "read_bytes", "open_input",
           "fetch_to_file", "open_seekable", "write_create_only", "write_replace", "exists", "list_names", "join", "normalize",
           "scheme_of", "filesystem_for", "is_local_uri", "DEFAULT_SCHEMES", "DEFAULT_MAX_READ_BYTES"]


class StorageError(Exception):
    """A URI is not allowed, or storage refused an operation; the message names the URI and the cause."""


class NotFoundError(StorageError, FileNotFoundError):
    """Nothing exists at the URI (also a FileNotFoundError, so callers catching that keep working)."""


DEFAULT_SCHEMES = ("file", "s3", "gs", "gcs", "memory")
# The bound on any read that names none: no input, manifest or existing output is read unbounded.
DEFAULT_MAX_READ_BYTES = 2 * 1024**3
_CHUNK = 1 << 20


def scheme_of(uri: str) -> str:
    """The URI's scheme; plain paths are 'file'."""
    if "://" not in uri:
        return "file"
    return uri.split("://", 1)[0].lower()


def _long_file_form(uri: str) -> str:
    """``file:/p``, RFC 8089's short form (Java's ``File.toURI()``, Hadoop's paths), as ``file:///p``."""
    if uri[:5].lower() == "file:" and uri[5:6] == "/" and uri[6:7] != "/":
        return "file://" + uri[5:]
    return uri


def normalize(uri: str) -> str:
    """Plain paths become absolute file paths (``file:///p``, ``file:/p`` and ``file://localhost/p`` too);
    other URIs unchanged.

    A ``file://`` URI is percent-decoded (RFC 8089): ``Path.as_uri()`` writes a space as ``%20``
    and non-ASCII names as UTF-8 escapes.  A plain path is taken literally ('%' is a legal name).
    """
    uri = _long_file_form(uri)
    if "://" not in uri:
        return os.path.abspath(os.path.expanduser(uri))
    if uri[:7].lower() == "file://":
        rest = unquote(uri[len("file://"):])
        if "\x00" in rest:
            raise StorageError(f"{printable(uri)} decodes to a path with a NUL character")
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        return os.path.abspath(rest)
    return uri


# A drive letter or a UNC share (C:\faces\a.jpg, \\server\share\a.jpg): a manifest or CSV made on Windows.
# Never a path here: taken beside the manifest it read "/data/C:\faces\a.jpg not found", the row
# failing only once it reached the prepare stage.
WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def explicit_form(uri: str) -> str:
    """``uri`` as written, with RFC 8089's short ``file:/p`` spelt ``file:///p``; StorageError for a
    known scheme without its ``//`` (``s3:/bucket/key``, ``gs:bucket/key``), which would otherwise
    be taken as a relative path whose first folder is named ``s3:``, and for a Windows path."""
    if WINDOWS_PATH.match(uri):
        raise StorageError(f"{printable(uri)} looks like a Windows path: give the path as this machine sees it, "
                           "with '/' (relative to the manifest, absolute, or a URI such as s3://bucket/key)")
    uri = _long_file_form(uri)
    if "://" in uri or uri.startswith(("/", "~")):
        return uri
    scheme, colon, rest = uri.partition(":")
    if colon and scheme.lower() == "file":  # file:x -- a file URI names an absolute path
        raise StorageError(f"{printable(uri)} is not a valid URI (a file: URI names an absolute path, "
                           "file:///folder/name; a relative path is written without 'file:')")
    if colon and scheme.lower() in _known_protocols():
        raise StorageError(f"{printable(uri)} is not a valid URI (did you mean {scheme}://{rest.lstrip('/')}?)")
    return uri


def relative_to_file(uri: str, file_uri: str) -> str:
    """A relative plain path taken from the folder of ``file_uri`` (a manifest's, local or remote); others unchanged.

    A manifest's rows name their media as the manifest's author saw them, beside the manifest;
    the driver's working directory (on a cluster, the job's) has nothing to do with it.
    """
    if not isinstance(uri, str) or not uri.strip():
        return uri
    uri = explicit_form(uri)
    if "://" in uri or uri.startswith(("/", "~")):
        return uri
    folder = normalize(file_uri).rstrip("/").rsplit("/", 1)[0] or "/"  # a folder manifest may end in '/'
    if "://" not in folder:
        return f"{folder}/{uri}"  # normalize() collapses its '.' and '..' as the file system would
    # In a bucket the same project must read the same files: '.' and '..' are resolved here (the
    # policy refuses them in a remote URI), and may not climb above the bucket.
    scheme, rest = folder.split("://", 1)
    bucket, _, key_folder = rest.partition("/")
    key = key_folder.split("/") if key_folder else []
    for part in uri.split("/"):
        if part == ".":
            continue
        if part == "..":
            if not key:
                raise StorageError(f"{printable(uri)} climbs above the bucket {scheme}://{bucket} (from "
                                   f"{printable(file_uri)})")
            key.pop()
            continue
        key.append(part)
    return f"{scheme}://{bucket}/" + "/".join(key)


@functools.lru_cache(maxsize=1)
def _known_protocols() -> frozenset[str]:
    """URI schemes fsspec knows (s3, gs, http...): ``s3:/bucket/key`` is a typo, not a file named so."""
    return frozenset({name.lower() for name in fsspec.available_protocols()} | set(DEFAULT_SCHEMES))


def is_local_uri(uri: str) -> bool:
    """Whether ``uri`` names a file on this machine's disk (a plain path or file://)."""
    return scheme_of(uri) == "file"


@dataclass(frozen=True)
class StoragePolicy:
    """Which URI schemes and roots a job may read from and write to.

    ``allowed_roots`` empty means any location of an allowed scheme.  Roots are URI prefixes
    (plain paths for local files); a URI is allowed when it lies at or below one of them.
    """

    allowed_schemes: tuple[str, ...] = DEFAULT_SCHEMES
    allowed_roots: tuple[str, ...] = ()

    def _roots_shown(self, most: int = 3) -> str:
        """The roots, for a refusal: which --allow-root to add, or which the path was meant to be under."""
        shown = ", ".join(printable(root) for root in self.allowed_roots[:most])
        more = len(self.allowed_roots) - most
        return f"--allow-root {shown}" + (f" and {more} more" if more > 0 else "")

    def check(self, uri: str, what: str = "uri") -> str:
        """Return the normalised URI, or raise StorageError saying why it is refused.

        Refused: empty, NUL, credentials in the URI, a scheme not allowed, a chained URL (``::``),
        a ``file://`` URI that is not absolute, and -- when roots are set -- anything outside them.
        Local paths are compared after resolving symlinks (what would actually be opened).
        """
        if not isinstance(uri, str) or not uri.strip():
            raise StorageError(f"{what} is empty")
        if "\x00" in uri:
            raise StorageError(f"{what} {printable(uri)} contains a NUL character")
        if "::" in uri:
            raise StorageError(f"{what} {printable(uri)} is a chained URL ('::'): chained URLs are not allowed "
                               "(the part before '::' would be opened, not the URI that was checked)")
        scheme = scheme_of(uri)
        if "://" in uri and urlsplit(uri).username is not None:
            raise StorageError(f"{what} {printable(uri)} carries credentials; use storage options or the standard "
                               "chain")
        if scheme not in self.allowed_schemes:
            raise StorageError(
                f"{what} {printable(uri)} uses scheme {scheme!r}, allowed: {', '.join(self.allowed_schemes)}"
            )
        if scheme != "file" and any(part in (".", "..") for part in uri.split("://", 1)[1].split("/")[1:]):
            raise StorageError(f"{what} {printable(uri)} has '.' or '..' path segments")
        if uri[:7].lower() == "file://" and not (uri[7:].startswith("/") or uri[7:].startswith("localhost/")):
            raise StorageError(f"{what} {printable(uri)} is not an absolute file:// URI (use file:///path)")
        normalized = normalize(uri)
        if self.allowed_roots and not self.is_allowed(normalized):
            # What was compared: a relative or ``~`` path, a file:// URI or a symlink is shown as the path it is.
            resolved = os.path.realpath(normalized) if "://" not in normalized else normalized
            via = f" (it resolves to {printable(resolved)})" if resolved != uri else ""
            raise StorageError(f"{what} {printable(uri)} is outside the allowed roots{via} ({self._roots_shown()})")
        return normalized

    def is_allowed(self, normalized: str) -> bool:
        """Whether a normalised URI lies at or under one of the roots (always, when there are none)."""
        return not self.allowed_roots or any(_is_under(normalized, normalize(root)) for root in self.allowed_roots)

    def check_opened(self, opened_path: str, uri: str, what: str = "uri") -> None:
        """Raise StorageError if the local file actually opened for ``uri`` lies outside the roots."""
        if self.allowed_roots and not self.is_allowed(opened_path):
            raise StorageError(f"{what} {printable(uri)} opened {printable(opened_path)}, outside the allowed roots "
                               f"({self._roots_shown()})")


def _is_under(uri: str, root: str) -> bool:
    """Whether ``uri`` lies at or under ``root``; local paths compared with their symlinks resolved."""
    root = root.rstrip("/") or "/"
    if "://" not in uri:
        if "://" in root:
            return False
        uri = os.path.realpath(uri)
        root = os.path.realpath(root)
        return uri == root or uri.startswith(root.rstrip("/") + "/")
    if "://" not in root:
        return False
    return uri == root or uri.startswith(root + "/")


def filesystem_for(uri: str, storage_options: Mapping[str, Any] | None = None, what: str = "uri"):
    """The fsspec filesystem and the path inside it for a URI or plain path; chained URLs are refused.

    This is the one way into fsspec, so no read or write anywhere can open the part before a
    ``::`` that a check of the whole string let through.
    """
    if "::" in str(uri):
        raise StorageError(f"{what} {printable(uri)} is a chained URL ('::'): chained URLs are not allowed")
    fs, path = fsspec.core.url_to_fs(normalize(uri), **dict(storage_options or {}))
    return fs, path


def join(prefix: str, *names: str) -> str:
    """Join names under a prefix URI or path."""
    prefix = normalize(prefix)
    return "/".join([prefix.rstrip("/"), *[n.strip("/") for n in names]])


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _not_regular(mode: int) -> str | None:
    """What a file is when it is not a regular file ("a named pipe" ...), else None."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _NOT_REGULAR if test(mode)), "not a regular file")


def _opened_path(fd: int, fallback: str) -> str:
    """The path of the file an fd refers to, as the kernel resolved it (Linux); ``fallback`` elsewhere."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return fallback


MAX_TWIN_SEARCH = 100_000  # entries of a folder looked through for a name in another Unicode form


def _unicode_twin(path: str) -> str | None:
    """A name beside a missing ``path`` that is the same text in another Unicode form (NFC / NFD), or None.

    "été" may be written as three characters or as five (each accent its own): macOS keeps names
    decomposed, most other tools write them composed, and a manifest written from one finds nothing
    under the other's name, though the two print the same.
    """
    folder, name = os.path.split(path)
    composed = unicodedata.normalize("NFC", name)
    if composed == unicodedata.normalize("NFD", name):  # nothing in it has two forms
        return None
    try:
        with os.scandir(folder or ".") as entries:
            for _, entry in zip(range(MAX_TWIN_SEARCH), entries):
                if entry.name != name and unicodedata.normalize("NFC", entry.name) == composed:
                    return entry.name
    except OSError:
        return None
    return None


def _open_local_regular(path: str, uri: str, policy: "StoragePolicy | None", what: str) -> BinaryIO:
    """Open a local regular file for reading without ever blocking on a pipe or following a swapped-in link."""
    real = os.path.realpath(path)
    try:
        status = os.stat(real)
    except FileNotFoundError:
        twin = _unicode_twin(real)
        if twin is not None:
            form = "decomposed (NFD, as macOS writes)" if twin == unicodedata.normalize("NFD", twin) else "composed (NFC)"
            raise NotFoundError(f"{what} {printable(uri)} not found, but its folder holds {printable(twin)!r}, the same "
                                f"name with its accents written {form}: write the path as the disk has it") from None
        raise NotFoundError(f"{what} {printable(uri)} not found") from None
    except OSError as exc:
        raise StorageError(f"{what} {printable(uri)} cannot be read: {exc.strerror}") from None
    kind = _not_regular(status.st_mode)
    if kind:
        raise StorageError(f"{what} {printable(uri)} is {kind}, not a regular file")
    # O_NONBLOCK: if a pipe is swapped in after the stat, opening it returns at once instead of
    # waiting for a writer; fstat below then refuses it.  O_NOFOLLOW: the last component was
    # resolved above, so a symlink there now is a swap.
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {printable(uri)} not found") from None
    except OSError as exc:
        raise StorageError(f"{what} {printable(uri)} cannot be opened: {exc.strerror}") from None
    try:
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind:
            raise StorageError(f"{what} {printable(uri)} is {kind}, not a regular file")
        if policy is not None:
            policy.check_opened(_opened_path(fd, real), uri, what)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _open_remote_object(fs, path: str, uri: str, max_bytes: int | None, what: str,
                        block_size: int | None = None) -> tuple[BinaryIO, int]:
    """Open a storage object (not a prefix or directory); refuse one reported over the limit. (handle, size)"""
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {printable(uri)} not found") from None
    if info.get("type") != "file":
        raise StorageError(f"{what} {printable(uri)} is a directory (a prefix), not a file")
    size = info.get("size")
    if max_bytes is not None and isinstance(size, int) and size > max_bytes:
        raise StorageError(f"{what} {printable(uri)} is {size} bytes, over the limit of {max_bytes} bytes")
    try:
        options = {} if block_size is None else {"block_size": block_size}
        return fs.open(path, "rb", **options), int(size or 0)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {printable(uri)} not found") from None


class BoundedReader(io.RawIOBase):
    """A read-only stream that fails with StorageError as soon as more than ``max_bytes`` arrive.

    The count is of bytes actually read, not of any reported size, so a file that grows, a device
    or an object whose listing lies cannot stream past the limit.
    """

    def __init__(self, raw: BinaryIO, max_bytes: int, uri: str, what: str = "input") -> None:
        super().__init__()
        self._raw, self._max, self._uri, self._what = raw, max_bytes, uri, what
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._max + 1 - self.bytes_read)  # one byte past the limit proves "over"
        if want <= 0:
            want = 1
        data = self._raw.read(want)
        count = len(data or b"")
        view[:count] = data or b""
        self.bytes_read += count
        if self.bytes_read > self._max:
            raise StorageError(f"{self._what} {printable(self._uri)} is over the limit of {self._max} bytes")
        return count

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


@contextlib.contextmanager
def open_input(uri: str, storage_options: Mapping[str, Any] | None = None, max_bytes: int | None = None,
               policy: "StoragePolicy | None" = None, what: str = "input") -> Iterator[BoundedReader]:
    """Open a regular file or storage object for streaming reads, bounded to ``max_bytes``.

    Refuses, before reading a byte: a chained URL, anything the policy refuses, named pipes,
    devices, sockets and directories (StorageError saying which), missing inputs (NotFoundError).
    Reading past ``max_bytes`` (default :data:`DEFAULT_MAX_READ_BYTES`) raises StorageError.
    """
    limit = DEFAULT_MAX_READ_BYTES if max_bytes is None else int(max_bytes)
    if policy is not None:
        uri = policy.check(uri, what)
    fs, path = filesystem_for(uri, storage_options, what)
    raw = _open_local_regular(path, uri, policy, what) if _is_local(fs) else _open_remote_object(
        fs, path, uri, limit, what)[0]
    reader = BoundedReader(raw, limit, uri, what)
    try:
        yield reader
    finally:
        reader.close()


@contextlib.contextmanager
def open_seekable(uri: str, storage_options: Mapping[str, Any] | None = None, policy: "StoragePolicy | None" = None,
                  what: str = "file", block_size: int | None = None) -> Iterator[tuple[BinaryIO, int]]:
    """Open a regular file or object for random-access reads; yields (handle, size).

    The same refusals as :func:`open_input`.  Nothing bounds the reads here: the caller reads only
    what it needs (an MP4's box headers, say) and bounds that itself.  ``block_size``: how much an
    object store fetches per request (small for scattered header reads).
    """
    if policy is not None:
        uri = policy.check(uri, what)
    fs, path = filesystem_for(uri, storage_options, what)
    if _is_local(fs):
        handle = _open_local_regular(path, uri, policy, what)
        size = os.fstat(handle.fileno()).st_size
    else:
        handle, size = _open_remote_object(fs, path, uri, None, what, block_size)
    try:
        yield handle, size
    finally:
        handle.close()


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None, max_bytes: int | None = None,
               policy: "StoragePolicy | None" = None, what: str = "input") -> bytes:
    """Read a whole regular file or object, at most ``max_bytes`` (default :data:`DEFAULT_MAX_READ_BYTES`).

    Same refusals as :func:`open_input`; "is over the limit of N bytes" when more arrives.
    """
    chunks = bytearray()
    with open_input(uri, storage_options, max_bytes, policy, what) as reader:
        while True:
            chunk = reader.read(_CHUNK)
            if not chunk:
                return bytes(chunks)
            chunks += chunk


def fetch_to_file(uri: str, dest_dir: str, storage_options: Mapping[str, Any] | None = None,
                  max_bytes: int | None = None, policy: "StoragePolicy | None" = None, what: str = "input",
                  suffix: str = "") -> str:
    """Copy an input to a new private file in ``dest_dir`` (ffmpeg needs a local file); returns its path.

    Same refusals and byte bound as :func:`open_input`; on any failure the partial copy is removed.
    The file's name is made here (never from the URI), mode 0600.
    """
    fd, local_path = tempfile.mkstemp(prefix="input-", suffix=suffix, dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as out, open_input(uri, storage_options, max_bytes, policy, what) as reader:
            while True:
                chunk = reader.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local_path)
        raise
    return local_path


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem_for(uri, storage_options)
    return bool(fs.exists(path))


# What says a file changed, among the fields fsspec's filesystems give (local, S3, GCS).
_VERSION_FIELDS = ("size", "mtime", "ETag", "etag", "LastModified", "last_modified", "updated", "generation",
                   "md5Hash")
MAX_VERSIONED_FILES = 10_000


def version_of(uri: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """A short hash of a file's (or a folder's files') size and change time or ETag, or None if unreadable.

    Equal while the content is unchanged; a file written again under the same name gives another.
    """
    try:
        fs, path = filesystem_for(uri, storage_options)
        info = fs.info(path)
        if info.get("type") == "directory":
            found = fs.find(path, detail=True, maxdepth=8)
            if len(found) > MAX_VERSIONED_FILES:
                return None
            entries = sorted(found.items())
        else:
            entries = [(path, info)]
        facts = [(name, {field: detail[field] for field in _VERSION_FIELDS if field in detail})
                 for name, detail in entries]
    except Exception:  # noqa: BLE001 - any reason it cannot be looked at: no version, not an error here
        return None
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_local(fs) -> bool:
    return isinstance(fs, LocalFileSystem)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TEMP_NAME_KEEP_BYTES = 200  # of the final name, in a temp file's name (the rest adds 18 bytes)


def _cut(name: str, most_bytes: int) -> str:
    """``name`` cut to at most ``most_bytes`` of UTF-8, never inside a character."""
    return name.encode("utf-8")[:most_bytes].decode("utf-8", errors="ignore")


def temp_prefix(name: str) -> str:
    """The start of a local write's temp file name for the final ``name``: ``.<name>.`` (then a random
    part and ``.partial``), the name cut so the temp name fits where the final one does (255 bytes)."""
    return f".{_cut(name, TEMP_NAME_KEEP_BYTES)}."


def _write_local(path: str, data: bytes, create_only: bool) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(prefix=temp_prefix(os.path.basename(path)), suffix=".partial", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs get the usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if create_only:
            os.link(temp_path, path)  # fails with FileExistsError if the final name exists
        else:
            os.replace(temp_path, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(temp_path):
            os.unlink(temp_path)


def write_create_only(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Publish ``data`` under ``uri`` in one step; FileExistsError if something is already there."""
    fs, path = filesystem_for(uri, storage_options)
    if _is_local(fs):
        _write_local(path, data, create_only=True)
        return
    fs.pipe_file(path, data, mode="create", **_content_type(fs, path))


# What a browser needs to show an object served straight from its bucket (a shared link to the
# report): S3 and GCS otherwise store every object as binary/octet-stream, which downloads it.
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".mp4": "video/mp4", ".webp": "image/webp",
                 ".parquet": "application/vnd.apache.parquet", ".json": "application/json"}


def _content_type(fs, path: str) -> dict[str, str]:
    """The keyword that sets an object's Content-Type where the file system is S3 or GCS, else none."""
    kind = CONTENT_TYPES.get(os.path.splitext(path)[1].lower())
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if kind is None:
        return {}
    if protocols & {"s3", "s3a"}:
        return {"ContentType": kind}
    if protocols & {"gs", "gcs"}:
        return {"content_type": kind}
    return {}


def write_replace(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Publish ``data`` under ``uri`` in one step, replacing what was there (results, reports)."""
    fs, path = filesystem_for(uri, storage_options)
    if _is_local(fs):
        _write_local(path, data, create_only=False)
        return
    fs.pipe_file(path, data, **_content_type(fs, path))


def list_names(prefix: str, storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """Base names of the objects directly under a prefix (empty when the prefix does not exist)."""
    fs, path = filesystem_for(prefix, storage_options)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return set()
    return {entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries}


@dataclass(frozen=True)
class FolderEntry:
    """One name directly in a folder or under a bucket prefix; ``uri`` is where it is read from."""

    name: str
    uri: str
    is_file: bool  # a regular file (on disk, links followed) or an object; not a sub-folder
    size: int


def folder_entries(uri: str, storage_options: Mapping[str, Any] | None = None) -> list[FolderEntry]:
    """The entries of a local folder or a bucket prefix, in name order; NotFoundError when there is none."""
    if is_local_uri(uri):
        path = normalize(uri)
        if path.startswith("file://"):
            path = path[len("file://"):]
        try:
            names = sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"no folder {printable(uri)}") from None
        entries = []
        for name in names:
            full = os.path.abspath(os.path.join(path, name))
            is_file = os.path.isfile(full)
            entries.append(FolderEntry(name, full, is_file, os.path.getsize(full) if is_file else 0))
        return entries
    fs, path = filesystem_for(uri, storage_options)
    try:
        listed = fs.ls(path.rstrip("/"), detail=True)
    except FileNotFoundError:
        listed = []
    if not listed:  # a bucket has no empty folders: a prefix with nothing under it is not there
        raise NotFoundError(f"nothing under {printable(redact(uri))}")
    entries = [FolderEntry(name=entry["name"].rstrip("/").rsplit("/", 1)[-1],
                           uri=join(uri, entry["name"].rstrip("/").rsplit("/", 1)[-1]),
                           is_file=entry.get("type") == "file", size=int(entry.get("size") or 0))
               for entry in listed]
    return sorted((entry for entry in entries if entry.name), key=lambda entry: entry.name)


def parent_of(uri: str) -> str:
    """The folder or prefix holding ``uri`` (the bucket for a key at its top; "" for a bucket itself)."""
    normalized = normalize(uri).rstrip("/")
    _, sep, rest = normalized.partition("://")
    if sep and "/" not in rest:
        return ""
    return normalized.rsplit("/", 1)[0]


def prefixes_holding_nothing(uris: Iterable[str], storage_options: Mapping[str, Any] | None = None,
                             budget_s: float = 20.0, most: int = 1000, lookups_at_once: int = 8) -> set[str]:
    """The parent prefixes of the bucket URIs among ``uris`` that certainly hold nothing (a mistyped bucket or
    prefix), one lookup per distinct prefix, within ``budget_s`` seconds and ``most`` prefixes.

    Only a definite "not found" counts: a prefix that cannot be asked (no permission, no network, a
    lookup still waiting when the budget ends) is left to the rows, which read their inputs anyway.
    The lookups run on daemon threads, so one that hangs (a store that does not answer) holds
    nothing up.  Local paths are left out: the driver may not see the disks the workers read.
    """
    prefixes = sorted({parent_of(uri) for uri in uris if not is_local_uri(uri) and "://" in normalize(uri)} - {""})
    waiting = queue.SimpleQueue()
    for prefix in prefixes[:most]:
        waiting.put(prefix)
    empty: set[str] = set()
    lock = threading.Lock()

    def look_up() -> None:
        while True:
            try:
                prefix = waiting.get_nowait()
            except queue.Empty:
                return
            try:
                fs, path = filesystem_for(prefix, storage_options)
                fs.invalidate_cache(path)
                fs.info(path)
            except FileNotFoundError:
                with lock:
                    empty.add(prefix)
            except Exception:  # noqa: BLE001 - anything else says nothing certain
                continue

    threads = [threading.Thread(target=look_up, name="prefix-lookup", daemon=True)
               for _ in range(min(lookups_at_once, len(prefixes)))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + budget_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return set(empty)


def holds_folder(uri: str, name: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether the folder ``uri`` has a sub-folder ``name`` (False where it cannot be listed)."""
    fs, path = filesystem_for(uri, storage_options)
    try:
        return bool(fs.isdir(path.rstrip("/") + "/" + name))
    except OSError:
        return False


def parts_of_folder(uri: str, suffix: str, storage_options: Mapping[str, Any] | None = None,
                    max_parts: int = 10_000, any_folder: bool = False) -> list[str] | None:
    """The files ending in ``suffix`` anywhere under ``uri`` if it is a folder (sorted), else None.

    What Spark, Dask, DuckDB and Ray Data write for one table: ``part-00000.parquet`` files, in
    ``key=value`` sub-folders when partitioned, beside bookkeeping that is not data (``_SUCCESS``,
    ``_delta_log/``, ``.crc`` and other names starting with ``_`` or ``.``, left out at any depth).
    Other sub-folders are not the table's (a ``backup/`` of an older copy would double every row),
    as Spark's and Hive's readers see it (``any_folder``: theirs too, to say where the files are).
    More than ``max_parts`` files raise :class:`StorageError`.
    """
    fs, path = filesystem_for(uri, storage_options)
    try:
        if not fs.isdir(path):
            return None
        found = fs.find(path)
    except FileNotFoundError:
        return None
    root = path.rstrip("/") + "/"
    parts = sorted(entry for entry in found if entry.startswith(root) and entry.endswith(suffix)
                   and _table_part(entry[len(root):].split("/"), any_folder))
    if len(parts) > max_parts:
        raise StorageError(f"{printable(uri)} holds {len(parts)} {suffix} files, over the limit of {max_parts}")
    return [join(uri, entry[len(root):]) for entry in parts]


def _table_part(names: list[str], any_folder: bool = False) -> bool:
    """Whether a file at these path names below a table's folder is one of its parts."""
    *folders, file_name = names
    return (not any(name.startswith(("_", ".")) for name in names)
            and (any_folder or all("=" in folder for folder in folders)))
