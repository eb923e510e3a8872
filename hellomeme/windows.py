"""Overlapping frame windows: where they start, and how overlapping frames are blended back.

Engines render (or denoise) a clip window by window.  Neighbouring windows share ``overlap``
frames; a shared frame is the weighted mean of its windows' values, with weights that ramp
linearly across the overlap, so a value moves smoothly from one window to the next and
there is no jump at a seam.  The same blend serves finished frames (warp engine) and noise
predictions at every denoising step (diffusion engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class WindowPlan:
    """Windows of ``size`` frames over ``num_frames`` frames, neighbours sharing ``overlap``."""

    num_frames: int
    size: int
    overlap: int

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"a clip needs at least one frame, got {self.num_frames}")
        if self.size < 1:
            raise ValueError(f"window size must be >= 1, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"overlap must be in [0, window size), got {self.overlap} for size {self.size}")

    @property
    def starts(self) -> tuple[int, ...]:
        """First frame of each window; the last window ends on the last frame."""
        if self.num_frames <= self.size:
            return (0,)
        stride = self.size - self.overlap
        starts = list(range(0, self.num_frames - self.size, stride))
        starts.append(self.num_frames - self.size)
        return tuple(starts)

    @property
    def windows(self) -> tuple[range, ...]:
        """Frame indices of each window."""
        length = min(self.size, self.num_frames)
        return tuple(range(s, s + length) for s in self.starts)

    def weights(self) -> tuple[np.ndarray, ...]:
        """Blend weight of each frame of each window (1 inside, ramping down towards a shared edge)."""
        windows = self.windows
        result = []
        for i, window in enumerate(windows):
            w = np.ones(len(window), dtype=np.float32)
            if i > 0:
                shared = windows[i - 1].stop - window.start
                w[:shared] = np.minimum(w[:shared], np.arange(1, shared + 1) / (shared + 1))
            if i + 1 < len(windows):
                shared = window.stop - windows[i + 1].start
                ramp = np.arange(shared, 0, -1) / (shared + 1)
                w[len(w) - shared:] = np.minimum(w[len(w) - shared:], ramp)
            result.append(w)
        return tuple(result)


def blend_windows(plan: WindowPlan, window_values: Sequence[np.ndarray]) -> np.ndarray:
    """Combine per-window arrays (time on axis 0) into one array of ``plan.num_frames`` frames.

    A frame covered by one window keeps that window's value, copied; a frame covered by several
    gets their weighted mean (weights from :meth:`WindowPlan.weights`), computed in float32 (float64
    for float64 inputs) and rounded back for integer inputs.  Only shared frames are converted, so
    a long clip of uint8 frames needs no float copy of the whole clip.
    """
    windows = plan.windows
    if len(window_values) != len(windows):
        raise ValueError(f"expected {len(windows)} windows, got {len(window_values)}")
    values = [np.asarray(v) for v in window_values]
    for window, array in zip(windows, values):
        if array.shape[0] != len(window):
            raise ValueError(f"window at {window.start} has {array.shape[0]} frames, expected {len(window)}")
    dtype = values[0].dtype
    sum_dtype = np.float64 if dtype == np.float64 else np.float32
    out = np.empty((plan.num_frames,) + values[0].shape[1:], dtype=dtype)
    covering: list[list[tuple[np.ndarray, float]]] = [[] for _ in range(plan.num_frames)]
    for window, weights, array in zip(windows, plan.weights(), values):
        for position, frame in enumerate(window):
            covering[frame].append((array[position], float(weights[position])))
    for frame, covers in enumerate(covering):
        if len(covers) == 1:
            out[frame] = covers[0][0]
            continue
        total = sum(value.astype(sum_dtype) * weight for value, weight in covers)
        mean = total / sum(weight for _, weight in covers)
        if np.issubdtype(dtype, np.integer):
            limits = np.iinfo(dtype)
            mean = np.clip(np.rint(mean), limits.min, limits.max)
        out[frame] = mean
    return out
