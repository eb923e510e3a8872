"""HelloMeme v5 motion adapter: temporal attention across a window's frames.

Each latent pixel attends over the window's frames (AnimateDiff-style temporal transformers).
When the window's two end frames were already generated (boundary frames first), their
reference-net features are placed before and after the window and a second transformer
(``attn_pad``) attends over those F+2 frames first, so neighbouring windows agree at the seams.
With end-frame features the block computes ``2*x + delta_pad + delta``: the end-frame pass
returns ``x + delta_pad``, the frame input ``x`` is added again, then the plain temporal pass
adds its own ``delta``.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from hellomeme.layers import FeedForward, MultiHeadAttention, SinusoidalPositions


class TemporalTransformerBlock(nn.Module):
    """Pre-norm transformer block over frames: two self-attentions and a GEGLU feed-forward.

    Laid out like diffusers' ``BasicTransformerBlock(double_self_attention=True,
    positional_embeddings="sinusoidal")``: frame positions are added after each attention norm.
    """

    def __init__(self, dim: int, num_attention_heads: int, max_frames: int) -> None:
        super().__init__()
        head_dim = dim // num_attention_heads
        self.pos_embed = SinusoidalPositions(dim, max_frames)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = MultiHeadAttention(dim, num_attention_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = MultiHeadAttention(dim, num_attention_heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, 4 * dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn1(self.pos_embed(self.norm1(hidden_states)))
        hidden_states = hidden_states + self.attn2(self.pos_embed(self.norm2(hidden_states)))
        return hidden_states + self.ff(self.norm3(hidden_states))


class TemporalTransformer(nn.Module):
    """Residual temporal transformer on (B*F, C, H, W) maps (diffusers' ``AnimateDiffTransformer3D`` layout)."""

    def __init__(self, channels: int, num_attention_heads: int, norm_num_groups: int, max_frames: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, num_attention_heads, max_frames)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        batch_frames, channels, height, width = hidden_states.shape
        batch = batch_frames // num_frames
        # Group norm statistics span the whole clip (channels x frames x pixels), as in AnimateDiff.
        video = hidden_states.reshape(batch, num_frames, channels, height, width).transpose(1, 2)
        video = self.norm(video)
        sequence = video.permute(0, 3, 4, 2, 1).reshape(batch * height * width, num_frames, channels)
        sequence = self.proj_in(sequence)
        for block in self.transformer_blocks:
            sequence = block(sequence)
        sequence = self.proj_out(sequence)
        delta = sequence.reshape(batch, height, width, num_frames, channels).permute(0, 3, 4, 1, 2)
        return hidden_states + delta.reshape(batch_frames, channels, height, width)


class WindowMotionModule(nn.Module):
    """One motion block: optional end-frame-conditioned pass (``attn_pad``), then the temporal pass (``attn1``)."""

    def __init__(self, channels: int, num_attention_heads: int, norm_num_groups: int, max_frames: int) -> None:
        super().__init__()
        self.attn1 = TemporalTransformer(channels, num_attention_heads, norm_num_groups, max_frames)
        self.attn_pad = TemporalTransformer(channels, num_attention_heads, norm_num_groups, max_frames)

    def forward(
        self, hidden_states: torch.Tensor, num_frames: int, end_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``hidden_states`` (B*F, C, H, W); ``end_features`` (B, 2, C, H, W): first and last frame features."""
        if end_features is not None:
            batch_frames, channels, height, width = hidden_states.shape
            batch = batch_frames // num_frames
            frames = hidden_states.reshape(batch, num_frames, channels, height, width)
            padded = torch.cat([end_features[:, :1], frames, end_features[:, 1:]], dim=1)
            padded = self.attn_pad(padded.reshape(-1, channels, height, width), num_frames + 2)
            padded = padded.reshape(batch, num_frames + 2, channels, height, width)[:, 1:-1]
            hidden_states = padded.reshape(batch_frames, channels, height, width) + hidden_states
        return self.attn1(hidden_states, num_frames)


class HM5MotionAdapter(ModelMixin, ConfigMixin):
    """Motion blocks after each down block and before each up block (hub: songkey/hm5_motion)."""

    @register_to_config
    def __init__(
        self,
        block_down_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        block_up_channels: tuple[int, ...] = (1280, 1280, 1280, 640),
        num_attention_heads: int = 8,
        norm_num_groups: int = 32,
        max_frames: int = 32,
    ) -> None:
        super().__init__()
        self.motion_down = nn.ModuleList(
            WindowMotionModule(c, num_attention_heads, norm_num_groups, max_frames) for c in block_down_channels
        )
        self.motion_up = nn.ModuleList(
            WindowMotionModule(c, num_attention_heads, norm_num_groups, max_frames) for c in block_up_channels
        )

    def down(
        self, index: int, hidden_states: torch.Tensor, num_frames: int, end_features: torch.Tensor | None
    ) -> torch.Tensor:
        return self.motion_down[index](hidden_states, num_frames, end_features)

    def up(
        self, index: int, hidden_states: torch.Tensor, num_frames: int, end_features: torch.Tensor | None
    ) -> torch.Tensor:
        return self.motion_up[index](hidden_states, num_frames, end_features)
