"""Driver-side planning: one job plan before any row runs (engine checked, rows decided, settings applied)."""

import argparse
import logging
import re

import numpy as np
import pyarrow as pa
import pytest

from engines.base import EngineOptionError, RowSettings
from engines.registry import engine_spec
from jobs.manifest_builder import manifest_table
from jobs.options import add_render_arguments, job_config
from mediaio.storage import StoragePolicy
from pipelines.plan import JobConfig, JobOptionError, check_engine, check_job_settings, plan_rows
from pipelines.rows import PLANNED_COLUMNS, planned_row, run_batch_stage, run_stage


def _plan(tmp_path, rows, engine=None, **config):
    config = JobConfig(manifest_uri=config.pop("manifest_uri", "unused"), output_uri=str(tmp_path / "out"),
                       engine=engine or engine_spec("warp"), **config)
    plan = plan_rows(manifest_table(rows), config)
    return sorted(plan.pending + plan.settled, key=lambda r: r["row_index"])


def row(meme_id, **extra):
    return {"id": meme_id, "reference_uri": "/in/r.jpg", "driving_uri": "/in/d.mp4", **extra}


def test_a_project_moved_as_a_whole_still_knows_its_own_videos(tmp_path):
    """Inputs written relative to the manifest are its videos' identity as written: a project folder
    moved, renamed or mounted elsewhere does not make every finished row 'not this row's video'."""
    def fingerprint(project, reference):
        (planned,) = _plan(project, [row("a", reference_uri=reference, driving_uri="clips/d.mp4")],
                           manifest_uri=str(project / "manifest.parquet"))
        return planned["fingerprint"]

    here, there = tmp_path / "project", tmp_path / "moved"
    assert fingerprint(here, "faces/r.jpg") == fingerprint(there, "faces/r.jpg")
    assert fingerprint(here, "faces/r.jpg") != fingerprint(here, "faces/other.jpg")
    # Absolute paths name other files once moved: they stay part of the identity.
    assert fingerprint(here, str(here / "r.jpg")) != fingerprint(there, str(there / "r.jpg"))


def test_statuses(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "foreign.mp4").write_bytes(b"x")
    rows = _plan(tmp_path, [
        row("a"), row("a"), row("foreign"), row("bad/id"), row("e", engine="nope"),
        row("h", reference_uri="http://127.0.0.1/x.jpg"), row("o", output_uri=str(tmp_path / "else" / "o.mp4")),
        row("rel", output_uri="sub/r.mp4"),
    ])
    assert [r["status"] for r in rows] == ["pending", "failed", "failed", "failed", "failed", "failed", "failed",
                                           "pending"]
    assert "duplicate id 'a'" in rows[1]["error"] and "row 1" in rows[1]["error"]
    assert "exists and is not this row's video" in rows[2]["error"]
    assert "unknown engine 'nope'" in rows[4]["error"]
    assert "scheme 'http'" in rows[5]["error"]
    assert "outside --output" in rows[6]["error"]  # without --allow-root every output stays under --output
    assert rows[0]["output_uri"] == str(tmp_path / "out" / "a.mp4")
    assert rows[7]["output_uri"] == str(tmp_path / "out" / "sub" / "r.mp4")  # relative to --output, not the cwd


