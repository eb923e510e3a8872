"""The hellomeme engine's options: what a user chooses on the command line, checked on the driver.

This module is light (no torch), so the CLI can list these options as flags and the driver can check
them before any row runs.  Each field's metadata gives its flag and help text; the defaults follow
HelloMeme v5's official video script.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engines.base import EngineOptionError

DTYPES = ("auto", "fp16", "bf16", "fp32")
# The published motion module has 32 temporal positions; a window also carries its two end frames.
MAX_WINDOW = 30
# The VAE halves the image 3 times (latents at 1/8) and the control net halves the latent 3 more times.
SIZE_GRANULARITY = 64


def _flag(flag: str, help: str, **extra) -> dict:
    return {"flag": flag, "help": help, **extra}


@dataclass(frozen=True)
class HelloMemeOptions:
    """How the hellomeme engine is built in every render actor (paths, not weights: it travels by value)."""

    weights: str | None = field(default=None, metadata=_flag(
        "--weights", "weights folder in the hub layout (default: the Hugging Face hub cache; HF_HUB_OFFLINE=1 honoured)"))
    dtype: str = field(default="auto", metadata=_flag(
        "--dtype", "precision on the GPU (auto: bf16 where supported, fp16 elsewhere, fp32 on CPU)", choices=DTYPES))
    compile: bool = field(default=False, metadata=_flag("--compile", "torch.compile the denoiser"))
    device: str = field(default="auto", metadata=_flag("--device", "torch device (auto: cuda when the actor holds a GPU)"))
    window: int = field(default=12, metadata=_flag("--window", f"frames per window (at most {MAX_WINDOW})"))
    overlap: int = field(default=1, metadata=_flag("--overlap", "frames shared by neighbouring windows"))
    # Test and benchmark models: an import path of a function (device, dtype, release) -> HelloMemeComponents.
    components_factory: str | None = field(default=None, metadata={"flag": None})

    def check(self, size: int) -> None:
        """Raise EngineOptionError naming the option before any row runs."""
        if size < SIZE_GRANULARITY or size % SIZE_GRANULARITY:
            raise EngineOptionError("--size", f"must be a positive multiple of {SIZE_GRANULARITY} for the hellomeme "
                                              f"engine, got {size}")
        if not 2 <= self.window <= MAX_WINDOW:
            raise EngineOptionError("--window", f"must be between 2 and {MAX_WINDOW} frames, got {self.window}")
        if not 0 <= self.overlap < self.window:
            raise EngineOptionError("--overlap", f"must be at least 0 and below the window ({self.window}), "
                                                 f"got {self.overlap}")
        if self.dtype not in DTYPES:
            raise EngineOptionError("--dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
