"""Fuse an SD1.5 LoRA into the UNet and text encoder weights (W += scale * alpha/rank * up @ down).

Fusing costs nothing per step, and it needs no PEFT. Understands kohya/sd-scripts files
(``lora_unet_<path>.lora_down.weight``, ``lora_te_<path>...``, ``<path>.alpha``) and diffusers/PEFT
files (``unet.<path>.lora_A.weight`` / ``lora_B.weight``, or ``.lora.down`` / ``.lora.up``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)


class LoraError(ValueError):
    """The LoRA file cannot be read or matches no layer of the model."""


@dataclass(frozen=True)
class LoraReport:
    fused_layers: int
    unmatched: tuple[str, ...]


_KOHYA = re.compile(r"^(lora_unet|lora_te1?)_(.+?)\.(lora_down|lora_up|alpha)(\.weight)?$")
_PEFT = re.compile(r"^(unet|text_encoder)\.(.+?)\.(lora_A|lora_B|lora\.down|lora\.up|alpha)(\.weight)?$")
_ROLES = {"lora_down": "down", "lora_A": "down", "lora.down": "down", "lora_up": "up", "lora_B": "up",
          "lora.up": "up", "alpha": "alpha"}


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LoraError(f"LoRA file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _group(state: dict[str, torch.Tensor]) -> tuple[dict[tuple[str, str], dict[str, torch.Tensor]], list[str]]:
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in state.items():
        match = _KOHYA.match(key)
        if match:
            prefix, path, role = match.group(1), match.group(2), match.group(3)
            target = ("unet" if prefix == "lora_unet" else "text_encoder", "flat:" + path)
        else:
            match = _PEFT.match(key)
            if not match:
                unknown.append(key)
                continue
            target, role = (match.group(1), "dotted:" + match.group(2)), match.group(3)
        groups.setdefault(target, {})[_ROLES[role]] = tensor
    return groups, unknown


def _lookup(model: nn.Module, optional_prefix: str = "") -> dict[str, nn.Module]:
    """Linear/conv layers by dotted and underscored name, with and without ``optional_prefix``.

    (transformers 5's CLIPTextModel dropped the ``text_model.`` level that LoRA files still name.)
    """
    table = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            names = {name}
            if optional_prefix and not name.startswith(optional_prefix):
                names.add(optional_prefix + name)
            for full in names:
                table["dotted:" + full] = module
                table["flat:" + full.replace(".", "_")] = module
    return table


@torch.no_grad()
def _fuse_one(module: nn.Module, parts: dict[str, torch.Tensor], scale: float) -> None:
    down, up = parts["down"].float(), parts["up"].float()
    rank = down.shape[0]
    factor = scale * (float(parts["alpha"]) / rank if "alpha" in parts else 1.0)
    weight = module.weight
    if down.ndim == 4 and down.shape[-1] > 1:  # a k x k conv LoRA: down is the spatial conv, up is 1x1
        delta = torch.einsum("or,rikl->oikl", up.flatten(1), down)
    else:
        delta = up.flatten(1) @ down.flatten(1)
    if delta.numel() != weight.numel():
        raise LoraError(f"LoRA delta {tuple(delta.shape)} does not fit weight {tuple(weight.shape)}")
    weight.add_((factor * delta).reshape(weight.shape).to(device=weight.device, dtype=weight.dtype))


def fuse_lora(unet: nn.Module, text_encoder: nn.Module | None, path: str | Path, scale: float = 1.0) -> LoraReport:
    """Fuse the LoRA at ``path`` into ``unet`` (and ``text_encoder`` if given) in place."""
    groups, unknown = _group(_read(Path(path)))
    tables = {"unet": _lookup(unet),
              "text_encoder": _lookup(text_encoder, "text_model.") if text_encoder is not None else {}}
    fused = 0
    unmatched = list(unknown)
    for (model_name, target), parts in groups.items():
        module = tables[model_name].get(target)
        if module is None or "down" not in parts or "up" not in parts:
            unmatched.append(f"{model_name}:{target}")
            continue
        _fuse_one(module, parts, scale)
        fused += 1
    if fused == 0:
        raise LoraError(f"no layer of the model matches the LoRA at {path} ({len(unmatched)} unmatched entries)")
    if unmatched:
        logger.warning("LoRA %s: %d entries matched no layer (first: %s)", path, len(unmatched), unmatched[:3])
    logger.info("fused %d LoRA layers from %s at scale %.2f", fused, path, scale)
    return LoraReport(fused_layers=fused, unmatched=tuple(unmatched))
