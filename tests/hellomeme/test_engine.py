"""The engine adapter: RenderInput rows through a tiny HelloMeme."""

from __future__ import annotations

import numpy as np
import pytest

from engines.base import Engine, EngineOptions
from engines.hellomeme_engine import HelloMemeEngine, resolve_device, resolve_dtype
from hellomeme.weights import MissingWeightsError

from .conftest import TEST_SIZE, render_input


@pytest.fixture(scope="module")
def engine():
    return HelloMemeEngine(EngineOptions(tiny=True, device="cpu", dtype="auto"))


def test_engine_declares_its_needs():
    assert issubclass(HelloMemeEngine, Engine)
    assert HelloMemeEngine.name == "hellomeme"
    assert HelloMemeEngine.needs_gpu is True
    assert HelloMemeEngine.window_size == 12
    assert HelloMemeEngine.default_fps == 8


def test_engine_renders_a_batch_of_videos_in_order(engine):
    inputs = [render_input(frames=6, seed=1, meme_id="a"), render_input(frames=3, seed=2, meme_id="b")]
    outputs = engine.render(inputs)
    assert [o.shape for o in outputs] == [(6, TEST_SIZE, TEST_SIZE, 3), (3, TEST_SIZE, TEST_SIZE, 3)]
    assert all(o.dtype == np.uint8 for o in outputs)


def test_engine_builds_hellomeme_conditions(engine):
    request = engine.request_for(render_input(frames=4, seed=3))
    assert request.expression_faces.shape == (4, 64, 64, 3)
    assert request.head_pose.translation.shape == (4, 3)
    assert np.all(request.head_pose.translation[:, 2] < 0)


def test_engine_rejects_inconsistent_rows(engine):
    good = render_input(frames=4, seed=3)
    bad = type(good)(**{**good.__dict__, "driving_frames": good.driving_frames[:3]})
    with pytest.raises(ValueError, match="frames"):
        engine.render([bad])


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert str(resolve_dtype("auto", resolve_device("cpu"))) == "torch.float32"
    assert str(resolve_dtype("fp16", resolve_device("cpu"))) == "torch.float16"
    with pytest.raises(ValueError):
        resolve_dtype("int8", resolve_device("cpu"))


def test_engine_checks_weights_before_loading(tmp_path):
    assert HelloMemeEngine.check_weights(EngineOptions(tiny=True)) is None
    with pytest.raises(MissingWeightsError, match="does not exist"):
        HelloMemeEngine.check_weights(EngineOptions(weights_dir=str(tmp_path / "none")))
    with pytest.raises(MissingWeightsError):
        HelloMemeEngine(EngineOptions(weights_dir=str(tmp_path / "none"), device="cpu"))
