"""The HelloMeme engine through Ray with a logical GPU: the denoise pool asks for it, the pose pool does not.

The job runs in a child process whose private Ray instance has one logical GPU
(``ray.init(num_gpus=1)``); the engine is the tiny random-weight configuration of the real
classes, so it runs on this machine's CPU.  Placement comes from Ray's state API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.isolated_ray import free_port, run_child_job

pytestmark = pytest.mark.ray


def run_tiny_hellomeme_job(media: Path, workdir: Path) -> dict:
    import ray
    from ray.util.state import list_actors

    from engines.registry import engine_spec
    from jobs.manifest_builder import pair_folders, write_manifest
    from pipelines.plan import JobConfig
    from pipelines.render_job import run_render_job

    dashboard_port = free_port()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=dashboard_port, log_to_driver=False)
    try:
        rows = pair_folders(str(media / "reference_images"), str(media / "drive_videos"), "zip")[:2]
        for row in rows:
            row.update(max_seconds=1.5, steps=2, seed=7)
        manifest = workdir / "manifest.parquet"
        write_manifest(rows, str(manifest))
        spec = engine_spec("hellomeme", size=128, components_factory="tests.hellomeme.tiny_models:tiny_components")
        config = JobConfig(manifest_uri=str(manifest), output_uri=str(workdir / "out"), engine=spec,
                           videos_per_batch=2)
        report = run_render_job(config)
        actors = [{"name": actor.repr_name or actor.class_name,
                   "gpus": (actor.required_resources or {}).get("GPU", 0)}
                  for actor in list_actors(address=f"http://127.0.0.1:{dashboard_port}", detail=True, limit=1000,
                                           raise_on_missing_output=False)]
        return {"results": report.results, "actors": actors}
    finally:
        ray.shutdown()


def test_tiny_hellomeme_renders_a_manifest_on_the_gpu_pool(media_dir, tmp_path):
    outcome = run_child_job(__file__, [str(media_dir), str(tmp_path)], tmp_path / "r.json", "hm-gpu-")
    assert [r["status"] for r in outcome["results"]] == ["ok", "ok"], outcome["results"]
    assert all(r["frames"] == 12 for r in outcome["results"])  # 1.5 s at the engine's 8 fps
    render = [a for a in outcome["actors"] if "FrameRenderer" in a["name"]]
    pose = [a for a in outcome["actors"] if "PoseExtractor" in a["name"]]
    assert render and pose, outcome["actors"]
    assert all(a["gpus"] == 1 for a in render)
    assert all(a["gpus"] == 0 for a in pose)


if __name__ == "__main__":
    media_arg, workdir_arg, report_arg = sys.argv[1:4]
    outcome = run_tiny_hellomeme_job(Path(media_arg), Path(workdir_arg))
    Path(report_arg).write_text(json.dumps(outcome, default=str))
