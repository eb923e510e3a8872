"""HelloMeme v5 reference adapters: how each frame sees the reference portrait's features.

One block sits before each of the SD1.5 UNet's four up blocks (latents 8 to 64 at 512 px).
The reference features come from the reference net (SD1.5's UNet at t=0 on the reference
latent), taken at the same four points.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from hellomeme.knitting import SpatialKnittingAttention, SpatioTemporalKnittingReference


class HM5ReferenceAdapter(ModelMixin, ConfigMixin):
    """Spatial knitting attention before each up block (hub: songkey/hm5_reference).

    ``block_down_channels`` and ``use_3d`` are kept because the published config carries them.
    """

    @register_to_config
    def __init__(
        self,
        block_down_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        block_up_channels: tuple[int, ...] = (1280, 1280, 1280, 640),
        num_attention_heads: int = 8,
        use_3d: bool = False,
        time_embed_dim: int = 1280,
    ) -> None:
        super().__init__()
        self.reference_modules_up = nn.ModuleList(
            SpatialKnittingAttention(channels, num_attention_heads, time_embed_dim) for channels in block_up_channels
        )

    def forward(
        self, index: int, hidden_states: torch.Tensor, reference: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        """Knit the input of up block ``index`` with the reference features taken at the same point."""
        return self.reference_modules_up[index](hidden_states, reference, num_frames)


class HM5bReferenceAdapter(ModelMixin, ConfigMixin):
    """The v5b variant: the reference is refined by its own knitting attention first (songkey/hm5b_reference)."""

    @register_to_config
    def __init__(
        self,
        block_down_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        block_up_channels: tuple[int, ...] = (1280, 1280, 1280, 640),
        num_attention_heads: int = 8,
        use_3d: bool = False,
    ) -> None:
        super().__init__()
        self.reference_modules_up = nn.ModuleList(
            SpatioTemporalKnittingReference(channels, num_attention_heads) for channels in block_up_channels
        )

    def forward(
        self, index: int, hidden_states: torch.Tensor, reference: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        return self.reference_modules_up[index](hidden_states, reference, num_frames)
