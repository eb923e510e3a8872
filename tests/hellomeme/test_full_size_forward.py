"""The full-size v5 modules wire together: one denoiser pass at 512 px on the meta device, and its cost."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from hellomeme.control import HM5ControlNetBase, HM5SD15ControlProj
from hellomeme.denoiser import HelloMemeUNet, ReferenceNet
from hellomeme.motion_adapter import HM5MotionAdapter
from hellomeme.reference_adapter import HM5ReferenceAdapter


def test_full_size_window_pass_runs_and_costs_about_1_4_tflop_per_frame():
    frames = 4
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
            attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        denoiser = HelloMemeUNet(unet, HM5ReferenceAdapter(), HM5MotionAdapter())
        text = torch.zeros(1, 77, 768)
        features = ReferenceNet(unet)(torch.zeros(1, 4, 64, 64), text)
        control = HM5SD15ControlProj()(HM5ControlNetBase()(torch.zeros(frames, 3, 512, 512), torch.zeros(frames, 548)))
        ends = features.map(lambda t: torch.stack([t, t], dim=1))
        with FlopCounterMode(display=False) as counter:
            noise = denoiser(torch.zeros(frames, 4, 64, 64), 999, text, features.up, control, ends, frames)
    assert noise.shape == (frames, 4, 64, 64)
    assert [tuple(t.shape[1:]) for t in features.up] == [(1280, 8, 8), (1280, 16, 16), (1280, 32, 32), (640, 64, 64)]
    assert [tuple(t.shape[1:]) for t in control.down] == [(320, 32, 32), (640, 16, 16), (1280, 8, 8), (1280, 8, 8)]
    tflop_per_frame = counter.get_total_flops() / frames / 1e12
    assert 1.2 < tflop_per_frame < 1.6  # SD1.5's UNet alone: 0.80
