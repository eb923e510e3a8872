"""Weights: a tiny checkpoint saved with save_pretrained loads through the real loader; problems are named."""

from __future__ import annotations

import shutil
import struct

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hellomeme.expression import PDFGCMotionEncoder
from hellomeme.motion_adapter import HM5MotionAdapter
from hellomeme.hub import check_hub
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig
from hellomeme.weight_files import WeightFiles
from hellomeme.weights import (
    MismatchedWeightsError,
    MissingWeightsError,
    WeightsError,
    check_weights,
    load_adapter,
    load_hellomeme,
)

from .conftest import TEST_WINDOWS, video_request
from .ldm_layout import single_file_state
from .tiny_models import save_tiny_weights, tiny_components, tiny_modules


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "hellomeme", seed=0)


def test_saved_tiny_checkpoint_loads_and_renders_like_the_in_memory_model(tiny_dir):
    check_weights(tiny_dir)
    loaded = load_hellomeme(tiny_dir, device="cpu", dtype=torch.float32)
    built = tiny_components("cpu", torch.float32, seed=0)
    request = video_request(frames=5, seed=1)
    config = PipelineConfig(windows=TEST_WINDOWS, frames_per_batch=32)
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


HUB_FOLDERS = ("stable-diffusion-v1-5", "hm5_reference", "hm5_control_base", "hm5_control_proj", "hm5_motion",
               "pd_fgc_motion")


def _fake_hub_cache(tiny_dir, cache):
    revision = "0" * 40
    for folder in HUB_FOLDERS:
        repo = cache / f"models--songkey--{folder}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(revision)
        shutil.copytree(tiny_dir / folder, repo / "snapshots" / revision)
    return cache


