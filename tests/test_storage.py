"""Safe writes (never a partial file under the final name), the allow-list, bounded reads of regular files only."""

import io
import os
import re
import socket
import stat

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
        ("/data/a.mp4::memory", "chained URL"),
        ("simplecache::s3://bucket/a.mp4", "chained URL"),
        ("file://etc/passwd", "not an absolute file:// URI"),
        ("s3://bucket/in/../secret.mp4", "'.' or '..' path segments"),
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
    # The refusal names the roots (up to 3), so the fix -- another --allow-root, or a path under one -- is plain.
    many = StoragePolicy(allowed_roots=("s3://b/1", "s3://b/2", "s3://b/3", "s3://b/4", "s3://b/5"))
    with pytest.raises(StorageError, match=r"outside the allowed roots \(--allow-root s3://b/1, s3://b/2, s3://b/3 "
                                           r"and 2 more\)"):
        many.check("s3://b/9/a.jpg", "driving_uri")


def test_file_uris_are_percent_decoded_and_plain_paths_taken_literally(tmp_path):
    # Path.as_uri() escapes spaces, '%' and non-ASCII names; such a manifest must find its files.
    folder = tmp_path / "in dir"
    folder.mkdir()
    named = folder / "réf 100%#1.jpg"
    named.write_bytes(b"portrait")
    uri = named.as_uri()
    assert "%20" in uri and "%25" in uri
    policy = StoragePolicy(allowed_roots=(str(folder),))
    assert policy.check(uri) == str(named)
    assert storage.read_bytes(uri) == b"portrait"
    literal = folder / "pct%20name.jpg"  # a plain path keeps its '%'
    literal.write_bytes(b"literal")
    assert storage.read_bytes(str(literal)) == b"literal"
    # Escapes cannot smuggle what the raw string would be refused for.
    with pytest.raises(StorageError, match="NUL"):
        policy.check("file://" + str(folder) + "/a%00.jpg")
    with pytest.raises(StorageError, match="outside the allowed roots"):
        policy.check("file://" + str(folder) + "/%2E%2E/%2E%2E/etc/passwd")


def test_relative_paths_are_taken_from_a_files_folder_local_or_remote():
    assert storage.relative_to_file("faces/a.jpg", "s3://bucket/jobs/m.parquet") == "s3://bucket/jobs/faces/a.jpg"
    assert storage.relative_to_file("a.jpg", "/data/m.parquet") == "/data/a.jpg"
    for kept in ("/abs/a.jpg", "~/a.jpg", "s3://other/a.jpg", "file:///x/a.jpg", ""):
        assert storage.relative_to_file(kept, "s3://bucket/jobs/m.parquet") == kept

    # RFC 8089's short form, as Java's File.toURI() and Hadoop write it, is the absolute path.
    assert storage.relative_to_file("file:/x/a%20b.jpg", "/data/m.parquet") == "file:///x/a%20b.jpg"
    assert storage.normalize("file:/x/a%20b.jpg") == storage.normalize("FILE:/x/a%20b.jpg") == "/x/a b.jpg"
    # A scheme with one slash or none is a typo, not a file beside the manifest; a colon in a name is a name.
    with pytest.raises(StorageError, match=r"not a valid URI \(did you mean s3://bucket/k.jpg\?\)"):
        storage.relative_to_file("s3:/bucket/k.jpg", "/data/m.parquet")
    assert storage.relative_to_file("take:2.jpg", "/data/m.parquet") == "/data/take:2.jpg"
    # A project synced to a bucket reads the files it read on disk: '.' and '..' resolve there too (the
    # policy refuses them in a remote URI), never above the bucket, and a folder manifest's '/' is its name.
    policy = storage.StoragePolicy()
    for manifest in ("s3://bucket/proj/manifests/m.parquet", "s3://bucket/proj/manifests/night.parquet/"):
        resolved = storage.relative_to_file("../media/./a.jpg", manifest)
        assert policy.check(resolved) == "s3://bucket/proj/media/a.jpg"
    assert storage.normalize(storage.relative_to_file("../media/a.jpg", "/proj/manifests/m.parquet")) == \
        "/proj/media/a.jpg"
    with pytest.raises(StorageError, match="climbs above the bucket s3://bucket"):
        storage.relative_to_file("../../a.jpg", "s3://bucket/proj/m.parquet")


