"""A whole run against a transcription of the official script's ``gen_video``, on the same tiny modules.

The transcription follows ``HM5VideoPipeline.__call__`` / ``gen_video`` step by step: one
``torch.Generator(seed)``; the reference latent from ``latent_dist.sample(generator)``; one block of
starting noise from ``randn_tensor`` of ``T + window + 1`` frames whose first frames every pass
takes; the recursion on window end frames; windows denoised one at a time at batch 2 (or 1 without
guidance), predictions plainly averaged; the scheduler stepping the (1, C, F, h, w) latents with the
generator.  Our batched pipeline must end on the same latents.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from hellomeme.control import ControlResiduals
from hellomeme.denoiser import UNetFeatures
from hellomeme.images import to_model_range
from hellomeme.pose_control import draw_pose_images
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig, hellomeme_scheduler
from hellomeme.windows import WindowRule

from .conftest import video_request

WINDOW = 4


def _cat(parts, dim=0):
    return torch.cat(parts, dim=dim)


@torch.inference_mode()
def official_latents(c, request, prompt_text: str, window: int = WINDOW) -> torch.Tensor:
    guided = request.guidance > 1
    generator = torch.Generator().manual_seed(request.seed)
    tokenizer = c.tokenizer

    def encode(encoder, texts):
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return encoder(ids)[0]

    texts = ["", prompt_text] if guided else [prompt_text]
    reference_text, denoiser_text = encode(c.reference_text_encoder, texts), encode(c.denoiser_text_encoder, texts)
    image = to_model_range(request.reference_image[None])
    reference_latent = c.encoder_vae.encode(image).latent_dist.sample(generator=generator)
    reference_latent = reference_latent * c.encoder_vae.config.scaling_factor
    channels, height, width = reference_latent.shape[1:]
    frames = request.num_frames
    input_noise = randn_tensor([1, channels, frames + window + 1, height, width], generator=generator,
                               dtype=denoiser_text.dtype)
    cached = c.reference_net(_cat([torch.zeros_like(reference_latent), reference_latent]) if guided
                             else reference_latent, reference_text)

    poses = to_model_range(draw_pose_images(request.head_pose, canvas=request.size))
    codes = c.expression_encoder(to_model_range(request.expression_faces))
    control = c.control_proj(c.control_net(poses, codes))
    negative = c.control_proj(c.control_net(-torch.ones_like(poses[:1]), torch.zeros_like(codes[:1])))

    def control_for(chunk):
        def pick(cond, neg):
            rows = cond[list(chunk)]
            return _cat([neg.expand(len(chunk), *neg.shape[1:]), rows]) if guided else rows
        return ControlResiduals(tuple(pick(t, n) for t, n in zip(control.down, negative.down)),
                                tuple(pick(t, n) for t, n in zip(control.up, negative.up)))

    def gen_ref_cache(latent):  # (1, C, h, w)
        batch = _cat([torch.zeros_like(latent), latent]) if guided else latent
        return c.reference_net(batch, denoiser_text)

    def gen_video(indexes, pad_dict, depth):
        num = len(indexes)
        if num <= window:
            chunks, chunks_noise = [copy.deepcopy(indexes)], [list(range(num))]
        else:
            stride = window - 1
            noise_index = list(range(num))
            chunks = [indexes[i:min(i + window, num)] for i in range(0, num, stride)]
            chunks_noise = [noise_index[i:min(i + window, num)] for i in range(0, num, stride)]
            if len(chunks[-1]) == 1:
                chunks, chunks_noise = chunks[:-1], chunks_noise[:-1]
            margin = sorted({ch[0] for ch in chunks} | {ch[-1] for ch in chunks})
            gen_video(margin, pad_dict, depth + 1)
        scheduler = hellomeme_scheduler()
        scheduler.set_timesteps(request.steps)
        latents = input_noise[:, :, :num] * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            branches = 2 if guided else 1
            prediction = torch.zeros(branches, channels, num, height, width)
            counter = torch.zeros(1, 1, num, 1, 1)
            model_input = scheduler.scale_model_input(latents, t)
            for chunk, chunk_noise in zip(chunks, chunks_noise):
                ends = None
                if chunk[0] in pad_dict and chunk[-1] in pad_dict:
                    first, last = pad_dict[chunk[0]], pad_dict[chunk[-1]]
                    ends = UNetFeatures(tuple(torch.stack(p, dim=1) for p in zip(first.down, last.down)),
                                        tuple(torch.stack(p, dim=1) for p in zip(first.up, last.up)))
                sample = model_input[0, :, chunk_noise].transpose(0, 1)  # (F, C, h, w)
                sample = _cat([sample] * branches)
                out = c.denoiser(sample, t, denoiser_text, cached.up, control_for(chunk), ends, len(chunk))
                out = out.unflatten(0, (branches, len(chunk))).transpose(1, 2)  # (B, C, F, h, w)
                prediction[:, :, chunk_noise] += out
                counter[:, :, chunk_noise] += 1
            prediction = prediction / counter
            if guided:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + request.guidance * (cond - uncond)
            latents = scheduler.step(prediction, t, latents, generator=generator).prev_sample
        if depth == 0:
            return latents[:, :, :num]
        for chunk, chunk_noise in zip(chunks, chunks_noise):
            for index, position in zip(chunk, chunk_noise):
                pad_dict[index] = gen_ref_cache(latents[:, :, position])
        return None

    return gen_video(list(range(frames)), {}, 0)[0].transpose(0, 1)  # (T, C, h, w)


@pytest.mark.parametrize("frames,guidance", [(9, 1.5), (11, 0.8)])
def test_whole_run_matches_the_official_control_flow(tiny, frames, guidance):
    """9 frames: windows 0-3, 3-6, 6-8 after an end-frame pass; 11 frames recurse twice (window 4)."""
    request = video_request(frames=frames, seed=21, guidance=guidance, steps=2)
    config = PipelineConfig(windows=WindowRule(size=WINDOW, overlap=1), default_prompt="a face", frames_per_batch=64)
    pipe = HelloMemeVideoPipeline(tiny, config)
    captured = []
    pipe._decode = lambda latents: captured.append(latents.clone()) or np.zeros((len(latents), 1, 1, 3), np.uint8)
    pipe([request])
    expected = official_latents(tiny, request, "a face")
    torch.testing.assert_close(captured[0], expected, rtol=1e-4, atol=1e-4)
