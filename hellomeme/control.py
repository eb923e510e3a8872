"""HelloMeme v5 control: head-pose image + expression code -> residuals at 8 points of the UNet.

``HM5ControlNetBase`` turns the pose image (downsampled to latent size) into a small U-Net of
feature maps whose every level cross-attends to the expression tokens; ``HM5SD15ControlProj``
maps those maps to the channel counts of SD1.5's UNet: one residual after each of the 4 down
blocks and one before each of the 4 up blocks. Both run once per frame, before denoising.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from hellomeme.knitting import KnitAttention
from hellomeme.layers import FeedForward, MultiHeadAttention, TimestepMLP, split_sinusoids, timestep_features

EXPRESSION_DIM = 548  # PD-FGC motion code: eyes 6 + emotion 30 + mouth 512
ARKIT_DIM = 51
# HelloMeme scales coefficients before their sinusoidal features (they are small numbers).
EXPRESSION_SCALE = 20.0


@dataclass(frozen=True)
class ControlFeatures:
    """The control U-Net's outputs, coarsest first: feat_0 (8x8 at 512 px) ... feat_3 (64x64)."""

    maps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ControlResiduals:
    """Residuals for SD1.5's UNet: ``down[i]`` after down block i, ``up[i]`` before up block i."""

    down: tuple[torch.Tensor, ...]
    up: tuple[torch.Tensor, ...]

    def map(self, fn) -> ControlResiduals:
        return ControlResiduals(tuple(fn(t) for t in self.down), tuple(fn(t) for t in self.up))


class ResidualDownBlock(nn.Module):
    """Stride-2 residual block with instance norms (torchvision ``BasicBlock`` layout)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.InstanceNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.InstanceNorm2d(out_channels)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=2, bias=False),
            nn.InstanceNorm2d(out_channels),
            nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


def upsample_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.InstanceNorm2d(out_channels),
        nn.SiLU(),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    )


class ExpressionCrossAttention(nn.Module):
    """Row then column cross-attention of a feature map to the expression tokens, then a feed-forward.

    No residual inside: the block's output replaces its input (as in HelloMeme v5).
    """

    def __init__(self, channels: int, cross_attention_dim: int, num_attention_heads: int = 8) -> None:
        super().__init__()
        head_dim = channels // num_attention_heads
        self.conv_in = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm = nn.LayerNorm(channels)
        self.attn1 = MultiHeadAttention(channels, num_attention_heads, head_dim, context_dim=cross_attention_dim)
        self.attn2 = MultiHeadAttention(channels, num_attention_heads, head_dim, context_dim=cross_attention_dim)
        self.ff = FeedForward(channels, 16 * channels)
        self.proj = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W), ``tokens`` (N, L, D) -> (N, C, H, W)."""
        x = self.conv_in(x)
        n, c, h, w = x.shape
        tokens = tokens + split_sinusoids(tokens.shape[1], tokens.shape[2], tokens.device, tokens.dtype)
        rows = x.permute(0, 2, 3, 1).reshape(n * h, w, c)
        rows = rows + split_sinusoids(w, c, rows.device, rows.dtype)
        rows = self.attn1(self.norm(rows), tokens, context_repeats=h)
        columns = rows.reshape(n, h, w, c).transpose(1, 2).reshape(n * w, h, c)
        columns = columns + split_sinusoids(h, c, columns.device, columns.dtype)
        columns = self.attn2(self.norm(columns), tokens, context_repeats=w)
        pixels = columns.reshape(n, w, h, c).transpose(1, 2).reshape(n, h * w, c)
        pixels = self.norm(self.ff(pixels))
        return self.proj(pixels.reshape(n, h, w, c).permute(0, 3, 1, 2))


class PoseExpressionUNet(nn.Module):
    """Three stride-2 levels with expression cross-attention, then upsampling with skips."""

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: tuple[int, ...], cross_attention_dim: int,
        num_attention_heads: int,
    ) -> None:
        super().__init__()
        down = [in_channels, *mid_channels]
        up = [*reversed(mid_channels), out_channels]
        self.down_blocks = nn.ModuleList(ResidualDownBlock(down[i - 1], down[i]) for i in range(1, len(down)))
        self.up_blocks = nn.ModuleList(upsample_block(up[i - 1], up[i]) for i in range(1, len(up)))
        self.attn_blocks = nn.ModuleList(
            ExpressionCrossAttention(c, cross_attention_dim, num_attention_heads) for c in mid_channels
        )

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> ControlFeatures:
        skips = []
        for down_block, attn_block in zip(self.down_blocks, self.attn_blocks):
            x = attn_block(down_block(x), tokens)
            skips.append(x)
        outputs = [x]
        for block, skip in zip(self.up_blocks[:-1], reversed(skips[:-1])):
            x = block(x) + skip
            outputs.append(x)
        outputs.append(self.up_blocks[-1](x))
        return ControlFeatures(tuple(outputs))


