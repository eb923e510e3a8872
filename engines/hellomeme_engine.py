"""HelloMeme v5 as a render engine: RenderInput rows in, finished frames out.

Turns each :class:`RenderInput` into HelloMeme's conditions (the head-pose square of every
driving frame placed from the reference's face, the driving faces aligned for PD-FGC) and
hands all of them to one :class:`HelloMemeVideoPipeline` call, so windows of several videos
share UNet batches.  Weights are loaded once, in the constructor; where they come from (a local
folder, an object store synced once per node, or the hub) is decided by :mod:`engines.hellomeme_weights`.
Rows of one call share a LoRA (:meth:`HelloMemeEngine.batch_key`), which the pipeline switches to
as an adapter of the one loaded model.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping
from collections.abc import Sequence

import numpy as np
import torch

from engines.base import (
    Engine,
    EngineOptionError,
    EngineSpec,
    PartInput,
    RenderInput,
    RowSettings,
    VideoPart,
    import_object,
)
from engines.hellomeme_options import HelloMemeOptions, check_lora_name
from engines.hellomeme_weights import check_hellomeme_weights, load_components, local_file
from faces.tracking import FOCAL_LENGTH_IN_IMAGE_SIZES, FaceTrack
from hellomeme.expression import align_face_for_expression, five_points_from_mediapipe
from hellomeme.pose_control import (
    HeadPoseTrack,
    driving_pose_track,
    estimate_translation,
    rotation_from_opencv,
    translation_from_camera,
)
from hellomeme.video_pipeline import HelloMemeVideoPipeline, PipelineConfig, VideoRequest
from hellomeme.windows import WindowRule

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    """auto: fp16 on a GPU, as the official script runs; fp32 on the CPU (half precision is slow there)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use auto or one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def pipeline_config(options: HelloMemeOptions) -> PipelineConfig:
    """hellomeme's own model-level config, from the engine's options."""
    return PipelineConfig(
        windows=WindowRule(size=options.window, overlap=options.overlap, full_last_window=options.full_last_window,
                           ramped=options.ramped_overlap),
        noise="per-frame" if options.noise_per_frame else "official",
        frames_per_batch=options.unet_batch,
        # Compiled graphs are specialised on shapes: give every UNet call the same batch size.
        static_batch_shapes=options.compile,
        lora_cache_size=options.lora_cache,
        windows_per_group=options.spread_windows,
    )


