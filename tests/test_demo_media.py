"""The built-in demo's media: packaged portraits and driving clips synthesised from them.

Nothing here needs the shared media folder: the demo must work on a fresh machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.base import RenderInput
from engines.registry import engine_spec
from engines.warp import WarpEngine
from faces import tracking
from jobs.demo_media import (
    DEFAULT_SCRIPT,
    DRIVING_CROP_SCALE,
    DemoMediaError,
    DrivingScript,
    synthesize_driving_clip,
)
from faces.tracking import NoFaceError, crop_frames, stable_crop_box

FPS, SECONDS = 15.0, 4.0


@pytest.fixture(scope="module")
def clips(portraits, tracker):
    """Each portrait's synthesised driving clip and its face track."""
    result = {}
    for name, portrait in portraits.items():
        frames, fps = synthesize_driving_clip(portrait, fps=FPS, seconds=SECONDS, tracker=tracker)
        result[name] = (frames, fps, tracker.track(frames))
    return result


def test_portraits_ship_with_installed_packages_and_show_a_face(portraits, tracker):
    assert set(portraits) == {"astronaut", "grace_hopper"}
    for name, image in portraits.items():
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, name
        assert min(image.shape[:2]) >= 256, name
        assert tracker.detect(image).detected.all(), name


def test_synthesised_clip_shape_rate_and_a_face_in_every_frame(clips):
    for name, (frames, fps, track) in clips.items():
        assert frames.shape == (int(FPS * SECONDS), 512, 512, 3) and frames.dtype == np.uint8, name
        assert fps == FPS
        assert track.detected.all(), f"mediapipe lost the face in {name}'s clip: {np.flatnonzero(~track.detected)}"


def test_synthesised_clip_performs_its_script(clips):
    """The scripted pose and expression channels show up in what the tracker measures on the clip."""
    times = np.arange(int(FPS * SECONDS)) / (int(FPS * SECONDS) - 1)
    script = DEFAULT_SCRIPT.sample(times)
    for name, (_, _, track) in clips.items():
        measured = tracking.expression_signals(track)
        assert np.corrcoef(measured["mouth"], script["mouth"])[0, 1] > 0.9, name
        assert np.corrcoef(measured["yaw"], script["yaw"])[0, 1] > 0.9, name  # same sign convention
        assert np.corrcoef(measured["pitch"], script["pitch"])[0, 1] > 0.7, name
        assert np.corrcoef(measured["eye"], -script["blink"])[0, 1] > 0.5, name
        # Shut eyes read as clearly narrower (mediapipe reads Grace Hopper's eyes, behind glasses,
        # as closing only part way although they show shut).
        blinks = script["blink"] > 0.9
        assert measured["eye"][blinks].mean() < 0.85 * measured["eye"][script["blink"] == 0].mean(), name


@pytest.mark.parametrize("driver, animated", [("astronaut", "grace_hopper"), ("grace_hopper", "astronaut")])
def test_warp_engine_driven_by_one_portrait_follows_it_on_the_other(clips, portraits, tracker, driver, animated):
    frames, _, track = clips[driver]
    box = stable_crop_box(track)
    driving = track.cropped(box, 512)
    portrait = portraits[animated]
    reference_box = stable_crop_box(tracker.detect(portrait))
    reference = crop_frames(portrait, reference_box, 512)
    engine = WarpEngine(engine_spec("warp"))
    item = RenderInput(meme_id=f"{driver}->{animated}", reference=reference, reference_face=tracker.detect(reference),
                       driving_frames=crop_frames(frames, box, 512), driving_face=driving)
    out = engine.render([item])[0]
    rendered = tracker.track(out)
    assert rendered.detected.all()
    correlations = tracking.follow_correlations(driving, rendered)
    judged = {k: v for k, v in correlations.items() if v is not None}
    assert {"mouth", "yaw", "pitch"} <= set(judged), correlations
    assert all(v >= 0.8 for v in judged.values()), correlations


def test_script_is_resampled_to_any_length(portraits, tracker):
    frames, fps = synthesize_driving_clip(portraits["astronaut"], DrivingScript(), fps=10, seconds=1.5, tracker=tracker)
    assert frames.shape[0] == 15 and fps == 10
    # The first frame is the still face.
    still = crop_frames(portraits["astronaut"], stable_crop_box(tracker.detect(portraits["astronaut"]),
                        tracking.CropConfig(scale=DRIVING_CROP_SCALE)), 512)
    assert np.abs(frames[0].astype(int) - still).mean() < 1.0


def test_bad_requests_raise_clear_errors(tracker):
    with pytest.raises(NoFaceError):
        synthesize_driving_clip(np.full((256, 256, 3), 100, np.uint8), tracker=tracker)
    with pytest.raises(DemoMediaError):
        synthesize_driving_clip(np.zeros((64, 64), np.uint8), tracker=tracker)
    with pytest.raises(DemoMediaError):
        synthesize_driving_clip(np.zeros((64, 64, 3), np.uint8), fps=0, tracker=tracker)