def test_relative_inputs_are_taken_beside_the_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory (on a cluster, the job's) plays no part
    manifest = tmp_path / "jobs" / "manifest.parquet"
    (planned,) = _plan(tmp_path, [row("a", reference_uri="faces/r.jpg", driving_uri="./clips/d.mp4")],
                       manifest_uri=str(manifest))
    assert planned["reference_uri"] == str(tmp_path / "jobs" / "faces" / "r.jpg")
    assert planned["driving_uri"] == str(tmp_path / "jobs" / "clips" / "d.mp4")
    # Beside the manifest is still inside the allowed roots, or not at all.
    (refused,) = _plan(tmp_path, [row("b", reference_uri="../../r.jpg")], manifest_uri=str(manifest),
                       policy=StoragePolicy(allowed_roots=(str(tmp_path / "jobs"), str(tmp_path / "out"))))
    assert refused["status"] == "failed" and "outside the allowed roots" in refused["error"]


def test_an_existing_output_is_skipped_only_if_it_is_this_rows_own_video(tmp_path):
    from mediaio import media
    from pipelines.outputs import FINGERPRINT_TAG

    (pending,) = _plan(tmp_path, [row("done")])
    frames = np.zeros((4, 64, 64, 3), np.uint8)
    own = media.encode_mp4(frames, 4.0, 4.0, 1.0, None, media.MediaLimits(),
                           metadata={"comment": FINGERPRINT_TAG + pending["fingerprint"]})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "done.mp4").write_bytes(own)
    (again,) = _plan(tmp_path, [row("done")])
    assert again["status"] == "skipped"
    (changed,) = _plan(tmp_path, [row("done", fps=10.0)])  # other settings make another video: not this one
    assert changed["status"] == "failed"
    assert "from other inputs or settings; rerun with --no-skip-existing" in changed["error"]


