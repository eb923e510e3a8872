"""Faults mid-job: a render actor killed, a worker node removed, the pipeline stopped by an error Ray
cannot retry, the driver killed and rerun.

Each fault's job runs against a Ray instance of this file's own (the killed render actor and the
removed node share one two-node cluster, one job after the other), and a fault is aimed only at that
job: actors are found through Ray's state API by the job's id, never by process name (other jobs on
the machine have render actors too).  The media are synthesised by the tests, so these run in a fresh clone.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from mediaio import clips
from jobs.manifest_builder import pair_folders, write_manifest
from engines.registry import engine_spec
from pipelines.plan import JobConfig
from pipelines.render_job import run_render_job
from tests.conftest import REPO
from tests.isolated_ray import end_processes_under, free_port, isolated_environment, private_temp_dir, run_child_job

pytestmark = pytest.mark.ray
SMALL = engine_spec("warp", size=256)  # the faults are the point, not the pixels: small renders, a faster suite


def _manifest(media_dir: Path, folder: Path, count: int) -> Path:
    pairs = pair_folders(str(media_dir / "reference_images"), str(media_dir / "drive_videos"), "all")
    rows = [{**pair, "id": f"{pair['id']}-{i}"} for i, pair in zip(range(count), itertools.cycle(pairs))]
    path = folder / "manifest.parquet"
    write_manifest(rows, str(path))
    return path


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _outputs(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.mp4")} if folder.exists() else set()


def _assert_exactly_once(report, out: Path, count: int) -> None:
    ids = [r["id"] for r in report.results]
    assert len(ids) == len(set(ids)) == count
    assert report.summary.ok == count, [r["error"] for r in report.results if r["error"]]
    assert len(_outputs(out)) == count
    for path in out.glob("*.mp4"):
        assert clips.count_frames(str(path)) > 0


def _run_in_thread(config: JobConfig):
    box: dict = {}

    def target():
        try:
            box["report"] = run_render_job(config)
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _running_render_pids(dashboard: str, job_id: str) -> list[int]:
    """Pids of the workers running one of this job's render tasks right now (Ray's state API).

    A running render task, not a live render actor, marks the moment: Ray Data ends the actor pool
    once its rows are through, which on a busy machine can be before the first video is written.
    """
    from ray.util.state import list_tasks

    try:
        tasks = list_tasks(address=dashboard, filters=[("job_id", "=", job_id), ("state", "=", "RUNNING")],
                           detail=True, limit=1000, raise_on_missing_output=False, timeout=10)
    except Exception:  # the dashboard is slow to answer on a busy machine: ask again
        return []
    return sorted({task.worker_pid for task in tasks if "RenderStage" in (task.name or "") and task.worker_pid})


def _kill_a_running_render_task(manifest: Path, out: Path, dashboard: str) -> dict:
    """One job whose running render tasks' workers are SIGKILLed mid-row; its outcome."""
    job_id = ray.get_runtime_context().get_job_id()
    thread, box = _run_in_thread(JobConfig(manifest_uri=str(manifest), output_uri=str(out), engine=SMALL))
    renderers = _wait_for(lambda: _running_render_pids(dashboard, job_id), 300, "a render task of this job")
    for pid in renderers:
        os.kill(pid, signal.SIGKILL)
    thread.join(600)
    if "error" in box:
        raise box["error"]
    return {"killed": len(renderers), "results": box["report"].results}


def _lose_a_node_mid_job(cluster, worker, manifest: Path, out: Path) -> dict:
    """One job during which the worker node is removed, once the first video exists; its outcome."""
    thread, box = _run_in_thread(JobConfig(manifest_uri=str(manifest), output_uri=str(out), engine=SMALL))
    _wait_for(lambda: _outputs(out), 300, "the first output")
    outputs_before = len(_outputs(out))
    cluster.remove_node(worker)
    thread.join(600)
    if "error" in box:
        raise box["error"]
    return {"outputs_before_removal": outputs_before, "results": box["report"].results}


