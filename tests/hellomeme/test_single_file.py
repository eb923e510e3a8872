"""Single-file SD1.5 checkpoints at full size, on the meta device: the original key layout maps onto SD1.5's modules."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from hellomeme.single_file import check_shapes

from .ldm_layout import single_file_state

SD15_UNET = dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                 cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512)


def _full_size_shapes():
    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**SD15_UNET), AutoencoderKL(**SD15_VAE)
    state = single_file_state(unet, vae)
    return {k: tuple(v.shape) for k, v in state.items()}, dict(unet.config), dict(vae.config)


def test_full_size_single_file_layout_fits_sd15():
    shapes, unet_config, vae_config = _full_size_shapes()
    assert sum(k.startswith("model.diffusion_model.") for k in shapes) == 686  # SD1.5's UNet tensors
    assert shapes["first_stage_model.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert check_shapes(shapes, unet_config, vae_config, "sd15.safetensors") == []


def test_full_size_single_file_problems_are_named():
    shapes, unet_config, vae_config = _full_size_shapes()
    shapes["model.diffusion_model.input_blocks.1.1.proj_in.weight"] = (320, 320, 3, 3)
    del shapes["first_stage_model.decoder.up.0.block.0.conv1.weight"]
    problems = "\n".join(check_shapes(shapes, unet_config, vae_config, "bad.safetensors"))
    assert "down_blocks.0.attentions.0.proj_in.weight" in problems
    assert "decoder.up_blocks.3.resnets.0.conv1.weight" in problems
    assert check_shapes({"cond_stage_model.x": (1,)}, unet_config, vae_config, "clip-only.safetensors")