def test_redact():
    text = "failed s3://AKIA:secretvalue@host/k and https://h/x?X-Amz-Signature=abcdef&a=1"
    cleaned = storage.redact(text)
    assert "secretvalue" not in cleaned and "abcdef" not in cleaned
    assert "s3://***@host/k" in cleaned and "a=1" in cleaned


# --- what reads may open ----------------------------------------------------------------------------

@pytest.fixture()
def rooted(tmp_path):
    """An allowed root holding a real file, a link to it, and a link to a secret outside the root."""
    root, outside = tmp_path / "allowed", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "clip.mp4").write_bytes(b"inside")
    (outside / "secret.mp4").write_bytes(b"secret")
    (root / "inner.mp4").symlink_to(root / "clip.mp4")
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    return root, StoragePolicy(allowed_roots=(str(root),))


def test_a_chained_url_cannot_read_through_a_link_out_of_the_root(rooted):
    root, policy = rooted
    for uri in (f"{root}/link.mp4::memory", f"{root}/clip.mp4::file"):
        with pytest.raises(StorageError, match="chained URL"):
            policy.check(uri)
        with pytest.raises(StorageError, match="chained URL"):
            storage.read_bytes(uri)  # refused even without a policy: fsspec is never asked
    with pytest.raises(StorageError, match=r"outside the allowed roots \(it resolves to .*secret.mp4\)"):
        policy.check(f"{root}/link.mp4")
    with pytest.raises(StorageError, match="outside the allowed roots"):
        storage.read_bytes(f"{root}/link.mp4", policy=policy)
    assert storage.read_bytes(f"{root}/inner.mp4", policy=policy) == b"inside"


def test_a_home_or_relative_path_outside_the_roots_names_the_path_it_resolved_to(rooted, monkeypatch, tmp_path):
    # "~/clips/a.mp4 is outside the allowed roots" left the user to guess which home Ray's worker saw.
    root, policy = rooted
    here = os.path.realpath(tmp_path)  # what the check compares: symlinks in the temp folder's path resolved
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match=rf"~/clips/a.mp4 is outside the allowed roots \(it resolves to "
                                           rf"{re.escape(here)}/home/clips/a.mp4\)"):
        policy.check("~/clips/a.mp4")
    with pytest.raises(StorageError, match=rf"it resolves to {re.escape(here)}/b.mp4\)"):
        policy.check("b.mp4")
    with pytest.raises(StorageError) as plain:
        policy.check(f"{here}/b.mp4")  # an absolute path is shown once
    assert "resolves to" not in str(plain.value)


def test_the_file_actually_opened_is_checked(rooted):
    root, policy = rooted
    policy.check_opened(str(root / "clip.mp4"), "x")
    with pytest.raises(StorageError, match="opened .*secret.mp4, outside the allowed roots"):
        policy.check_opened(os.path.realpath(root / "link.mp4"), str(root / "link.mp4"))


def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="clip.mp4 is a named pipe, not a regular file"):
        storage.read_bytes(str(fifo))
    with pytest.raises(StorageError, match="named pipe"):
        storage.fetch_to_file(str(fifo), str(tmp_path))


def test_a_pipe_swapped_in_after_the_stat_is_refused_after_opening(tmp_path, monkeypatch):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: real_stat(__file__) if str(path) == str(fifo)
                        else real_stat(path, *a, **k))  # the stat sees a regular file; the open finds the pipe
    with pytest.raises(StorageError, match="is a named pipe"):
        storage.read_bytes(str(fifo))


@pytest.mark.parametrize("device, kind", [("/dev/zero", "a character device"), ("/dev/null", "a character device")])
def test_devices_are_refused(device, kind):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    with pytest.raises(StorageError, match=f"{device} is {kind}, not a regular file"):
        storage.read_bytes(device, max_bytes=10)


