"""SD1.5's frozen UNet, walked block by block, with HelloMeme's insertions.

Eight points of the UNet matter to HelloMeme: the output of each of the 4 down blocks and the
input of each of the 4 up blocks. The reference net reads the UNet's activations there; the
denoiser adds the control residuals there (a down-block residual also flows into that block's
skip connection), knits the up-block inputs with the reference features, and runs the motion
blocks there over the window's frames (frames folded into the batch for every spatial layer,
unfolded for the temporal ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from hellomeme.control import ControlResiduals


class UnsupportedUNetError(ValueError):
    """The checkpoint's UNet uses conditioning that SD1.5 (and so HelloMeme) does not have."""


@dataclass(frozen=True)
class UNetFeatures:
    """UNet activations at HelloMeme's 8 points: after each down block, before each up block."""

    down: tuple[torch.Tensor, ...]
    up: tuple[torch.Tensor, ...]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> UNetFeatures:
        return UNetFeatures(tuple(fn(t) for t in self.down), tuple(fn(t) for t in self.up))

    @staticmethod
    def concat(parts: list[UNetFeatures]) -> UNetFeatures:
        return UNetFeatures(
            tuple(torch.cat(ts) for ts in zip(*(p.down for p in parts))),
            tuple(torch.cat(ts) for ts in zip(*(p.up for p in parts))),
        )


def check_sd15_unet(unet: UNet2DConditionModel) -> None:
    """Refuse UNets whose extra conditioning we would silently drop."""
    config = unet.config
    problems = []
    if getattr(unet, "class_embedding", None) is not None:
        problems.append("class embeddings")
    if config.get("addition_embed_type") is not None:
        problems.append(f"addition_embed_type={config.get('addition_embed_type')}")
    if getattr(unet, "encoder_hid_proj", None) is not None:
        problems.append("encoder_hid_proj")
    if config.get("time_cond_proj_dim") is not None:
        problems.append("time_cond_proj_dim (LCM-style guidance embedding)")
    if len(unet.down_blocks) != 4 or len(unet.up_blocks) != 4:
        problems.append(f"{len(unet.down_blocks)} down / {len(unet.up_blocks)} up blocks (SD1.5 has 4 / 4)")
    if problems:
        raise UnsupportedUNetError("UNet is not SD1.5-shaped: " + ", ".join(problems))


def _time_embedding(
    unet: UNet2DConditionModel, timestep: torch.Tensor | float, batch: int, sample: torch.Tensor
) -> torch.Tensor:
    timestep = torch.as_tensor(timestep, device=sample.device)
    if timestep.ndim == 0:
        timestep = timestep.expand(batch)
    features = unet.time_proj(timestep).to(dtype=sample.dtype)
    return unet.time_embedding(features)


def _down_block(block: nn.Module, hidden: torch.Tensor, emb: torch.Tensor, text: torch.Tensor):
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=hidden, temb=emb, encoder_hidden_states=text)
    return block(hidden_states=hidden, temb=emb)


def _up_block(
    block: nn.Module, hidden: torch.Tensor, skips: tuple[torch.Tensor, ...], emb: torch.Tensor, text: torch.Tensor,
    upsample_size,
) -> torch.Tensor:
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=hidden, res_hidden_states_tuple=skips, temb=emb, encoder_hidden_states=text,
                     upsample_size=upsample_size)
    return block(hidden_states=hidden, res_hidden_states_tuple=skips, temb=emb, upsample_size=upsample_size)


def _needs_upsample_size(unet: UNet2DConditionModel, sample: torch.Tensor) -> bool:
    factor = 2 ** unet.num_upsamplers
    return any(s % factor != 0 for s in sample.shape[-2:])


