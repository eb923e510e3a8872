"""The engine adapter: RenderInput rows through a tiny HelloMeme; options, LoRA rows, weights from disk and S3."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import s3fs
import torch
from safetensors.torch import save_file

from engines.base import Engine, EngineOptionError, RenderInput, RowSettings
from engines.hellomeme_engine import HelloMemeEngine, pipeline_config, resolve_device, resolve_dtype
from engines.hellomeme_options import HelloMemeOptions
from engines.registry import engine_spec
from pipelines.plan import check_engine
from hellomeme.lora import LoraError
from hellomeme.weights import MismatchedWeightsError, MissingWeightsError

from .conftest import TEST_SIZE, TINY_FACTORY, render_input
from .ldm_layout import single_file_state
from .test_lora import write_lora
from .tiny_models import save_tiny_weights, tiny_modules


def tiny_spec(**options):
    options = {"components_factory": TINY_FACTORY, "device": "cpu", "window": 4, **options}
    return engine_spec("hellomeme", size=TEST_SIZE, **options)


@pytest.fixture(scope="module")
def engine():
    return HelloMemeEngine(tiny_spec())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "hellomeme", seed=0)


def test_engine_declares_its_needs():
    assert issubclass(HelloMemeEngine, Engine)
    assert HelloMemeEngine.name == "hellomeme"
    assert HelloMemeEngine.needs_gpu is True
    assert HelloMemeEngine.default_fps == 8


def test_defaults_follow_the_official_script():
    options = HelloMemeOptions()
    config = pipeline_config(options)
    assert (config.windows.size, config.windows.overlap) == (12, 1)
    assert not config.windows.ramped and not config.windows.full_last_window and config.noise == "official"
    assert options.release == "v5" and options.trans_ratio == 0.5 and options.lora_scale == 1.0
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16  # the script runs fp16
    assert resolve_dtype("auto", resolve_device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    switched = pipeline_config(HelloMemeOptions(ramped_overlap=True, full_last_window=True, noise_per_frame=True))
    assert switched.windows.ramped and switched.windows.full_last_window and switched.noise == "per-frame"


def test_every_option_has_a_flag_and_bad_values_name_it():
    flags = {f.metadata.get("flag") for f in dataclasses.fields(HelloMemeOptions)}
    for wanted in ("--release", "--checkpoint", "--lora", "--lora-scale", "--trans-ratio", "--dtype", "--weights",
                   "--ramped-overlap", "--full-last-window", "--noise-per-frame"):
        assert wanted in flags
    cases = [({"release": "v6"}, "--release"), ({"window": 40}, "--window"), ({"lora": "style.ckpt"}, "--lora"),
             ({"checkpoint": "model.ckpt"}, "--checkpoint"), ({"trans_ratio": -1.0}, "--trans-ratio"),
             ({"lora_scale": float("nan")}, "--lora-scale")]
    for options, flag in cases:
        with pytest.raises(EngineOptionError) as caught:
            HelloMemeOptions(**options).check(512)
        assert caught.value.option == flag


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
    bad = dataclasses.replace(good, driving_frames=good.driving_frames[:3])
    with pytest.raises(ValueError, match="frames"):
        engine.render([bad])


def test_batch_key_is_the_lora_file_and_scale():
    key = HelloMemeEngine.batch_key
    assert key(RowSettings()) is None and key(RowSettings(seed=5, guidance=0.5)) is None
    assert key(RowSettings(lora="a.safetensors")) == key(RowSettings(lora="a.safetensors", seed=3))
    assert key(RowSettings(lora="a.safetensors")) != key(RowSettings(lora="a.safetensors", lora_scale=0.5))
    assert key(RowSettings(lora="a.safetensors")) != key(RowSettings(lora="b.safetensors"))


def test_rows_with_loras_render_and_a_bad_lora_fails_only_its_rows(engine, tmp_path):
    lora = write_lora(tmp_path / "style.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"broken")
    plain = render_input(frames=3, seed=6, meme_id="plain")
    styled = dataclasses.replace(plain, meme_id="styled", settings=RowSettings(seed=6, steps=2, lora=str(lora)))
    broken = dataclasses.replace(plain, meme_id="broken", settings=RowSettings(seed=6, steps=2, lora=str(bad)))
    first_plain, first_styled = engine.render([plain])[0], engine.render([styled])[0]
    assert not np.array_equal(first_plain, first_styled)
    with pytest.raises(LoraError):
        engine.render([broken])  # the render actor then re-renders rows alone: only this one fails
    np.testing.assert_array_equal(engine.render([styled])[0], first_styled)
    np.testing.assert_array_equal(engine.render([plain])[0], first_plain)
    pickled = dataclasses.replace(plain, settings=RowSettings(lora=str(tmp_path / "style.pt")))
    with pytest.raises(ValueError, match="safetensors"):
        engine.render([pickled])


def test_the_driver_checks_options_and_weights_before_any_row(tmp_path):
    check_engine(tiny_spec())
    with pytest.raises(EngineOptionError, match="--window"):
        check_engine(tiny_spec(window=1))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        check_engine(engine_spec("hellomeme", weights=str(tmp_path / "none")))
    with pytest.raises(MissingWeightsError):
        HelloMemeEngine(engine_spec("hellomeme", size=TEST_SIZE, weights=str(tmp_path / "none"), device="cpu"))


def test_single_file_checkpoint_and_release_from_options(tiny_dir, tmp_path):
    styled = tiny_modules(seed=5)
    checkpoint = tmp_path / "styled.safetensors"
    save_file(single_file_state(styled["unet"], styled["vae"]), str(checkpoint))
    spec = engine_spec("hellomeme", size=TEST_SIZE, weights=str(tiny_dir), checkpoint=str(checkpoint), device="cpu",
                       window=4)
    HelloMemeEngine.check_ready(spec)
    engine = HelloMemeEngine(spec)
    weight = engine.pipeline.components.denoiser.unet.conv_in.weight
    torch.testing.assert_close(weight, styled["unet"].conv_in.weight)
    assert engine.render([render_input(frames=2, seed=1)])[0].shape == (2, TEST_SIZE, TEST_SIZE, 3)
    with pytest.raises(MissingWeightsError, match="hm5b_reference"):
        HelloMemeEngine.check_ready(dataclasses.replace(spec, options=dataclasses.replace(spec.options,
                                                                                          release="v5b")))
    broken = tmp_path / "broken.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 8, 3, 3)}, str(broken))
    with pytest.raises(MismatchedWeightsError):
        HelloMemeEngine.check_ready(dataclasses.replace(spec, options=dataclasses.replace(spec.options,
                                                                                          checkpoint=str(broken))))


def test_weights_from_s3_checked_by_metadata_then_synced_once(s3_endpoint, tiny_dir, tmp_path, monkeypatch):
    fs = s3fs.S3FileSystem(**s3_endpoint.storage_options, skip_instance_cache=True)
    uri = f"s3://{s3_endpoint.bucket}/engine-weights/hellomeme"
    fs.put(str(tiny_dir), uri, recursive=True)
    lora_uri = f"s3://{s3_endpoint.bucket}/engine-loras/style.safetensors"
    fs.put(str(write_lora(tmp_path / "style.safetensors")), lora_uri)
    options = s3_endpoint.storage_options  # the job's storage options, handed to the engine by its actor
    cache = tmp_path / "node-cache"
    spec = engine_spec("hellomeme", size=TEST_SIZE, weights=uri, weights_cache=str(cache), lora=lora_uri,
                       device="cpu", window=4)
    HelloMemeEngine.check_ready(spec, options)
    assert not cache.exists()  # the driver read metadata only
    engine = HelloMemeEngine(spec, options)
    synced = [p for p in cache.rglob("*.safetensors")]
    assert any(p.parent.name == "hm5_motion" for p in synced)
    row = render_input(frames=2, seed=2)
    styled = engine.render([RenderInput(**{**row.__dict__, "settings": RowSettings(seed=2, steps=2, lora=lora_uri)})])
    assert styled[0].shape == (2, TEST_SIZE, TEST_SIZE, 3)
    assert any(p.name == "style.safetensors" for p in cache.rglob("*.safetensors"))
    with pytest.raises(EngineOptionError, match="--lora"):
        HelloMemeEngine.check_ready(dataclasses.replace(spec, options=dataclasses.replace(
            spec.options, lora=f"s3://{s3_endpoint.bucket}/engine-loras/absent.safetensors")), options)
