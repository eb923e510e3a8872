"""Each stage called on its own, without Ray, on a real small mp4: the columns it reads and the ones it adds.

The pipeline's own stage classes (``PrepareStage``, ``RenderStage``) and finish function run here
in the test process, as the actors run them, on clips the tests synthesise.
"""

from __future__ import annotations

import numpy as np
import pytest

from actors import prepare_actor, render_actor
from engines.base import EngineSpec
from engines.registry import engine_spec
from faces.tracking import NUM_LANDMARKS
from mediaio import clips
from mediaio.media import MediaLimits
from pipelines.finish_stage import make_finish_fn
from pipelines.outputs import owns_existing_output
from pipelines.plan import JobConfig, plan_job
from pipelines.render_pipeline import PrepareStage, RenderStage
from pipelines.rows import PLANNED_COLUMNS, batch_rows, rows_batch
from reporting.results import RESULTS_SCHEMA

SIZE = 256


@pytest.fixture(scope="module")
def job(synthetic_media, tmp_path_factory):
    from jobs.manifest_builder import pair_folders, write_manifest

    folder = tmp_path_factory.mktemp("stages")
    rows = pair_folders(str(synthetic_media / "reference_images"), str(synthetic_media / "drive_videos"), "zip")
    rows.append({**rows[0], "id": "no-such-clip", "driving_uri": str(folder / "missing.mp4")})
    write_manifest(rows, str(folder / "manifest.parquet"))
    config = JobConfig(manifest_uri=str(folder / "manifest.parquet"), output_uri=str(folder / "out"),
                       engine=engine_spec("warp", size=SIZE))
    return config, plan_job(config).pending, synthetic_media


def _prepare_stage(config: JobConfig, driving_crops: bool | None = None) -> PrepareStage:
    """The prepare stage as the pipeline builds it for the job's engine (``driving_crops``: override)."""
    engine = config.engine.engine_class()
    crops = engine.needs_driving_frames if driving_crops is None else driving_crops
    return PrepareStage(config.engine.size, engine.default_fps, engine.crop_rule, config.limits, {},
                        config.max_input_bytes, config.output_uri, config.policy, driving_crops=crops)


@pytest.fixture(scope="module")
def prepared(job):
    config, pending, _ = job
    stage = _prepare_stage(config)
    return [stage(row) for row in pending]


def test_planned_rows_carry_every_column(job):
    _, pending, _ = job
    assert all(set(row) == set(PLANNED_COLUMNS) for row in pending)


def test_prepare_adds_face_crops_tracks_and_audio_at_the_clips_rate(job, prepared):
    config, pending, media = job
    good, missing = prepared[0], prepared[-1]
    added = set(prepare_actor.output_columns(SIZE))
    assert added <= set(good) and set(PLANNED_COLUMNS) <= set(good)
    facts = clips.probe(good["driving_uri"], MediaLimits())
    frames = int(good["frames"])
    assert good["status"] == "pending" and frames == facts.frame_count  # the warp engine keeps the clip's rate
    assert good["generation_fps"] == pytest.approx(facts.source_fps)
    assert good["reference_crop"].shape == (SIZE, SIZE, 3) and good["reference_crop"].dtype == np.uint8
    assert good["driving_crops"].shape == (0, SIZE, SIZE, 3)  # the warp engine reads only the landmarks
    assert good["driving_landmarks"].shape == (frames, NUM_LANDMARKS, 3)
    assert good["driving_rotation"].shape == good["driving_translation"].shape == (frames, 3)
    assert good["reference_landmarks"].shape == (1, NUM_LANDMARKS, 3)
    assert isinstance(good["audio"], bytes) and len(good["audio"]) > 100
    assert good["seconds_decode"] > 0 and good["seconds_pose"] > 0
    assert good["preview_reference"] and good["preview_driving"]
    # A row that fails here carries the stage's columns, empty, so every row keeps one schema.
    assert missing["status"] == "failed" and "missing.mp4 not found" in missing["error"]
    assert added <= set(missing) and missing["driving_crops"].shape == (0, SIZE, SIZE, 3)


