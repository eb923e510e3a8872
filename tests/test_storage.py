"""Safe writes (never a partial file under the final name), the allow-list, redaction."""

import os

import fsspec
import pytest

from mediaio import storage
from mediaio.storage import StorageError, StoragePolicy


class Boom(Exception):
    pass


def test_create_only_write_publishes_whole_file(tmp_path):
    target = tmp_path / "out" / "a.mp4"
    storage.write_create_only(str(target), b"abc")
    assert target.read_bytes() == b"abc"
    with pytest.raises(FileExistsError):
        storage.write_create_only(str(target), b"different")
    assert target.read_bytes() == b"abc"
    assert os.listdir(target.parent) == ["a.mp4"]  # no temp files left behind
    assert target.stat().st_mode & 0o044 == 0o044  # readable by others, like any file written here


def test_interrupted_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    target = tmp_path / "a.mp4"
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise Boom("disk went away")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(Boom):
        storage.write_create_only(str(target), b"x" * 1_000_000)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_replace_write_swaps_atomically(tmp_path):
    target = tmp_path / "r.parquet"
    storage.write_replace(str(target), b"one")
    storage.write_replace(str(target), b"two")
    assert target.read_bytes() == b"two"


def test_memory_filesystem_create_only():
    uri = "memory://bucket/out/x.mp4"
    storage.write_create_only(uri, b"abc")
    with pytest.raises(FileExistsError):
        storage.write_create_only(uri, b"zzz")
    assert fsspec.filesystem("memory").cat_file("/bucket/out/x.mp4") == b"abc"
    assert storage.list_names("memory://bucket/out") == {"x.mp4"}
    assert storage.list_names("memory://bucket/none") == set()


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("http://127.0.0.1/a.mp4", "scheme 'http'"),
        ("ftp://host/a.mp4", "scheme 'ftp'"),
        ("s3://AKIAXX:sekrit@bucket/a.mp4", "carries credentials"),
        ("", "empty"),
    ],
)
def test_policy_refuses(uri, reason):
    with pytest.raises(StorageError, match=reason) as info:
        StoragePolicy().check(uri)
    assert "sekrit" not in str(info.value)


def test_policy_roots(tmp_path):
    policy = StoragePolicy(allowed_roots=(str(tmp_path / "in"),))
    assert policy.check(str(tmp_path / "in" / "a.jpg")) == str(tmp_path / "in" / "a.jpg")
    for outside in (str(tmp_path / "inside.jpg"), str(tmp_path / "in" / ".." / "x.jpg"), "/etc/passwd"):
        with pytest.raises(StorageError, match="outside the allowed roots"):
            policy.check(outside)
    with pytest.raises(StorageError, match="outside"):
        StoragePolicy(allowed_roots=("s3://bucket/in",)).check("s3://bucket/input-other/a.jpg")
    assert StoragePolicy(allowed_roots=("s3://bucket/in",)).check("s3://bucket/in/a.jpg")


def test_redact():
    text = "failed s3://AKIA:secretvalue@host/k and https://h/x?X-Amz-Signature=abcdef&a=1"
    cleaned = storage.redact(text)
    assert "secretvalue" not in cleaned and "abcdef" not in cleaned
    assert "s3://***@host/k" in cleaned and "a=1" in cleaned
