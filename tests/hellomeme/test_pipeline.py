"""The video pipeline on tiny random-weight models: shapes, determinism, window blending, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hellomeme.video_pipeline as video_pipeline
from hellomeme.noise import frame_noise
from hellomeme.tiny import tiny_components
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig
from hellomeme.windows import WindowPlan, blend_windows

from .conftest import TEST_SIZE, video_request


def test_windowed_video_renders_to_the_right_shape(pipeline):
    request = video_request(frames=7, window=4, overlap=1)  # two windows sharing frame 3, edges first
    (frames,) = pipeline([request])
    assert frames.shape == (7, TEST_SIZE, TEST_SIZE, 3)
    assert frames.dtype == np.uint8
    assert frames.std() > 0


def test_same_seed_renders_the_same_frames(pipeline):
    request = video_request(frames=5, window=4, overlap=1, seed=7)
    first, second = pipeline([request]), pipeline([request])
    np.testing.assert_array_equal(first[0], second[0])
    other = pipeline([video_request(frames=5, window=4, overlap=1, seed=8)])
    assert not np.array_equal(first[0], other[0])


def test_noise_depends_only_on_seed_frame_and_step():
    shape = (4, 2, 2)
    a = frame_noise([(1, 0), (1, 5), (2, 5)], step=3, shape=shape, device=torch.device("cpu"))
    b = frame_noise([(2, 5), (1, 5)], step=3, shape=shape, device=torch.device("cpu"))
    torch.testing.assert_close(a[1], b[1])
    torch.testing.assert_close(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[1], frame_noise([(1, 5)], step=4, shape=shape, device=torch.device("cpu"))[0])


def test_videos_batched_together_render_as_when_alone(pipeline):
    alone = pipeline([video_request(frames=6, window=4, overlap=1, seed=3)])[0]
    together = pipeline([video_request(frames=9, window=4, overlap=1, seed=5),
                         video_request(frames=6, window=4, overlap=1, seed=3)])
    assert together[0].shape[0] == 9
    # Same noise and conditions; only float summation order inside batched kernels may differ.
    assert np.abs(together[1].astype(int) - alone.astype(int)).max() <= 2


class _RecordingScheduler:
    """Wraps the real scheduler and keeps every blended noise prediction it is given."""

    def __init__(self, inner, log):
        self._inner, self._log = inner, log

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def step(self, model_output, *args, **kwargs):
        self._log.append(model_output.clone())
        return self._inner.step(model_output, *args, **kwargs)


def test_a_frame_shared_by_two_windows_gets_the_blend_of_their_predictions(tiny, monkeypatch):
    """Stub UNet: window w predicts (position in window + 10 w); the scheduler must see blend_windows of that."""
    log: list[torch.Tensor] = []
    real = video_pipeline.hellomeme_scheduler
    monkeypatch.setattr(video_pipeline, "hellomeme_scheduler", lambda: _RecordingScheduler(real(), log))
    pipe = HelloMemeVideoPipeline(tiny, PipelineConfig(edges_first=False, frames_per_batch=64))

    def stub_unet(sample, timestep, text, reference, control, ends, num_frames):
        windows = sample.shape[0] // num_frames
        position = torch.arange(num_frames).repeat(windows)
        window = torch.arange(windows).repeat_interleave(num_frames) % (windows // 2)
        return (position + 10 * window).float()[:, None, None, None].expand_as(sample).clone()

    pipe._denoise = stub_unet
    plan = WindowPlan(num_frames=10, size=4, overlap=2)
    pipe([video_request(frames=10, window=4, overlap=2, steps=2)])
    per_window = [np.arange(len(w), dtype=np.float64) + 10 * i for i, w in enumerate(plan.windows)]
    expected = blend_windows(plan, per_window)
    assert len(log) == 2
    for prediction in log:
        assert prediction.shape[0] == 10
        np.testing.assert_allclose(prediction[:, 0, 0, 0].numpy(), expected, rtol=1e-6)
        # one value per frame: every latent element of a frame carries the same blended number
        assert torch.all(prediction == prediction[:, :1, :1, :1])


def test_windows_longer_than_the_motion_module_allows_are_refused(pipeline):
    with pytest.raises(ValueError, match="exceed"):
        pipeline([video_request(frames=40, window=31, overlap=1)])


def test_v5b_reference_adapter_renders_too():
    pipe = HelloMemeVideoPipeline(tiny_components(release="v5b"), PipelineConfig(frames_per_batch=32))
    (frames,) = pipe([video_request(frames=4, window=4, overlap=1)])
    assert frames.shape == (4, TEST_SIZE, TEST_SIZE, 3)
