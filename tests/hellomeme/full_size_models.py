"""Full-size HelloMeme v5 with random weights: SD1.5-shaped UNet, VAE and CLIP plus default adapters.

Used by ``bench/gpu_throughput.py`` and, as the engine's ``components_factory``
(``tests.hellomeme.full_size_models:random_full_size_components``), by GPU end-to-end runs.

Timing does not depend on the values of the weights, so benchmarks and GPU end-to-end runs use
this where no published weights can be downloaded.  The modules are made directly on ``device``.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from hellomeme.components import HelloMemeComponents, assemble_components
from hellomeme.control import HM5ControlNetBase, HM5SD15ControlProj
from hellomeme.expression import PDFGCMotionEncoder
from hellomeme.motion_adapter import HM5MotionAdapter
from hellomeme.reference_adapter import HM5bReferenceAdapter, HM5ReferenceAdapter
from tests.hellomeme.tiny_models import tiny_tokenizer


def random_full_size_components(device: torch.device, dtype: torch.dtype, seed: int = 0,
                                release: str = "v5") -> HelloMemeComponents:
    """SD1.5-shaped UNet/VAE/CLIP and default-config v5 (or v5b) adapters with random weights."""
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
            attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
        ))
        reference = HM5bReferenceAdapter() if release == "v5b" else HM5ReferenceAdapter()
        adapters = dict(reference_adapter=reference, motion_adapter=HM5MotionAdapter(),
                        control_net=HM5ControlNetBase(), control_proj=HM5SD15ControlProj(),
                        expression_encoder=PDFGCMotionEncoder())
    return assemble_components(tiny_tokenizer(), text_encoder, vae, unet, device=device, dtype=dtype, **adapters)