def test_prepare_cuts_driving_crops_for_an_engine_that_reads_the_pixels(job, prepared):
    config, pending, _ = job
    row = _prepare_stage(config, driving_crops=True)(pending[0])
    frames = int(row["frames"])
    assert row["driving_crops"].shape == (frames, SIZE, SIZE, 3) and row["driving_crops"].std() > 10
    np.testing.assert_array_equal(row["driving_landmarks"], prepared[0]["driving_landmarks"])  # the same track


def test_render_adds_frames_and_drops_what_it_consumed(job, prepared):
    config, _, _ = job
    rendered = batch_rows(RenderStage(config.engine, {})(rows_batch(prepared)))
    good, missing = rendered[0], rendered[-1]
    assert not set(render_actor.CONSUMED_COLUMNS) & set(good)
    assert good["rendered"].shape == (int(good["frames"]), SIZE, SIZE, 3) and good["seconds_render"] > 0
    assert missing["status"] == "failed" and missing["rendered"].shape == (0, SIZE, SIZE, 3)


def test_finish_writes_an_owned_video_and_gives_the_results_row(job, prepared):
    config, _, _ = job
    rendered = batch_rows(RenderStage(config.engine, {})(rows_batch(prepared)))
    finish = make_finish_fn(config)
    results = [finish(row) for row in rendered]
    assert all(set(result) >= set(RESULTS_SCHEMA.names) for result in results)
    good, missing = results[0], results[-1]
    assert good["status"] == "ok" and good["seconds_encode"] > 0
    assert clips.count_frames(good["output_uri"]) == good["frames"]
    assert clips.probe(good["output_uri"], MediaLimits()).has_audio
    assert owns_existing_output(good["output_uri"], rendered[0]["fingerprint"])
    assert missing["status"] == "failed" and "missing.mp4 not found" in missing["error"]
    # Finishing the same row again (a retried task) keeps the row's own video and is ok.
    assert finish(rendered[0])["status"] == "ok"


def test_a_file_that_appears_at_the_output_while_the_row_renders_fails_the_row_saying_so(job, prepared, tmp_path):
    # The plan found the name free; another program wrote there before the finish stage did.
    config, _, _ = job
    (rendered, *_) = batch_rows(RenderStage(config.engine, {})(rows_batch(prepared)))
    target = tmp_path / "taken.mp4"
    target.write_bytes(b"someone else's bytes")
    result = make_finish_fn(config)({**rendered, "output_uri": str(target)})
    assert result["status"] == "failed"
    assert "appeared while this row rendered, after the job was planned" in result["error"]
    assert target.read_bytes() == b"someone else's bytes"


def test_a_clip_without_audio_finishes_silent_when_ray_hands_its_null_audio_as_nan(job, prepared, tmp_path):
    # A column null in every row of a block reaches the next stage as NaN (Arrow's null type).
    config, _, _ = job
    (rendered, *_) = batch_rows(RenderStage(config.engine, {})(rows_batch(prepared)))
    silent = {**rendered, "audio": float("nan"), "output_uri": str(tmp_path / "silent.mp4")}
    result = make_finish_fn(config)(silent)
    assert result["status"] == "ok", result["error"]
    assert not clips.probe(result["output_uri"], MediaLimits()).has_audio


def test_a_batch_that_fails_is_rendered_row_by_row_so_only_the_bad_row_fails(job, prepared):
    config, _, _ = job
    spec = EngineSpec(name="warp", engine_path="tests.hostile_engine:HostileWarpEngine", size=SIZE)
    good = prepared[0]
    batch = [{**good, "row_index": i, "id": f"row-{i}", "prompt": "refuse" if i == 1 else ""} for i in range(3)]
    out = batch_rows(RenderStage(spec, {})(rows_batch(batch)))
    assert [row["status"] for row in out] == ["pending", "failed", "pending"]
    assert "row 1 (row-1): render: ValueError: this engine refuses a row in the batch" in out[1]["error"]
    assert out[0]["rendered"].shape[0] == int(good["frames"]) and out[1]["rendered"].shape[0] == 0