def test_settings_the_engine_does_not_read_leave_a_finished_video_its_rows_own(tmp_path):
    """A prompt or seed column added to a manifest rendered with the warp engine changes no pixel: the
    rerun skips the finished videos (it failed every one as 'not this row's video'), also those made by
    earlier versions, whose fingerprint took such settings as set."""
    from mediaio import media
    from pipelines.outputs import FINGERPRINT_TAG, output_fingerprint
    from pipelines.plan import pixel_settings

    def video(fingerprint):
        return media.encode_mp4(np.zeros((4, 64, 64, 3), np.uint8), 4.0, 4.0, 1.0, None, media.MediaLimits(),
                                metadata={"comment": FINGERPRINT_TAG + fingerprint})

    (first,) = _plan(tmp_path, [row("a")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.mp4").write_bytes(video(first["fingerprint"]))
    (again,) = _plan(tmp_path, [row("a", prompt="smile", seed=3, steps=30, guidance=2.0, lora_scale=0.5)])
    assert again["status"] == "skipped"
    assert _plan(tmp_path, [row("a", max_seconds=2.0)])[0]["status"] == "failed"  # a setting it reads
    # Made by an earlier version with a prompt set: its fingerprint took the prompt as set.
    config = JobConfig(manifest_uri="unused", output_uri=str(tmp_path / "out"), engine=engine_spec("warp"))
    as_set = pixel_settings(RowSettings(prompt="smile"), config, as_set=True)
    assert as_set != pixel_settings(RowSettings(prompt="smile"), config)
    earlier = output_fingerprint("b", ["/in/r.jpg", "/in/d.mp4"], as_set, "warp")
    (tmp_path / "out" / "b.mp4").write_bytes(video(earlier))
    assert _plan(tmp_path, [row("b", prompt="smile")])[0]["status"] == "skipped"
    # The diffusion engine reads them all: a prompt is part of its video.
    spec = engine_spec("hellomeme", size=128, components_factory="unused")
    hellomeme = JobConfig(manifest_uri="unused", output_uri=str(tmp_path / "out"), engine=spec)
    assert pixel_settings(RowSettings(prompt="smile"), hellomeme) == pixel_settings(
        RowSettings(prompt="smile"), hellomeme, as_set=True)


def test_pending_rows_are_typed_columns_with_every_default_applied(tmp_path):
    spec = engine_spec("hellomeme", size=128, components_factory="unused")
    rows = _plan(tmp_path, [row("a"), row("b", seed=7, steps=3, guidance=2.0, prompt="smile", fps=10.0,
                                       max_seconds=1.5, lora="/in/style.safetensors", lora_scale=0.5)], engine=spec)
    assert all(set(r) == set(PLANNED_COLUMNS) for r in rows)
    defaults = RowSettings()
    assert (rows[0]["seed"], rows[0]["steps"], rows[0]["guidance"], rows[0]["prompt"]) == (
        defaults.seed, defaults.steps, defaults.guidance, defaults.prompt)
    assert rows[0]["lora"] is None and rows[0]["lora_scale"] == 1.0 and rows[0]["fps"] is None
    assert RowSettings.from_columns(rows[1]) == RowSettings(seed=7, steps=3, guidance=2.0, prompt="smile",
                                                            lora="/in/style.safetensors", lora_scale=0.5, fps=10.0,
                                                            max_seconds=1.5)


def test_uris_are_normalised_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (pending,) = _plan(tmp_path, [row("a", reference_uri="faces/r.jpg", driving_uri="file:///in/d.mp4")])
    assert pending["reference_uri"] == str(tmp_path / "faces" / "r.jpg")
    assert pending["driving_uri"] == "/in/d.mp4"


def test_output_must_stay_inside_allowed_roots(tmp_path):
    policy = StoragePolicy(allowed_roots=("/in", str(tmp_path / "out"), str(tmp_path / "else")))
    rows = _plan(tmp_path, [row("a"), row("b", output_uri="/etc/cron.d/x.mp4"),
                            row("c", output_uri=str(tmp_path / "else" / "c.mp4"))], policy=policy)
    assert rows[0]["status"] == "pending" and rows[2]["status"] == "pending"
    assert rows[1]["status"] == "failed" and "outside" in rows[1]["error"]


def test_non_utf8_id_is_reported_readably(tmp_path):
    table = pa.table({"id": pa.array([b"\xff\xfeid"], pa.binary()), "reference_uri": ["/r"], "driving_uri": ["/d"]})
    config = JobConfig(manifest_uri="unused", output_uri=str(tmp_path), engine=engine_spec("warp"))
    (result,) = plan_rows(table, config).settled
    assert result["status"] == "failed" and "not valid UTF-8" in result["error"] and "\\xff" in result["id"]


@pytest.mark.parametrize("argv, option", [
    (["--size", "100"], "--size"),  # not a multiple of 64
    (["--size", "513"], "--size"),  # odd: no engine can encode it
    (["--window", "31"], "--window"),
    (["--window", "12", "--overlap", "12"], "--overlap"),
])
def test_engine_constraints_stop_the_job_before_any_row_naming_the_option(argv, option):
    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    args = parser.parse_args(["m.parquet", "--output", "out", "--engine", "hellomeme", *argv,
                              *([] if "--size" in argv else ["--size", "128"])])
    config = job_config(args)
    with pytest.raises(EngineOptionError) as raised:
        check_engine(config.engine)  # raises on the options, before the weights are looked at
    assert raised.value.option == option and option in str(raised.value)


@pytest.mark.parametrize("argv, option", [
    (["--max-seconds", "0"], "--max-seconds"),
    (["--max-seconds", "nan"], "--max-seconds"),
    (["--row-time-limit", "-1"], "--row-time-limit"),
    (["--row-time-limit", "inf"], "--row-time-limit"),
    (["--queue-memory", "0"], "--queue-memory"),
    (["--videos-per-batch", "0"], "--videos-per-batch"),
    (["--results-every", "-1"], "--results-every"),
    (["--results-every", "nan"], "--results-every"),
])
def test_job_options_no_row_could_run_with_stop_the_job_naming_the_option(argv, option):
    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    config = job_config(parser.parse_args(["m.parquet", "--output", "out", *argv]))
    with pytest.raises(JobOptionError) as raised:
        check_job_settings(config)
    assert raised.value.option == option and option in str(raised.value)
    check_job_settings(JobConfig(manifest_uri="m.parquet", output_uri="out"))  # the defaults pass


def test_an_option_of_another_engine_is_refused():
    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    args = parser.parse_args(["m.parquet", "--output", "out", "--window", "8"])  # warp has no windows
    with pytest.raises(EngineOptionError, match="--window: applies to the hellomeme engine, not warp"):
        job_config(args)


def _planned(time_limit_s=5.0):
    return planned_row(3, "slow", "/r", "/d", "/o.mp4", RowSettings(), time_limit_s)


def test_a_failing_stage_fails_its_row_with_empty_columns_so_every_row_keeps_one_schema():
    def broken(row):
        raise ValueError("no face")

    result = run_stage("pose", broken, _planned(), {"crop": lambda: np.zeros(0)})
    assert result["status"] == "failed" and "row 3 (slow): pose: ValueError: no face" in result["error"]
    assert result["crop"].shape == (0,)
    assert run_stage("render", lambda row: {"frames": 1}, result, {"frames": lambda: 0})["frames"] == 0


def test_a_failing_batch_is_run_again_row_by_row_so_only_the_bad_row_fails():
    rows = [{**_planned(), "row_index": i, "id": f"r{i}"} for i in range(3)]
    calls = []

    def render(batch):
        calls.append([r["id"] for r in batch])
        if any(r["id"] == "r1" for r in batch):
            raise ValueError("bad LoRA file")
        return [{"rendered": r["id"] * 2} for r in batch]

    out = run_batch_stage("render", render, rows, {"rendered": lambda: ""})
    assert calls == [["r0", "r1", "r2"], ["r0"], ["r1"], ["r2"]]
    assert [r["status"] for r in out] == ["pending", "failed", "pending"]
    assert [r["rendered"] for r in out] == ["r0r0", "", "r2r2"]
    assert "row 1 (r1): render: ValueError: bad LoRA file" in out[1]["error"]


def test_an_output_name_too_long_for_the_file_system_fails_its_row_at_planning(tmp_path):
    (long_name, ok) = _plan(tmp_path, [row("long", output_uri="L" * 252 + ".mp4"),
                                       row("ok", output_uri="x" * 200 + ".mp4")])
    assert long_name["status"] == "failed" and "over the 255 a file name may have" in long_name["error"]
    assert ok["status"] == "pending"


def test_an_output_that_is_the_rows_own_input_fails_and_says_so(tmp_path):
    # --output is the clips' folder and the id is the clip's name: the target is the row's own input.
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4").write_bytes(b"the user's source clip")
    (own,) = _plan(tmp_path, [row("clip", driving_uri=str(out / "clip.mp4"))])
    assert own["status"] == "failed" and "is this row's own driving clip" in own["error"]
    assert "move it away" not in own["error"] and (out / "clip.mp4").read_bytes() == b"the user's source clip"


def test_a_missing_manifest_stops_the_job_before_it_makes_the_output_folder(tmp_path):
    from pipelines.manifest import ManifestError
    from pipelines.plan import plan_job

    config = JobConfig(manifest_uri=str(tmp_path / "nothing.parquet"), output_uri=str(tmp_path / "out"))
    with pytest.raises(ManifestError, match="not found"):
        plan_job(config)
    assert not (tmp_path / "out").exists()


def test_a_manifest_with_no_rows_stops_the_job_and_leaves_the_output_as_it_was(tmp_path, caplog):
    """A nightly job whose upstream query returned nothing exited 0 and replaced last night's report with
    an empty one."""
    from jobs.cli import main as cli_main

    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("last night's report")
    manifest = tmp_path / "empty.parquet"
    manifest_table([row("a")]).slice(0, 0).to_pandas().to_parquet(manifest)
    assert cli_main(["render", str(manifest), "--output", str(out)]) == 1
    assert "has no rows: nothing to render" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    assert (out / "index.html").read_text() == "last night's report"


def test_the_demo_refuses_a_file_as_its_output_folder(tmp_path):
    from jobs.cli import build_parser

    target = tmp_path / "face.jpg"
    target.write_bytes(b"mine")
    args = build_parser().parse_args(["demo", "--output", str(target)])
    assert args.run(args) == 1 and target.read_bytes() == b"mine"


def test_a_windows_style_output_path_fails_its_row_instead_of_naming_a_file_with_backslashes(tmp_path):
    rows = _plan(tmp_path, [row("w", output_uri="C:\\memes\\w.mp4"), row("v", output_uri="sub\\v.mp4"),
                            row("ok", output_uri="sub/ok.mp4")])
    assert [r["status"] for r in rows] == ["failed", "failed", "pending"]
    assert all("looks like a Windows path" in r["error"] for r in rows[:2])


@pytest.mark.parametrize("argv", [
    ["render", "m.parquet", "--output", "out", "--size", "512.0"],  # not an integer
    ["render", "m.parquet", "--output", "out", "--sizee", "512"],  # no such option
    ["render", "m.parquet"],  # --output missing
    ["render", "m.parquet", "--output", "out", "--engine", "foo"],  # no such engine
    ["manifest", "build", "--pairing", "some"],
    ["no-such-command"],
    ["render", "m.parquet", "--output", "out", "--progress-seconds", "-5"],  # was taken as "off"
    ["render", "m.parquet", "--output", "out", "--progress-seconds", "nan"],
])
def test_a_mistyped_command_line_exits_1_not_2_which_means_some_row_failed(argv, capsys):
    from jobs.cli import build_parser

    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["render", "m.parquet", "--output", "o", "--outptu", "x"],
     "hellomeme-batch render: error: unrecognized arguments: --outptu x\n  --outptu is not an option of "
     "hellomeme-batch render: did you mean --output?"),
    (["render", "m.parquet", "--outptu", "x"], "required: --output\n  --outptu is not an option of "
                                               "hellomeme-batch render: did you mean --output?"),
    (["manifest", "build", "--portraits", "p", "--drivers", "d", "-o", "m.parquet", "--paring", "all"],
     "hellomeme-batch manifest build: error: unrecognized arguments: --paring all\n  --paring is not an option "
     "of hellomeme-batch manifest build: did you mean --pairing?"),
])
def test_a_misspelt_flag_is_refused_under_its_commands_usage_with_a_did_you_mean(argv, said, capsys):
    """argparse named an unknown flag under the top command's usage, without the flag it resembles."""
    from jobs.cli import build_parser

    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and said in err
    assert err.startswith(f"usage: {said.split(': error')[0] if ': error' in said else 'hellomeme-batch render'} ")