class ReferenceNet(nn.Module):
    """SD1.5's UNet at t=0 on a clean latent, read at the 8 points (the last up block is never needed)."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        check_sd15_unet(unet)
        self.unet = unet

    @torch.no_grad()
    def forward(self, latents: torch.Tensor, text: torch.Tensor) -> UNetFeatures:
        """``latents`` (N, 4, H, W), ``text`` (N, L, D) -> features with batch N."""
        unet = self.unet
        emb = _time_embedding(unet, 0, latents.shape[0], latents)
        hidden = unet.conv_in(latents)
        skips: tuple[torch.Tensor, ...] = (hidden,)
        down = []
        for block in unet.down_blocks:
            hidden, block_skips = _down_block(block, hidden, emb, text)
            down.append(hidden)
            skips += block_skips
        hidden = unet.mid_block(hidden, emb, encoder_hidden_states=text)
        up = []
        forward_size = _needs_upsample_size(unet, latents)
        last = len(unet.up_blocks) - 1
        for index, block in enumerate(unet.up_blocks):
            up.append(hidden)
            if index == last:
                break
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            upsample_size = skips[-1].shape[2:] if forward_size else None
            hidden = _up_block(block, hidden, block_skips, emb, text, upsample_size)
        return UNetFeatures(tuple(down), tuple(up))


class HelloMemeUNet(nn.Module):
    """The denoiser: SD1.5 UNet + reference knitting + control residuals + motion blocks, over windows.

    Holds references to modules owned elsewhere (the UNet may be shared with the reference net).
    """

    def __init__(self, unet: UNet2DConditionModel, reference_adapter: nn.Module, motion_adapter: nn.Module) -> None:
        super().__init__()
        check_sd15_unet(unet)
        self.unet = unet
        self.reference_adapter = reference_adapter
        self.motion_adapter = motion_adapter

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        text: torch.Tensor,
        reference: tuple[torch.Tensor, ...],
        control: ControlResiduals | None,
        end_features: UNetFeatures | None,
        num_frames: int,
    ) -> torch.Tensor:
        """Predict noise for B windows of F frames.

        sample (B*F, 4, H, W) with each window's frames consecutive; text (B, L, D);
        reference: the reference net's 4 up-block inputs, (B, C, h, w) each; control: residuals
        with batch B*F; end_features: reference-net features of each window's first and last
        frame, (B, 2, C, h, w) each, or None. Returns (B*F, 4, H, W).
        """
        unet = self.unet
        windows = sample.shape[0] // num_frames
        emb = _time_embedding(unet, timestep, windows, sample).repeat_interleave(num_frames, dim=0)
        text = text.repeat_interleave(num_frames, dim=0)
        forward_size = _needs_upsample_size(unet, sample)

        hidden = unet.conv_in(sample)
        skips: tuple[torch.Tensor, ...] = (hidden,)
        for index, block in enumerate(unet.down_blocks):
            hidden, block_skips = _down_block(block, hidden, emb, text)
            if control is not None:
                # The block's last skip is its output: the residual reaches the skip connection too.
                hidden = hidden + control.down[index]
                block_skips = block_skips[:-1] + (hidden,)
            skips += block_skips
            ends = None if end_features is None else end_features.down[index]
            hidden = self.motion_adapter.down(index, hidden, num_frames, ends)

        hidden = unet.mid_block(hidden, emb, encoder_hidden_states=text)

        last = len(unet.up_blocks) - 1
        for index, block in enumerate(unet.up_blocks):
            if control is not None:
                hidden = hidden + control.up[index]
            hidden = self.reference_adapter(index, hidden, reference[index], num_frames)
            ends = None if end_features is None else end_features.up[index]
            hidden = self.motion_adapter.up(index, hidden, num_frames, ends)
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            upsample_size = skips[-1].shape[2:] if forward_size and index < last else None
            hidden = _up_block(block, hidden, block_skips, emb, text, upsample_size)

        if unet.conv_norm_out is not None:
            hidden = unet.conv_act(unet.conv_norm_out(hidden))
        return unet.conv_out(hidden)
