"""SD1.5 checkpoints shared as one ``.safetensors`` file (the original LDM key layout) as diffusers modules.

Most SD1.5 derivatives are published this way: ``model.diffusion_model.*`` (the UNet),
``first_stage_model.*`` (the VAE) and ``cond_stage_model.*`` (CLIP).  diffusers' own
``from_single_file`` would fetch the original config from the hub; we need no download because
an SD1.5 derivative has SD1.5's architecture: the base model's UNet and VAE configs (already in the
weights folder) describe it, and diffusers' key conversion functions map the tensors.  HelloMeme
uses a checkpoint's UNet as the denoiser and its VAE (when it carries one) as the decoder; the
text encoder stays base SD1.5, as in the published script.

Checking works on shapes alone: the header's shapes become meta tensors, go through the same
conversion and are compared with the modules' expected shapes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

logger = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."


class SingleFileError(ValueError):
    """The file is not an SD1.5 checkpoint in the original layout, or it does not fit the base configs."""


def _expected(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = cls.from_config(config)
    return {key: tuple(t.shape) for key, t in model.state_dict().items()}


def has_vae(keys) -> bool:
    return any(k.startswith(VAE_PREFIX) for k in keys)


def convert(state: dict[str, torch.Tensor], unet_config: dict[str, Any], vae_config: dict[str, Any]
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(UNet state, VAE state or None) in diffusers names from an original-layout state dict."""
    if not any(k.startswith(UNET_PREFIX) for k in state):
        raise SingleFileError(f"no {UNET_PREFIX}* tensors: not an SD1.5 single-file checkpoint")
    try:
        unet = convert_ldm_unet_checkpoint(state, dict(unet_config))
        vae = None
        if has_vae(state):
            vae = convert_ldm_vae_checkpoint({k: v for k, v in state.items() if k.startswith(VAE_PREFIX)},
                                             dict(vae_config))
    except (KeyError, IndexError, ValueError, RuntimeError) as err:
        raise SingleFileError(f"cannot map the checkpoint's tensors onto SD1.5 ({type(err).__name__}: {err})") from err
    return unet, vae


def _compare(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], what: str) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [f"{k} {found[k]} != {expected[k]}" for k in sorted(set(expected) & set(found)) if found[k] != expected[k]]
    if missing:
        problems.append(f"{what}: {len(missing)} tensors missing, e.g. {missing[:5]}")
    if extra:
        problems.append(f"{what}: {len(extra)} unexpected tensors, e.g. {extra[:5]}")
    if wrong:
        problems.append(f"{what}: {len(wrong)} tensors with wrong shapes, e.g. {wrong[:5]}")
    return problems


def check_shapes(shapes: dict[str, tuple[int, ...]], unet_config: dict[str, Any], vae_config: dict[str, Any],
                 where: str) -> list[str]:
    """Problems (empty when none) with a single file whose tensor shapes are ``shapes``; loads nothing."""
    meta = {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}
    try:
        unet, vae = convert(meta, unet_config, vae_config)
    except SingleFileError as err:
        return [f"{where}: {err}"]
    problems = _compare(_expected(UNet2DConditionModel, unet_config), {k: tuple(v.shape) for k, v in unet.items()},
                        f"{where} (UNet)")
    if vae is not None:
        problems += _compare(_expected(AutoencoderKL, vae_config), {k: tuple(v.shape) for k, v in vae.items()},
                             f"{where} (VAE)")
    return problems


def load_single_file(path: str, unet_config: dict[str, Any], vae_config: dict[str, Any]
                     ) -> tuple[UNet2DConditionModel, AutoencoderKL | None]:
    """The checkpoint's UNet, and its VAE when it carries one, on the CPU in the file's dtype."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    problems = check_shapes({k: tuple(v.shape) for k, v in state.items()}, unet_config, vae_config, str(path))
    if problems:
        raise SingleFileError("; ".join(problems))
    unet_state, vae_state = convert(state, unet_config, vae_config)
    modules = []
    for cls, config, converted in ((UNet2DConditionModel, unet_config, unet_state),
                                   (AutoencoderKL, vae_config, vae_state)):
        if converted is None:
            modules.append(None)
            continue
        with torch.device("meta"):
            model = cls.from_config(config)
        model.load_state_dict(converted, strict=True, assign=True)
        modules.append(model.eval().requires_grad_(False))
    logger.info("loaded single-file checkpoint %s (%s)", path, "UNet + VAE" if modules[1] is not None else "UNet")
    return modules[0], modules[1]