class HelloMemeEngine(Engine):
    """HelloMeme v5 on SD1.5: reference knitting, pose + expression control, windowed motion."""

    name = "hellomeme"
    needs_gpu = True
    default_fps = 8
    crop_rule = "engines.hellomeme_crop:hellomeme_crop_box"  # the official script's square face crop

    def __init__(self, spec: EngineSpec, storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, storage_options)
        options: HelloMemeOptions = spec.options
        options.check(spec.size)
        device = resolve_device(options.device)
        dtype = resolve_dtype(options.dtype, device)
        if options.components_factory:
            components = import_object(options.components_factory)(device, dtype, release=options.release)
        else:
            components = load_components(options, device, dtype, self.storage_options)
        self.options = options
        self.pipeline = HelloMemeVideoPipeline(components, pipeline_config(options), compile=options.compile)
        self._face_size = components.expression_encoder.config.image_size
        logger.info("HelloMeme %s engine ready on %s (%s)%s", options.release, device, dtype,
                    f" [{options.components_factory}]" if options.components_factory else "")

    @classmethod
    def check_ready(cls, spec: EngineSpec, storage_options: Mapping[str, Any] | None = None) -> None:
        """On the driver, before any row: weights from metadata only (nothing is downloaded).

        The options are checked just before, by ``pipelines.plan.check_engine``.
        """
        options: HelloMemeOptions = spec.options
        if not options.components_factory:
            check_hellomeme_weights(options, storage_options)

    @staticmethod
    def batch_key(settings: RowSettings):
        """Rows with the same LoRA file and scale share a render call (one adapter active per call)."""
        return (settings.lora, float(settings.lora_scale)) if settings.lora else None

    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        return self.pipeline([self.request_for(item) for item in inputs])

    # --- one long clip over several GPUs (--spread-windows; hellomeme.groups) ------------------------

    @classmethod
    def splits(cls, spec: EngineSpec) -> bool:
        return spec.option("spread_windows", 0) > 0

    def render_or_split(self, inputs: Sequence[RenderInput]) -> list[np.ndarray | list[VideoPart]]:
        """Clips of one group render whole (batched together); longer clips run their edge passes and
        come back as their groups, each carrying the finished latents of its windows' end frames."""
        requests = [self.request_for(item) for item in inputs]
        outputs: list[np.ndarray | list[VideoPart] | None] = [None] * len(requests)
        whole = [i for i, request in enumerate(requests) if not self.pipeline.plan_groups(request.num_frames)]
        if whole:
            for index, frames in zip(whole, self.pipeline([requests[i] for i in whole])):
                outputs[index] = frames
        for index, request in enumerate(requests):
            if outputs[index] is not None:
                continue
            edges = self.pipeline.render_edges(request)
            outputs[index] = [VideoPart(index=g.index, count=g.count, start=g.start, stop=g.stop, keep_from=g.keep_from,
                                        state=edges.select(g.end_frames))
                              for g in self.pipeline.plan_groups(request.num_frames)]
        return outputs  # type: ignore[return-value]

    def render_parts(self, parts: Sequence[PartInput]) -> list[np.ndarray]:
        outputs = []
        for item in parts:
            part = item.part
            request = self.request_for(item.video, frames=(part.start, part.stop))
            outputs.append(self.pipeline.render_window_group(request, len(item.video.driving_face), part.index,
                                                             part.state))
        return outputs

    def request_for(self, item: RenderInput, frames: tuple[int, int] | None = None) -> VideoRequest:
        """HelloMeme's conditions for one video (CPU work, no model calls; a remote LoRA is synced here).

        ``frames`` (start, stop): the conditions of those frames only, from a part's input (its
        driving crops are those frames', its face track the whole clip's: head translation is
        relative to the clip's first frame).
        """
        size = self.spec.size
        crops = np.asarray(item.driving_frames)
        if np.asarray(item.reference).shape != (size, size, 3):
            raise ValueError(f"{item.meme_id}: reference crop is {np.asarray(item.reference).shape}, expected "
                             f"({size}, {size}, 3)")
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"{item.meme_id}: driving frames are {crops.shape}, expected (T, {size}, {size}, 3)")
        start, stop = frames if frames is not None else (0, len(item.driving_face))
        if stop - start != len(crops) or not 0 <= start < stop <= len(item.driving_face):
            raise ValueError(f"{item.meme_id}: {len(crops)} frames for frames {start}-{stop - 1} of a "
                             f"{len(item.driving_face)}-frame face track")
        settings = item.settings
        lora = None
        if settings.lora:
            try:
                check_lora_name(settings.lora)
            except EngineOptionError as err:
                raise ValueError(f"{item.meme_id}: {err}") from None
            lora = str(local_file(settings.lora, self.options, self.storage_options))
        pose = hellomeme_pose_track(item.reference_face, item.driving_face, size, self.options.trans_ratio)
        if frames is not None:
            pose = HeadPoseTrack(np.asarray(pose.rotation)[start:stop], np.asarray(pose.translation)[start:stop])
        faces = np.stack([
            align_face_for_expression(frame, five_points_from_mediapipe(points), self._face_size)
            for frame, points in zip(crops, item.driving_face.landmarks[start:stop])
        ])
        return VideoRequest(
            reference_image=np.asarray(item.reference), head_pose=pose, expression_faces=faces,
            seed=settings.seed, steps=settings.steps, guidance=settings.guidance, prompt=settings.prompt,
            lora=lora, lora_scale=settings.lora_scale,
        )
