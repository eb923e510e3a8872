"""Where a video's random numbers come from: the official script's generator, or per (seed, frame, step).

:class:`OfficialNoise` (the default) draws exactly what HelloMeme v5's video script draws from
its one ``torch.Generator(seed)`` on the CPU, in the same order and dtypes: the reference
latent's posterior sample (the VAE's dtype), then one block of starting noise for the clip
(the run's dtype, ``T + window + 1`` frames, of which every pass takes its first frames), then
at every step of every pass the SDE noise (float32), passes in the order they run.  So the same
seed gives the official script's video, and a video renders the same whichever videos share its
batch.

:class:`FrameNoise` (``--noise-per-frame``) draws each frame's starting latent and each step's
noise from a generator seeded by (seed, frame, step): a frame's noise then does not depend on
the clip's length or the pass it is in, at the price of differing from the official script.
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


def frame_noise(keys: Sequence[tuple[int, int]], step: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(len(keys), *shape) float32 standard normal noise on the CPU, one draw per (seed, frame) key at ``step``."""
    out = torch.empty((len(keys), *shape), dtype=torch.float32)
    generator = torch.Generator()
    for row, (seed, frame) in enumerate(keys):
        generator.manual_seed(frame_seed(seed, frame, step))
        out[row] = torch.randn(shape, generator=generator)
    return out


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


class OfficialNoise:
    """One video's random numbers drawn as the official script draws them (see the module docstring).

    Call :meth:`reference` once, then :meth:`initial` / :meth:`step` pass by pass in the order
    the passes run; latents are (frames, C, h, w) float32 on the CPU.
    """

    def __init__(self, seed: int, num_frames: int, window: int, latent_shape: tuple[int, int, int],
                 dtype: torch.dtype) -> None:
        self.seed = seed
        self._generator = _seeded(seed)
        self._num_frames = num_frames
        self._window = window
        self._shape = latent_shape
        self._dtype = dtype
        self._base: torch.Tensor | None = None

    def reference(self, dtype: torch.dtype) -> torch.Tensor:
        """(1, C, h, w) standard normal for the reference latent's posterior sample (in the VAE's dtype)."""
        if self._base is not None:
            raise RuntimeError("the reference sample is the first draw of a video")
        sample = torch.randn((1, *self._shape), generator=self._generator, dtype=dtype)
        channels, height, width = self._shape
        # The script's latent block: (1, C, T + frames-per-window + 1, h, w), drawn right after.
        self._base = torch.randn((1, channels, self._num_frames + self._window + 1, height, width),
                                 generator=self._generator, dtype=self._dtype)
        return sample

    def initial(self, frames: Sequence[int]) -> torch.Tensor:
        """Starting noise of a pass over ``frames``: the block's first ``len(frames)`` frames."""
        if self._base is None:
            raise RuntimeError("draw the reference sample first")
        return self._base[0, :, : len(frames)].transpose(0, 1).float()

    def step(self, frames: Sequence[int], step: int) -> torch.Tensor:
        """The SDE noise of one step of a pass over ``frames``: one (1, C, F, h, w) float32 draw."""
        channels, height, width = self._shape
        noise = torch.randn((1, channels, len(frames), height, width), generator=self._generator,
                            dtype=torch.float32)
        return noise[0].transpose(0, 1)


class FrameNoise:
    """One video's random numbers per (seed, frame, step) (``--noise-per-frame``)."""

    def __init__(self, seed: int, num_frames: int, window: int, latent_shape: tuple[int, int, int],
                 dtype: torch.dtype) -> None:
        self.seed = seed
        self._shape = latent_shape
        self._generator = _seeded(seed)

    def reference(self, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn((1, *self._shape), generator=self._generator, dtype=dtype)

    def initial(self, frames: Sequence[int]) -> torch.Tensor:
        return frame_noise([(self.seed, f) for f in frames], INITIAL_STEP, self._shape)

    def step(self, frames: Sequence[int], step: int) -> torch.Tensor:
        return frame_noise([(self.seed, f) for f in frames], step, self._shape)


NOISE_KINDS = {"official": OfficialNoise, "per-frame": FrameNoise}
