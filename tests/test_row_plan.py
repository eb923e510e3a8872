"""Driver-side row planning: duplicates, allow-list, unknown engines, skipping finished rows."""

import pyarrow as pa

from jobs.manifest_builder import manifest_table
from mediaio.storage import StoragePolicy
from pipelines.config import RenderJobConfig
from pipelines.row_plan import plan_rows


def _plan(tmp_path, rows, **config):
    config = RenderJobConfig(manifest_uri="unused", output_uri=str(tmp_path / "out"), **config)
    return plan_rows(manifest_table(rows), config, ("warp", "hellomeme"))


def row(meme_id, **extra):
    return {"id": meme_id, "reference_uri": "/in/r.jpg", "driving_uri": "/in/d.mp4", **extra}


def test_statuses(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "done.mp4").write_bytes(b"x")
    works = _plan(tmp_path, [
        row("a"), row("a"), row("done"), row("bad/id"), row("e", engine="nope"),
        row("h", reference_uri="http://127.0.0.1/x.jpg"), row("o", output_uri=str(tmp_path / "else" / "o.mp4")),
    ])
    assert [w.status for w in works] == ["pending", "failed", "skipped", "failed", "failed", "failed", "pending"]
    assert "duplicate id 'a'" in works[1].error and "row 1" in works[1].error
    assert "unknown engine 'nope'" in works[4].error
    assert "scheme 'http'" in works[5].error
    assert works[0].output_uri == str(tmp_path / "out" / "a.mp4")
    assert works[6].output_uri == str(tmp_path / "else" / "o.mp4")


def test_output_must_stay_inside_allowed_roots(tmp_path):
    policy = StoragePolicy(allowed_roots=("/in", str(tmp_path / "out")))
    works = _plan(tmp_path, [row("a"), row("b", output_uri="/etc/cron.d/x.mp4")], policy=policy)
    assert works[0].status == "pending"
    assert works[1].status == "failed" and "outside the allowed roots" in works[1].error


def test_non_utf8_id_is_reported_readably(tmp_path):
    table = pa.table({"id": pa.array([b"\xff\xfeid"], pa.binary()), "reference_uri": ["/r"], "driving_uri": ["/d"]})
    config = RenderJobConfig(manifest_uri="unused", output_uri=str(tmp_path))
    (work,) = plan_rows(table, config, ("warp",))
    assert work.status == "failed" and "not valid UTF-8" in work.error and "\\xff" in work.id


def test_a_row_past_its_time_limit_fails_at_the_next_stage():
    import time

    from pipelines.rows import MemeWork, run_stage

    work = MemeWork(row_index=3, id="slow", spec=None, output_uri=None, engine="warp", time_limit_s=5.0)
    work = run_stage("decode", lambda w: w, work)
    assert work.status == "pending"
    from dataclasses import replace

    late = replace(work, started_at=time.time() - 10)
    result = run_stage("pose", lambda w: w, late)
    assert result.status == "failed" and "row 3 (slow): pose: the row exceeded its time limit of 5 s" in result.error
