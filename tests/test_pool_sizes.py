"""How the pipeline sizes its pools and its queues from the cluster's resources (no Ray needed)."""

import argparse

from engines.hellomeme_engine import HelloMemeEngine
from engines.warp.engine import WarpEngine
from jobs.options import add_render_arguments, render_config
from pipelines.config import RenderJobConfig
from pipelines.render_pipeline import (
    CPU_RENDER_CPUS,
    DECODE_CPUS,
    ENCODE_CPUS,
    POSE_CPUS,
    QUEUE_MIB_PER_CPU,
    PoolSizes,
    queue_memory_bytes,
)


def test_cpu_pools_leave_room_for_decode_and_encode_on_two_cpus():
    pools = PoolSizes.for_cluster(WarpEngine, cpus=2, gpus=0)
    actors = pools.pose * POSE_CPUS + pools.render * CPU_RENDER_CPUS
    assert actors + DECODE_CPUS + ENCODE_CPUS <= 2
    assert pools.pose >= 1 and pools.render >= 1 and pools.tasks >= 2


def test_gpu_engine_gets_one_render_actor_per_gpu():
    assert PoolSizes.for_cluster(HelloMemeEngine, cpus=16, gpus=4).render == 4
    assert PoolSizes.for_cluster(HelloMemeEngine, cpus=16, gpus=0).render == 1


def test_queue_budget_scales_with_cpus_unless_set():
    config = RenderJobConfig(manifest_uri="m.parquet", output_uri="out")
    assert queue_memory_bytes(config, cpus=2) == 2 * QUEUE_MIB_PER_CPU * 2**20
    assert queue_memory_bytes(config, cpus=0.5) == QUEUE_MIB_PER_CPU * 2**20
    fixed = RenderJobConfig(manifest_uri="m.parquet", output_uri="out", queue_memory_mib=64)
    assert queue_memory_bytes(fixed, cpus=64) == 64 * 2**20


def test_queue_memory_option_reaches_the_config():
    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    args = parser.parse_args(["m.parquet", "--output", "out", "--queue-memory", "128"])
    assert render_config(args).queue_memory_mib == 128
    assert render_config(parser.parse_args(["m.parquet", "--output", "out"])).queue_memory_mib is None
