"""How many threads one pipeline stage's native libraries may use.

In one process (the demo's loop, a bench's baseline) a library's own threads use cores that would
otherwise idle, so :data:`AUTO` keeps each library's own choice.  Inside the Ray pipeline the
stages already run side by side, one or more per core; threads of their own then only contend
with the other stages for the same cores.  OpenCV's count is per process (set here); PyAV's and
ffmpeg's are given per call (:class:`mediaio.clips.ClipReader`, :func:`mediaio.media.encode_mp4`).
"""

from __future__ import annotations

AUTO = 0  # each library picks (usually one thread per core)


def use_threads(threads: int) -> None:
    """Have OpenCV in this process use ``threads`` threads (:data:`AUTO`: leave its own choice)."""
    if threads < 0:
        raise ValueError(f"threads must be 0 (auto) or more, got {threads}")
    if threads:
        import cv2

        cv2.setNumThreads(threads)
