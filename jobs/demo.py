"""`hellomeme-batch demo`: render built-in memes on this machine, with nothing to download.

The portraits ship inside installed packages (scikit-image's astronaut, matplotlib's Grace
Hopper sample); the driving clips are synthesised by warping a portrait along a scripted track
(nod, turn, smile, open mouth, blink) and given a short jingle as audio.  Each portrait is then
driven by the other portrait's clip, and by its own.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import wave

import numpy as np
from PIL import Image

from mediaio import media, storage
from mediaio.native_notices import notices_to_debug_log
from jobs.manifest_builder import write_manifest
from jobs.options import EXIT_JOB_ERROR, EXIT_OK, EXIT_ROWS_FAILED
from engines.registry import engine_spec
from pipelines.plan import JobConfig
from pipelines.render_job import run_render_job

logger = logging.getLogger("hellomeme_batch.demo")


def jingle_wav(seconds: float, rate: int = 22050) -> bytes:
    """A few soft notes as 16-bit mono WAV, so the demo memes carry an audio track to keep in sync."""
    t = np.arange(int(seconds * rate)) / rate
    notes = np.array([523.25, 659.25, 783.99, 659.25])
    pitch = notes[(t * 2).astype(int) % len(notes)]
    envelope = np.exp(-3 * ((t * 2) % 1.0))
    samples = (0.3 * envelope * np.sin(2 * np.pi * pitch * t) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return buffer.getvalue()


def build_demo_inputs(folder: str) -> str:
    """Write the demo portraits, driving clips and manifest under ``folder``; returns the manifest path."""
    from jobs import demo_media  # scikit-image and matplotlib load only for the demo

    os.makedirs(folder, exist_ok=True)
    limits = media.MediaLimits()
    portraits = demo_media.demo_portraits()
    portrait_paths, clip_paths = {}, {}
    for name, image in portraits.items():
        portrait_paths[name] = os.path.join(folder, f"{name}.png")
        Image.fromarray(image).save(portrait_paths[name])
        with notices_to_debug_log(logger):  # mediapipe's and TensorFlow Lite's start-up notices
            frames, fps = demo_media.synthesize_driving_clip(image)
        duration = len(frames) / fps
        video = media.encode_mp4(frames, fps=fps, output_fps=fps, duration=duration,
                                 audio=jingle_wav(duration), limits=limits)
        clip_paths[name] = os.path.join(folder, f"{name}_drive.mp4")
        storage.write_replace(clip_paths[name], video)
    rows = [
        {"id": f"{portrait}_driven_by_{driver}", "reference_uri": portrait_paths[portrait],
         "driving_uri": clip_paths[driver]}
        for portrait in portraits for driver in portraits
    ]
    manifest_path = os.path.join(folder, "manifest.parquet")
    write_manifest(rows, manifest_path)
    return manifest_path


def run(args: argparse.Namespace) -> int:
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        logger.error("--output %s is a file, not a folder: give the demo a folder for its memes", args.output)
        return EXIT_JOB_ERROR
    inputs = os.path.join(output, "_demo_inputs")
    logger.info("building the demo manifest in %s", inputs)
    manifest = build_demo_inputs(inputs)
    config = JobConfig(manifest_uri=manifest, output_uri=output, engine=engine_spec("warp"),
                       skip_existing=not args.force)
    report = run_render_job(config, address=args.address)
    lines = [f"demo: {report.summary.ok} ok, {report.summary.failed} failed, {report.summary.skipped} skipped "
             f"in {report.seconds:.1f} s"]
    for row in report.results:
        lines.append(f"  {row['status']:7} {row['output_uri'] or ''}" + (f"  {row['error']}" if row["error"] else ""))
    lines.append(f"results table: {report.summary.results_uri}")
    if report.report_uri:
        lines.append(f"report: {report.report_uri}")
    print("\n".join(lines))  # the demo's answer to the user: where the videos are
    return EXIT_ROWS_FAILED if report.summary.failed else EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo-output", help="folder for the demo memes (default: demo-output)")
    parser.add_argument("--force", action="store_true", help="render again even if the memes exist")
    parser.add_argument("--address", default="local", help="Ray address (default: a local instance)")