def test_a_distant_face_in_a_wide_shot_is_found_and_tracked_in_a_region_around_it(job, prepared, tmp_path, ffmpeg):
    # Scaled whole to the face mesh's 1024 px, a 2560x1440 frame shows this face ~40 px across: too small.
    import subprocess

    config, pending, _ = job
    wide = tmp_path / "wide.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", pending[0]["driving_uri"], "-vf",
                    "scale=240:240,pad=2560:1440:1900:1000:color=0x405060", "-c:v", "libx264", "-preset",
                    "ultrafast", "-c:a", "copy", str(wide)], check=True, capture_output=True)
    row = _prepare_stage(config)({**pending[0], "driving_uri": str(wide)})
    assert row["status"] == "pending", row["error"]
    assert row["driving_detected"].mean() > 0.8
    # The same expressions as the close-up: the mouth opens and closes with it.
    near, far = (np.linalg.norm(r["driving_landmarks"][:, 13, :2] - r["driving_landmarks"][:, 14, :2], axis=1)
                 for r in (prepared[0], row))
    assert np.corrcoef(near, far)[0, 1] > 0.8



@pytest.mark.parametrize("turn", ["transpose=1", "transpose=2"])
def test_a_clip_filmed_sideways_without_its_rotation_tag_is_followed_turned_upright(job, prepared, tmp_path,
                                                                                   ffmpeg, turn):
    # The pixels turned a quarter and no tag says so: the mesh tracked a lying face unsteadily, and its
    # size jumps rendered as zooms and tilts.  Turned upright, it tracks as the original does.
    import subprocess

    config, pending, _ = job
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", pending[0]["driving_uri"], "-vf", turn, "-c:v", "libx264",
                    "-preset", "ultrafast", "-metadata:s:v", "rotate=0", "-c:a", "copy", str(turned)],
                   check=True, capture_output=True)
    row = _prepare_stage(config, driving_crops=True)({**pending[0], "driving_uri": str(turned)})
    assert row["status"] == "pending" and "followed turned upright" in row["error"]
    upright = prepared[0]
    assert np.abs(np.degrees(row["driving_rotation"][:, 2])).max() < 30
    near, turned_mouth = (np.linalg.norm(r["driving_landmarks"][:, 13, :2] - r["driving_landmarks"][:, 14, :2], axis=1)
                          for r in (upright, row))
    assert np.corrcoef(near, turned_mouth)[0, 1] > 0.8
    assert row["driving_crops"].shape[0] == int(row["frames"])


@pytest.mark.parametrize("turns", [1, 3])
def test_a_portrait_lying_on_its_side_without_an_orientation_tag_is_animated_upright(job, prepared, tmp_path, turns):
    """A photo whose EXIF orientation was lost: the mesh warp animated the lying face with its
    expressions distorted, and nothing said why; the driving clip's face in that state was already
    turned upright.  The crop is the upright portrait's, and the row says what was done."""
    from PIL import Image

    config, pending, _ = job
    lying = tmp_path / f"lying-{turns}.png"
    Image.fromarray(np.rot90(np.asarray(Image.open(pending[0]["reference_uri"]).convert("RGB")), turns)).save(lying)
    row = _prepare_stage(config)({**pending[0], "reference_uri": str(lying)})
    assert row["status"] == "pending" and "portrait's face lay on its side" in row["error"]
    assert "animated turned upright" in row["error"]
    assert abs(np.degrees(row["reference_rotation"][0, 2])) < 30
    difference = np.abs(row["reference_crop"].astype(int) - prepared[0]["reference_crop"].astype(int)).mean()
    assert difference < 12  # the upright portrait's own crop, not a turned one


