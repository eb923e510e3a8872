"""Our building blocks compute what the diffusers blocks HelloMeme was trained with compute, on the same weights."""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward as DiffusersFeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import SinusoidalPositionalEmbedding, TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from hellomeme.layers import FeedForward, MultiHeadAttention, SinusoidalPositions, TimestepMLP, timestep_features
from hellomeme.motion_adapter import TemporalTransformer


def _same(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    theirs.eval()


def test_attention_matches_diffusers_self_and_cross():
    torch.manual_seed(0)
    x, context = torch.randn(3, 10, 32), torch.randn(3, 5, 24)
    for context_dim in (None, 24):
        theirs = Attention(query_dim=32, heads=4, dim_head=8, bias=False, cross_attention_dim=context_dim,
                           out_bias=True)
        ours = MultiHeadAttention(32, 4, 8, context_dim=context_dim)
        _same(ours, theirs)
        source = None if context_dim is None else context
        torch.testing.assert_close(ours(x, source), theirs(x, source))


def test_attention_query_subset_and_repeated_context_are_exact():
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 2, 8, context_dim=12)
    x, context = torch.randn(6, 10, 16), torch.randn(2, 4, 12)
    full = attention(x, context.repeat_interleave(3, dim=0))
    torch.testing.assert_close(attention(x, context, context_repeats=3), full)
    torch.testing.assert_close(attention(x, context.repeat_interleave(3, 0), query_len=4), full[:, :4])


def test_feed_forward_matches_diffusers_geglu():
    torch.manual_seed(0)
    theirs = DiffusersFeedForward(16, activation_fn="geglu", inner_dim=64, bias=True)
    ours = FeedForward(16, 64)
    _same(ours, theirs)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(ours(x), theirs(x))


def test_timestep_embeddings_match_diffusers():
    values = torch.tensor([0.0, 0.3, -2.5, 11.0, 500.0])
    torch.testing.assert_close(timestep_features(values, 32), Timesteps(32, True, 0)(values))
    theirs, ours = TimestepEmbedding(12, 8), TimestepMLP(12, 8)
    _same(ours, theirs)
    x = torch.randn(4, 12)
    torch.testing.assert_close(ours(x), theirs(x))


def test_positions_table_matches_diffusers():
    torch.testing.assert_close(SinusoidalPositions(16, 32).pe, SinusoidalPositionalEmbedding(16, 32).pe)


def test_temporal_transformer_matches_animatediff_block():
    """HM5's motion blocks are diffusers' AnimateDiffTransformer3D with sinusoidal frame positions."""
    torch.manual_seed(0)
    theirs = AnimateDiffTransformer3D(
        in_channels=16, num_attention_heads=2, attention_head_dim=8, norm_num_groups=4, double_self_attention=True,
        positional_embeddings="sinusoidal", num_positional_embeddings=32,
    )
    ours = TemporalTransformer(16, num_attention_heads=2, norm_num_groups=4, max_frames=32)
    _same(ours, theirs)
    x = torch.randn(2 * 5, 16, 3, 4)
    torch.testing.assert_close(ours(x, num_frames=5), theirs(x, num_frames=5), rtol=1e-4, atol=1e-5)
