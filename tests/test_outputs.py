"""Output planning: every row's video stays under --output, is its own, and lasts (no Ray, real files, real ffmpeg)."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import fsspec
import pytest

from mediaio import storage
from mediaio.storage import StorageError, StoragePolicy
from pipelines import outputs
from pipelines.outputs import OutputError, OutputRequest, plan_outputs, resolve_output

ANYWHERE = StoragePolicy()


@pytest.fixture()
def out(tmp_path: Path) -> str:
    return outputs.check_output_prefix(str(tmp_path / "out"), ANYWHERE, local_job=False)


def resolve(out: str, requested: str | None, row_id: str = "a", policy: StoragePolicy = ANYWHERE,
            local_job: bool = False) -> str:
    return resolve_output(out, row_id, requested, policy, local_job)


# --- where a row's video goes -----------------------------------------------------------------------

def test_default_and_relative_outputs_go_under_output_not_the_working_dir(out, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the driver's cwd must not matter
    assert resolve(out, None) == f"{out}/a.mp4"
    assert resolve(out, "sub/b.mp4") == f"{out}/sub/b.mp4"
    assert resolve(out, "./sub/./c.mp4") == f"{out}/sub/c.mp4"
    assert resolve(out, "sub/../d.mp4") == f"{out}/d.mp4"
    assert resolve(out, f"file://{out}/e.mp4") == f"{out}/e.mp4"


@pytest.mark.parametrize("requested, reason", [
    ("../escape.mp4", "is outside --output"),
    ("/elsewhere/x.mp4", r"is outside --output .* \(pass --allow-root"),
    ("~/x.mp4", "'~' is not expanded"),
    ("x.mp4::memory", "chained URL"),
    ("x.mov", r"must name an \.mp4 file"),
    (".mp4", r"must name an \.mp4 file"),
    ("sub/", r"must name an \.mp4 file"),
    ("index.html", "is index.html, reserved under --output"),
    ("_results/results.mp4", "is under _results, reserved"),
    ("_report/a.mp4", "is under _report, reserved"),
    ("_RESULTS/a.mp4", "is under _RESULTS, reserved"),
    (".a.mp4.k2j3.partial/x.mp4", "hidden temp name"),
    ("", "empty"),
])
def test_refused_outputs_say_why(out, requested, reason):
    with pytest.raises(OutputError, match=reason):
        resolve(out, requested)


def test_output_uris_take_the_forms_input_uris_take(out):
    """``file:/p`` (Hadoop's and Java's short form) is ``file:///p``, and a known scheme missing its
    '//' is refused, as for input URIs: both were taken as relative paths and written under --output
    in folders named ``file:`` and ``s3:`` (a row meant for a bucket landed on the local disk, ok)."""
    assert resolve(out, f"file:{out}/hadoop.mp4") == f"{out}/hadoop.mp4"
    for requested, meant in [("s3:/bucket/x.mp4", "s3://bucket/x.mp4"), ("gs:bucket/x.mp4", "gs://bucket/x.mp4")]:
        with pytest.raises(OutputError, match=f"output_uri .* is not a valid URI \\(did you mean {meant}"):
            resolve(out, requested)
    with pytest.raises(OutputError, match="a file: URI names an absolute path"):  # not 'did you mean file://sub'
        resolve(out, "file:sub/f.mp4")
    assert resolve(out, "take:2.mp4") == f"{out}/take:2.mp4"  # not a scheme: a file name with a colon


def test_a_link_inside_output_cannot_lead_outside(out, tmp_path):
    os.makedirs(out)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", f"{out}/link")
    with pytest.raises(OutputError, match="outside --output"):
        resolve(out, "link/x.mp4")


def test_allow_root_lets_outputs_elsewhere_only_under_the_roots(out, tmp_path):
    policy = StoragePolicy(allowed_roots=(out, str(tmp_path / "published")))
    assert resolve(out, str(tmp_path / "published" / "x.mp4"), policy=policy) == str(tmp_path / "published" / "x.mp4")
    assert resolve(out, "y.mp4", policy=policy) == f"{out}/y.mp4"
    with pytest.raises(StorageError, match="outside the allowed roots"):
        resolve(out, str(tmp_path / "other" / "x.mp4"), policy=policy)


def test_object_store_outputs_are_confined_after_collapsing_dot_segments():
    prefix = outputs.check_output_prefix("s3://bucket/out", ANYWHERE, local_job=False)
    assert resolve(prefix, "sub/x.mp4") == "s3://bucket/out/sub/x.mp4"
    assert resolve(prefix, "s3://bucket/out/y.mp4") == "s3://bucket/out/y.mp4"
    with pytest.raises(OutputError, match="outside --output"):
        resolve(prefix, "s3://bucket/out/../other/x.mp4")
    with pytest.raises(OutputError, match="outside --output"):
        resolve(prefix, "s3://bucket/outside.mp4")
    with pytest.raises(OutputError, match="query or fragment"):
        resolve(prefix, "s3://bucket/out/x.mp4?versionId=1")
    roots = StoragePolicy(allowed_roots=("s3://bucket/out",))
    with pytest.raises(StorageError, match="outside the allowed roots"):
        resolve(prefix, "s3://bucket/out/../other/x.mp4", policy=roots)


def test_memory_outputs_only_in_a_single_process_job():
    with pytest.raises(StorageError, match="memory://, which does not outlive"):
        outputs.check_output_prefix("memory://bucket/out", ANYWHERE, local_job=False)
    with pytest.raises(OutputError, match="gone with the worker"):
        resolve("/srv/out", "memory://bucket/x.mp4", policy=StoragePolicy(allowed_roots=("memory://bucket", "/srv")))
    prefix = outputs.check_output_prefix("memory://bucket/out", ANYWHERE, local_job=True)
    assert resolve(prefix, "x.mp4", local_job=True) == "memory://bucket/out/x.mp4"


def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="exists and is not a directory"):
        outputs.check_output_prefix(str(tmp_path / "file"), ANYWHERE, local_job=False)


# --- all rows together ------------------------------------------------------------------------------

def test_rows_sharing_a_target_all_fail_naming_each_other(out, caplog):
    rows = [OutputRequest(0, "a"), OutputRequest(1, "b", "a.mp4"), OutputRequest(2, "c", f"{out}/./a.mp4"),
            OutputRequest(3, "d"), OutputRequest(4, "e", "A.mp4")]
    plans = plan_outputs(out, rows, ANYWHERE, local_job=False)
    assert [plan.ok for plan in plans] == [False, False, False, True, True]  # case-sensitive: A.mp4 is another file
    assert "is also the output of row 1 (b), row 2 (c)" in plans[0].error
    assert "is also the output of row 0 (a), row 2 (c)" in plans[1].error
    assert plans[3].uri == f"{out}/d.mp4" and plans[4].uri == f"{out}/A.mp4"
    assert not any("letter case" in record.getMessage() for record in caplog.records)  # a is failed


def test_a_row_whose_output_lies_under_another_rows_output_fails_before_it_is_rendered(out):
    # a.mp4 and a.mp4/b.mp4: whichever ran first won, and the other rendered in full, then failed at its
    # write as "exists and is not this row's video" over a file that did not exist.
    rows = [OutputRequest(0, "a", "a.mp4"), OutputRequest(1, "b", "a.mp4/b.mp4"),
            OutputRequest(2, "c", "a.mp4/deeper/c.mp4"), OutputRequest(3, "a.mp4"),
            OutputRequest(4, "d", "ab.mp4/d.mp4")]
    plans = plan_outputs(out, rows, ANYWHERE, local_job=False)
    assert [plan.ok for plan in plans] == [True, False, False, True, True]
    for plan in plans[1:3]:
        assert f"lies in the folder {out}/a.mp4, which is the output of row 0 (a): a name cannot be both" in plan.error
    assert plans[3].uri == f"{out}/a.mp4.mp4"


def test_outputs_differing_only_in_case_are_written_and_named_in_a_warning(out, caplog):
    caplog.set_level(logging.WARNING, logger="pipelines.outputs")
    plans = plan_outputs(out, [OutputRequest(0, "Cat"), OutputRequest(1, "cat"), OutputRequest(2, "dog")],
                         ANYWHERE, local_job=False)
    assert all(plan.ok for plan in plans)
    (warning,) = [record.getMessage() for record in caplog.records if "letter case" in record.getMessage()]
    assert "row 0 (Cat)" in warning and "row 1 (cat)" in warning and "dog" not in warning


def test_outputs_differing_only_in_accent_encoding_are_named_in_the_warning(out, caplog):
    # 'café' typed on a Mac (e + combining accent) and elsewhere (one character): one name on a Mac's disk.
    caplog.set_level(logging.WARNING, logger="pipelines.outputs")
    plans = plan_outputs(out, [OutputRequest(0, "a", "caf\u00e9.mp4"), OutputRequest(1, "b", "cafe\u0301.mp4"),
                               OutputRequest(2, "c", "cafe.mp4")], ANYWHERE, local_job=False)
    assert all(plan.ok for plan in plans)
    (warning,) = [record.getMessage() for record in caplog.records if "accent encoding" in record.getMessage()]
    assert "row 0 (a)" in warning and "row 1 (b)" in warning and "row 2" not in warning



def test_outputs_windows_cannot_hold_or_that_are_hidden_are_written_and_named_in_a_warning(out, caplog):
    caplog.set_level(logging.WARNING, logger="pipelines.outputs")
    plans = plan_outputs(out, [OutputRequest(0, "CON"), OutputRequest(1, "com1"), OutputRequest(2, ".hidden"),
                               OutputRequest(3, "console"), OutputRequest(4, "nul-take2")], ANYWHERE, local_job=False)
    assert all(plan.ok for plan in plans)
    warnings = [record.getMessage() for record in caplog.records]
    (devices,) = [text for text in warnings if "reserves for devices" in text]
    (hidden,) = [text for text in warnings if "hidden names" in text]
    assert "row 0 (CON)" in devices and "row 1 (com1)" in devices and "console" not in devices
    assert "row 2 (.hidden)" in hidden and "nul-take2" not in devices + hidden


def test_targets_through_a_link_are_the_same_file(out, tmp_path):
    os.makedirs(f"{out}/real")
    os.symlink(f"{out}/real", f"{out}/alias")
    plans = plan_outputs(out, [OutputRequest(0, "a", "real/x.mp4"), OutputRequest(1, "b", "alias/x.mp4")],
                         ANYWHERE, local_job=False)
    assert not plans[0].ok and "row 1 (b)" in plans[0].error


def test_existing_targets_directories_and_files(out):
    os.makedirs(f"{out}/b.mp4")  # a directory where a video should go
    Path(f"{out}/c.mp4").write_bytes(b"")
    Path(f"{out}/notdir").write_text("x")
    rows = [OutputRequest(0, "a"), OutputRequest(1, "b"), OutputRequest(2, "c"), OutputRequest(3, "d", "notdir/d.mp4")]
    plans = plan_outputs(out, rows, ANYWHERE, local_job=False)
    assert (plans[0].ok, plans[0].exists) == (True, False)
    assert "is an existing directory" in plans[1].error
    assert (plans[2].ok, plans[2].exists) == (True, True)  # exists: whether it is this row's is decided later
    assert "its folder" in plans[3].error and "is a file" in plans[3].error


def test_planning_on_an_object_store():
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/plan-bucket/out/have.mp4", b"x")
    fs.pipe_file("/plan-bucket/out/dir.mp4/inner", b"x")
    prefix = outputs.check_output_prefix("memory://plan-bucket/out", ANYWHERE, local_job=True)
    plans = plan_outputs(prefix, [OutputRequest(0, "have"), OutputRequest(1, "dir"), OutputRequest(2, "new")],
                         ANYWHERE, local_job=True)
    assert [(plan.ok, plan.exists) for plan in plans] == [(True, True), (False, False), (True, False)]


# --- before the first row ---------------------------------------------------------------------------

def test_probe_leaves_nothing_behind(tmp_path):
    target = tmp_path / "new" / "out"
    outputs.probe_output_writable(str(target))
    assert target.is_dir() and os.listdir(target) == []


def test_probe_refuses_an_output_that_cannot_be_created_or_written(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="--output .*file/out cannot be created"):
        outputs.probe_output_writable(str(tmp_path / "file" / "out"))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(storage, "write_create_only", refuse)
    with pytest.raises(StorageError, match="out is not writable: PermissionError"):
        outputs.probe_output_writable(str(tmp_path / "out"))


def test_probe_refuses_a_full_disk(tmp_path, monkeypatch):
    class Full:
        f_bavail, f_frsize = 3, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    with pytest.raises(StorageError, match="has only 12288 bytes free"):
        outputs.probe_output_writable(str(tmp_path / "out"))


def test_stale_temp_files_of_a_crash_are_removed(tmp_path):
    out, nested = tmp_path / "out", tmp_path / "out" / "nested"
    (out / "_report").mkdir(parents=True)
    nested.mkdir()
    old = [out / ".a.mp4.x1.partial", nested / ".b.mp4.x2.partial", out / "_report" / ".a.webp.x3.partial",
           out / f"{outputs.PROBE_PREFIX}dead"]
    fresh = out / ".c.mp4.x4.partial"  # a run writing right now
    kept = [out / "a.mp4", out / "notes.partial", fresh]
    for path in old + kept:
        path.write_bytes(b"x")
    for path in old + kept[:2]:
        os.utime(path, (1_000_000, 1_000_000))
    removed = outputs.clean_stale_partials(str(out), directories=[str(nested)])
    assert sorted(removed) == sorted(str(path) for path in old)
    assert all(path.exists() for path in kept)
    assert outputs.clean_stale_partials("s3://bucket/out") == []


def test_a_stopped_runs_cut_writes_are_removed_and_older_temp_files_left(tmp_path):
    out = tmp_path / "out"
    (out / "_report").mkdir(parents=True)
    cut = [out / ".a.mp4.x1.partial", out / "_report" / ".a.reference.webp.x2.partial"]
    older = out / ".b.mp4.x3.partial"  # from before this run: the stale clean-up's, past its age
    for path in [*cut, older, out / "a.mp4"]:
        path.write_bytes(b"x")
    os.utime(older, (1_000_000, 1_000_000))
    removed = outputs.clean_partials_since(str(out), since=2_000_000)
    assert sorted(removed) == sorted(str(path) for path in cut)
    assert older.exists() and (out / "a.mp4").exists()


def test_a_stopped_job_leaves_another_jobs_writes_into_the_same_folder(tmp_path):
    # Two jobs write into one --output; one is stopped: only its own rows' temp files go.
    out = tmp_path / "out"
    out.mkdir()
    mine, theirs = out / ".a.mp4.x1.partial", out / ".other.mp4.x2.partial"
    for path in (mine, theirs):
        path.write_bytes(b"x")
    removed = outputs.clean_partials_since(str(out), since=0, names=["a.mp4"])
    assert removed == [str(mine)] and theirs.exists()


# --- whose video is this ----------------------------------------------------------------------------

def test_fingerprint_changes_with_what_makes_the_video():
    base = dict(row_id="a", input_uris=["/in/p.jpg", "/in/d.mp4"], settings={"size": 512, "fps": 8.0}, engine="warp")
    fingerprint = outputs.output_fingerprint(**base)
    assert len(fingerprint) == 32 and fingerprint == outputs.output_fingerprint(**base)
    for change in ({"row_id": "b"}, {"input_uris": ["/in/p.jpg", "/in/e.mp4"]}, {"settings": {"size": 256, "fps": 8.0}},
                   {"engine": "hellomeme"}):
        assert outputs.output_fingerprint(**{**base, **change}) != fingerprint
    assert outputs.fingerprint_comment(fingerprint) == f"hellomeme-batch:{fingerprint}"


FINGERPRINT = "0123456789abcdef0123456789abcdef"


def _mp4(path: Path, ffmpeg: str, fingerprint: str | None, *flags: str) -> Path:
    command = [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=8:duration=0.5",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", *flags]
    if fingerprint:
        command += ["-metadata", f"comment={outputs.fingerprint_comment(fingerprint)}"]
    subprocess.run([*command, str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory, ffmpeg) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {"own": _mp4(folder / "own.mp4", ffmpeg, FINGERPRINT),
            "own_faststart": _mp4(folder / "fast.mp4", ffmpeg, FINGERPRINT, "-movflags", "+faststart"),
            "other_row": _mp4(folder / "other.mp4", ffmpeg, "f" * 32),
            "foreign": _mp4(folder / "foreign.mp4", ffmpeg, None)}


def test_this_rows_own_complete_video_is_recognised(videos):
    assert outputs.owns_existing_output(str(videos["own"]), FINGERPRINT)
    assert outputs.owns_existing_output(str(videos["own_faststart"]), FINGERPRINT)
    fsspec.filesystem("memory").pipe_file("/owned/own.mp4", videos["own"].read_bytes())
    assert outputs.owns_existing_output("memory://owned/own.mp4", FINGERPRINT)


def test_a_video_with_the_rows_fingerprint_as_an_earlier_version_wrote_it_is_the_rows_own(videos):
    verdict = outputs.inspect_existing_output(str(videos["own"]), "e" * 32, also=(FINGERPRINT,))
    assert verdict.owned and verdict.ours
    assert not outputs.inspect_existing_output(str(videos["other_row"]), "e" * 32, also=(FINGERPRINT,)).owned


def test_anything_else_at_the_target_is_not_this_rows_video(videos, tmp_path):
    own = videos["own"].read_bytes()
    fast = videos["own_faststart"].read_bytes()
    cases = {
        "empty.mp4": (b"", "is empty"),
        "cut.mp4": (own[: len(own) // 2], "not a complete MP4"),  # moov at the end: never written
        "cut_fast.mp4": (fast[:-100], "runs past the end of the file"),
        "garbage.mp4": (b"not a video at all" * 100, "not a complete MP4"),
        "other_row.mp4": (videos["other_row"].read_bytes(), "made by hellomeme-batch from other inputs or settings"),
        "foreign.mp4": (videos["foreign"].read_bytes(), "does not carry this row's fingerprint"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        verdict = outputs.inspect_existing_output(str(tmp_path / name), FINGERPRINT)
        assert not verdict.owned and reason in verdict.reason, (name, verdict)
    os.mkfifo(tmp_path / "pipe.mp4")
    assert "named pipe" in outputs.inspect_existing_output(str(tmp_path / "pipe.mp4"), FINGERPRINT).reason
    verdict = outputs.inspect_existing_output(str(tmp_path / "cut.mp4"), FINGERPRINT)
    message = outputs.not_owned_message(str(tmp_path / "cut.mp4"), verdict)
    assert message.startswith(f"output {tmp_path}/cut.mp4 exists and is not this row's video: it is not a complete")


def test_a_video_the_jobs_cap_cut_says_where_and_is_still_its_rows_own(tmp_path, ffmpeg):
    assert outputs.fingerprint_comment(FINGERPRINT) == f"hellomeme-batch:{FINGERPRINT}"
    assert outputs.cut_by_cap(2.5, None, 2.5) and outputs.cut_by_cap(2.5, 4.0, 2.5)
    assert not outputs.cut_by_cap(2.5, 2.5, 2.5) and not outputs.cut_by_cap(1.2, None, 2.5)  # the row's own choice
    for cut_at in (None, 2.5, 90.0, 4.4000004, 1234.5678901):  # read back exactly: 4.4000004 is not 4.4
        comment = outputs.fingerprint_comment(FINGERPRINT, cut_at)
        path = _mp4(tmp_path / f"{cut_at}.mp4", ffmpeg, None, "-metadata", f"comment={comment}")
        verdict = outputs.inspect_existing_output(str(path), FINGERPRINT)
        assert verdict.owned and verdict.cut_at == cut_at
    # A comment edited by hand: still the row's own video, no cut known (it stopped the planning with a ValueError).
    garbled = _mp4(tmp_path / "garbled.mp4", ffmpeg, None, "-metadata",
                   f"comment=hellomeme-batch:{FINGERPRINT} cut by --max-seconds at 1.2.3 s")
    verdict = outputs.inspect_existing_output(str(garbled), FINGERPRINT)
    assert verdict.owned and verdict.cut_at is None
    with pytest.raises(ValueError, match="not an output fingerprint"):
        outputs.fingerprint_comment("x\n-y")
