"""The terminal's progress line: rates and the estimate of time left run from the first row out of the pipeline."""

from __future__ import annotations

from jobs import progress
from jobs.progress import Progress


def _row(meme_id, status, seconds=0.0, frames=0):
    return {"id": meme_id, "status": status, "error": "x" if status == "failed" else None, "output_uri": None,
            "frames": frames, "seconds_render": seconds}


def test_rows_settled_at_planning_and_the_start_up_do_not_skew_the_estimate(monkeypatch):
    # A row failed at planning, then Ray's start-up: the estimate read 2h31m, then 7h31m, for a 6.5 min job.
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    line = Progress(period_s=0)
    line.on_planned(11)
    line.on_result(_row("bad", "failed"), 1, 11)  # at planning: no stage time
    line.on_result(_row("old", "skipped", frames=500), 2, 11)  # an earlier run's video
    now[0] += 60.0  # Ray starts
    assert "ETA -" in line.line() and "rates after the first rows" in line.line()
    line.on_result(_row("r1", "ok", 1.0, frames=30), 3, 11)
    for index in range(2, 5):
        now[0] += 2.0
        line.on_result(_row(f"r{index}", "ok", 1.0, frames=30), index + 2, 11)
    said = line.line()
    assert "30.0 rows/min" in said and "15.0 frames/s" in said  # 3 rows and 90 frames in 6 s since the first
    assert "ETA 0m10s" in said  # 5 rows left at a row every 2 s


def test_a_reruns_skipped_rows_and_a_stopped_jobs_not_run_rows_are_listed_up_to_a_few(caplog):
    """A 2000-row job stopped early printed 1991 not_run lines, and a rerun a line per skipped row: the
    summary scrolled away.  Failed and ok rows are all listed; -v (debug) lists the rest too."""
    import logging

    from jobs.progress import QUIET_LISTED, Progress

    caplog.set_level(logging.DEBUG, logger="hellomeme_batch.progress")
    progress = Progress(period_s=0)
    rows = ([{"id": f"s{i}", "status": "skipped", "output_uri": f"/o/s{i}.mp4"} for i in range(30)]
            + [{"id": f"k{i}", "status": "ok", "output_uri": f"/o/k{i}.mp4", "frames": 3} for i in range(15)]
            + [{"id": f"f{i}", "status": "failed", "output_uri": None, "error": "boom"} for i in range(12)]
            + [{"id": f"n{i}", "status": "not_run", "output_uri": f"/o/n{i}.mp4"} for i in range(40)])
    for done, row in enumerate(rows, 1):
        progress.on_result(row, done, len(rows))
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("] skipped " in line for line in shown) == QUIET_LISTED
    assert sum("] not_run " in line for line in shown) == QUIET_LISTED
    assert sum("] ok " in line for line in shown) == 15 and sum("failed  f" in line for line in shown) == 12
    assert sum("further skipped rows are not listed" in line for line in shown) == 1
    assert sum("further not_run rows are not listed" in line for line in shown) == 1
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 30 + 40 - 2 * QUIET_LISTED
    assert "30 skipped" in progress.line() and "40 not_run" in progress.line()


def test_rows_failed_at_planning_are_listed_up_to_the_summarys_count_and_pipeline_failures_all(caplog):
    """A manifest of 100,000 rows naming an unknown engine printed 100,000 warning lines before its summary."""
    import logging

    from jobs.progress import PLANNING_FAILURES_LISTED, Progress

    caplog.set_level(logging.DEBUG, logger="hellomeme_batch.progress")
    progress = Progress(period_s=0)
    planning = [{"id": f"p{i}", "status": "failed", "output_uri": None, "error": "unknown engine"} for i in range(300)]
    stages = [{"id": f"r{i}", "status": "failed", "output_uri": None, "error": "no face", "seconds_pose": 0.4}
              for i in range(80)]
    rows = planning + stages
    for done, row in enumerate(rows, 1):
        progress.on_result(row, done, len(rows))
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("failed  p" in line for line in shown) == PLANNING_FAILURES_LISTED
    assert sum("failed  r" in line for line in shown) == 80
    assert sum("further rows failed at planning are not listed" in line for line in shown) == 1
    assert "380 failed" in progress.line()
