"""HelloMeme v5 video generation: conditions once per frame, then windowed denoising of many videos at once.

Per video: the reference portrait is encoded once (VAE, then the reference net at t=0, for
the conditional branch; the unconditional branch uses a zero latent and is shared by every
video); every driving frame's control residuals are computed once (pose image + PD-FGC code;
the unconditional control is shared too). Denoising then runs in rounds: a round denoises one
pass (see :mod:`hellomeme.passes`) of every video together, all windows of all those passes
batched through the UNet, their noise predictions blended per frame with the window plan's
weights at every step, one DPM-Solver++ (SDE) step over all frames. Noise depends only on
(seed, frame, step). All modules stay where they were put; only small index tensors are made
per batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from hellomeme.components import HelloMemeComponents
from hellomeme.control import ControlResiduals
from hellomeme.denoiser import UNetFeatures
from hellomeme.images import to_model_range, to_uint8
from hellomeme.noise import INITIAL_STEP, frame_noise
from hellomeme.passes import DenoisePass, plan_passes
from hellomeme.pose_control import HeadPoseTrack, draw_pose_images
from hellomeme.windows import WindowPlan

logger = logging.getLogger(__name__)

# HelloMeme's default positive prompt (its model_config.json "prompt"); a user prompt is prepended.
DEFAULT_PROMPT = (
    "(best quality), highly detailed, ultra-detailed, headshot, person, well-placed five sense organs, "
    "looking at the viewer, centered composition, sharp focus, realistic skin texture"
)


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline batches and what it assumes; the defaults are HelloMeme v5's."""

    edges_first: bool = True  # v5: windows' boundary frames are generated first and condition the windows
    frames_per_batch: int = 96  # UNet images per call, both guidance branches counted
    decode_batch: int = 16
    condition_batch: int = 32
    default_prompt: str = DEFAULT_PROMPT
    negative_prompt: str = ""
    static_batch_shapes: bool = False  # pad window batches to one size (torch.compile, CUDA graphs)


@dataclass(frozen=True)
class VideoRequest:
    """One video: the reference, per-frame conditions, the window plan and the diffusion settings."""

    reference_image: np.ndarray  # (S, S, 3) uint8 RGB
    head_pose: HeadPoseTrack  # T frames, HelloMeme convention
    expression_faces: np.ndarray  # (T, E, E, 3) uint8 RGB faces aligned for PD-FGC
    plan: WindowPlan
    seed: int = 0
    steps: int = 25
    guidance: float = 1.5
    prompt: str = ""

    def __post_init__(self) -> None:
        image = np.asarray(self.reference_image)
        if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
            raise ValueError(f"reference image must be (S, S, 3), got {image.shape}")
        frames = self.plan.num_frames
        if len(self.head_pose) != frames or len(self.expression_faces) != frames:
            raise ValueError(
                f"plan has {frames} frames but head pose has {len(self.head_pose)} and expression faces "
                f"{len(self.expression_faces)}"
            )
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    @property
    def size(self) -> int:
        return int(np.asarray(self.reference_image).shape[0])


def hellomeme_scheduler() -> DPMSolverMultistepScheduler:
    """The sampler HelloMeme v5 uses: DPM-Solver++ (SDE), SD1.5's scaled-linear betas."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        algorithm_type="sde-dpmsolver++",
    )


@dataclass(frozen=True)
class _UnconditionalBranch:
    """What the guidance's unconditional branch sees: the same for every video of one size."""

    text: torch.Tensor  # the denoiser's negative prompt
    reference: UNetFeatures  # the reference net on a zero latent
    end_features: UNetFeatures  # the same with the denoiser's negative prompt (end-frame conditioning)
    control: ControlResiduals  # a pose image of -1 everywhere and a zero expression code


@dataclass
class _Video:
    """A request being rendered: where its rows live in the shared caches."""

    request: VideoRequest
    slot: int  # row in the per-video caches (text, reference); row 0 is the unconditional branch
    control_offset: int  # row of its frame 0 in the control cache
    passes: tuple[DenoisePass, ...]
    frames_out: np.ndarray | None = None


@dataclass(frozen=True)
class _Window:
    video: _Video
    frames: tuple[int, ...]
    rows: tuple[int, ...]  # rows of the round's latent tensor
    weights: np.ndarray
    conditioned_on_ends: bool


@dataclass(frozen=True)
class _Batch:
    """Index tensors that assemble one UNet call from the caches."""

    num_frames: int
    latent_rows: torch.Tensor
    weights: torch.Tensor
    guidance: torch.Tensor
    video_slots: torch.Tensor  # (2W,) unconditional windows first
    control_rows: torch.Tensor  # (2W*F,)
    end_rows: torch.Tensor | None  # (2W*2,)