def test_the_summary_names_at_most_its_cap_of_failed_rows(capsys):
    from jobs.render import SUMMARY_FAILED_ROWS, print_summary
    from pipelines.render_job import JobReport
    from reporting.results import Summary

    failed = [{"id": f"row{i}", "status": "failed", "error": "not found"} for i in range(SUMMARY_FAILED_ROWS + 30)]
    report = JobReport(summary=Summary(ok=1, failed=len(failed), skipped=0, results_uri="out/_results/results.parquet"),
                       results=[{"id": "good", "status": "ok", "error": None}, *failed], seconds=1.0,
                       seconds_to_first_video=None)
    print_summary(report, "out")
    printed = capsys.readouterr().out
    assert f"the first {SUMMARY_FAILED_ROWS} of {len(failed)}" in printed
    assert f"row{SUMMARY_FAILED_ROWS - 1}: not found" in printed and f"row{SUMMARY_FAILED_ROWS}:" not in printed


def test_a_results_table_the_output_refuses_still_gives_the_summary_and_exit_1(tmp_path, capsys, caplog):
    # A disk that fills up mid-job: the table's write failed, the job died with a bare OSError and
    # nothing said which rows had failed.  (Here the table's folder is a file; every row fails at
    # planning, so no Ray is needed.)
    import pyarrow.parquet as pq

    from jobs.cli import main

    manifest = tmp_path / "manifest.parquet"
    pq.write_table(manifest_table([row("a", driving_uri="s3:/bucket/clip.mp4"), row("b", seed=-1)]), manifest)
    out = tmp_path / "out"
    out.mkdir()
    (out / "_results").write_text("not a folder")
    assert main(["render", str(manifest), "--output", str(out), "--metrics-port", "0"]) == 1
    printed = capsys.readouterr().out
    assert "2 rows: 0 ok, 2 failed" in printed and "results: not written" in printed
    assert "a: row 0 (a):" in printed and "b: row 1 (b):" in printed
    assert "the results table could not be written" in caplog.text


