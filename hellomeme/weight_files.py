"""Reading weight files' metadata without loading them: file lists, sizes, JSON configs, safetensors headers.

Checks run on the job's driver before any row, where the model must never be downloaded, so
everything here reads a few kilobytes per file.  Paths are read through an fsspec filesystem
(the local disk by default; an object store works the same, the header coming from ranged reads).
"""

from __future__ import annotations

import json
import posixpath
import struct
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

# A safetensors file starts with the header's length (u64, little endian), then the JSON header.
_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100 * 2**20  # the format's own limit


class WeightFileError(ValueError):
    """A weight file is unreadable, truncated or not what its name says."""


def parse_safetensors_header(head: bytes, file_size: int, where: str) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file declares (name -> {dtype, shape, data_offsets}), checked against its size.

    ``head`` holds at least the file's first 8 bytes plus its header.
    """
    if file_size < _LENGTH_BYTES or len(head) < _LENGTH_BYTES:
        raise WeightFileError(f"{where}: {file_size} bytes is too short for a safetensors file")
    (length,) = struct.unpack("<Q", head[:_LENGTH_BYTES])
    if length > MAX_HEADER_BYTES or _LENGTH_BYTES + length > file_size:
        raise WeightFileError(f"{where}: header of {length} bytes does not fit a file of {file_size} bytes")
    if len(head) < _LENGTH_BYTES + length:
        raise WeightFileError(f"{where}: header cut short")
    try:
        header = json.loads(head[_LENGTH_BYTES : _LENGTH_BYTES + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightFileError(f"{where}: header is not JSON ({err})") from err
    if not isinstance(header, dict):
        raise WeightFileError(f"{where}: header is not a JSON object")
    data_size = file_size - _LENGTH_BYTES - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
            shape = tuple(int(d) for d in entry["shape"])
        except (KeyError, TypeError, ValueError) as err:
            raise WeightFileError(f"{where}: tensor {name!r} has a malformed entry") from err
        if not 0 <= start <= stop <= data_size:
            raise WeightFileError(f"{where}: tensor {name!r} lies beyond the end of the file (truncated?)")
        tensors[name] = {"dtype": entry.get("dtype"), "shape": shape, "data_offsets": (start, stop)}
    return tensors


class WeightFiles:
    """Metadata of files under one filesystem (local unless ``fs`` is given)."""

    def __init__(self, fs: fsspec.AbstractFileSystem | None = None) -> None:
        self.fs = fs if fs is not None else fsspec.filesystem("file")

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @staticmethod
    def join(*parts: str) -> str:
        return posixpath.join(*(str(p) for p in parts))

    def is_file(self, path: str) -> bool:
        return bool(self.fs.isfile(str(path)))

    def is_dir(self, path: str) -> bool:
        return bool(self.fs.isdir(str(path)))

    def size(self, path: str) -> int:
        return int(self.fs.size(str(path)))

    def first_file(self, folder: str, names: tuple[str, ...]) -> str | None:
        for name in names:
            path = self.join(folder, name)
            if self.is_file(path):
                return path
        return None

    def read_json(self, path: str) -> Any:
        """A small JSON file (configs, shard indexes)."""
        return json.loads(self.fs.cat_file(str(path)))

    def safetensors_header(self, path: str) -> dict[str, dict[str, Any]]:
        """One safetensors file's header, read with two ranged reads (the 8-byte length, then the JSON)."""
        path = str(path)
        size = self.size(path)
        head = bytes(self.fs.cat_file(path, start=0, end=min(_LENGTH_BYTES, size)))
        if len(head) == _LENGTH_BYTES:
            (length,) = struct.unpack("<Q", head)
            if length <= MAX_HEADER_BYTES and _LENGTH_BYTES + length <= size:
                head += bytes(self.fs.cat_file(path, start=_LENGTH_BYTES, end=_LENGTH_BYTES + length))
        return parse_safetensors_header(head, size, path)

    def safetensors_shapes(self, path: str) -> dict[str, tuple[int, ...]] | None:
        """Tensor shapes of a safetensors file or sharded index; None for other formats (.bin)."""
        path = str(path)
        if path.endswith(".index.json"):
            shards = sorted(set(self.read_json(path)["weight_map"].values()))
            files = [self.join(posixpath.dirname(path), shard) for shard in shards]
        elif path.endswith(".safetensors"):
            files = [path]
        else:
            return None
        shapes = {}
        for file in files:
            shapes.update({name: entry["shape"] for name, entry in self.safetensors_header(file).items()})
        return shapes
