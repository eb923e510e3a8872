"""The whole pipeline through a local Ray instance: on media the tests synthesise (always), and on the
real shared pairs when ../shared is beside the checkout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from faces import tracking
from mediaio import clips, media
from jobs.manifest_builder import pair_folders, write_manifest
from reporting.results import read_results
from jobs.cli import main as cli_main
from pipelines import render_pipeline
from pipelines.plan import JobConfig
from pipelines.render_job import run_render_job
from tests.conftest import SHARED_MEDIA, has_shared_media, shared_media
from tests.face_follow import compare

pytestmark = pytest.mark.ray

MIN_PEARSON = 0.8


@dataclass(frozen=True)
class RunPart:
    """One group of rows of the module's job: its manifest rows, their results, the job's folder."""

    rows: list[dict]
    results: list[dict]
    folder: Path


def _rows(media: Path, pairing: str, prefix: str) -> list[dict]:
    rows = pair_folders(str(media / "reference_images"), str(media / "drive_videos"), pairing)[:4]
    return [{**row, "id": prefix + row["id"]} for row in rows]


@pytest.fixture(scope="module")
def module_run(ray_local, synthetic_media, tmp_path_factory) -> dict[str, RunPart]:
    """One job for the whole module (a Ray job's start-up costs more than its rows): every synthesised
    portrait driven by every synthesised clip, and four shared driving clips with a shared portrait
    each when ../shared is beside the checkout (the tests without Ray use all eight)."""
    groups = {"synthetic": _rows(synthetic_media, "all", "syn-")}
    if has_shared_media():
        groups["shared"] = _rows(SHARED_MEDIA, "zip", "shared-")
    folder = tmp_path_factory.mktemp("pipeline-run")
    manifest = folder / "manifest.parquet"
    write_manifest([row for rows in groups.values() for row in rows], str(manifest))
    report = run_render_job(JobConfig(manifest_uri=str(manifest), output_uri=str(folder / "out")))
    by_id = {result["id"]: result for result in report.results}
    return {name: RunPart(rows, [by_id[row["id"]] for row in rows], folder) for name, rows in groups.items()}


@pytest.fixture(params=["synthetic", "shared"])
def any_run(request, module_run) -> RunPart:
    if request.param not in module_run:
        shared_media()  # skips, saying where the shared media were looked for
    return module_run[request.param]


@pytest.fixture
def synthetic_run(module_run) -> RunPart:
    return module_run["synthetic"]


def test_every_row_ok_and_results_table_written(any_run):
    rows, results, folder = any_run.rows, any_run.results, any_run.folder
    assert all(r["status"] == "ok" for r in results), [r["error"] for r in results if r["error"]]
    ids = {row["id"] for row in rows}
    table = [r for r in read_results(str(folder / "out")).to_pylist() if r["id"] in ids]
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    assert all(r["status"] == "ok" and r["frames"] > 0 and r["seconds_render"] > 0 for r in table)
    assert all(r["seconds_decode"] > 0 and r["seconds_pose"] > 0 and r["seconds_encode"] > 0 for r in table)


def test_outputs_decode_last_as_long_as_their_clip_and_keep_audio(any_run):
    limits = media.MediaLimits()
    for row, result in zip(any_run.rows, any_run.results):
        clip_info = clips.probe(row["driving_uri"], limits)
        out_info = clips.probe(result["output_uri"], limits)
        assert out_info.width == out_info.height == 512 and out_info.codec == "h264"
        assert out_info.source_fps == pytest.approx(clip_info.source_fps, rel=0.01)
        clip_frames = clips.count_frames(row["driving_uri"])
        assert abs(clips.count_frames(result["output_uri"]) - clip_frames) <= 1, row["id"]
        assert out_info.has_audio == clip_info.has_audio


def test_faces_follow_their_clips(any_run):
    rows = any_run.rows
    tracker = tracking.FaceTracker()
    checked = 0
    failures = []
    for row, result in zip(rows, any_run.results):
        for signal, pearson in compare(result["output_uri"], row["driving_uri"], tracker).items():
            if pearson is None:
                continue
            checked += 1
            if pearson < MIN_PEARSON:
                failures.append(f"{row['id']} {signal}: r={pearson:.2f}")
    assert checked >= len(rows), "too few signals moved beyond their noise floor to judge"
    assert not failures, failures


def test_engine_does_not_return_the_reference_unchanged(synthetic_run):
    clip = clips.decode_clip(synthetic_run.results[0]["output_uri"], None, media.MediaLimits())
    frames = clip.frames.astype(np.float32)
    assert np.abs(frames - frames[0]).mean(axis=(1, 2, 3)).max() > 2.0  # the face moves


def test_rerun_skips_finished_rows_and_renders_deleted_ones(module_run, synthetic_run, monkeypatch):
    # The rerun's rows also share one input block, as a manifest of more than MAX_INPUT_BLOCKS rows'
    # do; the stages' outputs are then cut into one-row blocks, and each row's video is unchanged.
    monkeypatch.setattr(render_pipeline, "MAX_INPUT_BLOCKS", 1)
    rows, folder = synthetic_run.rows, synthetic_run.folder
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
    assert again.summary.skipped == sum(len(part.rows) for part in module_run.values()) - len(deleted)
    for row in again.results:  # a skipped row's record still says what its video holds (the first run's)
        if row["status"] == "skipped":
            assert row["frames"] == clips.count_frames(row["output_uri"]) and row["seconds_render"] > 0
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