@pytest.mark.parametrize("environment, argv, said", [
    ("{bad", [], "$HELLOMEME_STORAGE_OPTIONS is not JSON"),
    ("[1, 2]", [], "$HELLOMEME_STORAGE_OPTIONS must be a JSON object"),
    ("", ["foo"], "takes OPTION=VALUE pairs (such as anon=true), got 'foo' without '='"),
    ("", ["a=1", "a.b=2"], "'a' is already a value"),
])
def test_storage_options_that_cannot_be_used_name_where_they_came_from(monkeypatch, environment, argv, said):
    from jobs.options import STORAGE_OPTIONS_ENV, parse_storage_options

    monkeypatch.setenv(STORAGE_OPTIONS_ENV, environment)
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(said)) as raised:
        parse_storage_options(argv)
    from mediaio.redaction import redact

    assert redact(str(raised.value)) == str(raised.value)  # the log's redaction leaves the message readable
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, '{"anon": true}')
    assert parse_storage_options(["client_kwargs.region_name=eu-west-1"]) == {
        "anon": True, "client_kwargs": {"region_name": "eu-west-1"}}


def test_settings_the_engine_does_not_read_are_named_once_at_planning(tmp_path, caplog):
    """A manifest written for the diffusion engine, previewed with the warp engine: its prompts and LoRAs
    do nothing there, and the job says so instead of rendering them silently without."""
    rows = _plan(tmp_path, [row("a", prompt="smile", lora="styles/x.safetensors"), row("b", prompt="frown"),
                            row("c", steps=30), row("d")])
    assert [r["status"] for r in rows] == ["pending"] * 4  # still rendered: a preview is a fine use
    (warning,) = [r.getMessage() for r in caplog.records if "does not use" in r.getMessage()]
    assert "the warp engine" in warning
    assert "prompt (2 rows)" in warning and "lora (1 row)" in warning and "steps (1 row)" in warning
    assert "seed" not in warning and "guidance" not in warning

    caplog.clear()
    spec = engine_spec("hellomeme", size=128, components_factory="unused")
    _plan(tmp_path, [row("a", prompt="smile", steps=30)], engine=spec)
    assert not [r for r in caplog.records if "does not use" in r.getMessage()]