def test_hub_offline_without_cache_names_the_repos(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as caught:
        load_hellomeme(None, cache_dir=tmp_path / "hf-cache")
    assert "songkey/hm5_motion" in str(caught.value)
    assert "songkey/stable-diffusion-v1-5" in str(caught.value)
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        check_hub(cache_dir=tmp_path / "hf-cache")


def test_hub_ids_resolve_from_the_cache_when_offline(tiny_dir, tmp_path, monkeypatch):
    """The hub path: songkey/<folder> repos found in a huggingface_hub cache with HF_HUB_OFFLINE set."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = _fake_hub_cache(tiny_dir, tmp_path / "hf-cache")
    check_hub(cache_dir=cache)
    components = load_hellomeme(None, cache_dir=cache)
    assert components.denoiser.motion_adapter.config.block_up_channels[-1] == 16


def test_hub_check_online_reads_metadata_only(tiny_dir, monkeypatch):
    """Online, the driver reads listings, configs and safetensors headers through a filesystem; it downloads nothing.

    An in-memory filesystem laid out like the hub (``songkey/<repo>/...``) stands in for HfFileSystem.
    """
    import fsspec
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def no_download(*args, **kwargs):
        raise AssertionError("the driver must not download the model")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    memory = fsspec.filesystem("memory")
    try:
        for folder in HUB_FOLDERS:
            memory.put(str(tiny_dir / folder), f"/songkey/{folder}", recursive=True)
        reads = []
        original_cat_file = memory.cat_file

        def counting_cat_file(path, start=None, end=None, **kwargs):
            reads.append((path, start, end))
            return original_cat_file(path, start=start, end=end, **kwargs)

        monkeypatch.setattr(memory, "cat_file", counting_cat_file)
        monkeypatch.setattr(memory, "open", no_download)  # whole-file reads would go through open
        check_hub(files=WeightFiles(memory))
        weight_reads = [(p, a, b) for p, a, b in reads if p.endswith(".safetensors")]
        assert weight_reads
        for path, _, end in weight_reads:  # the 8-byte length and the JSON header, never tensor data
            data = original_cat_file(path)
            assert end is not None and end <= 8 + struct.unpack("<Q", data[:8])[0] < len(data)
        memory.rm("/songkey/hm5_motion/diffusion_pytorch_model.safetensors")
        with pytest.raises(MissingWeightsError, match="hm5_motion"):
            check_hub(files=WeightFiles(memory))
    finally:
        memory.rm("/songkey", recursive=True)


def _styled_single_file(tmp_path, with_vae=True):
    styled = tiny_modules(seed=5)
    path = tmp_path / "styled.safetensors"
    save_file(single_file_state(styled["unet"], styled["vae"] if with_vae else None), str(path))
    return styled, path


def test_stylised_checkpoint_goes_to_the_denoiser_only(tiny_dir, tmp_path):
    """As the script's 'x1' style: the reference branch and text encoders stay base SD1.5."""
    checkpoint = tmp_path / "style"
    styled = tiny_modules(seed=5)
    styled["unet"].save_pretrained(str(checkpoint / "unet"))
    styled["vae"].save_pretrained(str(checkpoint / "vae"))
    check_weights(tiny_dir, checkpoint=checkpoint)
    base = load_hellomeme(tiny_dir)
    components = load_hellomeme(tiny_dir, checkpoint=checkpoint)
    assert components.denoiser.unet is not components.reference_net.unet
    assert components.decoder_vae is not components.encoder_vae
    assert components.denoiser_text_encoder is components.reference_text_encoder
    reference_q = components.reference_net.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    base_q = base.reference_net.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    torch.testing.assert_close(reference_q, base_q)
    styled_q = styled["unet"].down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    denoiser_q = components.denoiser.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    torch.testing.assert_close(denoiser_q, styled_q)


def test_single_file_checkpoint_loads_as_the_diffusers_folder_would(tiny_dir, tmp_path):
    styled, path = _styled_single_file(tmp_path)
    check_weights(tiny_dir, checkpoint=path)
    components = load_hellomeme(tiny_dir, checkpoint=path)
    for name, tensor in styled["unet"].state_dict().items():
        torch.testing.assert_close(components.denoiser.unet.state_dict()[name], tensor, rtol=0, atol=0)
    for name, tensor in styled["vae"].state_dict().items():
        torch.testing.assert_close(components.decoder_vae.state_dict()[name], tensor, rtol=0, atol=0)
    assert components.encoder_vae is not components.decoder_vae


def test_single_file_without_a_vae_keeps_the_base_decoder(tiny_dir, tmp_path):
    _, path = _styled_single_file(tmp_path, with_vae=False)
    components = load_hellomeme(tiny_dir, checkpoint=path)
    assert components.decoder_vae is components.encoder_vae


def test_broken_single_file_is_named_before_loading(tiny_dir, tmp_path):
    _, path = _styled_single_file(tmp_path)
    state = load_file(str(path))
    state.pop("model.diffusion_model.out.2.weight")
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(3, 3)
    save_file(state, str(path))
    with pytest.raises(MismatchedWeightsError) as caught:
        check_weights(tiny_dir, checkpoint=path)
    assert "conv_out.weight" in str(caught.value) and "conv_in.weight" in str(caught.value)
    with pytest.raises(MissingWeightsError, match="single-file"):
        check_weights(tiny_dir, checkpoint=tmp_path / "absent.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MismatchedWeightsError, match="truncated"):
        check_weights(tiny_dir, checkpoint=truncated)


def test_batch_norm_counters_may_be_absent(tiny_dir, tmp_path):
    """Converted PD-FGC files may lack BatchNorm's num_batches_tracked; nothing in eval mode uses it."""
    folder = tmp_path / "pd_fgc_motion"
    shutil.copytree(tiny_dir / "pd_fgc_motion", folder)
    path = folder / "diffusion_pytorch_model.safetensors"
    state = {k: v for k, v in load_file(str(path)).items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(path))
    encoder = load_adapter(PDFGCMotionEncoder, folder)
    assert not any(b.is_meta for b in encoder.buffers())


def test_an_unreachable_hub_says_how_to_give_the_weights(monkeypatch):
    """With no network the hub's client raised its transport's error ("ConnectError: Name or service not
    known"), which said nothing about weights."""
    import fsspec

    class Unreachable(fsspec.AbstractFileSystem):
        def info(self, path, **kwargs):
            raise ConnectionError("[Errno -2] Name or service not known")

        ls = exists = isfile = cat_file = info

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with pytest.raises(MissingWeightsError, match="could not be read") as caught:
        check_hub(files=WeightFiles(Unreachable()))
    assert "--weights" in str(caught.value) and "HF_HUB_OFFLINE=1" in str(caught.value)