def test_sockets_and_directories_are_refused(tmp_path):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s.mp4"))
        assert stat.S_ISSOCK(os.stat(tmp_path / "s.mp4").st_mode)
        with pytest.raises(StorageError, match="is a socket"):
            storage.read_bytes(str(tmp_path / "s.mp4"))
    with pytest.raises(StorageError, match="is a directory"):
        storage.read_bytes(str(tmp_path))
    storage.write_create_only("memory://bucket/prefix/a.mp4", b"x")
    with pytest.raises(StorageError, match="is a directory"):
        storage.read_bytes("memory://bucket/prefix")


def test_missing_input_is_not_found(tmp_path):
    with pytest.raises(storage.NotFoundError, match="nope.mp4 not found") as info:
        storage.read_bytes(str(tmp_path / "nope.mp4"))
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("memory://bucket/nope.mp4")


@pytest.mark.parametrize("on_disk, asked", [("NFD", "NFC"), ("NFC", "NFD")])
def test_a_name_in_another_unicode_form_is_named_in_the_not_found_error(tmp_path, on_disk, asked):
    """"portrait_été.jpg" saved on a Mac (accents apart, NFD) and typed elsewhere (NFC): both print the same."""
    import unicodedata

    (tmp_path / unicodedata.normalize(on_disk, "portrait_été.jpg")).write_bytes(b"x")
    wanted = tmp_path / unicodedata.normalize(asked, "portrait_été.jpg")
    with pytest.raises(storage.NotFoundError, match="the same name with its accents written") as info:
        storage.read_bytes(str(wanted))
    assert ("NFD" in str(info.value)) == (on_disk == "NFD")
    with pytest.raises(storage.NotFoundError, match=r"not found$"):  # a plain missing name says only that
        storage.read_bytes(str(tmp_path / "portrait_hiver.jpg"))


def test_reads_are_bounded_by_what_arrives(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 10)
    assert storage.read_bytes(str(path), max_bytes=10) == b"x" * 10
    with pytest.raises(StorageError, match=r"a.bin is over the limit of 9 bytes"):
        storage.read_bytes(str(path), max_bytes=9)
    storage.write_create_only("memory://bucket/big.bin", b"y" * 100)
    with pytest.raises(StorageError, match="is 100 bytes, over the limit of 50 bytes"):
        storage.read_bytes("memory://bucket/big.bin", max_bytes=50)


class Endless(io.RawIOBase):
    """A stream that never ends, like a device or an object whose reported size is a lie."""

    def readable(self):
        return True

    def readinto(self, buffer):
        buffer[:] = b"z" * len(buffer)
        return len(buffer)


def test_a_stream_that_never_ends_stops_one_byte_past_the_limit():
    reader = storage.BoundedReader(Endless(), 1000, "s3://bucket/liar.mp4")
    with pytest.raises(StorageError, match="liar.mp4 is over the limit of 1000 bytes"):
        while reader.read(4096):
            pass
    assert reader.bytes_read == 1001


def test_fetch_to_file_makes_a_private_copy_and_leaves_nothing_on_failure(tmp_path):
    source, scratch = tmp_path / "clip.mp4", tmp_path / "scratch"
    scratch.mkdir()
    source.write_bytes(b"m" * 5000)
    local = storage.fetch_to_file(str(source), str(scratch), max_bytes=5000, suffix=".mp4")
    assert open(local, "rb").read() == b"m" * 5000
    assert os.path.dirname(local) == str(scratch) and local.endswith(".mp4")
    assert stat.S_IMODE(os.stat(local).st_mode) == 0o600
    os.unlink(local)
    with pytest.raises(StorageError, match="over the limit"):
        storage.fetch_to_file(str(source), str(scratch), max_bytes=4999)
    assert os.listdir(scratch) == []


def test_errors_print_uris_escaped(tmp_path):
    with pytest.raises(StorageError) as info:
        storage.read_bytes(str(tmp_path / "evil\n2024 INFO forged\x1b[2J.mp4"))
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert "evil\\n2024 INFO forged\\x1b[2J.mp4 not found" in message


def test_a_long_file_name_is_written_through_a_temp_name_that_fits(tmp_path):
    # 250 bytes is a legal name; ".<name>.<random>.partial" around it was not (Errno 36 after the render).
    target = tmp_path / ("é" * 100 + "x" * 46 + ".mp4")  # 250 bytes of UTF-8
    storage.write_create_only(str(target), b"video")
    assert target.read_bytes() == b"video"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
