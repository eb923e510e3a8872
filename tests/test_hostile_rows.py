"""Every row accounted for: one manifest holding every class of hostile row next to good rows.

Rows that would hang the job (a stage that never returns), crash-loop it (a worker that dies),
read outside the allowed roots (playlists and manifests that name other files, chained URLs,
symlinks), lose their video (shared, reserved or unpersistable outputs, a foreign file in the
way), or feed it spoofed or absurd media.  The job must finish in bounded time with exit 2,
every good row ok with its own decodable video, every hostile row failed with a clear error.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engines.base import EngineSpec
from jobs.render import print_summary
from mediaio import clips
from mediaio.media import MediaLimits, ffmpeg_exe
from mediaio.storage import StoragePolicy
from pipelines.plan import JobConfig
from pipelines.render_job import run_render_job
from tests.bad_inputs import write_raw_manifest

pytestmark = pytest.mark.ray

HOSTILE_ENGINE = EngineSpec(name="warp", engine_path="tests.hostile_engine:HostileWarpEngine", size=256)
STAGE_LIMIT_S = 20.0  # a hanging stage is stopped after this long


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def hostile_run(ray_local, synthetic_media, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    inputs, outside, out = root / "inputs", root / "outside", root / "out"
    inputs.mkdir()
    outside.mkdir()
    portrait = str(synthetic_media / "reference_images" / "astronaut.png")
    clip = str(synthetic_media / "drive_videos" / "grace_hopper.mp4")
    secret_clip = outside / "private.mp4"
    _ffmpeg("-i", clip, "-t", "1", "-c", "copy", str(secret_clip))
    f = lambda name: str(inputs / name)  # noqa: E731

    os.mkfifo(f("pipe.mp4"))
    os.mkfifo(f("pipe.png"))
    from PIL import Image
    Image.new("RGB", (33000, 500), (128, 128, 128)).save(f("wide.png"))
    Path(f("dash.mp4")).write_text(
        '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT1S" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">'
        '<Period><AdaptationSet mimeType="video/mp4"><Representation id="1" bandwidth="100000" codecs="avc1.64001f">'
        f"<BaseURL>{secret_clip}</BaseURL></Representation></AdaptationSet></Period></MPD>")
    Path(f("playlist.mp4")).write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{secret_clip}\n"
                                       "#EXT-X-ENDLIST\n")
    Path(f("concat.mp4")).write_text(f"ffconcat version 1.0\nfile '{secret_clip}'\n")
    os.symlink(secret_clip, f("link.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=4608x4608:rate=15:duration=0.2", "-c:v", "libx264",
            "-preset", "ultrafast", "-metadata", "title=Stream #0:0: Video: h264, yuv420p, 64x64, 15 fps", f("spoof.mp4"))
    _ffmpeg("-i", clip, "-vf", "fps=1000", "-t", "1.0", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy",
            f("fast.mp4"))
    _ffmpeg("-i", clip, "-vf", "setpts=N/(60000*TB)", "-fps_mode", "passthrough", "-video_track_timescale", "60000",
            "-an", "-c:v", "libx264", "-preset", "ultrafast", f("absurd_rate.mp4"))
    (out / "a_directory.mp4").mkdir(parents=True)
    (out / "foreign.mp4").write_bytes(b"")

    good = {"reference_uri": portrait, "driving_uri": clip, "max_seconds": 1.0}
    rows = [
        {**good, "id": "good-1"},
        {**good, "id": "good-2", "fps": 10.0},
        {**good, "id": "pipe-driving", "driving_uri": f("pipe.mp4")},
        {**good, "id": "pipe-reference", "reference_uri": f("pipe.png")},
        {**good, "id": "dev-zero", "driving_uri": "/dev/zero"},
        {**good, "id": "too-wide-image", "reference_uri": f("wide.png")},
        {**good, "id": "dash-manifest", "driving_uri": f("dash.mp4")},
        {**good, "id": "hls-playlist", "driving_uri": f("playlist.mp4")},
        {**good, "id": "concat-list", "driving_uri": f("concat.mp4")},
        {**good, "id": "chained-url", "driving_uri": f("link.mp4") + "::memory"},
        {**good, "id": "symlink-outside", "driving_uri": f("link.mp4")},
        {**good, "id": "spoofed-size", "driving_uri": f("spoof.mp4")},
        {**good, "id": "thousand-fps", "driving_uri": f("fast.mp4")},
        {**good, "id": "absurd-rate", "driving_uri": f("absurd_rate.mp4")},
        {**good, "id": "shared-output-a", "output_uri": "shared.mp4"},
        {**good, "id": "shared-output-b", "output_uri": "shared.mp4"},
        {**good, "id": "under-results", "output_uri": "_results/x.mp4"},
        {**good, "id": "report-page", "output_uri": "index.html"},
        {**good, "id": "directory-output", "output_uri": "a_directory.mp4"},
        {**good, "id": "memory-output", "output_uri": "memory://bucket/x.mp4"},
        {**good, "id": "foreign", "output_uri": "foreign.mp4"},
        {**good, "id": "huge-prompt", "prompt": "x" * 1_000_000},
        {**good, "id": "bad\x1b[31mid\nforged line"},
        {**good, "id": "hangs", "prompt": "hang"},
        {**good, "id": "crashes", "prompt": "crash"},
    ]
    manifest = root / "manifest.parquet"
    write_raw_manifest(rows, manifest)
    config = JobConfig(manifest_uri=str(manifest), output_uri=str(out), engine=HOSTILE_ENGINE,
                       policy=StoragePolicy(allowed_roots=(str(inputs), str(synthetic_media), "/dev", str(out))),
                       row_time_limit_s=STAGE_LIMIT_S, report=False)
    report = run_render_job(config)
    return {row["id"]: row for row in report.results}, report, out, config


EXPECTED_ERRORS = {
    "pipe-driving": "named pipe",
    "pipe-reference": "named pipe",
    "dev-zero": "not a regular file",
    "too-wide-image": "33000x500",
    "dash-manifest": "not a video in a supported container",
    "hls-playlist": "not a video in a supported container|cannot be opened as a video",
    "concat-list": "not a video in a supported container",
    "chained-url": "::",
    "symlink-outside": "outside the allowed roots",
    "spoofed-size": "4608x4608",
    "absurd-rate": "60000 frames per second",
    "shared-output-a": "also the output of row",
    "shared-output-b": "also the output of row",
    "under-results": "reserved",
    "report-page": "reserved",
    "directory-output": "directory",
    "memory-output": "memory://",
    "foreign": "exists and is not this row's video",
    "huge-prompt": "over the limit",
    "bad\\x1b[31mid\\nforged line": "invalid",
    "hangs": "time limit",
    "crashes": "worker process died",
}


def test_every_hostile_row_fails_clearly_and_every_good_row_is_ok(hostile_run):
    results, report, out, _ = hostile_run
    assert report.summary.total == 25 and report.summary.ok == 3, {k: v["error"] for k, v in results.items()}
    problems = []
    for name, words in EXPECTED_ERRORS.items():
        row = results.get(name)
        if row is None:
            problems.append(f"{name!r}: no result (ids: {sorted(results)})")
        elif row["status"] != "failed" or not any(w.lower() in (row["error"] or "").lower() for w in words.split("|")):
            problems.append(f"{name!r}: {row['status']}: {row['error']}")
    assert not problems, "\n".join(problems)


def test_ok_rows_own_distinct_decodable_videos_and_a_fast_clip_keeps_a_sensible_rate(hostile_run):
    results, _, out, config = hostile_run
    ok = [row for row in results.values() if row["status"] == "ok"]
    assert {row["id"] for row in ok} == {"good-1", "good-2", "thousand-fps"}
    assert len({row["output_uri"] for row in ok}) == len(ok)
    for row in ok:
        assert clips.count_frames(row["output_uri"]) > 0
    fast = clips.probe(results["thousand-fps"]["output_uri"], MediaLimits())
    assert fast.source_fps == pytest.approx(MediaLimits().max_output_fps, rel=0.01)
    assert fast.duration == pytest.approx(1.0, abs=0.1)
    assert not list(out.rglob("*.partial")), "a temp file was left under the output"


def test_printed_ids_and_errors_are_escaped(hostile_run, capsys):
    _, report, out, _ = hostile_run
    print_summary(report, str(out))
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\nforged line" not in printed
    assert "bad\\x1b[31mid\\nforged line" in printed


def test_a_full_disk_stops_the_job_and_leaves_the_rest_for_a_rerun(ray_local, synthetic_media, tmp_path):
    """Once rows fail one after another on a full disk, every row after them would spend its render and fail
    at the write: the job stops, and the rows left are not_run, saying why, for a rerun once there is space."""
    from pipelines.render_job import DiskFullWatch

    good = {"reference_uri": str(synthetic_media / "reference_images" / "astronaut.png"),
            "driving_uri": str(synthetic_media / "drive_videos" / "grace_hopper.mp4"), "max_seconds": 0.5}
    rows = [{**good, "id": f"row-{index:02d}", "prompt": "disk-full"} for index in range(16)]
    manifest = tmp_path / "manifest.parquet"
    write_raw_manifest(rows, manifest)
    config = JobConfig(manifest_uri=str(manifest), output_uri=str(tmp_path / "out"), engine=HOSTILE_ENGINE,
                       policy=StoragePolicy(allowed_roots=(str(synthetic_media), str(tmp_path))), report=False)
    report = run_render_job(config)
    statuses = [row["status"] for row in report.results]
    assert len(statuses) == 16 and set(statuses) <= {"failed", "not_run"}
    failed = [row for row in report.results if row["status"] == "failed"]
    assert len(failed) >= DiskFullWatch.ROWS_TO_STOP
    assert all("No space left on device" in row["error"] for row in failed)
    not_run = [row for row in report.results if row["status"] == "not_run"]
    assert not_run, "every row ran: the job did not stop"
    assert all("rows in a row failed for a full disk" in row["error"] and "run the job again" in row["error"]
               for row in not_run)


def test_rows_failing_for_a_full_disk_only_stop_the_job_one_after_another():
    from pipelines.render_job import DiskFullWatch

    full = {"status": "failed", "error": "row 3 (a): write: OSError: [Errno 28] No space left on device"}
    ok, other = {"status": "ok", "error": None}, {"status": "failed", "error": "no face found"}
    watch = DiskFullWatch()
    assert [watch.full_after(row) for row in (full, full, ok, full, other, full, full)] == [False] * 7
    assert watch.full_after({**full, "error": "encode: ffmpeg: av_interleaved_write_frame(): No space left on device"})
    assert "no space left on device" in watch.reason and "3 rows in a row" in watch.reason
