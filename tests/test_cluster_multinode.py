"""Two nodes on one machine: a GPU engine's render pool runs on the GPU node only, the prepare pool takes no GPU.

The cluster (``ray.cluster_utils.Cluster``: a CPU-only head and a worker with one logical GPU)
lives in a child process -- this file run as a script -- with a private ``RAY_TMPDIR``.
``Cluster`` records its address in ``$RAY_TMPDIR/ray/ray_current_cluster``, where any later
``ray.init()`` on the machine would find it and connect; a private directory keeps other tests
(and other people's Ray) from joining it, and keeps this driver apart from a Ray instance the
pytest process may already hold.  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray use the
loopback address for its nodes (its default on macOS and Windows), so nothing listens beyond
127.0.0.1.

The render engine is a test-only GPU engine: it refuses to start in an actor that was given no
GPU and returns the driving frames.  The placement, not the pixels, is under test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from engines.base import Engine, EngineSpec, RenderInput
from tests.isolated_ray import free_port, run_child_job

REPO = Path(__file__).resolve().parents[1]
MODULE = Path(__file__).stem  # importable by this name wherever tests/ is on the path (pytest, the child)
TEST_ENGINE = "test-gpu"
CHILD_TIMEOUT_S = 300


# --- the test-only GPU engine (imported by name in the render actors) -----------------------------

class GpuTestEngine(Engine):
    """Needs a GPU like the diffusion engine; renders the driving frames unchanged."""

    name = TEST_ENGINE
    needs_gpu = True

    def __init__(self, spec: EngineSpec, storage_options=None) -> None:
        import ray

        super().__init__(spec, storage_options)
        if not ray.get_gpu_ids():
            raise RuntimeError("the GPU engine was built in an actor that holds no GPU")

    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        return [np.array(item.driving_frames, copy=True) for item in inputs]


# --- the child process: a two-node cluster and one render job ----------------------------------

def _write_manifest(media: Path, folder: Path) -> str:
    from jobs.manifest_builder import write_manifest

    portraits = sorted((media / "reference_images").glob("*.png"))[:2]
    clips = sorted((media / "drive_videos").glob("*.mp4"))[:2]
    rows = [{"id": f"multinode_{i}", "reference_uri": str(portrait), "driving_uri": str(clip),
             "fps": 8.0, "max_seconds": 1.0}  # 8 frames a row: placement is under test, not throughput
            for i, (portrait, clip) in enumerate(zip(portraits, clips))]
    path = folder / "manifest.parquet"
    write_manifest(rows, str(path))
    return str(path)


def run_two_node_job(media: Path, workdir: Path) -> dict:
    """Render a small manifest on a CPU node + GPU node cluster; report the rows and where the actors ran."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from pipelines.plan import JobConfig
    from pipelines.render_job import run_render_job

    dashboard_port = free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 0, "include_dashboard": True,  # the state API lives in the dashboard
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
    })
    try:
        gpu_node_id = cluster.add_node(num_cpus=1, num_gpus=1).node_id
        ray.init(address=cluster.address, log_to_driver=False)
        # The actors import the engine class by its path: no registry entry is needed.
        spec = EngineSpec(name=TEST_ENGINE, engine_path=f"{MODULE}:GpuTestEngine", size=128)
        config = JobConfig(manifest_uri=_write_manifest(media, workdir), output_uri=str(workdir / "out"),
                           engine=spec, interpolate=False)
        report = run_render_job(config)
        actors = [
            {"repr_name": actor.repr_name, "node_id": actor.node_id,
             "gpus": (actor.required_resources or {}).get("GPU", 0)}
            for actor in list_actors(address=dashboard, detail=True, limit=1000, raise_on_missing_output=False)
            if actor.repr_name and ("PrepareStage" in actor.repr_name or "RenderStage" in actor.repr_name)
        ]
        return {"gpu_node_id": gpu_node_id, "results": report.results, "actors": actors}
    finally:
        ray.shutdown()
        cluster.shutdown()


# --- the test -------------------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.slow
def test_gpu_engine_renders_on_the_gpu_node_only(synthetic_media: Path, tmp_path: Path) -> None:
    report = run_child_job(__file__, [str(synthetic_media), str(tmp_path)], tmp_path / "report.json", "hm-mn-",
                           timeout_s=CHILD_TIMEOUT_S)

    assert [row["status"] for row in report["results"]] == ["ok", "ok"], [row["error"] for row in report["results"]]
    assert all(Path(row["output_uri"]).is_file() for row in report["results"])
    render = [actor for actor in report["actors"] if "RenderStage" in actor["repr_name"]]
    prepare = [actor for actor in report["actors"] if "PrepareStage" in actor["repr_name"]]
    assert render and prepare, report["actors"]
    assert {actor["node_id"] for actor in render} == {report["gpu_node_id"]}
    assert all(actor["gpus"] == 1 for actor in render)
    assert all(actor["gpus"] == 0 for actor in prepare)
    # Where the prepare actors run is Ray's choice: it prefers nodes without GPUs for CPU-only work, no more.


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    media_arg, workdir_arg, report_arg = sys.argv[1:4]
    module = __import__(MODULE)  # the engine class must be reachable under the module's name, not __main__
    outcome = module.run_two_node_job(Path(media_arg), Path(workdir_arg))
    Path(report_arg).write_text(json.dumps(outcome, default=str))
