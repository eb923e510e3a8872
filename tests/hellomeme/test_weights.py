"""Weights: a tiny checkpoint saved with save_pretrained loads through the real loader; problems are named."""

from __future__ import annotations

import shutil

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hellomeme.expression import PDFGCMotionEncoder
from hellomeme.motion_adapter import HM5MotionAdapter
from hellomeme.tiny import save_tiny_weights, tiny_components, tiny_modules
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig
from hellomeme.weights import (
    MismatchedWeightsError,
    MissingWeightsError,
    WeightsError,
    check_weights,
    load_adapter,
    load_hellomeme,
)

from .conftest import video_request


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "hellomeme", seed=0)


def test_saved_tiny_checkpoint_loads_and_renders_like_the_in_memory_model(tiny_dir):
    check_weights(tiny_dir)
    loaded = load_hellomeme(tiny_dir, device="cpu", dtype=torch.float32)
    built = tiny_components("cpu", torch.float32, seed=0)
    request = video_request(frames=5, window=4, overlap=1, seed=1)
    config = PipelineConfig(frames_per_batch=32)
    from_disk = HelloMemeVideoPipeline(loaded, config)([request])[0]
    in_memory = HelloMemeVideoPipeline(built, config)([request])[0]
    # Same weights; CPU kernels may round differently for differently aligned buffers (~1e-6).
    difference = np.abs(from_disk.astype(int) - in_memory.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def test_adapters_load_strictly_with_their_saved_config(tiny_dir):
    motion = load_adapter(HM5MotionAdapter, tiny_dir / "hm5_motion")
    assert tuple(motion.config.block_down_channels) == (8, 16, 32, 32)
    assert not any(p.is_meta for p in motion.parameters())
    assert not any(b.is_meta for b in motion.buffers())


def test_missing_folder_is_named_with_where_we_looked(tiny_dir, tmp_path):
    broken = tmp_path / "weights"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / "hm5_motion")
    (broken / "stable-diffusion-v1-5" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingWeightsError) as caught:
        check_weights(broken)
    message = str(caught.value)
    assert "hm5_motion" in message and "vae" in message and str(broken) in message
    with pytest.raises(MissingWeightsError):
        load_hellomeme(broken)  # fails before loading anything


def test_absent_directory_is_a_clear_error(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        check_weights(tmp_path / "nowhere")


def test_tensor_mismatch_is_listed(tiny_dir, tmp_path):
    broken = tmp_path / "weights"
    shutil.copytree(tiny_dir, broken)
    path = broken / "hm5_reference" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state.pop("reference_modules_up.0.attn1.to_q.weight")
    state["reference_modules_up.1.proj.bias"] = torch.zeros(3)
    save_file(state, str(path))
    with pytest.raises(MismatchedWeightsError) as caught:
        check_weights(broken)
    message = str(caught.value)
    assert "reference_modules_up.0.attn1.to_q.weight" in message
    assert "reference_modules_up.1.proj.bias" in message
    with pytest.raises(MismatchedWeightsError):
        load_adapter(type(tiny_components().denoiser.reference_adapter), broken / "hm5_reference")


def test_adapters_made_for_another_unet_are_refused(tiny_dir, tmp_path):
    broken = tmp_path / "weights"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / "hm5_motion")
    HM5MotionAdapter(num_attention_heads=2, norm_num_groups=4, block_down_channels=(8, 16, 32, 64),
                     block_up_channels=(64, 32, 32, 16)).save_pretrained(str(broken / "hm5_motion"))
    with pytest.raises(MismatchedWeightsError, match="motion config block_down_channels"):
        check_weights(broken)


def test_hub_offline_without_cache_names_the_repos(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as caught:
        load_hellomeme(None, cache_dir=tmp_path / "hf-cache")
    assert "songkey/hm5_motion" in str(caught.value)
    assert "songkey/stable-diffusion-v1-5" in str(caught.value)


def test_hub_ids_resolve_from_the_cache_when_offline(tiny_dir, tmp_path, monkeypatch):
    """The hub path: songkey/<folder> repos found in a huggingface_hub cache with HF_HUB_OFFLINE set."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache, revision = tmp_path / "hf-cache", "0" * 40
    for folder in ("stable-diffusion-v1-5", "hm5_reference", "hm5_control_base", "hm5_control_proj", "hm5_motion",
                   "pd_fgc_motion"):
        repo = cache / f"models--songkey--{folder}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(revision)
        shutil.copytree(tiny_dir / folder, repo / "snapshots" / revision)
    components = load_hellomeme(None, cache_dir=cache)
    assert components.denoiser.motion_adapter.config.block_up_channels[-1] == 16


def test_stylised_checkpoint_and_lora_go_to_the_denoiser_only(tiny_dir, tmp_path):
    """HelloMeme keeps the reference branch on base SD1.5; a checkpoint or LoRA changes the denoiser side."""
    checkpoint = tmp_path / "style"
    styled = tiny_modules(seed=5)
    styled["unet"].save_pretrained(str(checkpoint / "unet"))
    styled["vae"].save_pretrained(str(checkpoint / "vae"))
    lora = tmp_path / "lora.safetensors"
    layer = "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"lora_unet_{layer}.lora_down.weight": torch.ones(1, 8),
               f"lora_unet_{layer}.lora_up.weight": torch.ones(8, 1)}, str(lora))
    base = load_hellomeme(tiny_dir)
    components = load_hellomeme(tiny_dir, checkpoint=checkpoint, lora=lora)
    assert components.denoiser.unet is not components.reference_net.unet
    assert components.decoder_vae is not components.encoder_vae
    assert components.denoiser_text_encoder is not components.reference_text_encoder
    reference_q = components.reference_net.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    base_q = base.reference_net.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    torch.testing.assert_close(reference_q, base_q)
    styled_q = styled["unet"].down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    denoiser_q = components.denoiser.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    torch.testing.assert_close(denoiser_q, styled_q + 1.0)


def test_batch_norm_counters_may_be_absent(tiny_dir, tmp_path):
    """Converted PD-FGC files may lack BatchNorm's num_batches_tracked; nothing in eval mode uses it."""
    folder = tmp_path / "pd_fgc_motion"
    shutil.copytree(tiny_dir / "pd_fgc_motion", folder)
    path = folder / "diffusion_pytorch_model.safetensors"
    state = {k: v for k, v in load_file(str(path)).items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(path))
    encoder = load_adapter(PDFGCMotionEncoder, folder)
    assert not any(b.is_meta for b in encoder.buffers())