def test_rows_asking_for_more_than_the_jobs_length_cap_are_named_at_planning(tmp_path, caplog):
    """--max-seconds 2 with a row's max_seconds 3: the row rendered 2 s without a word, while the cap's own
    error message tells users to set max_seconds to render a clip's start."""
    from dataclasses import replace

    from mediaio.media import MediaLimits

    limits = replace(MediaLimits(), max_seconds=2.0)
    rows = _plan(tmp_path, [row("a", max_seconds=3.0), row("b", max_seconds=1.5), row("c", max_seconds=9.0),
                            row("d")], limits=limits)
    assert [r["status"] for r in rows] == ["pending"] * 4
    (warning,) = [r.getMessage() for r in caplog.records if "max_seconds" in r.getMessage()]
    assert warning.startswith("2 rows set max_seconds above this job's cap (--max-seconds 2)")
    caplog.clear()
    _plan(tmp_path, [row("a", max_seconds=1.0)], limits=limits)
    assert not [r for r in caplog.records if "max_seconds" in r.getMessage()]


@pytest.mark.parametrize("argv, verbose", [
    (["-v", "render", "m.parquet", "--output", "out"], True),
    (["render", "-v", "m.parquet", "--output", "out"], True),  # was "unrecognized arguments: -v"
    (["manifest", "build", "--csv", "x.csv", "-o", "m.parquet", "--verbose"], True),
    (["demo", "-v"], True),
    (["render", "m.parquet", "--output", "out"], False),
])
def test_verbose_may_come_before_or_after_the_command(argv, verbose):
    from jobs.cli import build_parser

    assert build_parser().parse_args(argv).verbose is verbose


