"""The video pipeline on tiny random-weight models: the official script's rules, determinism, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hellomeme.video_pipeline as video_pipeline
from hellomeme.noise import FrameNoise, OfficialNoise, frame_noise
from hellomeme.passes import plan_passes
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig
from hellomeme.windows import WindowRule

from .conftest import TEST_SIZE, TEST_WINDOWS, video_request
from .tiny_models import tiny_components


def test_windowed_video_renders_to_the_right_shape(pipeline):
    (frames,) = pipeline([video_request(frames=7)])  # windows 0-3, 3-6 sharing frame 3; their ends first
    assert frames.shape == (7, TEST_SIZE, TEST_SIZE, 3)
    assert frames.dtype == np.uint8
    assert frames.std() > 0


class _ReferenceLatents:
    """Records the latents the reference net sees for the videos (not the zero latent of the unconditional branch)."""

    def __init__(self, components):
        self.seen: list[torch.Tensor] = []
        self._handle = components.reference_net.register_forward_pre_hook(self._record)

    def _record(self, module, args):
        latents = args[0]
        if latents.abs().sum() > 0:
            self.seen.append(latents.detach().clone())

    def close(self):
        self._handle.remove()


def test_same_seed_gives_the_same_reference_latent_and_video(tiny, pipeline):
    request = video_request(frames=5, seed=7)
    recorder = _ReferenceLatents(tiny)
    try:
        first = pipeline([request])[0]
        first_latent = recorder.seen[0]
        recorder.seen.clear()
        second = pipeline([request])[0]
        second_latent = recorder.seen[0]
    finally:
        recorder.close()
    torch.testing.assert_close(first_latent, second_latent, rtol=0, atol=0)
    np.testing.assert_array_equal(first, second)
    other = pipeline([video_request(frames=5, seed=8)])
    assert not np.array_equal(first, other[0])


def test_reference_latent_is_the_posterior_sampled_with_the_seeds_first_draw(tiny, pipeline):
    """The script: retrieve_latents(vae.encode(image), generator) with the run's generator, before anything else."""
    request = video_request(frames=3, seed=11)
    recorder = _ReferenceLatents(tiny)
    try:
        pipeline([request])
    finally:
        recorder.close()
    pixels = video_pipeline.to_model_range(request.reference_image[None])
    posterior = tiny.encoder_vae.encode(pixels).latent_dist
    generator = torch.Generator().manual_seed(11)
    expected = posterior.sample(generator=generator) * tiny.encoder_vae.config.scaling_factor
    torch.testing.assert_close(recorder.seen[0], expected)
    assert not torch.allclose(recorder.seen[0], posterior.mode() * tiny.encoder_vae.config.scaling_factor)


def test_official_noise_draws_what_one_generator_draws_in_the_scripts_order():
    shape, frames, window = (4, 2, 2), 30, 12
    noise = OfficialNoise(seed=5, num_frames=frames, window=window, latent_shape=shape, dtype=torch.float16)
    passes = plan_passes(frames)
    reference = noise.reference(torch.float16)
    initial = [noise.initial(p.frames) for p in passes]
    steps = [[noise.step(p.frames, s) for s in range(2)] for p in passes]

    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(reference, torch.randn((1, *shape), generator=g, dtype=torch.float16))
    block = torch.randn((1, 4, frames + window + 1, 2, 2), generator=g, dtype=torch.float16)
    for p, got in zip(passes, initial):  # every pass starts from the block's first frames
        torch.testing.assert_close(got, block[0, :, : len(p.frames)].transpose(0, 1).float())
    for p, per_step in zip(passes, steps):  # then each step of each pass, deepest pass first
        for got in per_step:
            expected = torch.randn((1, 4, len(p.frames), 2, 2), generator=g, dtype=torch.float32)
            torch.testing.assert_close(got, expected[0].transpose(0, 1))


