"""Groups of windows (``--spread-windows``): the cut, and one actor against many, bit for bit.

A long clip rendered whole by one pipeline must equal the same clip rendered as its edge passes
on one pipeline and each group on another (separately built models, end-frame latents passed
through numpy as they travel between Ray actors), with the groups' frames put back in order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hellomeme.groups import plan_groups
from hellomeme.passes import plan_passes
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig
from hellomeme.windows import WindowRule

from .conftest import TEST_SIZE, TEST_WINDOWS, video_request
from .tiny_models import tiny_components


def spread_config(windows_per_group: int = 2, rule: WindowRule = TEST_WINDOWS, **extra) -> PipelineConfig:
    return PipelineConfig(windows=rule, noise="per-frame", windows_per_group=windows_per_group, frames_per_batch=32,
                          **extra)


@pytest.mark.parametrize("rule", [WindowRule(12, 1), WindowRule(4, 1), WindowRule(6, 2), WindowRule(4, 1, True)])
@pytest.mark.parametrize("per_group", [1, 2, 3, 4])
def test_groups_cut_the_last_pass_in_order_and_keep_every_frame_once(rule, per_group):
    for frames in range(1, 200):
        final = plan_passes(frames, rule)[-1]
        groups = plan_groups(frames, rule, per_group)
        if not final.conditioned_on_ends or len(final.windows) <= per_group:
            assert groups == ()
            continue
        windows = [w for g in groups for w in g.denoise_pass.window_frames()]
        assert windows == list(final.window_frames())  # every window once, in order
        assert all(len(g.denoise_pass.windows) == per_group for g in groups[:-1])
        kept = [f for g in groups for f in range(g.keep_from, g.stop)]
        assert kept == list(range(frames))  # a shared frame is kept once: from the left group
        edge = set(plan_passes(frames, rule)[-2].frames)
        assert all(set(g.end_frames) <= edge for g in groups)  # the edge pass finished them


def test_spreading_needs_per_frame_noise():
    with pytest.raises(ValueError, match="per-frame"):
        PipelineConfig(windows=TEST_WINDOWS, windows_per_group=2)


@pytest.fixture(scope="module")
def one_actor(tiny):
    return HelloMemeVideoPipeline(tiny, spread_config())


@pytest.fixture(scope="module")
def other_actor():
    """Another worker with its own copy of the same weights."""
    return HelloMemeVideoPipeline(tiny_components("cpu", seed=0), spread_config())


LONG_FRAMES = 13  # 4 windows of 4 frames (0-3, 3-6, 6-9, 9-12): 2 groups of 2 sharing frame 6


@pytest.fixture(scope="module")
def long_request():
    return video_request(frames=LONG_FRAMES, seed=4)


@pytest.fixture(scope="module")
def whole(one_actor, long_request):
    return one_actor([long_request])[0]


def split_render(request, edge_worker, group_workers):
    """What the Ray pipeline does: edges on one worker, each group on whichever worker, frames stitched in order."""
    edges = edge_worker.render_edges(request)
    travelled = type(edges)(edges.frames, np.frombuffer(edges.latents.tobytes(), np.float32).reshape(edges.latents.shape))
    parts = []
    groups = edge_worker.plan_groups(request.num_frames)
    for group in reversed(groups):  # any order: each group stands alone
        worker = group_workers[group.index % len(group_workers)]
        parts.append((group.index, worker.render_window_group(
            request.frames_slice(group.start, group.stop), request.num_frames, group.index,
            travelled.select(group.end_frames))))
    return np.concatenate([frames for _, frames in sorted(parts, key=lambda part: part[0])])


def test_a_long_clip_split_over_workers_equals_one_worker_bit_for_bit(one_actor, other_actor, long_request, whole):
    assert len(one_actor.plan_groups(LONG_FRAMES)) == 2
    assert whole.shape == (LONG_FRAMES, TEST_SIZE, TEST_SIZE, 3)
    np.testing.assert_array_equal(split_render(long_request, other_actor, [one_actor, other_actor]), whole)


def test_a_spread_clip_renders_the_same_whatever_videos_share_its_call(one_actor, long_request, whole):
    together = one_actor([video_request(frames=5, seed=1, guidance=0.8), long_request])
    np.testing.assert_array_equal(together[1], whole)


def test_a_clip_with_one_group_renders_as_without_spreading(tiny, one_actor, long_request, whole):
    per_frame = HelloMemeVideoPipeline(tiny, PipelineConfig(windows=TEST_WINDOWS, noise="per-frame",
                                                            frames_per_batch=32))
    request = video_request(frames=7, seed=5)  # 2 windows: one group of 2
    assert one_actor.plan_groups(7) == ()
    np.testing.assert_array_equal(one_actor([request])[0], per_frame([request])[0])
    # A long clip's groups are a deviation: only the frames where the two groups met see a different mean.
    plain = per_frame([long_request])[0]
    assert not np.array_equal(whole, plain)
    assert np.abs(whole.astype(int) - plain.astype(int)).mean() < 40


def test_a_group_refuses_latents_or_frames_that_do_not_fit(one_actor, long_request):
    group = one_actor.plan_groups(LONG_FRAMES)[1]
    edges = one_actor.render_edges(long_request)
    with pytest.raises(ValueError, match="end-frame latents"):
        one_actor.render_window_group(long_request.frames_slice(group.start, group.stop), LONG_FRAMES, 1,
                                      edges.latents)
    with pytest.raises(ValueError, match="covers frames"):
        one_actor.render_window_group(long_request, LONG_FRAMES, 1, edges.select(group.end_frames))
    with pytest.raises(ValueError, match="groups"):
        one_actor.render_window_group(long_request, LONG_FRAMES, 9, edges.latents)


# --- the engine: --spread-windows, render_or_split and render_parts --------------------------------

def spread_spec(**options):
    from engines.registry import engine_spec

    from .conftest import TINY_FACTORY

    options = {"components_factory": TINY_FACTORY, "device": "cpu", "window": 4, "noise_per_frame": True,
               "spread_windows": 2, **options}
    return engine_spec("hellomeme", size=TEST_SIZE, **options)


def test_spread_option_is_a_flag_that_needs_per_frame_noise():
    import argparse

    from engines.base import EngineOptionError
    from engines.hellomeme_engine import HelloMemeEngine
    from jobs.options import add_render_arguments, engine_spec_from_args

    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    args = parser.parse_args(["m.parquet", "--output", "o", "--engine", "hellomeme", "--spread-windows", "4",
                              "--noise-per-frame"])
    spec = engine_spec_from_args(args)
    assert spec.options.spread_windows == 4 and HelloMemeEngine.splits(spec)
    spec.options.check(512)
    assert not HelloMemeEngine.splits(spread_spec(spread_windows=0))
    with pytest.raises(EngineOptionError, match="--spread-windows.*--noise-per-frame"):
        spread_spec(noise_per_frame=False).options.check(512)
    with pytest.raises(EngineOptionError, match="--spread-windows"):
        spread_spec(spread_windows=-1).options.check(512)


def test_engine_parts_rendered_elsewhere_equal_the_whole_video_bit_for_bit():
    from engines.base import PartInput
    from engines.hellomeme_engine import HelloMemeEngine

    from .conftest import render_input

    first, second = HelloMemeEngine(spread_spec()), HelloMemeEngine(spread_spec())
    long, short = render_input(LONG_FRAMES, seed=6, guidance=0.8), render_input(5, seed=7, guidance=0.8)
    whole_long, whole_short = first.render([long, short])
    split = second.render_or_split([long, short])
    np.testing.assert_array_equal(split[1], whole_short)  # a clip of one group renders whole
    parts = split[0]
    assert [(p.index, p.count, p.start, p.stop, p.keep_from) for p in parts] == [(0, 2, 0, 7, 0), (1, 2, 6, 13, 7)]
    # Each part as a Ray row carries it: the crops of its frames, the whole face track, its state.
    inputs = [PartInput(dataclasses.replace(long, driving_frames=long.driving_frames[p.start:p.stop]), p)
              for p in parts]
    rendered = first.render_parts(inputs[::-1])[::-1]
    assert [len(frames) for frames in rendered] == [p.output_frames for p in parts]
    np.testing.assert_array_equal(np.concatenate(rendered), whole_long)