def test_a_rows_lora_that_is_not_safetensors_fails_at_planning_where_the_engine_loads_it(tmp_path):
    """A pickled LoRA (``.ckpt``, ``.pt``) would run code when loaded: its row fails before any row runs,
    not on the render worker after its clip was decoded and tracked.  The warp engine reads no LoRA."""
    spec = engine_spec("hellomeme", size=128, components_factory="unused")
    ok, pickled = _plan(tmp_path, [row("a", lora="/in/style.safetensors"), row("b", lora="/in/style.ckpt")],
                        engine=spec)
    assert ok["status"] != "failed"
    assert pickled["status"] == "failed" and "must be a .safetensors file" in pickled["error"]
    assert _plan(tmp_path, [row("c", lora="/in/style.ckpt")])[0]["status"] != "failed"


def test_a_windows_path_fails_its_row_at_planning_saying_so(tmp_path):
    """A manifest made on Windows: the row fails before any row runs, not as '/data/C:\\a.jpg not found'
    once it reaches the prepare stage."""
    rows = _plan(tmp_path, [row("w", reference_uri="C:\\faces\\a.jpg"), row("u", driving_uri="\\\\srv\\share\\d.mp4"),
                            row("ok", reference_uri="faces/a.jpg")], manifest_uri=str(tmp_path / "m.parquet"))
    assert [r["status"] for r in rows] == ["failed", "failed", "pending"]
    assert "manifest: C:\\faces\\a.jpg looks like a Windows path" in rows[0]["error"]
    assert "\\\\srv\\share\\d.mp4 looks like a Windows path" in rows[1]["error"]


def test_a_job_error_of_several_lines_is_logged_a_record_per_line(caplog):
    """Missing weights list a line per file: in one record the log's escaping showed a line strewn with '\\n'."""
    from jobs.render import _log_error_lines
    from mediaio.redaction import install_log_safety

    install_log_safety()
    caplog.set_level(logging.ERROR)
    _log_error_lines("job failed: ", "MissingWeightsError: weights not found\nsearched:\n  /w/unet")
    assert [record.getMessage() for record in caplog.records] == [
        "job failed: MissingWeightsError: weights not found", "  searched:", "    /w/unet"]


def test_render_help_states_each_default_once_and_what_a_manifest_may_be():
    """`--weights` and `--weights-cache` read "(default: the hub ...) (default: none)": two defaults, one wrong."""
    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    helps = {flag: action.help for action in parser._actions for flag in action.option_strings}
    assert helps["--weights"].count("(default:") == 1 and "(default: none)" not in helps["--weights"]
    assert helps["--weights-cache"].count("(default:") == 1
    assert helps["--release"].endswith("(default: v5)")
    shown = " ".join(parser.format_help().split())
    assert "(GPU engines; default: 1)" in shown and "Parquet manifest, a file or a folder of them" in shown


@pytest.mark.parametrize("flag", [["--size", "0"], ["--max-seconds", "0.05"], ["--engine", "hellomeme", "--window", "40"]])
def test_a_bad_option_stops_the_job_before_its_metrics_endpoint_is_announced(tmp_path, caplog, flag):
    """The log read "serving the job's metrics at http://127.0.0.1:9471/metrics", then "job not started"."""
    import socket

    from jobs.cli import build_parser

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = build_parser().parse_args(["render", str(tmp_path / "m.parquet"), "--output", str(tmp_path / "out"),
                                      "--metrics-port", str(port), *flag])
    with caplog.at_level(logging.INFO):
        assert args.run(args) == 1
    assert "job not started: " + flag[-2] in caplog.text and "serving the job's metrics" not in caplog.text
    assert not (tmp_path / "out").exists()
