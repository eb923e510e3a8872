"""The HTML report and its previews: safe against hostile rows, readable offline.  (In a real browser, on
the bad-input corpus's report: tests/test_bad_inputs.py.)"""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from mediaio import storage
from reporting import previews
from reporting.report import JobFacts, render_report, write_report
from tests.report_page import assert_no_injected_markup, parse, webp_frames

HOSTILE_ID = '<img src=x onerror="alert(1)">'
SECRET = "SECRET123"


def rng_frames(count: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def row(index, meme_id, status, **extra):
    return {"row_index": index, "id": meme_id, "status": status, "output_uri": None, "error": None, "frames": 0,
            "engine": "warp", **extra}


def test_hostile_ids_errors_and_uris_stay_text():
    rows = [
        row(0, HOSTILE_ID, "failed", error=f"row 0 ({HOSTILE_ID}): manifest: id is invalid"),
        row(1, "a", "failed", error='decode: </p><script>alert(1)</script> "quoted"',
            output_uri='/out/"><script>alert(2)</script>.mp4'),
    ]
    facts = JobFacts(output_uri="/out", manifest_uri=f"s3://bucket/m.parquet?X-Amz-Signature={SECRET}",
                     inputs={1: (f"s3://bucket/r.jpg?token={SECRET}", "/in/<b>drive</b>.mp4")})
    text = render_report(rows, facts)
    page = parse(text)
    assert_no_injected_markup(page)
    assert HOSTILE_ID in page.cards["row-0"]["text"]
    assert "<script>alert(1)</script>" in page.cards["row-1"]["text"]
    assert "/in/<b>drive</b>.mp4" in page.cards["row-1"]["text"]
    assert SECRET not in text


def test_outputs_under_the_output_prefix_are_relative_links(tmp_path):
    out = tmp_path / "out"
    rows = [row(0, "a", "ok", output_uri=str(out / "a.mp4"), frames=12, seconds_decode=0.5, seconds_render=2.0),
            row(1, "b", "ok", output_uri=str(tmp_path / "elsewhere" / "b.mp4"))]
    page = parse(render_report(rows, JobFacts(output_uri=str(out))))
    links = [attributes["href"] for tag, attributes in page.elements if tag == "a" and "href" in attributes]
    assert "a.mp4" in links
    assert not [link for link in links if "elsewhere" in link]
    assert str(tmp_path / "elsewhere" / "b.mp4") in page.cards["row-1"]["text"]
    assert "render 2.0 s" in page.cards["row-0"]["text"]


def test_only_rows_whose_video_exists_link_to_it(tmp_path):
    """A stopped job's not_run cards linked to videos that were never made (as failed cards did not)."""
    out = tmp_path / "out"
    rows = [row(index, meme_id, status, output_uri=str(out / f"{meme_id}.mp4"))
            for index, (meme_id, status) in enumerate([("a", "ok"), ("b", "skipped"), ("c", "failed"), ("d", "not_run")])]
    page = parse(render_report(rows, JobFacts(output_uri=str(out))))
    links = [attributes["href"] for tag, attributes in page.elements if tag == "a" and "href" in attributes]
    assert [link for link in links if link.endswith(".mp4")] == ["a.mp4", "b.mp4"]
    assert "planned output" in page.cards["row-2"]["text"] and "planned output" in page.cards["row-3"]["text"]


def test_report_written_through_fsspec_shows_previews_an_earlier_run_left():
    output = "memory://report-test/out"
    storage.write_replace(f"{output}/_report/done.meme.webp", b"RIFF")
    storage.write_replace(f"{output}/_report/broken.meme.webp", b"RIFF")  # stale: broken fails in this run
    rows = [row(0, "done", "skipped", output_uri=f"{output}/done.mp4"), row(1, "broken", "failed", error="x")]
    uri = write_report(rows, output, JobFacts(output_uri=output))
    page = parse(storage.read_bytes(uri).decode("utf-8"))
    assert [image["src"] for image in page.cards["row-0"]["images"]] == ["_report/done.meme.webp"]
    assert page.cards["row-1"]["images"] == []
    assert "skipped" in page.cards["row-0"]["class"] and "failed" in page.cards["row-1"]["class"]


def test_animated_preview_is_small_and_plays_in_real_time():
    frames, total_ms, size = webp_frames(previews.animated_webp(rng_frames(30, 256, 512), fps=15))
    assert 2 <= frames <= 15 and max(size) == previews.SIDE and size[0] == 2 * size[1]
    assert abs(total_ms - 2000) <= 1000 / 15 * 3  # 30 frames at 15 fps last 2 s

    long_frames, long_ms, _ = webp_frames(previews.animated_webp(rng_frames(900, 32, 32), fps=30))
    assert long_frames <= previews.MAX_FRAMES and abs(long_ms - 30_000) <= 1000


def test_previews_are_published_and_a_failing_one_leaves_the_row_alone():
    output = "memory://preview-test/out"
    image = rng_frames(1, 300, 200)[0]
    path = previews.try_publish("a", "reference", lambda: previews.still_webp(image), output)
    assert path == "_report/a.reference.webp"
    assert Image.open(io.BytesIO(storage.read_bytes(f"{output}/_report/a.reference.webp"))).size == (107, 160)

    broken = previews.try_publish("a", "meme", lambda: previews.animated_webp(np.zeros((3, 8), np.uint8), 15.0),
                                  output)
    assert broken is None


def test_a_front_page_the_tool_did_not_write_is_never_replaced(tmp_path):
    out = tmp_path / "web"
    out.mkdir()
    (out / "index.html").write_text("<h1>my own site</h1>")
    rows = [row(0, "a", "ok", output_uri=str(out / "a.mp4"), frames=12)]
    uri = write_report(rows, str(out), JobFacts(output_uri=str(out)))
    assert uri == str(out / "hellomeme-report.html") and "HelloMeme Batch report" in (out / uri).read_text()
    assert (out / "index.html").read_text() == "<h1>my own site</h1>"
    # The tool's own earlier report is replaced as before.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert write_report(rows, str(fresh)) == write_report(rows, str(fresh)) == str(fresh / "index.html")


def test_a_reruns_skipped_rows_keep_the_record_of_the_run_that_made_their_videos(tmp_path):
    from reporting.results import with_earlier_records, write_results

    out = str(tmp_path / "out")
    first = [row(0, "a", "ok", output_uri=f"{out}/a.mp4", frames=30, seconds_render=2.5),
             row(1, "b", "failed", error="no face")]
    write_results(first, out)
    rerun = [row(0, "a", "skipped", output_uri=f"{out}/a.mp4"), row(1, "b", "failed", error="no face"),
             row(2, "c", "skipped", output_uri=f"{out}/c.mp4")]
    carried = with_earlier_records(rerun, out)
    assert carried[0]["status"] == "skipped" and carried[0]["frames"] == 30 and carried[0]["seconds_render"] == 2.5
    assert carried[1]["frames"] == 0 and carried[2]["frames"] == 0  # c.mp4 is not there to read
    assert with_earlier_records(rerun, str(tmp_path / "nothing-there"))[0]["frames"] == 0
    # The output folder moved (or reached another way): the table still knows its videos by their path in it.
    (tmp_path / "out").rename(tmp_path / "moved")
    moved = str(tmp_path / "moved")
    carried = with_earlier_records([row(0, "a", "skipped", output_uri=f"{moved}/a.mp4")], moved)
    assert carried[0]["frames"] == 30 and carried[0]["seconds_render"] == 2.5


def test_a_skipped_video_no_table_records_says_its_frames_from_its_container(tmp_path, synthetic_media):
    # Written by a driver killed before the row's result was recorded: the rerun skips it, and its
    # record read 0 frames for good.
    import shutil

    from mediaio import clips
    from reporting.results import with_earlier_records

    out = tmp_path / "out"
    out.mkdir()
    video = next((synthetic_media / "drive_videos").glob("*.mp4"))
    shutil.copy(video, out / "orphan.mp4")
    (carried,) = with_earlier_records([row(0, "orphan", "skipped", output_uri=str(out / "orphan.mp4"))], str(out))
    assert carried["frames"] == clips.count_frames(str(video)) > 0


def test_another_manifests_job_into_the_same_folder_keeps_the_earlier_table(tmp_path, caplog):
    """A nightly batch into one folder: the earlier batch's table is kept, and its rerun still finds its records."""
    import logging

    from reporting.results import read_results, with_earlier_records, write_results

    out = str(tmp_path / "out")
    batch_a = [row(0, "cat", "ok", output_uri=f"{out}/cat.mp4", frames=30, seconds_render=2.5),
               row(1, "dog", "failed", error="no face")]
    write_results(batch_a, out)
    write_results(batch_a, out)  # a rerun of the same manifest: nothing to keep
    assert not (tmp_path / "out" / "_results" / "earlier").exists()
    caplog.set_level(logging.WARNING, logger="reporting.results")
    write_results([row(0, "bird", "ok", output_uri=f"{out}/bird.mp4", frames=12)], out)
    (kept,) = (tmp_path / "out" / "_results" / "earlier").iterdir()
    assert kept.name.startswith("results-") and kept.suffix == ".parquet"
    assert [r["id"] for r in pq.read_table(kept).to_pylist()] == ["cat", "dog"]
    assert [r["id"] for r in read_results(out).to_pylist()] == ["bird"]
    assert any("records 1 videos" in record.getMessage() and str(kept) in record.getMessage()
               for record in caplog.records)
    rerun_a = with_earlier_records([row(0, "cat", "skipped", output_uri=f"{out}/cat.mp4")], out)
    assert rerun_a[0]["frames"] == 30 and rerun_a[0]["seconds_render"] == 2.5
    write_results(rerun_a, out)  # batch A again: bird's table is kept in turn, beside A's
    assert len(list((tmp_path / "out" / "_results" / "earlier").iterdir())) == 2

    # The page shows this job's rows and links the tables of the folder's other jobs.
    from reporting.results import kept_tables

    tables = kept_tables(out)
    assert len(tables) == 2 and all(path.startswith("_results/earlier/results-") for path in tables)
    page = render_report(rerun_a, JobFacts(output_uri=out, kept_tables=tuple(tables)))
    links = [attributes["href"] for tag, attributes in parse(page).elements
             if tag == "a" and "_results/earlier/" in attributes.get("href", "")]
    assert links == tables and all((tmp_path / "out" / link).is_file() for link in links)


def test_no_report_says_an_earlier_report_is_not_this_jobs(tmp_path, caplog):
    """--no-report writes no report; one an earlier job left in the folder is named as not this job's, so its
    figures are not taken for the new job's.  (Every row fails at planning: no Ray needed.)"""
    import logging

    from jobs.cli import main
    from jobs.manifest_builder import manifest_table

    manifest = tmp_path / "manifest.parquet"
    pq.write_table(manifest_table([{"id": "a", "reference_uri": "/in/r.jpg", "driving_uri": "s3:/b/c.mp4"}]),
                   manifest)
    out = tmp_path / "out"
    args = ["render", str(manifest), "--output", str(out), "--metrics-port", "0"]
    caplog.set_level(logging.WARNING)
    assert main(args + ["--no-report"]) == 2  # every row failed
    assert not (out / "index.html").exists() and "earlier job's report" not in caplog.text
    assert main(args) == 2
    earlier = (out / "index.html").read_text()
    caplog.clear()
    assert main(args + ["--no-report"]) == 2  # every row failed
    assert (out / "index.html").read_text() == earlier
    assert f"{out / 'index.html'} is an earlier job's report, left as it was (--no-report)" in caplog.text


def test_a_skipped_rows_card_shows_its_own_videos_previews_not_another_jobs_with_the_same_id(tmp_path):
    """Previews were named by id alone: a later job whose row had the same id (its own output_uri, or the
    loser of a race for one output) replaced them, and the rerun's report paired each video with another
    person's face.  They are named by the video's fingerprint too, and a rerun's skipped row finds its own."""
    from engines.registry import engine_spec
    from jobs.manifest_builder import manifest_table
    from mediaio import media
    from pipelines.outputs import FINGERPRINT_TAG
    from pipelines.plan import JobConfig, plan_rows
    from reporting.previews import preview_path

    assert preview_path("g0", "meme", "a" * 32) != preview_path("g0", "meme", "b" * 32) != preview_path("g0", "meme")
    out = tmp_path / "out"
    config = JobConfig(manifest_uri="unused", output_uri=str(out), engine=engine_spec("warp"))
    rows = [{"id": "g0", "reference_uri": "/in/majicmix1.jpg", "driving_uri": "/in/d.mp4"}]
    (planned,) = plan_rows(manifest_table(rows), config).pending
    out.mkdir()
    (out / "g0.mp4").write_bytes(media.encode_mp4(np.zeros((4, 64, 64, 3), np.uint8), 4.0, 4.0, 1.0, None,
                                                  media.MediaLimits(),
                                                  metadata={"comment": FINGERPRINT_TAG + planned["fingerprint"]}))
    own = preview_path("g0", "meme", planned["fingerprint"])
    storage.write_replace(str(out / own), b"RIFF")
    storage.write_replace(str(out / preview_path("g0", "meme", "f" * 32)), b"RIFF")  # another job's g0
    storage.write_replace(str(out / preview_path("g0", "meme")), b"RIFF")  # under the id alone, as before
    (skipped,) = plan_rows(manifest_table(rows), config).settled
    assert skipped["status"] == "skipped" and skipped["preview_meme"] == own
    page = parse(storage.read_bytes(write_report([skipped], str(out))).decode("utf-8"))
    assert [image["src"] for image in page.cards["row-0"]["images"]] == [own]


def test_a_results_file_the_tool_did_not_write_is_kept_not_replaced(tmp_path, caplog):
    import logging

    import pyarrow as pa

    from reporting.results import kept_tables, write_results

    out = tmp_path / "out"
    (out / "_results").mkdir(parents=True)
    pq.write_table(pa.table({"experiment": ["a"], "score": [0.9]}), out / "_results" / "results.parquet")
    caplog.set_level(logging.WARNING, logger="reporting.results")
    write_results([row(0, "cat", "ok", output_uri=str(out / "cat.mp4"), frames=3)], str(out))
    (kept,) = (out / "_results" / "earlier").iterdir()
    assert kept.name.startswith("foreign-") and pq.read_table(kept).column("experiment").to_pylist() == ["a"]
    assert "was not a results table of this tool's" in caplog.text
    assert kept_tables(str(out)) == []  # not linked from the report as another job's table
    (out / "_results" / "results.parquet").unlink()
    (out / "_results" / "results.parquet").write_text("my notes")  # not even Parquet
    write_results([row(0, "cat", "ok", output_uri=str(out / "cat.mp4"), frames=3)], str(out))
    assert sorted(p.read_bytes()[:8] for p in (out / "_results" / "earlier").iterdir())[-1] == b"my notes"


def test_a_jobs_own_table_is_not_kept_as_another_jobs_once_its_folder_moved_and_a_table_is_kept_once(tmp_path):
    """The folder moved, or reached through a symlink or with a trailing slash: the job's own table was kept
    as 'another job's' with every run.  And two manifests alternating into one folder kept an identical
    copy of each table on every run (the report's header linked them all)."""
    import shutil

    from reporting.results import write_results

    first = tmp_path / "first"
    write_results([row(0, "cat", "ok", output_uri=f"{first}/cat.mp4", frames=30),
                   row(1, "dog", "ok", output_uri=f"{first}/night2/dog.mp4", frames=30)], str(first))
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    for spelling in (str(moved), str(moved) + "/"):
        write_results([row(0, "cat", "skipped", output_uri=f"{moved}/cat.mp4"),
                       row(1, "dog", "skipped", output_uri=f"{moved}/night2/dog.mp4")], spelling)
    assert not (moved / "_results" / "earlier").exists()

    out = str(tmp_path / "out")
    batch_a = [row(0, "cat", "ok", output_uri=f"{out}/cat.mp4", frames=30)]
    batch_b = [row(0, "bird", "ok", output_uri=f"{out}/bird.mp4", frames=12)]
    for batch in (batch_a, batch_b, batch_a, batch_b, batch_a):
        write_results(batch, out)
    assert len(list((tmp_path / "out" / "_results" / "earlier").iterdir())) == 2  # one of each, not four


def test_the_totals_count_this_jobs_frames_not_the_skipped_rows_earlier_ones():
    """A rerun that rendered nothing said '2086 frames rendered': the skipped rows' frames, carried over
    from the run that made their videos, and their stage seconds in the mean per row."""
    rows = [row(0, "done", "skipped", frames=2000, seconds_render=9.0), row(1, "new", "ok", frames=86,
                                                                          seconds_render=1.0)]
    page = render_report(rows, JobFacts())
    assert "<dt>frames rendered</dt><dd>86</dd>" in page
    assert "render 1.0 s" in page.split('class="stages"')[1].split("</p>")[0]