def test_a_portrait_tilted_on_purpose_is_not_turned(job, prepared, tmp_path):
    """A face tilted 60 degrees is a pose, not a lost tag: turning it a quarter left it tilted 30 degrees the
    other way, with grey corners and a note that it had lain on its side."""
    from PIL import Image

    config, pending, _ = job
    tilted = tmp_path / "tilted.png"
    Image.open(pending[0]["reference_uri"]).convert("RGB").rotate(60, expand=True, fillcolor=(128, 128, 128)).save(tilted)
    row = _prepare_stage(config)({**pending[0], "reference_uri": str(tilted)})
    assert row["status"] == "pending" and "lay on its side" not in (row.get("error") or "")
    assert abs(abs(np.degrees(row["reference_rotation"][0, 2])) - 60) < 15


def test_a_tiny_portrait_renders_with_a_note_that_it_was_enlarged(job, prepared, tmp_path):
    """A 64 px thumbnail was blown up 8x to a blurry video, row ok, without a word."""
    from PIL import Image

    config, pending, _ = job
    tiny = tmp_path / "tiny.png"
    Image.open(pending[0]["reference_uri"]).convert("RGB").resize((56, 56), Image.LANCZOS).save(tiny)
    row = _prepare_stage(config)({**pending[0], "reference_uri": str(tiny)})
    assert row["status"] == "pending" and "enlarged" in row["error"] and "looks blurry" in row["error"]
    assert "error" not in prepared[0] or "enlarged" not in (prepared[0]["error"] or "")


def test_no_skip_existing_replaces_this_tools_earlier_video_and_never_a_foreign_file(job, prepared, tmp_path):
    """Rendered again with other settings, a row replaces its earlier video (and the results row owns what is
    on disk); a foreign file at a target fails its row at planning, before any work is spent on it."""
    from dataclasses import replace

    from pipelines.outputs import inspect_existing_output

    config, _, _ = job
    out = tmp_path / "out"
    first = replace(config, output_uri=str(out))
    (rendered, *_) = batch_rows(RenderStage(first.engine, {})(rows_batch([prepared[0]])))
    rendered = {**rendered, "output_uri": str(out / f"{rendered['id']}.mp4")}
    assert make_finish_fn(first)(rendered)["status"] == "ok"
    foreign = out / "foreign.mp4"
    foreign.write_bytes(b"not ours")

    def plan(skip_existing, engine):
        return plan_job(replace(config, output_uri=str(out), skip_existing=skip_existing, engine=engine))

    other = engine_spec("warp", size=SIZE + 64)
    rerun = plan(True, other)  # other settings: the earlier video is this tool's, but not this row's now
    earlier = next(r for r in rerun.settled if r["id"] == rendered["id"])
    assert earlier["status"] == "failed" and "--no-skip-existing" in earlier["error"]
    again = plan(False, other)
    (row,) = [r for r in again.pending if r["id"] == rendered["id"]]
    assert row["replace_output"] and row["fingerprint"] != rendered["fingerprint"]
    # The finish stage replaces the file with the new video, which the new fingerprint owns.
    new = {**rendered, "fingerprint": row["fingerprint"], "replace_output": True}
    assert make_finish_fn(replace(first, skip_existing=False))(new)["status"] == "ok"
    assert inspect_existing_output(row["output_uri"], row["fingerprint"]).owned
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]

    # A foreign file never is replaced: with --no-skip-existing its row fails before rendering.
    manifest_rows = [{"id": "foreign", "reference_uri": rendered["reference_uri"],
                      "driving_uri": rendered["driving_uri"]}]
    from jobs.manifest_builder import write_manifest

    write_manifest(manifest_rows, str(tmp_path / "foreign.parquet"))
    refused = plan_job(replace(config, manifest_uri=str(tmp_path / "foreign.parquet"), output_uri=str(out),
                               skip_existing=False))
    assert not refused.pending and refused.settled[0]["status"] == "failed"
    assert "move it away" in refused.settled[0]["error"] and foreign.read_bytes() == b"not ours"


