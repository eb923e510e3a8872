"""Shared fixtures: where the real media are, and small generated inputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["tests.s3_server", "tests.gcs_server"]  # the s3_endpoint and gcs_endpoint fixtures

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_MEDIA = SHARED / "media"


def has_shared_media() -> bool:
    """Whether the real test media are beside the checkout (CI has them; a fresh clone may not)."""
    return (SHARED_MEDIA / "drive_videos").is_dir()


def shared_media() -> Path:
    """The real test media beside the checkout, or skip the test saying why."""
    if not has_shared_media():
        pytest.skip(f"real test media not found at {SHARED_MEDIA} (CI has ../shared beside the checkout)")
    return SHARED_MEDIA


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return shared_media()


@pytest.fixture(scope="session")
def synthetic_media(tmp_path_factory) -> Path:
    """Portraits and driving clips made by the tests themselves (no ../shared needed), shared media's layout."""
    from tests.synthetic_media import build_synthetic_media

    return build_synthetic_media(tmp_path_factory.mktemp("synthetic-media"))


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    from mediaio.media import ffmpeg_exe

    return ffmpeg_exe()


def make_test_clip(path: Path, ffmpeg: str, seconds: float = 2.0, fps: int = 15, size: str = "320x240",
                   audio: bool = True, extra: list[str] | None = None) -> Path:
    """A synthetic clip from ffmpeg's test sources (moving pattern, a tone)."""
    command = [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    command += ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    if audio:
        command += ["-c:a", "aac", "-shortest"]
    command += [*(extra or []), str(path)]
    subprocess.run(command, check=True, capture_output=True)
    return path


@pytest.fixture()
def test_clip(tmp_path: Path, ffmpeg: str) -> Path:
    return make_test_clip(tmp_path / "clip.mp4", ffmpeg)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance for the whole session (starting one takes seconds)."""
    import ray

    from pipelines.ray_runtime import keep_on_loopback

    if not ray.is_initialized():
        keep_on_loopback()
        # The workers find the tests' own modules (tests.hostile_engine) through PYTHONPATH, inherited
        # from this process as the product's local instance passes TMPDIR: not as a runtime env, which
        # Ray pools workers by, so the workers it prestarts with the node would sit unused.
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved]))
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    yield ray
    ray.shutdown()


def rng_frames(count: int, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


os.environ.setdefault("RAY_DEDUP_LOGS", "1")


@pytest.fixture(scope="module")
def tracker():
    """A face tracker (mediapipe's face mesh), built once per test module."""
    from faces.tracking import FaceTracker

    with FaceTracker() as built:
        yield built


@pytest.fixture(scope="module")
def portraits():
    """The demo's built-in portraits (scikit-image's astronaut, matplotlib's Grace Hopper)."""
    from jobs.demo_media import demo_portraits

    return demo_portraits()
