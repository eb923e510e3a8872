"""Spatial knitting attention: attention along rows, then along columns, optionally knitted with a reference.

HelloMeme's answer to "how does a frame see the reference portrait": the frame's feature map
and the reference's are put side by side and each row attends within itself (so a frame pixel
sees the reference pixels of the same row), then stacked and each column attends within itself.
Cost grows with H*W*(H+W) instead of (H*W)^2 for full 2-D attention.
"""

from __future__ import annotations

import torch
from torch import nn

from hellomeme.layers import MultiHeadAttention, split_sinusoids, zero_init


def knit(
    frames: torch.Tensor,
    reference: torch.Tensor | None,
    row_attention: MultiHeadAttention,
    column_attention: MultiHeadAttention,
    norm: nn.LayerNorm,
) -> torch.Tensor:
    """Row-then-column attention of ``frames`` (N, C, H, W), each joined with ``reference`` (N, C, H, W).

    Positions are encoded with HelloMeme v5's on-the-fly sinusoids (added before the shared
    layer norm). Only the frame half of each joined sequence is kept, so its queries are all we
    compute. Returns (N, C, H, W).
    """
    n, c, h, w = frames.shape
    rows = frames.permute(0, 2, 3, 1)  # N H W C
    reference_nhwc = None if reference is None else reference.permute(0, 2, 3, 1)
    if reference_nhwc is not None:
        rows = torch.cat([rows, reference_nhwc], dim=2)  # N H 2W C
    sequence = rows.reshape(n * h, rows.shape[2], c)
    sequence = norm(sequence + split_sinusoids(sequence.shape[1], c, sequence.device, sequence.dtype))
    knitted = row_attention(sequence, query_len=w).reshape(n, h, w, c)

    columns = knitted.transpose(1, 2)  # N W H C
    if reference_nhwc is not None:
        columns = torch.cat([columns, reference_nhwc.transpose(1, 2)], dim=2)  # N W 2H C
    sequence = columns.reshape(n * w, columns.shape[2], c)
    sequence = norm(sequence + split_sinusoids(sequence.shape[1], c, sequence.device, sequence.dtype))
    knitted = column_attention(sequence, query_len=h).reshape(n, w, h, c)
    return knitted.permute(0, 3, 2, 1)


class SpatialKnittingAttention(nn.Module):
    """HelloMeme v5's reference block: knit the frame with the reference, add back through a zero conv.

    ``time_emb_proj`` is part of the published weights but not used by the v5 forward pass.
    """

    def __init__(self, channels: int, num_attention_heads: int = 8, time_embed_dim: int = 1280) -> None:
        super().__init__()
        head_dim = channels // num_attention_heads
        self.time_emb_proj = nn.Linear(time_embed_dim, channels)
        self.attn1 = MultiHeadAttention(channels, num_attention_heads, head_dim)
        self.attn2 = MultiHeadAttention(channels, num_attention_heads, head_dim)
        self.norm = nn.LayerNorm(channels)
        self.proj = zero_init(nn.Conv2d(channels, channels, kernel_size=3, padding=1))

    def forward(self, hidden_states: torch.Tensor, reference: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``hidden_states`` (B*F, C, H, W) frames; ``reference`` (B, C, H, W), one per video window."""
        reference = _per_frame(reference, hidden_states.shape[0], num_frames)
        knitted = knit(hidden_states, reference, self.attn1, self.attn2, self.norm)
        return hidden_states + self.proj(knitted)


class KnitAttention(nn.Module):
    """Knitting attention with its own input conv and zero-initialised output conv.

    The control projector uses it without a reference (plain row/column self-attention);
    the v5b reference block uses it with one. Returns the residual alone or added to the input.
    """

    def __init__(self, channels: int, mid_channels: int, num_attention_heads: int = 8) -> None:
        super().__init__()
        head_dim = mid_channels // num_attention_heads
        self.conv_in = nn.Conv2d(channels, mid_channels, kernel_size=3, padding=1)
        self.attnx = MultiHeadAttention(mid_channels, num_attention_heads, head_dim)
        self.attny = MultiHeadAttention(mid_channels, num_attention_heads, head_dim)
        self.norm = nn.LayerNorm(mid_channels)
        self.proj = zero_init(nn.Conv2d(mid_channels, channels, kernel_size=3, padding=1))

    def forward(
        self, hidden_states: torch.Tensor, reference: torch.Tensor | None = None, residual: bool = True
    ) -> torch.Tensor:
        frames = self.conv_in(hidden_states)
        reference = None if reference is None else self.conv_in(reference)
        out = self.proj(knit(frames, reference, self.attnx, self.attny, self.norm))
        return hidden_states + out if residual else out


class SpatioTemporalKnittingReference(nn.Module):
    """HelloMeme v5b's reference block: refine the reference by self-knitting, then knit the frame with it."""

    def __init__(self, channels: int, num_attention_heads: int = 8) -> None:
        super().__init__()
        self.attn_ref = KnitAttention(channels, channels, num_attention_heads)
        self.attn = KnitAttention(channels, channels, num_attention_heads)

    def forward(self, hidden_states: torch.Tensor, reference: torch.Tensor, num_frames: int) -> torch.Tensor:
        # The refinement sees one reference image at a time, so it is done once per window
        # and then shared by the window's frames.
        refined = self.attn_ref(reference, residual=False)
        refined = _per_frame(refined, hidden_states.shape[0], num_frames)
        return self.attn(hidden_states, refined, residual=True)


def _per_frame(reference: torch.Tensor, batch_frames: int, num_frames: int) -> torch.Tensor:
    if reference.shape[0] == batch_frames:
        return reference
    if reference.shape[0] * num_frames != batch_frames:
        raise ValueError(
            f"reference batch {reference.shape[0]} does not match {batch_frames} frames in windows of {num_frames}"
        )
    return reference.repeat_interleave(num_frames, dim=0)
