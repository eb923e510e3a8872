"""SD1.5 LoRAs as PEFT adapters on the denoiser, switched per render call through diffusers' adapter API.

HelloMeme's script loads a LoRA into the denoiser's UNet at weight 1.0 and into its text
encoder scaled by ``lora_scale`` (``load_lora_into_text_encoder(..., lora_scale=...)``); the
reference branch never sees it.  We do the same with adapters instead of fused weights, so one
base model serves rows with different LoRAs: each file is loaded once as a named adapter (kohya
and diffusers/PEFT files alike, through diffusers' ``lora_state_dict``), the active one is chosen
with ``set_adapters``, and the least recently used is deleted when more than ``cache_size`` are
loaded.  A file that cannot be read or fits no layer raises :class:`LoraError` and leaves the
model as it was.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.peft_utils import delete_adapter_layers, set_adapter_layers, set_weights_and_activate_adapters
from torch import nn

logger = logging.getLogger(__name__)

UNET_WEIGHT = 1.0  # the published script's weight for the UNet's LoRA, whatever lora_scale is


class LoraError(ValueError):
    """The LoRA file cannot be read or matches no layer of the model."""


def adapter_name(path: str) -> str:
    """A PEFT-safe adapter name for a file (PEFT names become module attribute keys: no dots)."""
    return "lora_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]


def _peft_layers(model: nn.Module, name: str) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(1 for m in model.modules() if isinstance(m, BaseTunerLayer) and name in getattr(m, "scaling", {}))


class LoraAdapters:
    """LoRA adapters of one denoiser (its UNet and text encoder), a few kept loaded."""

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, cache_size: int = 4) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.unet = unet
        self.text_encoder = text_encoder
        self.cache_size = cache_size
        self._loaded: OrderedDict[str, bool] = OrderedDict()  # adapter name -> has text-encoder layers
        self.active: tuple[str, float] | None = None

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self._loaded)

    def activate(self, path: str | Path, scale: float = 1.0) -> None:
        """Run the denoiser with the LoRA at ``path``: UNet at weight 1, text encoder at ``scale``."""
        path = str(path)
        name = adapter_name(path)
        if name in self._loaded:
            self._loaded.move_to_end(name)
        else:
            self._load(path, name)
        self.unet.enable_lora()
        self.unet.set_adapters([name], weights=[UNET_WEIGHT])
        if self._loaded[name]:
            set_weights_and_activate_adapters(self.text_encoder, [name], [float(scale)])
            set_adapter_layers(self.text_encoder, enabled=True)
        else:
            self._disable_text_encoder()
        self.active = (path, float(scale))

    def deactivate(self) -> None:
        """Run the denoiser without any LoRA (adapters stay loaded)."""
        if self._loaded:
            self.unet.disable_lora()
            self._disable_text_encoder()
        self.active = None

    def _disable_text_encoder(self) -> None:
        if any(self._loaded.values()):
            set_adapter_layers(self.text_encoder, enabled=False)

    def _load(self, path: str, name: str) -> None:
        if Path(path).is_dir():  # a folder named .safetensors (a LoRA's training output): it was "not found"
            raise LoraError(f"LoRA {path} is a directory, not a .safetensors file: name the file inside it")
        if not Path(path).is_file():
            raise LoraError(f"LoRA file not found: {path}")
        try:
            state, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(path)
        except Exception as err:  # diffusers raises many types for unreadable or foreign files
            raise LoraError(f"cannot read LoRA {path}: {type(err).__name__}: {err}") from err
        if not state or not all("lora" in key for key in state):
            raise LoraError(f"{path} is not an SD1.5 LoRA file")
        unet_keys = [k for k in state if k.startswith("unet.")]
        text_keys = [k for k in state if k.startswith("text_encoder.")]
        if not unet_keys:
            raise LoraError(f"{path} has no UNet layers")
        while len(self._loaded) >= self.cache_size:
            self._delete(next(iter(self._loaded)))
        try:
            StableDiffusionLoraLoaderMixin.load_lora_into_unet(
                state, network_alphas=alphas, unet=self.unet, adapter_name=name)
            if text_keys:
                StableDiffusionLoraLoaderMixin.load_lora_into_text_encoder(
                    state, network_alphas=alphas,
                    text_encoder=self.text_encoder, adapter_name=name)
        except Exception as err:  # peft/diffusers raise ValueError, KeyError, RuntimeError for misfits
            self._delete(name, loaded=False)
            raise LoraError(f"LoRA {path} does not fit the SD1.5 denoiser: {type(err).__name__}: {err}") from err
        unet_layers = _peft_layers(self.unet, name)
        text_layers = _peft_layers(self.text_encoder, name) if text_keys else 0
        if unet_layers == 0 or (text_keys and text_layers == 0):
            self._delete(name, loaded=False)
            raise LoraError(f"LoRA {path} matches no layer of the SD1.5 denoiser")
        self._loaded[name] = text_layers > 0
        logger.info("loaded LoRA %s as %s (%d UNet, %d text-encoder layers)", path, name, unet_layers, text_layers)

    def _delete(self, name: str, loaded: bool = True) -> None:
        """Remove an adapter's layers from both models (also a half-loaded one)."""
        if _peft_layers(self.unet, name):
            self.unet.delete_adapters([name])
        if _peft_layers(self.text_encoder, name):
            delete_adapter_layers(self.text_encoder, name)
        peft_config = getattr(self.unet, "peft_config", None)
        if isinstance(peft_config, dict):
            peft_config.pop(name, None)
        if loaded or name in self._loaded:
            self._loaded.pop(name, None)
            if self.active is not None and adapter_name(self.active[0]) == name:
                self.active = None
