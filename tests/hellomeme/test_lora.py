"""Fusing SD1.5 LoRA files (kohya and diffusers/PEFT names) into the weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from hellomeme.lora import LoraError, fuse_lora
from hellomeme.tiny import tiny_modules


def test_kohya_and_peft_entries_are_fused(tmp_path):
    modules = tiny_modules()
    unet, text_encoder = modules["unet"], modules["text_encoder"]
    to_q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    proj_in = unet.down_blocks[1].attentions[0].proj_in
    text_model = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 dropped this level
    q_proj = text_model.encoder.layers[0].self_attn.q_proj
    before = [m.weight.detach().clone() for m in (to_q, proj_in, q_proj)]
    g = torch.Generator().manual_seed(0)
    down_q, up_q = torch.randn(2, to_q.in_features, generator=g), torch.randn(to_q.out_features, 2, generator=g)
    down_p = torch.randn(2, proj_in.in_channels, 1, 1, generator=g)
    up_p = torch.randn(proj_in.out_channels, 2, 1, 1, generator=g)
    down_t, up_t = torch.randn(2, q_proj.in_features, generator=g), torch.randn(q_proj.out_features, 2, generator=g)
    path = tmp_path / "style.safetensors"
    save_file({
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": down_q,
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": up_q,
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(1.0),
        "unet.down_blocks.1.attentions.0.proj_in.lora_A.weight": down_p,
        "unet.down_blocks.1.attentions.0.proj_in.lora_B.weight": up_p,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": down_t,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": up_t,
    }, str(path))
    report = fuse_lora(unet, text_encoder, path, scale=0.5)
    assert report.fused_layers == 3 and report.unmatched == ()
    torch.testing.assert_close(to_q.weight, before[0] + 0.5 * (1.0 / 2) * up_q @ down_q)
    expected_proj_in = before[1] + 0.5 * (up_p.flatten(1) @ down_p.flatten(1)).reshape_as(before[1])
    torch.testing.assert_close(proj_in.weight, expected_proj_in)
    torch.testing.assert_close(q_proj.weight, before[2] + 0.5 * up_t @ down_t)


def test_lora_for_another_model_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"lora_unet_nowhere.lora_down.weight": torch.zeros(1, 2),
               "lora_unet_nowhere.lora_up.weight": torch.zeros(2, 1)}, str(path))
    with pytest.raises(LoraError, match="no layer"):
        fuse_lora(tiny_modules()["unet"], None, path)
