"""How the pipeline sizes its pools and its queues from the cluster's resources (no Ray needed)."""

import argparse

import ray.data

from jobs.options import add_render_arguments, job_config
from pipelines.render_pipeline import (
    CPU_RENDER_CPUS,
    FINISH_CPUS,
    MAX_INPUT_BLOCKS,
    PREPARE_CPUS,
    QUEUE_STORE_FRACTION,
    PoolSizes,
    input_blocks,
    needs_one_row_blocks,
    set_queue_budget,
)


def test_cpu_pools_leave_room_for_the_finish_actors_on_two_cpus():
    pools = PoolSizes.for_cluster(needs_gpu=False, cpus=2, gpus=0)
    actors = pools.prepare * PREPARE_CPUS + pools.render * CPU_RENDER_CPUS
    assert actors + FINISH_CPUS <= 2
    assert pools.prepare >= 1 and pools.render >= 1 and pools.finish >= 2


def test_gpu_engine_gets_one_render_actor_per_gpu():
    assert PoolSizes.for_cluster(needs_gpu=True, cpus=16, gpus=4).render == 4
    assert PoolSizes.for_cluster(needs_gpu=True, cpus=16, gpus=0).render == 1


def test_queue_budget_is_a_share_of_the_store_unless_set():
    context = ray.data.DataContext.get_current().copy()
    assert set_queue_budget(context, 64) == "64 MiB"
    assert context.execution_options.resource_limits.object_store_memory == 64 * 2**20
    assert context.override_object_store_memory_limit_fraction is None

    # The next job in the same process, without a fixed budget, gets the share, not the last cap.
    set_queue_budget(context, None)
    assert context.override_object_store_memory_limit_fraction == QUEUE_STORE_FRACTION
    assert context.execution_options.resource_limits.object_store_memory == float("inf")


def test_queue_memory_option_reaches_the_config():
    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    args = parser.parse_args(["m.parquet", "--output", "out", "--queue-memory", "128"])
    assert job_config(args).queue_memory_mib == 128
    assert job_config(parser.parse_args(["m.parquet", "--output", "out"])).queue_memory_mib is None


def test_a_large_manifest_starts_as_a_bounded_number_of_blocks_cut_into_rows_later():
    # A block per row fans a small manifest out; a 20000-row one would keep the driver building
    # blocks for ~100 s before any row ran.
    assert input_blocks(8) == 8 and not needs_one_row_blocks(8, splits=False)
    assert input_blocks(20000) == MAX_INPUT_BLOCKS and needs_one_row_blocks(20000, splits=False)
    assert needs_one_row_blocks(8, splits=True)
