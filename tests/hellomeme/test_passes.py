"""Boundary frames first: which frames each denoising pass covers."""

from __future__ import annotations

from hellomeme.passes import plan_passes, window_edges
from hellomeme.windows import WindowPlan


def test_short_clip_is_one_unconditioned_pass():
    (only,) = plan_passes(WindowPlan(num_frames=9, size=12, overlap=1))
    assert only.frames == tuple(range(9)) and not only.conditioned_on_ends


def test_long_clip_generates_window_edges_first_recursively():
    plan = WindowPlan(num_frames=300, size=12, overlap=1)
    passes = plan_passes(plan)
    assert passes[-1].frames == tuple(range(300)) and passes[-1].conditioned_on_ends
    assert not passes[0].conditioned_on_ends and len(passes[0].plan.windows) == 1
    for earlier, later in zip(passes, passes[1:]):
        # every window of a later pass starts and ends on frames the earlier pass finished
        edges = {later.frames[p] for p in window_edges(later.plan)}
        assert edges == set(earlier.frames)
        for window in later.window_frames():
            assert window[0] in earlier.frames and window[-1] in earlier.frames
    assert len(passes) == 3


def test_edges_first_can_be_switched_off():
    (only,) = plan_passes(WindowPlan(num_frames=40, size=12, overlap=4), edges_first=False)
    assert len(only.plan.windows) == 5 and not only.conditioned_on_ends


def test_windows_overlapping_so_much_that_every_frame_is_an_edge_stay_one_pass():
    (only,) = plan_passes(WindowPlan(num_frames=6, size=3, overlap=2))
    assert only.frames == tuple(range(6)) and not only.conditioned_on_ends