@dataclass
class _GroupCaches:
    text: torch.Tensor  # (1+V, L, D) denoiser prompts
    reference: tuple[torch.Tensor, ...]  # (1+V, C, h, w) reference-net up-block inputs
    control: ControlResiduals  # (1+sum T, C, h, w)
    end_features: UNetFeatures | None = None  # rows of the previous round's finished frames
    end_rows: dict[tuple[int, int], int] = field(default_factory=dict)


class HelloMemeVideoPipeline:
    """Renders :class:`VideoRequest` batches with HelloMeme v5 components."""

    def __init__(self, components: HelloMemeComponents, config: PipelineConfig = PipelineConfig(),
                 compile: bool = False) -> None:
        self.components = components
        self.config = config
        self._denoise = torch.compile(components.denoiser, dynamic=False) if compile else components.denoiser
        self._unconditional: dict[int, _UnconditionalBranch] = {}
        max_frames = components.denoiser.motion_adapter.config.max_frames
        self._max_window = max_frames - 2

    # ------------------------------------------------------------------------------------------
    # public

    @torch.inference_mode()
    def __call__(self, requests: list[VideoRequest]) -> list[np.ndarray]:
        """Render each request to (T, S, S, 3) uint8 RGB frames, in order."""
        # The control net halves the latent three times and upsamples back onto its skips.
        granularity = self.components.vae_scale_factor * 8
        for request in requests:
            if request.plan.size > self._max_window:
                raise ValueError(f"windows of {request.plan.size} frames exceed the motion module's "
                                 f"{self._max_window}")
            if request.size % granularity:
                raise ValueError(f"render size {request.size} is not a multiple of {granularity}")
        outputs: list[np.ndarray | None] = [None] * len(requests)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.size, request.steps), []).append(index)
        for (size, steps), indices in groups.items():
            rendered = self._render_group([requests[i] for i in indices], size, steps)
            for index, frames in zip(indices, rendered):
                outputs[index] = frames
        return outputs  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------
    # conditions

    def _encode_prompts(self, encoder, prompts: list[str]) -> torch.Tensor:
        tokenizer = self.components.tokenizer
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return encoder(ids.to(self.components.device))[0].to(self.components.dtype)

    def _full_prompt(self, prompt: str) -> str:
        default = self.config.default_prompt
        if not prompt:
            return default
        return f"{prompt}, {default}" if default else prompt

    def _unconditional_branch(self, size: int) -> _UnconditionalBranch:
        if size in self._unconditional:
            return self._unconditional[size]
        c = self.components
        negative = [self.config.negative_prompt]
        reference_text = self._encode_prompts(c.reference_text_encoder, negative)
        denoiser_text = (reference_text if c.denoiser_text_encoder is c.reference_text_encoder
                         else self._encode_prompts(c.denoiser_text_encoder, negative))
        latent = self._zero_latent(size)
        reference = c.reference_net(latent, reference_text)
        ends = reference if denoiser_text is reference_text else c.reference_net(latent, denoiser_text)
        pose = -torch.ones(1, 3, size, size, device=c.device, dtype=c.dtype)
        expression = torch.zeros(1, c.control_net.config.expression_dim, device=c.device, dtype=c.dtype)
        control = c.control_proj(c.control_net(pose, expression))
        self._unconditional[size] = _UnconditionalBranch(denoiser_text, reference, ends, control)
        return self._unconditional[size]

    def _zero_latent(self, size: int) -> torch.Tensor:
        c = self.components
        side = size // c.vae_scale_factor
        return torch.zeros(1, c.latent_channels, side, side, device=c.device, dtype=c.dtype)

    def _encode_references(self, requests: list[VideoRequest]) -> torch.Tensor:
        c = self.components
        images = np.stack([np.asarray(r.reference_image) for r in requests])
        pixels = to_model_range(images).to(c.device, c.dtype)
        latents = []
        for start in range(0, len(pixels), self.config.decode_batch):
            posterior = c.encoder_vae.encode(pixels[start : start + self.config.decode_batch]).latent_dist
            latents.append(posterior.mode() * c.encoder_vae.config.scaling_factor)
        return torch.cat(latents)

    def _control_rows(self, videos: list[_Video], uncond: ControlResiduals) -> ControlResiduals:
        """Control residuals for every frame of every video; row 0 is the unconditional control."""
        c = self.components
        total = sum(v.request.plan.num_frames for v in videos)
        cache = uncond.map(lambda t: t.new_empty((1 + total, *t.shape[1:])))
        for dst, src in zip(cache.down + cache.up, uncond.down + uncond.up):
            dst[:1] = src
        jobs = [(v, f) for v in videos for f in range(v.request.plan.num_frames)]
        expected = c.expression_encoder.config.image_size
        for start in range(0, len(jobs), self.config.condition_batch):
            chunk = jobs[start : start + self.config.condition_batch]
            size = chunk[0][0].request.size
            rotations = np.stack([v.request.head_pose.rotation[f] for v, f in chunk])
            translations = np.stack([v.request.head_pose.translation[f] for v, f in chunk])
            poses = draw_pose_images(HeadPoseTrack(rotations, translations), canvas=size)
            faces = np.stack([v.request.expression_faces[f] for v, f in chunk])
            if faces.shape[1] != expected:
                raise ValueError(f"expression faces must be {expected}x{expected}, got {faces.shape[1:3]}")
            codes = c.expression_encoder(to_model_range(faces).to(c.device, c.dtype))
            residuals = c.control_proj(c.control_net(to_model_range(poses).to(c.device, c.dtype), codes))
            rows = torch.tensor([1 + v.control_offset + f for v, f in chunk], device=c.device)
            for dst, src in zip(cache.down + cache.up, residuals.down + residuals.up):
                dst.index_copy_(0, rows, src)
        return cache

    # ------------------------------------------------------------------------------------------
    # rendering

    def _render_group(self, requests: list[VideoRequest], size: int, steps: int) -> list[np.ndarray]:
        c = self.components
        unconditional = self._unconditional_branch(size)
        prompts = [self._full_prompt(r.prompt) for r in requests]
        reference_text = self._encode_prompts(c.reference_text_encoder, prompts)
        denoiser_text = (reference_text if c.denoiser_text_encoder is c.reference_text_encoder
                         else self._encode_prompts(c.denoiser_text_encoder, prompts))
        reference = c.reference_net(self._encode_references(requests), reference_text)

        videos, offset = [], 0
        for slot, request in enumerate(requests):
            passes = plan_passes(request.plan, edges_first=self.config.edges_first)
            videos.append(_Video(request, slot + 1, offset, passes))
            offset += request.plan.num_frames
        caches = _GroupCaches(
            text=torch.cat([unconditional.text, denoiser_text]),
            reference=tuple(torch.cat([u, r]) for u, r in zip(unconditional.reference.up, reference.up)),
            control=self._control_rows(videos, unconditional.control),
        )
        logger.info("rendering %d videos (%d frames) at %d px, %d steps", len(videos), offset, size, steps)

        rounds = max(len(v.passes) for v in videos)
        for round_index in range(rounds):
            active = [(v, v.passes[round_index]) for v in videos if round_index < len(v.passes)]
            latents = self._denoise_round(active, caches, size, steps)
            self._finish_round(active, latents, caches, unconditional.end_features)
        return [v.frames_out for v in videos]  # type: ignore[misc]

    def _round_windows(self, active: list[tuple[_Video, DenoisePass]]) -> tuple[list[_Window], list[tuple[int, int]]]:
        windows, keys, row = [], [], 0
        for video, denoise_pass in active:
            for positions, frames, weights in zip(denoise_pass.plan.windows, denoise_pass.window_frames(),
                                                  denoise_pass.plan.weights()):
                rows = tuple(row + p for p in positions)
                windows.append(_Window(video, frames, rows, weights, denoise_pass.conditioned_on_ends))
            keys.extend((video.request.seed, frame) for frame in denoise_pass.frames)
            row += len(denoise_pass.frames)
        return windows, keys

    def _batches(self, windows: list[_Window], caches: _GroupCaches) -> list[_Batch]:
        device = self.components.device
        by_shape: dict[tuple[int, bool], list[_Window]] = {}
        for window in windows:
            by_shape.setdefault((len(window.frames), window.conditioned_on_ends), []).append(window)
        batches = []
        for (frames, with_ends), group in by_shape.items():
            per_batch = max(1, self.config.frames_per_batch // (2 * frames))
            for start in range(0, len(group), per_batch):
                chunk = group[start : start + per_batch]
                weights = [w.weights for w in chunk]
                if self.config.static_batch_shapes and len(chunk) < per_batch:
                    # Repeat the first window with zero weight so every call has the same shape.
                    pad = per_batch - len(chunk)
                    weights += [np.zeros_like(chunk[0].weights)] * pad
                    chunk = chunk + [chunk[0]] * pad
                control = [0] * (len(chunk) * frames)
                control += [1 + w.video.control_offset + f for w in chunk for f in w.frames]
                end_rows = None
                if with_ends:
                    end_rows = [0, 0] * len(chunk) + [
                        caches.end_rows[(w.video.slot, f)] for w in chunk for f in (w.frames[0], w.frames[-1])
                    ]
                batches.append(_Batch(
                    num_frames=frames,
                    latent_rows=torch.tensor([r for w in chunk for r in w.rows], device=device),
                    weights=torch.from_numpy(np.concatenate(weights)).to(device),
                    guidance=torch.tensor([w.video.request.guidance for w in chunk for _ in w.frames],
                                          dtype=torch.float32, device=device),
                    video_slots=torch.tensor([0] * len(chunk) + [w.video.slot for w in chunk], device=device),
                    control_rows=torch.tensor(control, device=device),
                    end_rows=None if end_rows is None else torch.tensor(end_rows, device=device),
                ))
        return batches

    def _denoise_round(self, active, caches: _GroupCaches, size: int, steps: int) -> torch.Tensor:
        c = self.components
        windows, keys = self._round_windows(active)
        batches = self._batches(windows, caches)
        side = size // c.vae_scale_factor
        shape = (c.latent_channels, side, side)
        pin = c.device.type == "cuda"
        latents = frame_noise(keys, INITIAL_STEP, shape, c.device, pin)
        weight_sum = torch.zeros(len(keys), device=c.device)
        for batch in batches:
            weight_sum.index_add_(0, batch.latent_rows, batch.weights)
        scheduler = hellomeme_scheduler()
        scheduler.set_timesteps(steps, device=c.device)
        latents = latents * scheduler.init_noise_sigma
        logger.info("round: %d frames in %d windows, %d UNet calls per step", len(keys), len(windows), len(batches))
        for step, timestep in enumerate(scheduler.timesteps):
            prediction = torch.zeros_like(latents)
            model_input = scheduler.scale_model_input(latents, timestep)
            for batch in batches:
                guided = self._predict(batch, model_input, timestep, caches)
                prediction.index_add_(0, batch.latent_rows, guided * batch.weights[:, None, None, None])
            prediction = prediction / weight_sum[:, None, None, None]
            noise = frame_noise(keys, step, shape, c.device, pin)
            latents = scheduler.step(prediction, timestep, latents, variance_noise=noise).prev_sample
        return latents

    def _predict(self, batch: _Batch, model_input: torch.Tensor, timestep, caches: _GroupCaches) -> torch.Tensor:
        c = self.components
        frames = batch.num_frames
        sample = model_input.index_select(0, batch.latent_rows).to(c.dtype)
        sample = torch.cat([sample, sample])
        text = caches.text.index_select(0, batch.video_slots)
        reference = tuple(t.index_select(0, batch.video_slots) for t in caches.reference)
        control = caches.control.map(lambda t: t.index_select(0, batch.control_rows))
        ends = None
        if batch.end_rows is not None:
            windows = batch.video_slots.shape[0]
            ends = caches.end_features.map(lambda t: t.index_select(0, batch.end_rows).unflatten(0, (windows, 2)))
        noise = self._denoise(sample, timestep, text, reference, control, ends, frames).float()
        unconditional, conditional = noise.chunk(2)
        return unconditional + batch.guidance[:, None, None, None] * (conditional - unconditional)

    def _finish_round(
        self, active, latents: torch.Tensor, caches: _GroupCaches, unconditional_ends: UNetFeatures
    ) -> None:
        """Decode finished videos; turn frames that condition the next round into end features."""
        c = self.components
        row = 0
        parts, end_rows = [unconditional_ends], {}
        next_row = 1
        for video, denoise_pass in active:
            rows = slice(row, row + len(denoise_pass.frames))
            row += len(denoise_pass.frames)
            if denoise_pass is video.passes[-1]:
                video.frames_out = self._decode(latents[rows])
                continue
            finished = latents[rows].to(c.dtype)
            text = caches.text[video.slot : video.slot + 1]
            for start in range(0, len(finished), self.config.frames_per_batch):
                chunk = finished[start : start + self.config.frames_per_batch]
                parts.append(c.reference_net(chunk, text.expand(len(chunk), -1, -1)))
            for frame in denoise_pass.frames:
                end_rows[(video.slot, frame)] = next_row
                next_row += 1
        caches.end_features = UNetFeatures.concat(parts) if len(parts) > 1 else None
        caches.end_rows = end_rows

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        c = self.components
        vae = c.decoder_vae
        frames = []
        for start in range(0, len(latents), self.config.decode_batch):
            chunk = latents[start : start + self.config.decode_batch].to(c.dtype) / vae.config.scaling_factor
            frames.append(to_uint8(vae.decode(chunk).sample))
        return np.concatenate(frames)
