"""Writing a diffusers UNet + VAE back in the original single-file (LDM) key layout, for tests.

SD1.5 derivatives are shared as one .safetensors file in this layout; no such file can be
downloaded here, so tests make one from a tiny model.  The mapping is written from the layout's
rules (block numbering of ``input_blocks`` / ``output_blocks``, resnet and VAE renames).
"""

from __future__ import annotations

import re

import torch

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_key(key: str, layers_per_block: int, attention_up_blocks: set[int]) -> str:
    """The LDM name (without ``model.diffusion_model.``) of a diffusers UNet tensor."""
    per = layers_per_block + 1
    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for old, new in simple.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + i * per + j}.0.{_rename(rest, _UNET_RESNET)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + i * per + j}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename(m[2], _UNET_RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{i * per + j}.0.{_rename(rest, _UNET_RESNET)}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{i * per + j}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        i = int(m[1])
        slot = 2 if i in attention_up_blocks else 1
        return f"output_blocks.{i * per + layers_per_block}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet tensor {key}")


def vae_key(key: str, num_blocks: int) -> str:
    """The LDM name (without ``first_stage_model.``) of a diffusers AutoencoderKL tensor."""
    part, _, rest = key.partition(".")
    if part in ("quant_conv", "post_quant_conv"):
        return key
    if rest.startswith("conv_norm_out."):
        return f"{part}.norm_out.{rest[len('conv_norm_out.'):]}"
    if rest.startswith(("conv_in.", "conv_out.")):
        return key
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{_rename(m[2], _VAE_RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{part}.mid.attn_1.{_rename(m[1], _VAE_ATTENTION)}"
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.down.{m[1]}.block.{m[2]}.{_rename(m[3], _VAE_RESNET)}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
        return f"{part}.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.up.{num_blocks - 1 - int(m[1])}.block.{m[2]}.{_rename(m[3], _VAE_RESNET)}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
        return f"{part}.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    raise KeyError(f"no LDM name for VAE tensor {key}")


def single_file_state(unet, vae=None) -> dict[str, torch.Tensor]:
    """A state dict in the original SD single-file layout (``model.diffusion_model.*``, ``first_stage_model.*``)."""
    config = unet.config
    attention_up = {i for i, kind in enumerate(config.up_block_types) if "CrossAttn" in kind}
    state = {f"model.diffusion_model.{unet_key(k, config.layers_per_block, attention_up)}": v.detach().clone()
             for k, v in unet.state_dict().items()}
    if vae is not None:
        blocks = len(vae.config.block_out_channels)
        for key, value in vae.state_dict().items():
            value = value.detach().clone()
            if ".mid_block.attentions." in key and key.endswith(".weight") and value.ndim == 2:
                value = value[:, :, None, None]  # the original layout's attention projections are 1x1 convs
            state[f"first_stage_model.{vae_key(key, blocks)}"] = value
    # Original checkpoints also carry CLIP, which HelloMeme does not take from a checkpoint.
    state["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(4)
    return state
