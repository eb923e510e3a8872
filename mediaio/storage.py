"""Object storage through fsspec: which URIs are allowed, safe writes, and redacted messages.

Writes never expose a partial file under its final name: on local disk the bytes go to a temp
file in the same directory, are fsynced and then hard-linked into place (create-only) or
renamed over it (replace); on S3 one PUT is atomic, and ``If-None-Match: *`` makes it
create-only.  Credentials never appear in messages: :func:`redact` strips them from URIs.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem


class StorageError(Exception):
    """A URI is not allowed, or storage refused an operation."""


DEFAULT_SCHEMES = ("file", "s3", "gs", "gcs", "memory")

_CREDENTIALS_IN_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_SECRET_QUERY = re.compile(
    r"(?i)(?P<key>(?:x-amz-)?(?:signature|credential|security-token|token|secret|password|key|sig))=[^&\s'\"]*"
)


def redact(text: str) -> str:
    """Remove credentials embedded in URIs (user:secret@, signed-URL query values) from text."""
    text = _CREDENTIALS_IN_URI.sub(r"\g<scheme>***@", str(text))
    return _SECRET_QUERY.sub(r"\g<key>=***", text)


def scheme_of(uri: str) -> str:
    """The URI's scheme; plain paths are 'file'."""
    if "://" not in uri:
        return "file"
    return uri.split("://", 1)[0].lower()


def normalize(uri: str) -> str:
    """Plain paths become absolute file paths; other URIs are returned unchanged."""
    if "://" not in uri:
        return os.path.abspath(os.path.expanduser(uri))
    if uri.startswith("file://"):
        return os.path.abspath(uri[len("file://"):])
    return uri


@dataclass(frozen=True)
class StoragePolicy:
    """Which URI schemes and roots a job may read from and write to.

    ``allowed_roots`` empty means any location of an allowed scheme.  Roots are URI prefixes
    (plain paths for local files); a URI is allowed when it lies at or below one of them.
    """

    allowed_schemes: tuple[str, ...] = DEFAULT_SCHEMES
    allowed_roots: tuple[str, ...] = ()

    def check(self, uri: str, what: str = "uri") -> str:
        """Return the normalised URI, or raise StorageError saying why it is refused."""
        if not isinstance(uri, str) or not uri.strip():
            raise StorageError(f"{what} is empty")
        if "\x00" in uri:
            raise StorageError(f"{what} contains a NUL character")
        scheme = scheme_of(uri)
        if "://" in uri and urlsplit(uri).username is not None:
            raise StorageError(f"{what} {redact(uri)} carries credentials; use storage options or the standard chain")
        if scheme not in self.allowed_schemes:
            raise StorageError(
                f"{what} {redact(uri)} uses scheme {scheme!r}, allowed: {', '.join(self.allowed_schemes)}"
            )
        normalized = normalize(uri)
        if self.allowed_roots and not any(_is_under(normalized, normalize(root)) for root in self.allowed_roots):
            raise StorageError(f"{what} {redact(uri)} is outside the allowed roots")
        return normalized


def _is_under(uri: str, root: str) -> bool:
    root = root.rstrip("/")
    if "://" not in uri:
        uri = os.path.realpath(uri)
        root = os.path.realpath(root)
    return uri == root or uri.startswith(root + "/")


def filesystem_for(uri: str, storage_options: Mapping[str, Any] | None = None):
    """The fsspec filesystem and the path inside it for a URI or plain path."""
    fs, path = fsspec.core.url_to_fs(normalize(uri), **dict(storage_options or {}))
    return fs, path


def join(prefix: str, *names: str) -> str:
    """Join names under a prefix URI or path."""
    prefix = normalize(prefix)
    return "/".join([prefix.rstrip("/"), *[n.strip("/") for n in names]])


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None, max_bytes: int | None = None) -> bytes:
    """Read a whole object; refuse objects larger than ``max_bytes``."""
    fs, path = filesystem_for(uri, storage_options)
    if max_bytes is not None:
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise StorageError(f"{redact(uri)} is {size} bytes, over the limit of {max_bytes}")
    return fs.cat_file(path)


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem_for(uri, storage_options)
    return bool(fs.exists(path))


def _is_local(fs) -> bool:
    return isinstance(fs, LocalFileSystem)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_local(path: str, data: bytes, create_only: bool) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=directory)
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
    fs.pipe_file(path, data, mode="create")


def write_replace(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Publish ``data`` under ``uri`` in one step, replacing what was there (results, reports)."""
    fs, path = filesystem_for(uri, storage_options)
    if _is_local(fs):
        _write_local(path, data, create_only=False)
        return
    fs.pipe_file(path, data)


def list_names(prefix: str, storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """Base names of the objects directly under a prefix (empty when the prefix does not exist)."""
    fs, path = filesystem_for(prefix, storage_options)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return set()
    return {entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries}
