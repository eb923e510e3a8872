"""The HelloMeme engine through Ray, as a user runs it: weights from S3, a single-file checkpoint, per-row LoRAs.

The job runs in a child process whose private Ray instance has one logical GPU
(``ray.init(num_gpus=1)``); the weights are the tiny random-weight configuration of the real
classes, uploaded to a real S3 server on 127.0.0.1 (moto), so the render actor syncs them into
its node's cache and runs on this machine's CPU.  Placement comes from Ray's state API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.isolated_ray import free_port, run_child_job

pytestmark = pytest.mark.ray

FPS, SECONDS = 8.0, 1.0  # 8 frames a row: two windows of 4 frames with one shared


def run_tiny_hellomeme_job(workdir: Path, argv: list[str]) -> dict:
    import ray
    from ray.util.state import list_actors

    from jobs.options import add_render_arguments, job_config
    from pipelines.render_job import run_render_job

    dashboard_port = free_port()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=dashboard_port, log_to_driver=False)
    try:
        import argparse

        parser = argparse.ArgumentParser()
        add_render_arguments(parser)
        report = run_render_job(job_config(parser.parse_args(argv)))
        actors = [{"name": actor.class_name or "", "gpus": (actor.required_resources or {}).get("GPU", 0)}
                  for actor in list_actors(address=f"http://127.0.0.1:{dashboard_port}", detail=True, limit=1000,
                                           raise_on_missing_output=False)]
        return {"results": report.results, "actors": actors}
    finally:
        ray.shutdown()


def test_per_row_loras_checkpoint_and_weights_from_s3_render_on_the_gpu_pool(synthetic_media, s3_endpoint, tmp_path):
    import s3fs
    from safetensors.torch import save_file

    from jobs.manifest_builder import write_manifest
    from tests.hellomeme.ldm_layout import single_file_state
    from tests.hellomeme.test_lora import write_lora
    from tests.hellomeme.tiny_models import save_tiny_weights, tiny_modules

    fs = s3fs.S3FileSystem(**s3_endpoint.storage_options, skip_instance_cache=True)
    weights_uri = f"s3://{s3_endpoint.bucket}/weights/hellomeme"
    fs.put(str(save_tiny_weights(tmp_path / "weights")), weights_uri, recursive=True)
    checkpoint = tmp_path / "derivative.safetensors"  # an SD1.5 derivative as most are shared: one file
    modules = tiny_modules(seed=5)
    save_file(single_file_state(modules["unet"], modules["vae"]), str(checkpoint))
    style_a = write_lora(tmp_path / "style_a.safetensors", seed=1)
    style_b_uri = f"s3://{s3_endpoint.bucket}/loras/style_b.safetensors"
    fs.put(str(write_lora(tmp_path / "style_b.safetensors", seed=2)), style_b_uri)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")

    portrait = str(synthetic_media / "reference_images" / "astronaut.png")
    clip = str(synthetic_media / "drive_videos" / "grace_hopper.mp4")
    base = {"reference_uri": portrait, "driving_uri": clip, "fps": FPS, "max_seconds": SECONDS, "steps": 2, "seed": 3}
    rows = [
        {**base, "id": "style-a", "lora": str(style_a)},
        {**base, "id": "style-a-again", "lora": str(style_a)},
        {**base, "id": "style-a-half", "lora": str(style_a), "lora_scale": 0.5},
        {**base, "id": "job-default-lora"},  # the job's --lora (style B, on S3) fills it
        {**base, "id": "broken-lora", "lora": str(broken)},
    ]
    manifest = tmp_path / "manifest.parquet"
    write_manifest(rows, str(manifest))
    cache = tmp_path / "node-cache"
    argv = [str(manifest), "--output", str(tmp_path / "out"), "--engine", "hellomeme", "--size", "128",
            "--window", "4", "--device", "cpu", "--weights", weights_uri, "--weights-cache", str(cache),
            "--checkpoint", str(checkpoint), "--lora", style_b_uri, "--videos-per-batch", "2", "--no-report",
            *s3_endpoint.cli_options()]
    outcome = run_child_job(__file__, [str(tmp_path), json.dumps(argv)], tmp_path / "r.json", "hm-gpu-")

    results = {r["id"]: r for r in outcome["results"]}
    ok = [name for name in ("style-a", "style-a-again", "style-a-half", "job-default-lora")]
    assert all(results[name]["status"] == "ok" for name in ok), outcome["results"]
    assert all(results[name]["frames"] == int(FPS * SECONDS) for name in ok)
    assert results["broken-lora"]["status"] == "failed" and "broken.safetensors" in results["broken-lora"]["error"]
    # The weights and the S3 LoRA came into the node's cache, the weights once.
    assert len(list(cache.rglob(".hellomeme-cache.json"))) >= 1
    assert any(p.name == "style_b.safetensors" for p in cache.rglob("*.safetensors"))
    render = [a for a in outcome["actors"] if "RenderStage" in a["name"]]
    prepare = [a for a in outcome["actors"] if "PrepareStage" in a["name"]]
    assert render and prepare, outcome["actors"]
    assert all(a["gpus"] == 1 for a in render)
    assert all(a["gpus"] == 0 for a in prepare)


if __name__ == "__main__":
    workdir_arg, argv_arg, report_arg = sys.argv[1:4]
    outcome = run_tiny_hellomeme_job(Path(workdir_arg), json.loads(argv_arg))
    Path(report_arg).write_text(json.dumps(outcome, default=str))
