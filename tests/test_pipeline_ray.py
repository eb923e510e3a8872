"""The whole pipeline through a local Ray instance: on media the tests synthesise (always), and on the
real shared pairs when ../shared is beside the checkout."""

from __future__ import annotations

import numpy as np
import pytest

from faces import tracking
from mediaio import clips, media
from jobs.manifest_builder import pair_folders, write_manifest
from reporting.results import read_results
from jobs.cli import main as cli_main
from pipelines.plan import JobConfig
from pipelines.render_job import run_render_job
from tests.face_follow import compare

pytestmark = pytest.mark.ray

MIN_PEARSON = 0.8


def _render(media_dir, folder, pairing, count):
    rows = pair_folders(str(media_dir / "reference_images"), str(media_dir / "drive_videos"), pairing)[:count]
    manifest = folder / "manifest.parquet"
    write_manifest(rows, str(manifest))
    config = JobConfig(manifest_uri=str(manifest), output_uri=str(folder / "out"))
    return rows, run_render_job(config), folder


@pytest.fixture(scope="module")
def synthetic_run(ray_local, synthetic_media, tmp_path_factory):
    """Every synthesised portrait driven by every synthesised clip, rendered once for this module."""
    return _render(synthetic_media, tmp_path_factory.mktemp("synthetic-run"), "all", 4)


@pytest.fixture(scope="module")
def shared_run(ray_local, media_dir, tmp_path_factory):
    """Four of the shared driving clips, each with a shared portrait, rendered once for this module (the
    tests without Ray use all eight)."""
    return _render(media_dir, tmp_path_factory.mktemp("shared-run"), "zip", 4)


@pytest.fixture(params=["synthetic_run", "shared_run"])
def any_run(request):
    return request.getfixturevalue(request.param)


def test_every_row_ok_and_results_table_written(any_run):
    rows, report, folder = any_run
    assert report.summary.ok == len(rows), [r["error"] for r in report.results if r["error"]]
    table = read_results(str(folder / "out")).to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    assert all(r["status"] == "ok" and r["frames"] > 0 and r["seconds_render"] > 0 for r in table)
    assert all(r["seconds_decode"] > 0 and r["seconds_pose"] > 0 and r["seconds_encode"] > 0 for r in table)


def test_outputs_decode_last_as_long_as_their_clip_and_keep_audio(any_run):
    rows, report, _ = any_run
    limits = media.MediaLimits()
    for row, result in zip(rows, report.results):
        clip_info = clips.probe(row["driving_uri"], limits)
        out_info = clips.probe(result["output_uri"], limits)
        assert out_info.width == out_info.height == 512 and out_info.codec == "h264"
        assert out_info.source_fps == pytest.approx(clip_info.source_fps, rel=0.01)
        clip_frames = clips.count_frames(row["driving_uri"])
        assert abs(clips.count_frames(result["output_uri"]) - clip_frames) <= 1, row["id"]
        assert out_info.has_audio == clip_info.has_audio


def test_faces_follow_their_clips(any_run):
    rows, report, _ = any_run
    tracker = tracking.FaceTracker()
    checked = 0
    failures = []
    for row, result in zip(rows, report.results):
        for signal, pearson in compare(result["output_uri"], row["driving_uri"], tracker).items():
            if pearson is None:
                continue
            checked += 1
            if pearson < MIN_PEARSON:
                failures.append(f"{row['id']} {signal}: r={pearson:.2f}")
    assert checked >= len(rows), "too few signals moved beyond their noise floor to judge"
    assert not failures, failures


def test_engine_does_not_return_the_reference_unchanged(synthetic_run):
    rows, report, _ = synthetic_run
    clip = clips.decode_clip(report.results[0]["output_uri"], None, media.MediaLimits())
    frames = clip.frames.astype(np.float32)
    assert np.abs(frames - frames[0]).mean(axis=(1, 2, 3)).max() > 2.0  # the face moves


def test_rerun_skips_finished_rows_and_renders_deleted_ones(synthetic_run):
    rows, report, folder = synthetic_run
    out = folder / "out"
    deleted = [rows[1]["id"], rows[2]["id"]]
    before = {}
    for meme_id in deleted:
        before[meme_id] = clips.decode_clip(str(out / f"{meme_id}.mp4"), None, media.MediaLimits()).frames
        (out / f"{meme_id}.mp4").unlink()
    config = JobConfig(manifest_uri=str(folder / "manifest.parquet"), output_uri=str(out))
    again = run_render_job(config)
    rendered = sorted(r["id"] for r in again.results if r["status"] == "ok")
    assert rendered == sorted(deleted)
    assert again.summary.skipped == len(rows) - len(deleted)
    for meme_id, frames in before.items():  # a row renders the same video every time
        after = clips.decode_clip(str(out / f"{meme_id}.mp4"), None, media.MediaLimits()).frames
        np.testing.assert_array_equal(after, frames)


def test_cli_exits_1_on_a_manifest_it_cannot_read(tmp_path):
    """Exit 1: the job could not start (no row ran).  Exit 2 (some rows failed) and the printed summary:
    tests/test_bad_inputs.py, whose corpus run goes through the same CLI."""
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    assert cli_main(["render", str(bad), "--output", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / "_results").exists()
