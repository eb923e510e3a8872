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

    A frame covered by one window keeps that window's value; a frame covered by two gets the
    weighted mean, weights from :meth:`WindowPlan.weights`.
    """
    windows = plan.windows
    if len(window_values) != len(windows):
        raise ValueError(f"expected {len(windows)} windows, got {len(window_values)}")
    first = np.asarray(window_values[0])
    total = np.zeros((plan.num_frames,) + first.shape[1:], dtype=np.float64)
    weight_sum = np.zeros(plan.num_frames, dtype=np.float64)
    for window, weights, values in zip(windows, plan.weights(), window_values):
        values = np.asarray(values)
        if values.shape[0] != len(window):
            raise ValueError(f"window at {window.start} has {values.shape[0]} frames, expected {len(window)}")
        shape = (-1,) + (1,) * (values.ndim - 1)
        total[window.start:window.stop] += values * weights.reshape(shape)
        weight_sum[window.start:window.stop] += weights
    out = total / weight_sum.reshape((-1,) + (1,) * (total.ndim - 1))
    return out.astype(first.dtype) if np.issubdtype(first.dtype, np.floating) else out
