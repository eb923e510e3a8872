"""Window planning and the blend of overlapping windows."""

import numpy as np
import pytest

from hellomeme.windows import WindowPlan, blend_windows


def test_windows_cover_every_frame_and_share_the_overlap():
    plan = WindowPlan(num_frames=30, size=12, overlap=4)
    windows = plan.windows
    assert windows[0].start == 0 and windows[-1].stop == 30
    assert all(len(w) == 12 for w in windows)
    covered = set().union(*[set(w) for w in windows])
    assert covered == set(range(30))
    for left, right in zip(windows, windows[1:]):
        assert left.stop - right.start >= 4


def test_short_clip_is_one_window():
    plan = WindowPlan(num_frames=5, size=12, overlap=4)
    assert plan.windows == (range(0, 5),)
    values = [np.arange(5, dtype=np.float32)]
    np.testing.assert_array_equal(blend_windows(plan, values), values[0])


@pytest.mark.parametrize("size, overlap", [(0, 0), (4, 4), (4, -1)])
def test_bad_window_settings_are_refused(size, overlap):
    with pytest.raises(ValueError):
        WindowPlan(num_frames=10, size=size, overlap=overlap)


def test_shared_frame_gets_the_weighted_blend():
    plan = WindowPlan(num_frames=6, size=4, overlap=2)
    assert plan.starts == (0, 2)
    a = np.zeros((4, 1), dtype=np.float32)
    b = np.ones((4, 1), dtype=np.float32)
    out = blend_windows(plan, [a, b])[:, 0]
    # frames 0-1 only in a, 4-5 only in b; 2 and 3 ramp from a towards b
    np.testing.assert_allclose(out[[0, 1, 4, 5]], [0, 0, 1, 1])
    assert 0 < out[2] < out[3] < 1
    wa, wb = plan.weights()
    np.testing.assert_allclose(out[2], wb[0] / (wa[2] + wb[0]))


def test_no_jump_at_a_seam():
    """Two windows that disagree by a constant offset blend without a step larger than the ramp."""
    plan = WindowPlan(num_frames=40, size=12, overlap=4)
    truth = np.linspace(0, 1, 40, dtype=np.float32)[:, None]
    windows = [truth[w.start:w.stop] + (0.05 if i % 2 else -0.05) for i, w in enumerate(plan.windows)]
    out = blend_windows(plan, windows)[:, 0]
    steps = np.abs(np.diff(out))
    truth_step = 1 / 39
    assert steps.max() < truth_step + 0.1 / 4  # the 0.1 disagreement is spread over the overlap


def test_identical_windows_blend_to_themselves():
    plan = WindowPlan(num_frames=25, size=8, overlap=3)
    truth = np.random.default_rng(0).random((25, 3, 3)).astype(np.float32)
    out = blend_windows(plan, [truth[w.start:w.stop] for w in plan.windows])
    np.testing.assert_allclose(out, truth, rtol=1e-6)


def test_uint8_frames_blend_to_uint8():
    plan = WindowPlan(num_frames=6, size=4, overlap=2)
    a = np.full((4, 2, 2, 3), 10, np.uint8)
    b = np.full((4, 2, 2, 3), 250, np.uint8)
    out = blend_windows(plan, [a, b])
    assert out.dtype == np.uint8
    assert out[0].max() == 10 and out[-1].min() == 250 and 10 < out[3].mean() < 250