def run_faults_on_two_nodes(kill_manifest: Path, kill_out: Path, node_manifest: Path, node_out: Path) -> dict:
    """In a child process: a head (with its dashboard, for the state API) and a worker node, two jobs
    one after the other: the first has its render actors killed mid-row, the second loses the worker
    node mid-job.  One cluster for both: a Ray start and Ray Data's first run cost more than either fault.
    """
    from ray.cluster_utils import Cluster

    # Room for the pools and the tasks on the head alone once the worker is gone; object stores of a
    # realistic size (Cluster's 150 MiB default backpressures a pipeline of 24 MiB rows to a halt).
    store = 1024**3
    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": store, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard_port})
    worker = cluster.add_node(num_cpus=2, object_store_memory=store)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        killed = _kill_a_running_render_task(kill_manifest, kill_out, f"http://127.0.0.1:{dashboard_port}")
        lost = _lose_a_node_mid_job(cluster, worker, node_manifest, node_out)
        return {"kill-actor": killed, "lose-node": lost}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def two_node_faults(synthetic_media, tmp_path_factory) -> dict:
    """Both faults' jobs, run once in a child process against their own two-node cluster."""
    folder = tmp_path_factory.mktemp("two-node-faults")
    (folder / "kill").mkdir()
    (folder / "node").mkdir()
    kill_manifest, node_manifest = _manifest(synthetic_media, folder / "kill", 4), _manifest(synthetic_media,
                                                                                           folder / "node", 5)
    outs = {"kill-actor": folder / "kill" / "out", "lose-node": folder / "node" / "out"}
    outcome = run_child_job(__file__, [str(kill_manifest), str(outs["kill-actor"]), str(node_manifest),
                                       str(outs["lose-node"])], folder / "r.json", "hm-faults-")
    return {name: {**outcome[name], "out": outs[name]} for name in outs}


def test_killed_render_actor_is_replaced_and_every_row_ok_once(two_node_faults):
    outcome = two_node_faults["kill-actor"]
    assert outcome["killed"] >= 1
    ids = [r["id"] for r in outcome["results"]]
    assert len(ids) == len(set(ids)) == 4
    assert all(r["status"] == "ok" for r in outcome["results"]), [r["error"] for r in outcome["results"]]
    assert len(_outputs(outcome["out"])) == 4


def test_removed_worker_node_mid_job(two_node_faults):
    outcome = two_node_faults["lose-node"]
    assert outcome["outputs_before_removal"] < 5, "the node was meant to go mid-job"
    ids = [r["id"] for r in outcome["results"]]
    assert len(ids) == len(set(ids)) == 5
    assert all(r["status"] == "ok" for r in outcome["results"]), [r["error"] for r in outcome["results"]]
    assert len(_outputs(outcome["out"])) == 5


def _stopping_the_pipeline(monkeypatch, victim: str, stops: int, marks: Path, lose_its_video: bool,
                           wait_for_another_video: bool = False) -> list[int]:
    """Make the pipeline stop, ``stops`` times, when the ``victim`` row comes out of it.

    The stop is an exception after the finish stage, where no stage's guard catches it: Ray Data
    stops the whole dataset, as it does on its own errors (a node lost mid-row).  With
    ``lose_its_video`` the victim's video is removed first, as if the node took its write with it.
    With ``wait_for_another_video`` the stop waits until another row's video is written.
    Returns the number of rows each run of the pipeline was given.
    """
    from pipelines import render_job

    real_build = render_job.build_dataset
    runs: list[int] = []

    def stop_on_victim(batch):
        if victim in batch["id"].to_pylist():
            done = len(list(marks.glob("stop-*")))
            if done < stops:
                if wait_for_another_video:  # so some row is settled before the stop, whatever Ray's row order
                    victim_video = Path(batch["output_uri"][0].as_py())
                    _wait_for(lambda: any(p != victim_video for p in victim_video.parent.glob("*.mp4")), 120,
                              "another row's video before the stop")
                (marks / f"stop-{done}").touch()
                if lose_its_video:
                    Path(batch["output_uri"][0].as_py()).unlink()
                raise RuntimeError("the pipeline stopped on purpose")
        return batch

    def build(rows, config, pools, ledger=None):
        runs.append(len(rows))
        return real_build(rows, config, pools, ledger).map_batches(stop_on_victim, batch_format="pyarrow",
                                                                    batch_size=None, num_cpus=0)

    monkeypatch.setattr(render_job, "build_dataset", build)
    return runs


def test_a_stopped_pipeline_runs_again_for_the_rows_without_a_result(ray_local, synthetic_media, tmp_path,
                                                                     monkeypatch):
    manifest = _manifest(synthetic_media, tmp_path, 4)
    out = tmp_path / "out"
    victim = pq.read_table(manifest).column("id").to_pylist()[1]
    runs = _stopping_the_pipeline(monkeypatch, victim, 1, tmp_path, lose_its_video=True, wait_for_another_video=True)
    report = run_render_job(JobConfig(manifest_uri=str(manifest), output_uri=str(out), engine=SMALL))
    _assert_exactly_once(report, out, 4)
    assert len(runs) == 2 and runs[0] == 4
    assert 1 <= runs[1] < 4  # only the rows still out there when it stopped ran again


