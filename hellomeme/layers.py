"""Small building blocks shared by the HelloMeme adapters.

Parameter names follow diffusers' ``Attention``, ``FeedForward``, ``TimestepEmbedding`` and
``SinusoidalPositionalEmbedding`` (``to_q``, ``to_out.0``, ``ff.net.0.proj``, ``linear_1``,
``pos_embed.pe``) because the published HelloMeme weights were saved from modules built on
those classes; our own implementations keep the names so the weights load strictly, and run
attention through PyTorch's ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# CUDA attention kernels put the batch dimension on a grid axis capped at 65535 blocks;
# temporal attention over every latent pixel easily exceeds it, so we split big batches.
_MAX_ATTENTION_BATCH = 32768


class MultiHeadAttention(nn.Module):
    """Multi-head (self or cross) attention with diffusers' parameter names, computed with SDPA.

    ``query_len`` lets a caller ask for outputs of the first ``query_len`` tokens only: the
    knitting attentions concatenate frame and reference tokens but only keep the frame half,
    and skipping the other half's queries gives exactly the same kept outputs for half the work.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        qkv_bias: bool = False,
        out_bias: bool = True,
    ) -> None:
        super().__init__()
        if heads < 1 or dim_head < 1:
            raise ValueError(f"attention needs heads >= 1 and dim_head >= 1, got {heads} x {dim_head}")
        inner_dim = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner_dim, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner_dim, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner_dim, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim, bias=out_bias), nn.Dropout(0.0)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None = None,
        query_len: int | None = None,
        context_repeats: int = 1,
    ) -> torch.Tensor:
        """Attend ``hidden_states`` (N, L, C) to ``context`` (N / context_repeats, S, Cc), or to itself.

        ``context_repeats`` > 1 means each context row serves that many consecutive query rows
        (as ``repeat_interleave`` would); keys and values are projected once and then repeated.
        """
        queries = hidden_states if query_len is None else hidden_states[:, :query_len]
        source = hidden_states if context is None else context
        key = self.to_k(source)
        value = self.to_v(source)
        if context_repeats > 1:
            key = key.repeat_interleave(context_repeats, dim=0)
            value = value.repeat_interleave(context_repeats, dim=0)
        query = self.to_q(queries)
        out = self._attend(query, key, value)
        return self.to_out[0](out)

    def _attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch = query.shape[0]
        if batch > _MAX_ATTENTION_BATCH:
            chunks = [
                self._attend(query[i : i + _MAX_ATTENTION_BATCH], key[i : i + _MAX_ATTENTION_BATCH],
                             value[i : i + _MAX_ATTENTION_BATCH])
                for i in range(0, batch, _MAX_ATTENTION_BATCH)
            ]
            return torch.cat(chunks, dim=0)
        q = query.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2)
        k = key.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2)
        v = value.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).flatten(2)


class GEGLU(nn.Module):
    """Gated GELU projection (``proj`` maps to twice the width; one half gates the other)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(hidden_states).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward laid out as diffusers' ``FeedForward`` (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, inner_dim), nn.Dropout(0.0), nn.Linear(inner_dim, dim)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            hidden_states = layer(hidden_states)
        return hidden_states


class TimestepMLP(nn.Module):
    """Two linear layers with SiLU between, named as diffusers' ``TimestepEmbedding``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(hidden_states)))


def timestep_features(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of scalar values, cosines first (diffusers' ``Timesteps(dim, True, 0)``).

    HelloMeme feeds expression coefficients through this as if they were timesteps.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    angles = values.float()[:, None] * torch.exp(exponent)[None, :]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2 == 1:
        features = F.pad(features, (0, 1))
    return features


def interleaved_sinusoids(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim) table with sin on even and cos on odd channels (diffusers' layout)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


def split_sinusoids(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(length, dim) table with all sines then all cosines, as HelloMeme v5 computes on the fly."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32, device=device) / half)
    angles = torch.arange(length, dtype=torch.float32, device=device)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).to(dtype)


class SinusoidalPositions(nn.Module):
    """Adds a fixed sinusoidal table to a (N, L, C) sequence; the table is a saved buffer ``pe``."""

    def __init__(self, dim: int, max_length: int) -> None:
        super().__init__()
        self.register_buffer("pe", interleaved_sinusoids(max_length, dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        length = hidden_states.shape[1]
        if length > self.pe.shape[1]:
            raise ValueError(f"sequence of {length} is longer than the {self.pe.shape[1]} positions this table holds")
        return hidden_states + self.pe[:, :length]


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a module's parameters, so a freshly added residual branch starts as the identity."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module