class HM5ControlNetBase(ModelMixin, ConfigMixin):
    """Head-pose image + expression code -> control feature maps (hub: songkey/hm5_control_base).

    The expression code (v5: 548-d PD-FGC) becomes ``expression_tokens`` tokens of
    ``cross_attention_dim``: each coefficient gets sinusoidal features, a small MLP mixes the
    coefficients into tokens, a second MLP widens the tokens. The ``exp_*``/``face_*`` layers
    belong to the older ARKit-blendshape control path, which v5 does not run; they are kept so the
    weights load strictly.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        cross_attention_dim: int = 2048,
        block_out_channels: tuple[int, ...] = (320, 640, 1280),
        out_channels: int = 320,
        expression_dim: int = EXPRESSION_DIM,
        expression_tokens: int = 16,
        coefficient_embedding_dim: int = 1024,
        num_attention_heads: int = 8,
    ) -> None:
        super().__init__()
        self.emo_pre_proj = TimestepMLP(expression_dim, expression_tokens)
        self.emo_proj = TimestepMLP(coefficient_embedding_dim, cross_attention_dim)
        self.exp_pre_proj = TimestepMLP(ARKIT_DIM, expression_tokens)
        self.face_pre_proj = TimestepMLP(3, expression_tokens)
        self.exp_proj = TimestepMLP(coefficient_embedding_dim, cross_attention_dim)
        self.face_proj = TimestepMLP(coefficient_embedding_dim, cross_attention_dim)
        self.ctrl_attn = PoseExpressionUNet(
            in_channels, out_channels, tuple(block_out_channels), cross_attention_dim, num_attention_heads
        )

    def expression_tokens(self, expression: torch.Tensor) -> torch.Tensor:
        """(N, expression_dim) codes -> (N, expression_tokens, cross_attention_dim) tokens."""
        n, dim = expression.shape
        features = timestep_features((expression * EXPRESSION_SCALE).reshape(-1), self.config.coefficient_embedding_dim)
        features = features.reshape(n, dim, -1).transpose(1, 2).to(self.dtype)  # N x E x dim
        tokens = self.emo_pre_proj(features).transpose(1, 2)  # N x tokens x E
        return self.emo_proj(tokens)

    def forward(self, pose_images: torch.Tensor, expression: torch.Tensor) -> ControlFeatures:
        """``pose_images`` (N, 3, S, S) in [-1, 1]; ``expression`` (N, expression_dim) -> control maps."""
        size = (pose_images.shape[-2] // 8, pose_images.shape[-1] // 8)
        condition = F.interpolate(pose_images, size=size, mode="bilinear", align_corners=False)
        return self.ctrl_attn(condition, self.expression_tokens(expression))


class ControlProjector(nn.Module):
    """3x3 conv to the UNet's width, then residual row/column self-attention at a quarter width."""

    def __init__(self, in_channels: int, out_channels: int, num_attention_heads: int = 8) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.attn = KnitAttention(out_channels, out_channels // 4, num_attention_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.proj(x))


class HM5SD15ControlProj(ModelMixin, ConfigMixin):
    """Control feature maps -> SD1.5 UNet residuals (hub: songkey/hm5_control_proj).

    Attribute names say which SD1.5 widths they map between; ``control_channels`` and
    ``block_*_channels`` exist so tiny test configs can shrink every width.
    """

    @register_to_config
    def __init__(
        self,
        control_channels: tuple[int, ...] = (320, 640, 1280),
        control_out_channels: int = 320,
        block_down_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        block_up_channels: tuple[int, ...] = (1280, 1280, 1280, 640),
        num_attention_heads: int = 8,
    ) -> None:
        super().__init__()
        c_fine, c_mid, c_coarse = control_channels
        heads = num_attention_heads
        # feat_0: coarse (c_coarse), feat_1: c_mid, feat_2: c_fine, feat_3: control_out_channels
        self.map1280_to_1280 = ControlProjector(c_coarse, block_up_channels[0], heads)
        self.map640_to_1280 = ControlProjector(c_mid, block_up_channels[1], heads)
        self.map320_to_1280 = ControlProjector(c_fine, block_up_channels[2], heads)
        self.map320_to_640 = ControlProjector(control_out_channels, block_up_channels[3], heads)
        self.map320_to_320 = ControlProjector(c_fine, block_down_channels[0], heads)
        self.map640_to_640 = ControlProjector(c_mid, block_down_channels[1], heads)
        self.map1280_to_1280_2 = ControlProjector(c_coarse, block_down_channels[2], heads)
        self.map1280_to_1280_3 = ControlProjector(c_coarse, block_down_channels[3], heads)

    def forward(self, features: ControlFeatures) -> ControlResiduals:
        feat_0, feat_1, feat_2, feat_3 = features.maps
        return ControlResiduals(
            down=(
                self.map320_to_320(feat_2),
                self.map640_to_640(feat_1),
                self.map1280_to_1280_2(feat_0),
                self.map1280_to_1280_3(feat_0),
            ),
            up=(
                self.map1280_to_1280(feat_0),
                self.map640_to_1280(feat_1),
                self.map320_to_1280(feat_2),
                self.map320_to_640(feat_3),
            ),
        )
