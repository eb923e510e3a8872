"""Noise that depends only on (seed, frame index, step): a retried or re-batched video renders the same.

Each frame's starting latent and each SDE step's fresh noise come from a generator seeded by
that triple, drawn on the CPU so the numbers do not depend on the GPU model or on which other
videos share the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

INITIAL_STEP = -1  # the "step" that seeds a frame's starting latent


def frame_seed(seed: int, frame: int, step: int) -> int:
    """A 63-bit seed mixed from the triple (numpy's SeedSequence hashes it)."""
    entropy = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, int(frame), int(step) + 1]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def frame_noise(
    keys: Sequence[tuple[int, int]], step: int, shape: tuple[int, ...], device: torch.device, pin: bool = False
) -> torch.Tensor:
    """(len(keys), *shape) standard normal noise, one draw per (seed, frame) key at ``step``."""
    out = torch.empty((len(keys), *shape), dtype=torch.float32, pin_memory=pin)
    generator = torch.Generator()
    for row, (seed, frame) in enumerate(keys):
        generator.manual_seed(frame_seed(seed, frame, step))
        out[row] = torch.randn(shape, generator=generator)
    return out.to(device, non_blocking=pin)
