"""LoRAs as adapters of the denoiser: the published weighting, switching with a small cache, bad files refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hellomeme.lora import LoraAdapters, LoraError
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig

from .conftest import TEST_WINDOWS, video_request
from .tiny_models import tiny_components, tiny_modules

UNET_LAYER = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1"
TEXT_LAYER = "lora_te_text_model_encoder_layers_0_self_attn"


def kohya_lora(unet, text_encoder, seed: int = 0, rank: int = 2, alpha: float = 1.0, text_alpha: float = 2.0):
    """A kohya/sd-scripts LoRA (the form SD1.5 LoRAs are shared in) on one UNet attention and one CLIP layer."""
    g = torch.Generator().manual_seed(seed)
    attention = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    clip = text_encoder.encoder.layers[0].self_attn
    layers = [(f"{UNET_LAYER}_{n}", m, alpha) for n, m in (("to_q", attention.to_q), ("to_k", attention.to_k),
                                                           ("to_v", attention.to_v), ("to_out_0", attention.to_out[0]))]
    layers += [(f"{TEXT_LAYER}_{n}", m, text_alpha) for n, m in (("q_proj", clip.q_proj), ("k_proj", clip.k_proj),
                                                                 ("v_proj", clip.v_proj), ("out_proj", clip.out_proj))]
    state = {}
    for name, module, layer_alpha in layers:
        state[f"{name}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=g)
        state[f"{name}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=g)
        state[f"{name}.alpha"] = torch.tensor(layer_alpha)
    return state


def write_lora(path, seed: int = 0):
    modules = tiny_modules()
    save_file(kohya_lora(modules["unet"], modules["text_encoder"], seed=seed), str(path))
    return path


@pytest.fixture()
def models():
    modules = tiny_modules()
    return modules["unet"], modules["text_encoder"]


def _to_q(unet):
    return unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q


def _q_proj(text_encoder):
    return text_encoder.encoder.layers[0].self_attn.q_proj


def test_unet_at_weight_one_and_text_encoder_at_lora_scale(models, tmp_path):
    """The script: load_lora_into_unet (weight 1) and load_lora_into_text_encoder(lora_scale=...)."""
    unet, text_encoder = models
    state = kohya_lora(unet, text_encoder)
    path = tmp_path / "style.safetensors"
    save_file(state, str(path))
    x, xt = torch.randn(3, _to_q(unet).in_features), torch.randn(3, _q_proj(text_encoder).in_features)
    base_q, base_t = _to_q(unet)(x).detach(), _q_proj(text_encoder)(xt).detach()
    adapters = LoraAdapters(unet, text_encoder)
    adapters.activate(path, scale=0.5)
    down, up = state[f"{UNET_LAYER}_to_q.lora_down.weight"], state[f"{UNET_LAYER}_to_q.lora_up.weight"]
    expected_q = base_q + 1.0 * (1.0 / 2) * x @ down.T @ up.T  # alpha 1, rank 2, weight 1 whatever the scale
    torch.testing.assert_close(_to_q(unet)(x), expected_q)
    down, up = state[f"{TEXT_LAYER}_q_proj.lora_down.weight"], state[f"{TEXT_LAYER}_q_proj.lora_up.weight"]
    torch.testing.assert_close(_q_proj(text_encoder)(xt), base_t + 0.5 * (2.0 / 2) * xt @ down.T @ up.T)
    adapters.deactivate()
    torch.testing.assert_close(_to_q(unet)(x), base_q)
    torch.testing.assert_close(_q_proj(text_encoder)(xt), base_t)
    adapters.activate(path, scale=1.0)  # back on, now at scale 1 in the text encoder
    torch.testing.assert_close(_to_q(unet)(x), expected_q)
    torch.testing.assert_close(_q_proj(text_encoder)(xt), base_t + xt @ down.T @ up.T)


def test_adapters_switch_and_the_least_recently_used_is_dropped(models, tmp_path):
    unet, text_encoder = models
    paths = [write_lora(tmp_path / f"lora{i}.safetensors", seed=i) for i in range(3)]
    x = torch.randn(3, _to_q(unet).in_features)
    adapters = LoraAdapters(unet, text_encoder, cache_size=2)
    outputs = []
    for path in paths[:2]:
        adapters.activate(path)
        outputs.append(_to_q(unet)(x).detach())
    assert not torch.allclose(outputs[0], outputs[1])
    adapters.activate(paths[0])  # cached: used again, so lora1 becomes the oldest
    torch.testing.assert_close(_to_q(unet)(x), outputs[0])
    adapters.activate(paths[2])
    assert len(adapters.loaded) == 2
    adapters.activate(paths[1])  # was dropped: loaded again, same result
    torch.testing.assert_close(_to_q(unet)(x), outputs[1])


def test_bad_lora_files_raise_and_leave_the_model_as_it_was(models, tmp_path):
    unet, text_encoder = models
    good = write_lora(tmp_path / "good.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"lora_unet_nowhere_to_out_0.lora_down.weight": torch.zeros(1, 2),
               "lora_unet_nowhere_to_out_0.lora_up.weight": torch.zeros(2, 1)}, str(foreign))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    x = torch.randn(3, _to_q(unet).in_features)
    adapters = LoraAdapters(unet, text_encoder, cache_size=1)
    adapters.activate(good)
    with_good = _to_q(unet)(x).detach()
    for bad in (foreign, garbage, tmp_path / "absent.safetensors"):
        with pytest.raises(LoraError):
            adapters.activate(bad)
    assert len(adapters.loaded) <= 1
    adapters.activate(good)
    torch.testing.assert_close(_to_q(unet)(x), with_good)


def test_pipeline_renders_rows_with_different_loras_on_one_base_model(tmp_path):
    components = tiny_components()
    pipe = HelloMemeVideoPipeline(components, PipelineConfig(windows=TEST_WINDOWS, frames_per_batch=32))
    lora_a, lora_b = write_lora(tmp_path / "a.safetensors", 1), write_lora(tmp_path / "b.safetensors", 2)
    plain = video_request(frames=3, seed=4)
    styled_a = video_request(frames=3, seed=4, lora=str(lora_a))
    styled_b = video_request(frames=3, seed=4, lora=str(lora_b), lora_scale=0.5)
    mixed = pipe([styled_a, plain, styled_b])
    assert not np.array_equal(mixed[0], mixed[1]) and not np.array_equal(mixed[0], mixed[2])
    # The reference branch never sees a LoRA: the denoiser got its own UNet and text encoder.
    denoiser = pipe.components.denoiser
    assert denoiser.unet is not pipe.components.reference_net.unet
    assert pipe.components.denoiser_text_encoder is not pipe.components.reference_text_encoder
    assert not any("lora" in name for name, _ in pipe.components.reference_net.named_modules())
    # Switching back and forth gives each row what it got the first time.
    np.testing.assert_array_equal(pipe([plain])[0], mixed[1])
    np.testing.assert_array_equal(pipe([styled_a])[0], mixed[0])
    alone = HelloMemeVideoPipeline(tiny_components(), PipelineConfig(windows=TEST_WINDOWS, frames_per_batch=32))
    np.testing.assert_array_equal(alone([plain])[0], mixed[1])


def test_a_lora_that_is_a_directory_is_named_as_one():
    # A folder named like a LoRA file (a trainer's output folder): it failed as "LoRA file not found".
    import tempfile

    with tempfile.TemporaryDirectory(suffix=".safetensors") as folder:
        adapters = LoraAdapters(torch.nn.Module(), torch.nn.Module())
        with pytest.raises(LoraError, match=r"is a directory, not a \.safetensors file: name the file inside it"):
            adapters.activate(folder)
