"""HelloMeme v5 as a render engine: RenderInput rows in, finished frames out.

Turns each :class:`RenderInput` into HelloMeme's conditions (the head-pose square of every
driving frame placed from the reference's face, the driving faces aligned for PD-FGC) and
hands all of them to one :class:`HelloMemeVideoPipeline` call, so windows of several videos
share UNet batches. Weights are loaded (and checked) once, in the constructor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from engines.base import Engine, EngineSpec, RenderInput, import_object
from engines.hellomeme_options import HelloMemeOptions
from hellomeme.expression import align_face_for_expression, five_points_from_mediapipe
from hellomeme.pose_control import (
    HeadPoseTrack,
    driving_pose_track,
    estimate_translation,
    rotation_from_opencv,
    translation_from_camera,
)
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig, VideoRequest
from hellomeme.weights import WeightsLayout, check_weights, hub_layout, load_hellomeme
from faces.tracking import FOCAL_LENGTH_IN_IMAGE_SIZES, FaceTrack
from hellomeme.windows import WindowPlan

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class HelloMemeSettings:
    """Engine choices beyond :class:`EngineOptions`; the defaults follow HelloMeme v5's video script."""

    release: str = "v5"
    checkpoint: str | None = None  # a diffusers-layout SD1.5-derived checkpoint for the denoiser
    lora: str | None = None
    lora_scale: float = 1.0
    trans_ratio: float = 0.5  # how much of the driver's head translation the output follows
    hub_cache_dir: str | None = None
    pipeline: PipelineConfig = PipelineConfig()


def head_translations(track: FaceTrack, size: int) -> np.ndarray:
    """(T, 3) HelloMeme translations: from the tracker's solvePnP pose when it has one, else from landmarks.

    The tracker solves in the crop with a pinhole camera of FOCAL_LENGTH_IN_IMAGE_SIZES crop
    sides, centred on the crop, so on a ``size`` canvas its focal length is that many ``size``s.
    """
    translation = np.asarray(track.translation, dtype=np.float64)
    if np.all(translation[:, 2] > 0):
        focal = FOCAL_LENGTH_IN_IMAGE_SIZES * size
        return np.stack([translation_from_camera(t, focal, size) for t in translation])
    return np.stack([estimate_translation(points, size) for points in track.landmarks])


def hellomeme_pose_track(reference: FaceTrack, driving: FaceTrack, size: int, trans_ratio: float) -> HeadPoseTrack:
    """The driver's head rotation, placed at the reference's head position (HelloMeme's rule)."""
    return driving_pose_track(
        rotation_from_opencv(driving.rotation), head_translations(driving, size), head_translations(reference, size)[0],
        trans_ratio,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use auto or one of {sorted(_DTYPES)}")
    return _DTYPES[name]


class HelloMemeEngine(Engine):
    """HelloMeme v5 on SD1.5: reference knitting, pose + expression control, windowed motion."""

    name = "hellomeme"
    needs_gpu = True
    default_fps = 8

    def __init__(self, spec: EngineSpec, settings: HelloMemeSettings = HelloMemeSettings()) -> None:
        super().__init__(spec)
        options: HelloMemeOptions = spec.options
        device = resolve_device(options.device)
        dtype = resolve_dtype(options.dtype, device)
        if options.components_factory:
            components = import_object(options.components_factory)(device, dtype)
        else:
            components = load_hellomeme(
                options.weights, device, dtype, release=settings.release, checkpoint=settings.checkpoint,
                lora=settings.lora, lora_scale=settings.lora_scale, cache_dir=settings.hub_cache_dir,
            )
        self.settings = settings
        self.options = options
        # Compiled graphs are specialised on shapes: give every UNet call the same batch size.
        config = replace(settings.pipeline, static_batch_shapes=True) if options.compile else settings.pipeline
        self.pipeline = HelloMemeVideoPipeline(components, config, compile=options.compile)
        self._face_size = components.expression_encoder.config.image_size
        logger.info("HelloMeme engine ready on %s (%s)%s", device, dtype,
                    f" [{options.components_factory}]" if options.components_factory else "")

    @classmethod
    def check_ready(cls, spec: EngineSpec) -> None:
        """The job calls this before any row runs: missing or mismatched weights stop it there."""
        cls.check_weights(spec.options)

    @staticmethod
    def check_weights(
        options: HelloMemeOptions, settings: HelloMemeSettings = HelloMemeSettings()
    ) -> WeightsLayout | None:
        """Fail fast, before any row is decoded: raises a WeightsError naming what is missing and where.

        Loads nothing (hub weights are fetched into the cache, or looked up there when offline).
        """
        if options.components_factory:
            return None
        if options.weights is None:
            return hub_layout(settings.release, settings.hub_cache_dir, settings.checkpoint)
        return check_weights(options.weights, settings.release, settings.checkpoint)

    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        return self.pipeline([self.request_for(item) for item in inputs])

    def request_for(self, item: RenderInput) -> VideoRequest:
        """HelloMeme's conditions for one video (pure CPU work, no model calls)."""
        size = self.spec.size
        frames = np.asarray(item.driving_frames)
        if np.asarray(item.reference).shape != (size, size, 3):
            raise ValueError(f"{item.meme_id}: reference crop is {np.asarray(item.reference).shape}, expected "
                             f"({size}, {size}, 3)")
        if frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
            raise ValueError(f"{item.meme_id}: driving frames are {frames.shape}, expected (T, {size}, {size}, 3)")
        if len(item.driving_face) != len(frames):
            raise ValueError(f"{item.meme_id}: {len(frames)} frames but {len(item.driving_face)} face-track frames")
        pose = hellomeme_pose_track(item.reference_face, item.driving_face, size, self.settings.trans_ratio)
        faces = np.stack([
            align_face_for_expression(frame, five_points_from_mediapipe(points), self._face_size)
            for frame, points in zip(frames, item.driving_face.landmarks)
        ])
        return VideoRequest(
            reference_image=np.asarray(item.reference), head_pose=pose, expression_faces=faces, plan=WindowPlan(num_frames=len(frames), size=self.options.window, overlap=self.options.overlap),
            seed=item.settings.seed, steps=item.settings.steps, guidance=item.settings.guidance,
            prompt=item.settings.prompt,
        )
