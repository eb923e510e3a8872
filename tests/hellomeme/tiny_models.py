"""Tiny random-weight HelloMeme: the real classes at toy widths, for tests and CPU benchmarks.

Every module keeps its structure (4 down / 4 up blocks, the same adapters, the same control
U-Net) so the code paths are the real ones; only widths, token counts and the PD-FGC input
size shrink. Zero-initialised output layers get small random values so that every adapter
actually changes the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from hellomeme.components import HelloMemeComponents, assemble_components
from hellomeme.control import HM5ControlNetBase, HM5SD15ControlProj
from hellomeme.expression import PDFGCMotionEncoder
from hellomeme.motion_adapter import HM5MotionAdapter
from hellomeme.reference_adapter import HM5ReferenceAdapter
from hellomeme.weights import BASE_MODEL_DIR, get_release, unet_block_channels


@dataclass(frozen=True)
class TinySizes:
    """Toy widths; ``image_size`` is the render size the tiny model is meant for (latent = size / 8)."""

    image_size: int = 128
    unet_channels: tuple[int, ...] = (8, 16, 32, 32)
    text_dim: int = 32
    heads: int = 2
    groups: int = 4
    control_channels: tuple[int, ...] = (8, 16, 32)
    control_tokens: int = 4
    control_context_dim: int = 16
    coefficient_embedding_dim: int = 16
    expression_feature_dim: int = 32
    expression_image_size: int = 64


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with only byte-level single-character tokens (no merges): needs no download."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab.update({char + "</w>": len(alphabet) + i for i, char in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_modules(sizes: TinySizes = TinySizes(), seed: int = 0, release: str = "v5") -> dict[str, object]:
    """Random-weight modules on the CPU in fp32, keyed by role."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=sizes.text_dim, intermediate_size=2 * sizes.text_dim, num_attention_heads=2, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4, layers_per_block=1,
        sample_size=sizes.image_size,
    )
    unet = UNet2DConditionModel(
        sample_size=sizes.image_size // 8, block_out_channels=sizes.unet_channels, layers_per_block=1,
        norm_num_groups=sizes.groups, cross_attention_dim=sizes.text_dim, attention_head_dim=sizes.heads,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    down, up = unet_block_channels(dict(unet.config))
    reference_cls = get_release(release).reference.cls
    reference_kwargs = {"time_embed_dim": 4 * sizes.unet_channels[0]} if reference_cls is HM5ReferenceAdapter else {}
    modules = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "unet": unet,
        "reference": reference_cls(block_down_channels=down, block_up_channels=up, num_attention_heads=sizes.heads,
                                   **reference_kwargs),
        "motion": HM5MotionAdapter(block_down_channels=down, block_up_channels=up, num_attention_heads=sizes.heads,
                                   norm_num_groups=sizes.groups),
        "control_base": HM5ControlNetBase(
            cross_attention_dim=sizes.control_context_dim, block_out_channels=sizes.control_channels,
            out_channels=sizes.control_channels[0], expression_dim=6 + 30 + sizes.expression_feature_dim,
            expression_tokens=sizes.control_tokens, coefficient_embedding_dim=sizes.coefficient_embedding_dim,
            num_attention_heads=sizes.heads,
        ),
        "control_proj": HM5SD15ControlProj(
            control_channels=sizes.control_channels, control_out_channels=sizes.control_channels[0],
            block_down_channels=down, block_up_channels=up, num_attention_heads=sizes.heads,
        ),
        "expression": PDFGCMotionEncoder(
            feature_dim=sizes.expression_feature_dim, stem_channels=4, hourglass_channels=8, num_landmarks=4,
            image_size=sizes.expression_image_size,
        ),
    }
    generator = torch.Generator().manual_seed(seed + 1)
    for module in modules.values():
        if isinstance(module, torch.nn.Module):
            _wake_zero_layers(module, generator)
            module.eval()
    return modules


@torch.no_grad()
def _wake_zero_layers(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give zero-initialised weights small random values so that residual branches contribute."""
    for parameter in module.parameters():
        if parameter.ndim > 1 and not parameter.any():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def tiny_components(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0, release: str = "v5",
    sizes: TinySizes = TinySizes(),
) -> HelloMemeComponents:
    """A runnable tiny HelloMeme, built in memory."""
    m = tiny_modules(sizes, seed, release)
    return assemble_components(
        m["tokenizer"], m["text_encoder"], m["vae"], m["unet"],
        reference_adapter=m["reference"], motion_adapter=m["motion"], control_net=m["control_base"],
        control_proj=m["control_proj"], expression_encoder=m["expression"], device=torch.device(device), dtype=dtype,
    )


def save_tiny_weights(
    directory: str | Path, seed: int = 0, release: str = "v5", sizes: TinySizes = TinySizes()
) -> Path:
    """Write a tiny model in the hub layout (``save_pretrained`` everywhere); returns ``directory``."""
    directory = Path(directory)
    m = tiny_modules(sizes, seed, release)
    base = directory / BASE_MODEL_DIR
    for part in ("tokenizer", "text_encoder", "vae", "unet"):
        m[part].save_pretrained(str(base / part))
    for role, spec in get_release(release).adapters().items():
        m[role].save_pretrained(str(directory / spec.folder))
    return directory
