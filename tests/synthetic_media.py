"""Test media made on the spot, so the end-to-end tests run in a fresh clone without ../shared.

The demo's portraits (scikit-image's astronaut, matplotlib's Grace Hopper) and short driving
clips synthesised from them (a scripted nod, turn, smile, open mouth and blinks, with a jingle as
audio), laid out like ``../shared/media``: ``reference_images/*.png`` and ``drive_videos/*.mp4``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from jobs.demo import jingle_wav
from mediaio import media, storage


def build_synthetic_media(folder: Path, seconds: float = 2.0, size: int = 320, fps: float = 15.0) -> Path:
    """Write the portraits and one driving clip per portrait under ``folder``; returns ``folder``."""
    from jobs import demo_media

    (folder / "reference_images").mkdir(parents=True, exist_ok=True)
    (folder / "drive_videos").mkdir(parents=True, exist_ok=True)
    for name, portrait in demo_media.demo_portraits().items():
        Image.fromarray(portrait).save(folder / "reference_images" / f"{name}.png")
        frames, clip_fps = demo_media.synthesize_driving_clip(portrait, fps=fps, seconds=seconds, crop_size=size)
        duration = len(frames) / clip_fps
        video = media.encode_mp4(frames, fps=clip_fps, output_fps=clip_fps, duration=duration,
                                 audio=jingle_wav(duration), limits=media.MediaLimits())
        storage.write_replace(str(folder / "drive_videos" / f"{name}.mp4"), video)
    return folder
