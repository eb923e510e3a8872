"""Where a clip's frame windows start and end, and how a frame shared by two windows is blended.

HelloMeme v5's motion module sees a window of frames at a time.  Its video script cuts a clip of
``n`` frames like this (``size`` 12, ``overlap`` 1, so a stride of 11):

- ``n <= size``: one window of all frames;
- otherwise windows start at 0, 11, 22, ... and run ``size`` frames or up to the clip's last
  frame, so the last window is usually shorter; a last window that would lie wholly inside its
  neighbour (one frame, at overlap 1) is not made;
- a frame covered by several windows gets the plain mean of their noise predictions.

Two deviations we used before are kept as switches, off by default (see the README):
``full_last_window`` ends the clip on a full-size window (the last window starts at
``n - size``), and ``ramped`` weights a shared frame by its distance from each window's edge
instead of plainly averaging (it only matters with ``overlap > 1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowRule:
    """How windows are cut; the defaults are HelloMeme v5's video script."""

    size: int = 12
    overlap: int = 1
    full_last_window: bool = False
    ramped: bool = False

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ValueError(f"a window needs at least 2 frames, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"overlap must be in [0, {self.size}), got {self.overlap}")

    @property
    def stride(self) -> int:
        return self.size - self.overlap


def plan_windows(num_frames: int, rule: WindowRule = WindowRule()) -> tuple[range, ...]:
    """Positions ``0 .. num_frames-1`` cut into windows by ``rule``, in order."""
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if num_frames <= rule.size:
        return (range(num_frames),)
    if rule.full_last_window:
        starts = list(range(0, num_frames - rule.size, rule.stride)) + [num_frames - rule.size]
        return tuple(range(s, s + rule.size) for s in starts)
    windows = [range(s, min(s + rule.size, num_frames)) for s in range(0, num_frames, rule.stride)]
    # A last window no longer than the overlap lies inside the one before it (the official rule
    # drops a one-frame last window); the first window is never dropped.
    while len(windows) > 1 and len(windows[-1]) <= rule.overlap:
        windows.pop()
    return tuple(windows)


def blend_weights(windows: tuple[range, ...], ramped: bool = False) -> tuple[np.ndarray, ...]:
    """Weight of each frame of each window when overlapping predictions are combined.

    Plain (the official rule): every weight is 1, so a shared frame gets the mean.  Ramped: inside
    an overlap of ``k`` frames the weights fall as ``k/(k+1) .. 1/(k+1)`` towards the window's edge.
    """
    result = []
    for i, window in enumerate(windows):
        weights = np.ones(len(window), dtype=np.float32)
        if ramped:
            if i > 0:
                shared = max(0, windows[i - 1].stop - window.start)
                weights[:shared] = np.minimum(weights[:shared], np.arange(1, shared + 1) / (shared + 1))
            if i + 1 < len(windows):
                shared = max(0, window.stop - windows[i + 1].start)
                if shared:
                    ramp = np.arange(shared, 0, -1) / (shared + 1)
                    weights[len(weights) - shared:] = np.minimum(weights[len(weights) - shared:], ramp)
        result.append(weights)
    return tuple(result)


def window_ends(windows: tuple[range, ...]) -> tuple[int, ...]:
    """Positions of every window's first and last frame, ascending (the official 'margin' frames)."""
    return tuple(sorted({w.start for w in windows} | {w.stop - 1 for w in windows}))
