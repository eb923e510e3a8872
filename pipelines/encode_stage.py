"""Encode stage: rendered frames to an H.264 MP4 at the driving clip's frame rate, its audio muxed in.

The report's animated preview of the meme is made here too, from the frames already in memory,
just before they are dropped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from mediaio import media
from reporting import previews
from pipelines.rows import MemeWork
from pipelines.config import RenderJobConfig


def make_encode_fn(config: RenderJobConfig) -> Callable[[MemeWork], MemeWork]:
    """A work -> work function that turns ``frames`` into ``video`` bytes (and a preview), dropping the frames."""

    def encode(work: MemeWork) -> MemeWork:
        clip = work.clip
        video = media.encode_mp4(
            work.frames,
            fps=clip.fps,
            output_fps=media.output_frame_rate(clip),
            duration=clip.duration,
            audio=clip.audio,
            limits=config.limits,
            interpolate=config.interpolate,
        )
        if config.report:
            work = previews.with_meme_preview(work, work.frames, clip.fps, config.output_uri, config.storage_options)
        return replace(work, video=video, num_frames=int(work.frames.shape[0]), frames=None,
                       clip=replace(clip, audio=None))

    return encode
