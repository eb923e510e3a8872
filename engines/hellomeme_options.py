"""The hellomeme engine's options: what a user chooses on the command line, checked on the driver.

This module is light (no torch), so the CLI can list these options as flags and the driver can check
them before any row runs.  Each field's metadata gives its flag and help text.  The defaults follow
HelloMeme v5's official video script; every switch marked "deviation" departs from it on purpose
(README, "Deviations from the official script").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engines.base import EngineOptionError
from hellomeme.windows import WindowRule  # light (numpy only): the official window rule's defaults

DTYPES = ("auto", "fp16", "bf16", "fp32")
RELEASES = ("v5", "v5b")  # hellomeme.weights.RELEASES, named here without importing torch
# The published motion module has 32 temporal positions; a window also carries its two end frames.
MAX_WINDOW = 30
# The VAE halves the image 3 times (latents at 1/8) and the control net halves the latent 3 more times.
SIZE_GRANULARITY = 64
# Files that torch would unpickle (running code) are refused; SD1.5 files are shared as safetensors.
SAFE_SUFFIX = ".safetensors"


def _flag(flag: str, help: str, **extra) -> dict:
    return {"flag": flag, "help": help, **extra}


@dataclass(frozen=True)
class HelloMemeOptions:
    """How the hellomeme engine is built in every render actor (paths, not weights: it travels by value)."""

    weights: str | None = field(default=None, metadata=_flag(
        "--weights", "HelloMeme weights in the hub layout: a local folder or an object-store URI (s3://, gs://), "
                     "synced once per node (default: the Hugging Face hub; HF_HUB_OFFLINE=1 honoured)"))
    weights_cache: str | None = field(default=None, metadata=_flag(
        "--weights-cache", "node-local folder that weights, checkpoints and LoRAs from object storage are synced to "
                           "(default: $HELLOMEME_WEIGHTS_CACHE or ~/.cache/hellomeme-batch)"))
    release: str = field(default="v5", metadata=_flag(
        "--release", "HelloMeme release: v5 or v5b (its other reference adapter)", choices=RELEASES))
    checkpoint: str | None = field(default=None, metadata=_flag(
        "--checkpoint", "SD1.5-derived checkpoint for the denoiser: a diffusers folder or a single-file .safetensors "
                        "(path or URI); the reference branch stays base SD1.5"))
    lora: str | None = field(default=None, metadata=_flag(
        "--lora", "SD1.5 LoRA .safetensors (path or URI) for rows whose manifest names none"))
    lora_scale: float = field(default=1.0, metadata=_flag(
        "--lora-scale", "LoRA weight in the text encoder for rows that name none (the UNet's is 1, as published)"))
    trans_ratio: float = field(default=0.5, metadata=_flag(
        "--trans-ratio", "how much of the driver's head translation the output follows (0: none)"))
    dtype: str = field(default="auto", metadata=_flag(
        "--dtype", "precision (auto: fp16 on the GPU as the official script, fp32 on the CPU; bf16 is a deviation)",
        choices=DTYPES))
    compile: bool = field(default=False, metadata=_flag("--compile", "torch.compile the denoiser"))
    device: str = field(default="auto", metadata=_flag("--device", "torch device (auto: cuda when the actor holds a GPU)"))
    window: int = field(default=WindowRule.size, metadata=_flag(
        "--window", f"frames per window (official {WindowRule.size}, at most {MAX_WINDOW}; other values are a "
                    "deviation)"))
    overlap: int = field(default=WindowRule.overlap, metadata=_flag(
        "--overlap", f"frames shared by neighbouring windows (official {WindowRule.overlap}; more is a deviation)"))
    ramped_overlap: bool = field(default=False, metadata=_flag(
        "--ramped-overlap", "deviation: weight shared frames by distance from each window's edge instead of a plain "
                            "mean (matters with --overlap > 1)"))
    full_last_window: bool = field(default=False, metadata=_flag(
        "--full-last-window", "deviation: end the clip on a full window instead of a shorter one"))
    noise_per_frame: bool = field(default=False, metadata=_flag(
        "--noise-per-frame", "deviation: draw noise per (seed, frame, step) instead of from one generator per video"))
    spread_windows: int = field(default=0, metadata=_flag(
        "--spread-windows", "deviation: cut a clip's last pass into groups of N windows, each denoised on its own, so "
                            "one long clip is rendered by several GPUs at once; needs --noise-per-frame (0: off)"))
    unet_batch: int = field(default=96, metadata=_flag(
        "--unet-batch", "UNet images per denoiser call (both guidance branches counted)"))
    lora_cache: int = field(default=4, metadata=_flag(
        "--lora-cache", "LoRA adapters each render actor keeps loaded"))
    # Test and benchmark models: an import path of a function (device, dtype, release=) -> HelloMemeComponents.
    components_factory: str | None = field(default=None, metadata={"flag": None})

    def check(self, size: int) -> None:
        """Raise EngineOptionError naming the option before any row runs."""
        if size < SIZE_GRANULARITY or size % SIZE_GRANULARITY:
            raise EngineOptionError("--size", f"must be a positive multiple of {SIZE_GRANULARITY} for the hellomeme "
                                              f"engine, got {size}")
        if self.release not in RELEASES:
            raise EngineOptionError("--release", f"must be one of {', '.join(RELEASES)}, got {self.release!r}")
        if not 2 <= self.window <= MAX_WINDOW:
            raise EngineOptionError("--window", f"must be between 2 and {MAX_WINDOW} frames, got {self.window}")
        if not 0 <= self.overlap < self.window:
            raise EngineOptionError("--overlap", f"must be at least 0 and below the window ({self.window}), "
                                                 f"got {self.overlap}")
        if self.dtype not in DTYPES:
            raise EngineOptionError("--dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not math.isfinite(self.lora_scale):
            raise EngineOptionError("--lora-scale", f"must be a finite number, got {self.lora_scale}")
        if not (math.isfinite(self.trans_ratio) and self.trans_ratio >= 0):
            raise EngineOptionError("--trans-ratio", f"must be a number >= 0, got {self.trans_ratio}")
        if self.spread_windows < 0:
            raise EngineOptionError("--spread-windows", f"must be 0 (off) or a number of windows, got "
                                                        f"{self.spread_windows}")
        if self.spread_windows and not self.noise_per_frame:
            raise EngineOptionError("--spread-windows", "needs --noise-per-frame: a group's noise must not depend on "
                                                        "the other groups (the official script draws one generator "
                                                        "over the whole clip)")
        if self.unet_batch < 1:
            raise EngineOptionError("--unet-batch", f"must be at least 1, got {self.unet_batch}")
        if self.lora_cache < 1:
            raise EngineOptionError("--lora-cache", f"must be at least 1, got {self.lora_cache}")
        if self.lora is not None:
            check_lora_name(self.lora, "--lora")
        if self.checkpoint is not None and self.checkpoint.lower().endswith((".ckpt", ".pt", ".pth", ".bin")):
            raise EngineOptionError("--checkpoint", "single-file checkpoints must be .safetensors (pickled files run "
                                                    f"code when loaded), got {self.checkpoint}")


def check_lora_name(lora: str, option: str = "lora") -> None:
    """A LoRA is named by a .safetensors path or URI."""
    if not lora.strip():
        raise EngineOptionError(option, "is empty")
    if not lora.lower().endswith(SAFE_SUFFIX):
        raise EngineOptionError(option, f"must be a .safetensors file (pickled files run code when loaded), got {lora}")