def test_a_pipeline_that_keeps_stopping_fails_only_its_rows_and_the_job_finishes(ray_local, synthetic_media,
                                                                              tmp_path, monkeypatch):
    from pipelines import render_job

    monkeypatch.setattr(render_job, "PIPELINE_ATTEMPTS", 2)  # the last run is the point: two cost less than three
    manifest = _manifest(synthetic_media, tmp_path, 2)
    out = tmp_path / "out"
    victim = pq.read_table(manifest).column("id").to_pylist()[0]
    runs = _stopping_the_pipeline(monkeypatch, victim, 99, tmp_path, lose_its_video=True)
    report = run_render_job(JobConfig(manifest_uri=str(manifest), output_uri=str(out), engine=SMALL))
    assert len(runs) == 2
    by_id = {r["id"]: r for r in report.results}
    assert len(by_id) == 2
    assert by_id[victim]["status"] == "failed"
    assert "the pipeline stopped before this row finished" in by_id[victim]["error"]
    assert "stopped on purpose" in by_id[victim]["error"]
    assert victim not in _outputs(out)
    for row in report.results:  # the other row: rendered in some run, or lost with the same cause
        assert row["status"] == "ok" or "pipeline stopped" in row["error"]
        assert (row["status"] == "ok") == (row["id"] in _outputs(out))


def test_killed_driver_then_rerun_renders_only_unfinished_rows(ray_local, synthetic_media, tmp_path):
    manifest = _manifest(synthetic_media, tmp_path, 6)
    out = tmp_path / "out"
    ray_tmp = private_temp_dir("hm-drv-")
    env = isolated_environment(ray_tmp)
    log = tmp_path / "driver.log"  # what the driver said, shown if it ended before it was killed
    with open(log, "wb") as log_file:
        driver = subprocess.Popen(
            [sys.executable, "-m", "jobs.render", str(manifest), "--output", str(out), "--address", "local",
             "--size", str(SMALL.size), "--results-every", "0"],
            cwd=REPO, env=env, start_new_session=True, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        table = out / "_results" / "results.parquet"
        _wait_for(lambda: (len(_outputs(out)) >= 2 and table.exists()) or driver.poll() is not None, 300,
                  "two outputs and the results table so far")
        ended_by_itself = driver.poll()
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        end_processes_under(ray_tmp)  # the killed driver's local Ray instance
    finished = _outputs(out)
    assert ended_by_itself is None, f"the driver ended (exit {ended_by_itself}) before it was killed:\n" + \
        log.read_text(errors="replace")[-6000:]
    assert 0 < len(finished) < 6, "the driver was meant to die mid-job"
    for path in out.glob("*.mp4"):  # nothing half-written under a final name
        assert clips.count_frames(str(path)) > 0
    # The killed driver's record: every row, the finished ones as they ended, the rest not run yet.
    record = pq.read_table(table).to_pylist()
    assert sorted(r["id"] for r in record) == sorted(pq.read_table(manifest).column("id").to_pylist())
    ended = {r["id"] for r in record if r["status"] == "ok"}
    assert ended and ended <= finished and all(r["frames"] > 0 for r in record if r["status"] == "ok")
    assert all("still running" in r["error"] for r in record if r["status"] == "not_run")
    assert {r["status"] for r in record} <= {"ok", "not_run"}
    report = run_render_job(JobConfig(manifest_uri=str(manifest), output_uri=str(out), engine=SMALL))
    rendered = {r["id"] for r in report.results if r["status"] == "ok"}
    skipped = {r["id"] for r in report.results if r["status"] == "skipped"}
    assert skipped == finished
    assert rendered == {r["id"] for r in report.results} - finished
    assert len(_outputs(out)) == 6


if __name__ == "__main__":
    kill_manifest_arg, kill_out_arg, node_manifest_arg, node_out_arg, report_arg = sys.argv[1:6]
    outcome = run_faults_on_two_nodes(Path(kill_manifest_arg), Path(kill_out_arg), Path(node_manifest_arg),
                                      Path(node_out_arg))
    Path(report_arg).write_text(json.dumps(outcome, default=str))
