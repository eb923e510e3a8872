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
