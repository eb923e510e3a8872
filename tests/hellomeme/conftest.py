"""Fixtures for the HelloMeme model tests: tiny random-weight models and synthetic faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.base import RenderInput, RowSettings
from faces.tracking import FaceTrack
from hellomeme.pose_control import HeadPoseTrack
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig, VideoRequest
from hellomeme.windows import WindowRule

from .tiny_models import tiny_components

REPO = Path(__file__).resolve().parents[2]
STATE_DICT_TSV = REPO.parent / "shared" / "hellomeme" / "state_dict_keys.tsv"
TEST_SIZE = 128  # render size for tiny models: latents 16x16; the control net needs >= 2x2 at its bottom
FACE_SIZE = 64  # the tiny PD-FGC input


def synthetic_landmarks(size: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """(T, 478, 3) mediapipe-like points: a face oval with eyes, nose tip and mouth corners where they belong."""
    centre = np.array([size * 0.5, size * 0.45])
    radius = size * 0.18
    angles = rng.uniform(0, 2 * np.pi, 478)
    radii = radius * np.sqrt(rng.uniform(0, 1, 478))
    base = np.stack([centre[0] + radii * np.cos(angles), centre[1] + 1.25 * radii * np.sin(angles), np.zeros(478)], 1)
    named = {468: (-0.4, -0.3), 473: (0.4, -0.3), 1: (0.0, 0.1), 61: (-0.3, 0.5), 291: (0.3, 0.5)}
    for index, (dx, dy) in named.items():
        base[index, :2] = centre + radius * np.array([dx, dy])
    jitter = rng.normal(0, size * 0.005, (frames, 478, 3))
    jitter[..., 2] = 0
    return (base[None] + jitter).astype(np.float32)


def face_track(size: int, frames: int, seed: int = 0) -> FaceTrack:
    rng = np.random.default_rng(seed)
    return FaceTrack(
        landmarks=synthetic_landmarks(size, frames, rng),
        rotation=rng.normal(0, 0.15, (frames, 3)).astype(np.float32),
        translation=np.zeros((frames, 3), dtype=np.float32),
        detected=np.ones(frames, dtype=bool),
        image_size=(size, size),
    )


TINY_FACTORY = "tests.hellomeme.tiny_models:tiny_components"
# Tiny clips still need several windows: 4-frame windows sharing one frame.
TEST_WINDOWS = WindowRule(size=4, overlap=1)


def render_input(frames: int, seed: int = 0, size: int = TEST_SIZE, steps: int = 2, meme_id: str = "meme",
                 **settings) -> RenderInput:
    rng = np.random.default_rng(seed + 100)
    return RenderInput(
        meme_id=meme_id,
        reference=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        reference_face=face_track(size, 1, seed + 1),
        driving_frames=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
        driving_face=face_track(size, frames, seed + 2),
        settings=RowSettings(seed=seed, steps=steps, **settings),
    )


def video_request(frames: int, seed: int = 0, size: int = TEST_SIZE, steps: int = 2, prompt: str = "",
                  guidance: float = 1.5, **extra) -> VideoRequest:
    rng = np.random.default_rng(seed + 200)
    return VideoRequest(
        reference_image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        head_pose=HeadPoseTrack(
            rotation=rng.normal(0, 0.2, (frames, 3)),
            translation=np.tile([0.0, 0.0, -5.0], (frames, 1)) + rng.normal(0, 0.01, (frames, 3)),
        ),
        expression_faces=rng.integers(0, 256, (frames, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8),
        seed=seed,
        steps=steps,
        guidance=guidance,
        prompt=prompt,
        **extra,
    )


@pytest.fixture(scope="session")
def tiny():
    torch.manual_seed(0)
    return tiny_components("cpu", torch.float32, seed=0)


@pytest.fixture(scope="session")
def pipeline(tiny):
    return HelloMemeVideoPipeline(tiny, PipelineConfig(windows=TEST_WINDOWS, frames_per_batch=32))