def test_a_rows_deadline_counts_time_awake_not_the_wall_clock(monkeypatch):
    """A laptop shut overnight mid-job: on waking the wall clock is hours on, and every row in flight was
    stopped as past its limit.  Deadlines are on the monotonic clock, which stands still in sleep."""
    import threading
    import time

    from pipelines import row_guard

    deadline, limit = row_guard.stage_deadline([{"time_limit_s": 2.0}])
    assert limit == 2.0 and deadline == pytest.approx(time.monotonic() + 2.0, abs=0.5)
    expired = threading.Event()
    real_time = time.time
    monkeypatch.setattr(row_guard.time, "time", lambda: real_time() + 8 * 3600)  # the night the lid was shut
    watchdog = row_guard.Watchdog()
    watchdog.arm(time.monotonic() + 60.0, expired.set)  # on the wall clock the deadline passed hours ago
    assert not expired.wait(0.5)
    watchdog.disarm()  # (past its deadline the watchdog would end this process, as it ends a stage's worker)


def test_a_rerun_under_a_higher_max_seconds_renders_the_rest_of_a_clip_the_cap_cut(job, tmp_path):
    """The job warns that rows asking more than --max-seconds render only that much and says to raise
    it; the rerun under the higher cap skipped them, keeping the short videos (their fingerprint had
    no cap in it).  Now a video the cap cut says so in its metadata, and a rerun whose cap (and the
    row's max_seconds) allows more renders the row again and replaces it; an unchanged rerun skips it."""
    from dataclasses import replace

    from jobs.manifest_builder import write_manifest

    config, pending, _ = job
    write_manifest([{"id": "capped", "reference_uri": pending[0]["reference_uri"],
                     "driving_uri": pending[0]["driving_uri"], "max_seconds": 30.0}], str(tmp_path / "m.parquet"))
    clip = clips.probe(pending[0]["driving_uri"], MediaLimits()).duration
    base = replace(config, manifest_uri=str(tmp_path / "m.parquet"), output_uri=str(tmp_path / "out"))

    def run(cap: float) -> tuple[str, float]:
        """Plan and, if the row is pending, render it under ``cap``: the row's status and its video's length."""
        capped = replace(base, limits=replace(base.limits, max_seconds=cap))
        plan = plan_job(capped)
        if plan.settled:
            (row,) = plan.settled
        else:
            stage = _prepare_stage(capped)
            (rendered,) = batch_rows(RenderStage(capped.engine, {})(rows_batch([stage(plan.pending[0])])))
            row = make_finish_fn(capped)(rendered)
        return row["status"], clips.probe(str(tmp_path / "out" / "capped.mp4"), MediaLimits()).duration

    status, short = run(1.0)
    assert status == "ok" and short == pytest.approx(1.0, abs=0.15) and clip > 1.5
    assert b"cut by --max-seconds at 1.0 s" in (tmp_path / "out" / "capped.mp4").read_bytes()
    assert run(1.0)[0] == "skipped"  # the same cap: nothing more to render
    status, whole = run(60.0)
    assert status == "ok" and whole == pytest.approx(clip, abs=0.15)  # the rest of the clip
    assert run(60.0)[0] == "skipped" and run(1.0)[0] == "skipped"  # not cut now; a lower cap keeps the longer video


def test_an_input_the_storage_refuses_fails_its_row_naming_it(job, tmp_path):
    """Access denied (an S3 "Forbidden", a file without read permission) failed its row as
    "prepare: PermissionError: Forbidden", not saying which input."""
    import os

    config, pending, _ = job
    if os.geteuid() == 0:  # root reads any file: refuse it the way an object store does
        from unittest import mock

        from mediaio import storage

        with mock.patch.object(storage, "read_bytes", side_effect=PermissionError("Forbidden")):
            row = _prepare_stage(config)(pending[0])
    else:
        locked = tmp_path / "locked.png"
        locked.write_bytes(b"x")
        locked.chmod(0)
        row = _prepare_stage(config)({**pending[0], "reference_uri": str(locked)})
    assert row["status"] == "failed"
    assert "reference" in row["error"] and "cannot be read: access denied" in row["error"], row["error"]
