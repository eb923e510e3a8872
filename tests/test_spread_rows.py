"""Part rows and the stitch stage without Ray; the render settings derived from the cluster."""

from __future__ import annotations

import numpy as np
import pytest

from actors.render_actor import PARTS_KEY
from actors.stitch_actor import Stitcher
from actors.video_parts import PART_COLUMNS, part_input, part_rows, whole_row
from engines.base import VideoPart
from pipelines.render_pipeline import (
    BATCHES_PER_RENDER_ACTOR,
    PART_GPU_SHARE,
    WHOLE_GPU_SHARE,
    PoolSizes,
    render_batch_size,
)

SIZE = 8


def prepared_row(index: int, frames: int = 10) -> dict:
    rng = np.random.default_rng(index)
    track = lambda n: {"landmarks": np.zeros((n, 478, 3), np.float32), "rotation": np.zeros((n, 3), np.float32),
                       "translation": np.zeros((n, 3), np.float32), "detected": np.ones(n, bool)}
    row = {"row_index": index, "id": f"v{index}", "status": "pending", "error": "", "seed": 1, "steps": 2,
           "guidance": 1.5, "prompt": "", "lora": None, "lora_scale": 1.0, "fps": None, "max_seconds": None,
           "audio": b"aac", "seconds_render": 2.0, "seconds_pose": 1.0, "rendered": np.zeros((0, SIZE, SIZE, 3), np.uint8),
           "reference_crop": rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8),
           "driving_crops": rng.integers(0, 255, (frames, SIZE, SIZE, 3), dtype=np.uint8)}
    row.update({f"reference_{k}": v for k, v in track(1).items()})
    row.update({f"driving_{k}": v for k, v in track(frames).items()})
    return row


def parts_of(row: dict) -> list[VideoPart]:
    return [VideoPart(0, 3, 0, 4, 0, np.full((2, 4, 1, 1), 1.0, np.float32)),
            VideoPart(1, 3, 3, 7, 4, np.full((2, 4, 1, 1), 2.0, np.float32)),
            VideoPart(2, 3, 6, 10, 7, np.full((2, 4, 1, 1), 3.0, np.float32))]


def rendered_part(row: dict) -> dict:
    part = part_input(row, SIZE).part
    frames = np.stack([np.full((SIZE, SIZE, 3), f, np.uint8) for f in range(part.keep_from, part.stop)])
    return {**row, "rendered": frames, "seconds_render": float(row["seconds_render"]) + 1.0}


def test_part_rows_carry_their_frames_crops_and_state_and_share_the_whole_rows_schema():
    row = prepared_row(3)
    rows = part_rows({**row, PARTS_KEY: parts_of(row)}, parts_of(row))
    whole = whole_row({**prepared_row(4), "rendered": np.zeros((10, SIZE, SIZE, 3), np.uint8)}, SIZE)
    assert all(set(r) == set(whole) for r in rows) and PARTS_KEY not in whole
    np.testing.assert_array_equal(rows[1]["driving_crops"], row["driving_crops"][3:7])
    assert len(rows[1]["driving_landmarks"]) == 10  # the whole clip's track
    assert [r["audio"] for r in rows] == [b"aac", None, None]  # counted once when stitched
    assert [r["seconds_render"] for r in rows] == [2.0, 0.0, 0.0]
    back = part_input(rows[2], SIZE)
    expected = parts_of(row)[2]
    assert (back.part.index, back.part.count, back.part.start, back.part.stop, back.part.keep_from) == (2, 3, 6, 10, 7)
    assert back.part.state.shape == expected.state.shape
    np.testing.assert_array_equal(back.part.state, expected.state)
    assert len(whole["driving_crops"]) == 0 and whole["part_count"] == 0


def test_stitch_puts_parts_back_in_order_whatever_order_they_come_in():
    row = prepared_row(5)
    done = [rendered_part(r) for r in part_rows(row, parts_of(row))]
    stitcher = Stitcher()
    other = {**prepared_row(6), **{name: 0 for name in PART_COLUMNS}}
    assert stitcher(done[2]) == [] and stitcher(done[0]) == []
    passed = stitcher(other)  # a whole video passes while the split one waits
    assert len(passed) == 1 and not set(PART_COLUMNS) & set(passed[0])
    assert stitcher.videos_waiting == 1
    (video,) = stitcher(done[1])
    assert stitcher.videos_waiting == 0
    assert [int(frame[0, 0, 0]) for frame in video["rendered"]] == list(range(10))
    assert video["audio"] == b"aac" and video["seconds_render"] == pytest.approx(2.0 + 3.0)
    assert not set(PART_COLUMNS) & set(video)


def test_a_failed_part_fails_its_video_once_all_parts_are_back():
    row = prepared_row(7)
    rows = part_rows(row, parts_of(row))
    failed = {**rows[1], "status": "failed", "error": "row 7 (v7): render: out of memory"}
    stitcher = Stitcher()
    assert stitcher(rendered_part(rows[0])) == [] and stitcher(failed) == []
    (video,) = stitcher(rendered_part(rows[2]))
    assert video["status"] == "failed"
    assert video["error"] == "row 7 (v7): render: out of memory (window group 2 of 3, frames 3-6)"
    assert video["rendered"].shape == (0, SIZE, SIZE, 3)


def test_render_batches_leave_every_gpu_several_batches():
    assert render_batch_size(8, rows=1000, render_actors=8) == 8
    assert render_batch_size(8, rows=64, render_actors=8) == 64 // (8 * BATCHES_PER_RENDER_ACTOR)
    assert render_batch_size(4, rows=3, render_actors=8) == 1
    assert render_batch_size(1, rows=1000, render_actors=1) == 1


def test_gpu_claims_fit_one_actor_of_each_pool_per_gpu():
    assert WHOLE_GPU_SHARE + PART_GPU_SHARE <= 1.0
    assert 2 * WHOLE_GPU_SHARE > 1.0  # no GPU can hold two render actors


def test_prepare_pool_grows_with_the_gpus_within_the_cpus():
    assert PoolSizes.for_cluster(needs_gpu=True, cpus=2 + 8, gpus=8).prepare == 8
    assert PoolSizes.for_cluster(needs_gpu=True, cpus=8 * 16, gpus=8).prepare >= 8
    small = PoolSizes.for_cluster(needs_gpu=True, cpus=2, gpus=8)
    assert small.prepare * 0.5 <= 1  # never more than half the CPUs' worth
    assert PoolSizes.for_cluster(needs_gpu=False, cpus=2, gpus=0).prepare == 1