def test_per_frame_noise_depends_only_on_seed_frame_and_step():
    shape = (4, 2, 2)
    a = frame_noise([(1, 0), (1, 5), (2, 5)], step=3, shape=shape)
    b = frame_noise([(2, 5), (1, 5)], step=3, shape=shape)
    torch.testing.assert_close(a[1], b[1])
    torch.testing.assert_close(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    noise = FrameNoise(seed=1, num_frames=9, window=4, latent_shape=shape, dtype=torch.float32)
    torch.testing.assert_close(noise.step((0, 5), 3), a[:2])


def test_noise_per_frame_switch_renders_differently(tiny, pipeline):
    per_frame = HelloMemeVideoPipeline(tiny, PipelineConfig(windows=TEST_WINDOWS, noise="per-frame",
                                                            frames_per_batch=32))
    request = video_request(frames=5, seed=3)
    assert not np.array_equal(per_frame([request])[0], pipeline([request])[0])
    np.testing.assert_array_equal(per_frame([request])[0], per_frame([request])[0])


def test_videos_batched_together_render_as_when_alone(pipeline):
    alone = pipeline([video_request(frames=6, seed=3)])[0]
    together = pipeline([video_request(frames=9, seed=5), video_request(frames=6, seed=3)])
    assert together[0].shape[0] == 9
    # Each video draws from its own generator; only float summation order inside batched kernels may differ.
    assert np.abs(together[1].astype(int) - alone.astype(int)).max() <= 2


class _CountingDenoiser:
    """Wraps the denoiser and records how many UNet images each call carries and per how many frames."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, sample, timestep, text, reference, control, ends, num_frames):
        self.calls.append((sample.shape[0], text.shape[0], num_frames))
        return self.inner(sample, timestep, text, reference, control, ends, num_frames)


def test_guidance_at_or_below_one_runs_the_conditional_branch_only(tiny):
    pipe = HelloMemeVideoPipeline(tiny, PipelineConfig(windows=TEST_WINDOWS, frames_per_batch=32))
    counter = _CountingDenoiser(pipe._denoise)
    pipe._denoise = counter
    low = pipe([video_request(frames=5, seed=2, guidance=0.5)])[0]
    single_branch = list(counter.calls)
    counter.calls.clear()
    one = pipe([video_request(frames=5, seed=2, guidance=1.0)])[0]
    counter.calls.clear()
    guided = pipe([video_request(frames=5, seed=2, guidance=1.5)])[0]
    # One prediction per window: as many windows as text rows, no unconditional copies.
    windows_per_step = sum(len(p.windows) for p in plan_passes(5, TEST_WINDOWS))
    assert sum(text for _, text, _ in single_branch) == windows_per_step * 2  # 2 steps
    assert sum(text for _, text, _ in counter.calls) == 2 * windows_per_step * 2
    # Below 1 the scale is ignored, as at 1: the conditional prediction alone.
    np.testing.assert_array_equal(low, one)
    assert not np.array_equal(low, guided)


def test_mixed_guidance_videos_batch_together_as_when_alone(tiny):
    pipe = HelloMemeVideoPipeline(tiny, PipelineConfig(windows=TEST_WINDOWS, frames_per_batch=32))
    alone = [pipe([video_request(frames=5, seed=s, guidance=g)])[0] for s, g in ((1, 0.8), (2, 2.0))]
    together = pipe([video_request(frames=5, seed=1, guidance=0.8), video_request(frames=5, seed=2, guidance=2.0)])
    for a, b in zip(alone, together):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


class _RecordingScheduler:
    """Wraps the real scheduler and keeps every combined noise prediction it is given."""

    def __init__(self, inner, log):
        self._inner, self._log = inner, log

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def step(self, model_output, *args, **kwargs):
        self._log.append(model_output.clone())
        return self._inner.step(model_output, *args, **kwargs)


@pytest.mark.parametrize("ramped", [False, True])
def test_a_frame_shared_by_windows_gets_the_blend_of_their_predictions(tiny, monkeypatch, ramped):
    """Stub UNet: window w predicts (position in window + 10 w); the scheduler sees their per-frame blend."""
    log: list[torch.Tensor] = []
    real = video_pipeline.hellomeme_scheduler
    monkeypatch.setattr(video_pipeline, "hellomeme_scheduler", lambda: _RecordingScheduler(real(), log))
    rule = WindowRule(size=4, overlap=2, ramped=ramped)
    pipe = HelloMemeVideoPipeline(tiny, PipelineConfig(windows=rule, frames_per_batch=64))

    def stub_unet(sample, timestep, text, reference, control, ends, num_frames):
        windows = sample.shape[0] // num_frames
        position = torch.arange(num_frames).repeat(windows)
        window = torch.arange(windows).repeat_interleave(num_frames) % (windows // 2)
        return (position + 10 * window).float()[:, None, None, None].expand_as(sample).clone()

    pipe._denoise = stub_unet
    pipe([video_request(frames=10, steps=2)])
    final = plan_passes(10, rule)[-1]
    totals, weights = np.zeros(10), np.zeros(10)
    for index, (window, w) in enumerate(zip(final.windows, final.weights)):
        for position, frame in enumerate(window):
            totals[frame] += w[position] * (position + 10 * index)
            weights[frame] += w[position]
    expected = totals / weights
    last_pass = log[-2:]  # the final pass's two steps
    for prediction in last_pass:
        assert prediction.shape[0] == 10
        np.testing.assert_allclose(prediction[:, 0, 0, 0].numpy(), expected, rtol=1e-6)
        assert torch.all(prediction == prediction[:, :1, :1, :1])
    if not ramped:
        assert expected[2] == pytest.approx((2 + 10) / 2)  # frame 2: position 2 of window 0, 0 of window 1


def test_windows_longer_than_the_motion_module_allows_are_refused(tiny):
    with pytest.raises(ValueError, match="exceed"):
        HelloMemeVideoPipeline(tiny, PipelineConfig(windows=WindowRule(size=31)))


def test_v5b_reference_adapter_renders_too():
    pipe = HelloMemeVideoPipeline(tiny_components(release="v5b"), PipelineConfig(windows=TEST_WINDOWS,
                                                                                  frames_per_batch=32))
    (frames,) = pipe([video_request(frames=4)])
    assert frames.shape == (4, TEST_SIZE, TEST_SIZE, 3)
