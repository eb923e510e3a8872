"""Groups of windows of a clip's last pass, rendered independently so that one long clip can use several GPUs.

In the official script the windows of the last pass are not independent: neighbouring windows
share a frame whose noise prediction is the mean of both at every step, and one generator draws
every pass's noise over the whole latent tensor.  Splitting that pass between workers exactly
would need the shared frames' predictions exchanged at every step.  ``--spread-windows G``
(a deviation, off by default) changes the computation instead, so that it splits cleanly:

- the last pass's windows are cut into fixed groups of ``G`` consecutive windows (the last group
  may be shorter).  The cut depends only on the clip's length, the window rule and ``G``, never
  on how many workers there are;
- each group is denoised on its own: predictions are averaged only between the group's own
  windows.  The frames two groups share (a window's end frame, finished earlier by the edge
  pass, whose features condition both groups) are taken from the **left** group: the right
  group renders them too but drops them;
- noise is drawn per (seed, frame, step) (``--noise-per-frame``), so a frame's noise does not
  depend on which group or worker renders it.

A group then needs only the video's conditions for its own frames and the finished latents of
its windows' end frames.  One actor rendering a whole clip with the option runs exactly these
groups one after another, so the result is the same whichever worker renders which group.
"""

from __future__ import annotations

from dataclasses import dataclass

from hellomeme.passes import DenoisePass, plan_passes
from hellomeme.windows import WindowRule


@dataclass(frozen=True)
class WindowGroup:
    """A run of consecutive windows of the last pass, denoised on its own.

    ``denoise_pass`` holds the group's frames (video frame indices) and its windows (positions in
    those frames); ``keep_from`` is the first video frame of the group's output that the video
    keeps (frames before it are the left group's).
    """

    index: int
    count: int
    denoise_pass: DenoisePass
    keep_from: int

    @property
    def start(self) -> int:
        return self.denoise_pass.frames[0]

    @property
    def stop(self) -> int:
        return self.denoise_pass.frames[-1] + 1

    @property
    def end_frames(self) -> tuple[int, ...]:
        """The video frames whose finished latents condition the group's windows (from the edge pass)."""
        return self.denoise_pass.end_frames()


def plan_groups(num_frames: int, rule: WindowRule, windows_per_group: int) -> tuple[WindowGroup, ...]:
    """The groups of a clip's last pass; empty when the clip is not split (one group or fewer).

    A clip is split only when its last pass is conditioned on end frames (there is an edge pass)
    and it has more than ``windows_per_group`` windows.
    """
    if windows_per_group < 1:
        raise ValueError(f"windows per group must be at least 1, got {windows_per_group}")
    final = plan_passes(num_frames, rule)[-1]
    if not final.conditioned_on_ends or len(final.windows) <= windows_per_group:
        return ()
    if final.frames != tuple(range(num_frames)):
        raise ValueError("the last pass must cover every frame")  # plan_passes guarantees it
    starts = range(0, len(final.windows), windows_per_group)
    groups, kept_until = [], 0
    for index, first in enumerate(starts):
        windows = final.windows[first : first + windows_per_group]
        offset = windows[0].start
        frames = tuple(range(offset, windows[-1].stop))
        local = tuple(range(w.start - offset, w.stop - offset) for w in windows)
        group_pass = DenoisePass(frames, local, final.weights[first : first + windows_per_group],
                                 conditioned_on_ends=True)
        groups.append(WindowGroup(index, len(starts), group_pass, keep_from=max(offset, kept_until)))
        kept_until = windows[-1].stop
    return tuple(groups)
