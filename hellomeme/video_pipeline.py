"""HelloMeme v5 video generation: conditions once per frame, then windowed denoising of many videos at once.

What is computed follows HelloMeme v5's video script (``pipline_hm5_video.py``); how it is
batched is ours. Per video: the reference portrait is encoded once (a VAE posterior sample drawn
with the video's generator, then the reference net at t=0, for the conditional branch; the
unconditional branch uses a zero latent and is shared by every video); every driving frame's
control residuals are computed once (pose image + PD-FGC code; the unconditional control is
shared too). Denoising then runs in rounds: a round denoises one pass (see
:mod:`hellomeme.passes`) of every video together, all windows of all those passes batched
through the UNet, overlapping windows' noise predictions combined per frame (a plain mean by
default) at every step, one DPM-Solver++ (SDE) step over all frames. Guidance above 1 blends the
two branches; at or below 1 only the conditional branch runs. Random numbers come from
:mod:`hellomeme.noise`. All modules stay where they were put; only small index tensors are made
per batch.
"""

from __future__ import annotations

import logging
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from hellomeme.components import HelloMemeComponents, with_own_denoiser
from hellomeme.control import ControlResiduals
from hellomeme.denoiser import UNetFeatures
from hellomeme.groups import WindowGroup, plan_groups
from hellomeme.images import to_model_range, to_uint8
from hellomeme.lora import LoraAdapters
from hellomeme.noise import NOISE_KINDS
from hellomeme.passes import DenoisePass, plan_passes
from hellomeme.pose_control import HeadPoseTrack, draw_pose_images
from hellomeme.windows import WindowRule

logger = logging.getLogger(__name__)

# HelloMeme's default positive prompt (its model_config.json "prompt"); a user prompt is prepended.
DEFAULT_PROMPT = (
    "(best quality), highly detailed, ultra-detailed, headshot, person, well-placed five sense organs, "
    "looking at the viewer, centered composition, sharp focus, realistic skin texture"
)


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline cuts, draws and batches; the defaults are HelloMeme v5's video script."""

    windows: WindowRule = WindowRule()
    noise: str = "official"  # or "per-frame": see hellomeme.noise
    frames_per_batch: int = 96  # UNet images per call, both guidance branches counted
    decode_batch: int = 16
    condition_batch: int = 32
    default_prompt: str = DEFAULT_PROMPT
    negative_prompt: str = ""
    static_batch_shapes: bool = False  # pad window batches to one size (torch.compile, CUDA graphs)
    lora_cache_size: int = 4  # LoRA adapters kept loaded at once
    # Windows per group of the last pass, each group denoised on its own (hellomeme.groups); 0: off.
    windows_per_group: int = 0

    def __post_init__(self) -> None:
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {sorted(NOISE_KINDS)}, got {self.noise!r}")
        if self.windows_per_group < 0:
            raise ValueError(f"windows_per_group must be 0 (off) or more, got {self.windows_per_group}")
        if self.windows_per_group and self.noise != "per-frame":
            raise ValueError("groups of windows need per-frame noise (a group's noise must not depend on the others)")


@dataclass(frozen=True)
class VideoRequest:
    """One video: the reference, per-frame conditions and the diffusion settings."""

    reference_image: np.ndarray  # (S, S, 3) uint8 RGB
    head_pose: HeadPoseTrack  # T frames, HelloMeme convention
    expression_faces: np.ndarray  # (T, E, E, 3) uint8 RGB faces aligned for PD-FGC
    seed: int = 0
    steps: int = 25
    guidance: float = 1.5
    prompt: str = ""
    lora: str | None = None  # a local LoRA file for the denoiser
    lora_scale: float = 1.0  # the LoRA's weight in the denoiser's text encoder (the UNet's is 1, as published)

    def __post_init__(self) -> None:
        image = np.asarray(self.reference_image)
        if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
            raise ValueError(f"reference image must be (S, S, 3), got {image.shape}")
        if len(self.head_pose) < 1:
            raise ValueError("a video needs at least one frame")
        if len(self.expression_faces) != len(self.head_pose):
            raise ValueError(f"head pose has {len(self.head_pose)} frames but expression faces "
                             f"{len(self.expression_faces)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    @property
    def size(self) -> int:
        return int(np.asarray(self.reference_image).shape[0])

    @property
    def num_frames(self) -> int:
        return len(self.head_pose)

    @property
    def uses_guidance(self) -> bool:
        """The script's rule: classifier-free guidance only above 1."""
        return self.guidance > 1.0

    def frames_slice(self, start: int, stop: int) -> "VideoRequest":
        """The same video's conditions for frames ``start .. stop-1`` only (what one group of windows needs)."""
        return dataclasses.replace(
            self, head_pose=HeadPoseTrack(np.asarray(self.head_pose.rotation)[start:stop],
                                          np.asarray(self.head_pose.translation)[start:stop]),
            expression_faces=np.asarray(self.expression_faces)[start:stop])


@dataclass(frozen=True)
class EdgeLatents:
    """A video's frames finished by the passes before the last (the edge pass): what its groups start from.

    ``latents`` is (len(frames), C, h, w) float32 on the CPU: small (one latent per window end), so
    it travels between workers; a group takes the rows of its own windows' end frames.
    """

    frames: tuple[int, ...]
    latents: np.ndarray

    def select(self, frames: tuple[int, ...]) -> np.ndarray:
        rows = {frame: row for row, frame in enumerate(self.frames)}
        missing = [f for f in frames if f not in rows]
        if missing:
            raise ValueError(f"no finished latents for frames {missing}")
        return np.ascontiguousarray(self.latents[[rows[f] for f in frames]])


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
    """What the guidance's unconditional branch sees: the same for every video of one size and LoRA."""

    text: torch.Tensor  # the denoiser's negative prompt
    reference: UNetFeatures  # the reference net on a zero latent
    end_features: UNetFeatures  # the same with the denoiser's negative prompt (end-frame conditioning)
    control: ControlResiduals  # a pose image of -1 everywhere and a zero expression code


@dataclass
class _Video:
    """A request being rendered: where its rows live in the shared caches.

    ``control_frames`` are the video frames that get control rows (all by default); the request
    holds the conditions of frames ``frame_offset ..`` (a group's request holds only its own).
    With ``keep_latents`` the last pass's latents are kept (an edge stage) instead of decoded.
    """

    request: VideoRequest
    slot: int  # row in the per-video caches (text, reference); row 0 is the unconditional branch
    control_offset: int  # row of its first control frame in the control cache
    passes: tuple[DenoisePass, ...]
    noise: object  # hellomeme.noise.OfficialNoise or FrameNoise
    control_frames: tuple[int, ...] = ()
    frame_offset: int = 0
    keep_latents: bool = False
    decode_from: int = 0  # with a decoded last pass: its first frame kept (a group drops its left group's frames)
    frames_out: np.ndarray | None = None
    latents_out: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not self.control_frames:
            self.control_frames = tuple(range(self.frame_offset, self.frame_offset + self.request.num_frames))
        self._control_index = {frame: i for i, frame in enumerate(self.control_frames)}

    def control_row(self, frame: int) -> int:
        """The control cache's row of a video frame."""
        return 1 + self.control_offset + self._control_index[frame]


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
    guided: bool  # both branches (unconditional windows first), else the conditional branch only
    latent_rows: torch.Tensor
    weights: torch.Tensor
    guidance: torch.Tensor
    video_slots: torch.Tensor  # (branches*W,)
    control_rows: torch.Tensor  # (branches*W*F,)
    end_rows: torch.Tensor | None  # (branches*W*2,)


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
        self._compile = compile
        self._denoise = torch.compile(components.denoiser, dynamic=False) if compile else components.denoiser
        self._unconditional: dict[tuple, _UnconditionalBranch] = {}
        self._loras: LoraAdapters | None = None
        self._lora_key: tuple[str, float] | None = None
        max_frames = components.denoiser.motion_adapter.config.max_frames
        self._max_window = max_frames - 2
        if config.windows.size > self._max_window:
            raise ValueError(f"windows of {config.windows.size} frames exceed the motion module's {self._max_window}")

    # ------------------------------------------------------------------------------------------
    # public

    @torch.inference_mode()
    def __call__(self, requests: list[VideoRequest]) -> list[np.ndarray]:
        """Render each request to (T, S, S, 3) uint8 RGB frames, in order."""
        for request in requests:
            self._check_size(request)
        outputs: list[np.ndarray | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            key = (request.size, request.steps, request.lora, request.lora_scale if request.lora else None)
            groups.setdefault(key, []).append(index)
        for (size, steps, lora, lora_scale), indices in groups.items():
            self.use_lora(lora, lora_scale)
            whole = [i for i in indices if not self.plan_groups(requests[i].num_frames)]
            if whole:
                for index, frames in zip(whole, self._render_group([requests[i] for i in whole], size, steps)):
                    outputs[index] = frames
            for index in indices:
                if outputs[index] is None:
                    outputs[index] = self._render_spread(requests[index])
        return outputs  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------
    # groups of windows (hellomeme.groups): the same computation whether one worker runs them all or many

    def plan_groups(self, num_frames: int) -> tuple[WindowGroup, ...]:
        """The groups a clip of ``num_frames`` is rendered in; empty when it renders whole."""
        if not self.config.windows_per_group:
            return ()
        return plan_groups(num_frames, self.config.windows, self.config.windows_per_group)

    @torch.inference_mode()
    def render_edges(self, request: VideoRequest) -> EdgeLatents:
        """Run every pass but the last for one video (alone: no other video shares its batches).

        Returns the finished latents of the last pass's window ends, which its groups start from.
        """
        self._check_size(request)
        self.use_lora(request.lora, request.lora_scale)
        passes = plan_passes(request.num_frames, self.config.windows)
        if len(passes) < 2:
            raise ValueError(f"a clip of {request.num_frames} frames has no edge pass")
        video = self._video(request, slot=1, control_offset=0, passes=passes[:-1],
                            control_frames=passes[-2].frames, keep_latents=True)
        self._run([video], request.size, request.steps)
        return EdgeLatents(passes[-2].frames, video.latents_out.float().cpu().numpy())

    @torch.inference_mode()
    def render_window_group(self, request: VideoRequest, num_frames: int, group_index: int,
                            end_latents: np.ndarray) -> np.ndarray:
        """One group of a video's last pass: (frames kept, S, S, 3) uint8, frames ``keep_from .. stop-1``.

        ``request`` holds the conditions of the group's frames only (``frames_slice(start, stop)``
        of the video's request), ``num_frames`` is the whole video's length and ``end_latents``
        the finished latents of the group's end frames (``EdgeLatents.select(group.end_frames)``).
        """
        groups = self.plan_groups(num_frames)
        if not 0 <= group_index < len(groups):
            raise ValueError(f"a clip of {num_frames} frames has {len(groups)} groups, not group {group_index}")
        group = groups[group_index]
        if request.num_frames != group.stop - group.start:
            raise ValueError(f"group {group_index} covers frames {group.start}-{group.stop - 1}, "
                             f"the request has {request.num_frames}")
        ends = np.asarray(end_latents, dtype=np.float32)
        if len(ends) != len(group.end_frames):
            raise ValueError(f"group {group_index} needs {len(group.end_frames)} end-frame latents, got {len(ends)}")
        self._check_size(request)
        self.use_lora(request.lora, request.lora_scale)
        video = self._video(request, slot=1, control_offset=0, passes=(group.denoise_pass,),
                            control_frames=group.denoise_pass.frames, frame_offset=group.start,
                            decode_from=group.keep_from - group.start)
        self._run([video], request.size, request.steps, given_ends=(group.end_frames, torch.from_numpy(ends)))
        return video.frames_out  # type: ignore[return-value]

    def _render_spread(self, request: VideoRequest) -> np.ndarray:
        """A whole clip as its groups, one after another: exactly what several workers do between them."""
        edges = self.render_edges(request)
        parts = []
        for group in self.plan_groups(request.num_frames):
            parts.append(self.render_window_group(request.frames_slice(group.start, group.stop),
                                                  request.num_frames, group.index, edges.select(group.end_frames)))
        return np.concatenate(parts)

    def _check_size(self, request: VideoRequest) -> None:
        # The control net halves the latent three times and upsamples back onto its skips.
        granularity = self.components.vae_scale_factor * 8
        if request.size % granularity:
            raise ValueError(f"render size {request.size} is not a multiple of {granularity}")

    def use_lora(self, path: str | None, scale: float = 1.0) -> None:
        """Make ``path`` (or no LoRA) the denoiser's active adapter; loaded adapters are kept in a small cache.

        The first LoRA gives the denoiser its own UNet and text encoder (copies on the same device),
        so the reference branch stays base SD1.5 as in HelloMeme.
        """
        if path is None:
            if self._loras is not None:
                self._loras.deactivate()
            self._lora_key = None
            return
        if self._loras is None:
            self.components = with_own_denoiser(self.components)
            denoiser = self.components.denoiser
            self._denoise = torch.compile(denoiser, dynamic=False) if self._compile else denoiser
            self._loras = LoraAdapters(denoiser.unet, self.components.denoiser_text_encoder,
                                       cache_size=self.config.lora_cache_size)
        self._loras.activate(path, scale)
        self._lora_key = (path, float(scale))

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
        key = (size, self._lora_key)
        if key in self._unconditional:
            return self._unconditional[key]
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
        if len(self._unconditional) >= 2 * max(1, self.config.lora_cache_size):
            self._unconditional.pop(next(iter(self._unconditional)))
        self._unconditional[key] = _UnconditionalBranch(denoiser_text, reference, ends, control)
        return self._unconditional[key]

    def _zero_latent(self, size: int) -> torch.Tensor:
        c = self.components
        side = size // c.vae_scale_factor
        return torch.zeros(1, c.latent_channels, side, side, device=c.device, dtype=c.dtype)

    def _encode_references(self, videos: list[_Video]) -> torch.Tensor:
        """Reference latents: a sample of each VAE posterior, drawn with the video's own generator."""
        c = self.components
        images = np.stack([np.asarray(v.request.reference_image) for v in videos])
        pixels = to_model_range(images).to(c.device, c.dtype)
        latents = []
        for start in range(0, len(pixels), self.config.decode_batch):
            posterior = c.encoder_vae.encode(pixels[start : start + self.config.decode_batch]).latent_dist
            chunk = videos[start : start + self.config.decode_batch]
            sample = torch.cat([v.noise.reference(posterior.mean.dtype) for v in chunk]).to(c.device)
            latents.append((posterior.mean + posterior.std * sample) * c.encoder_vae.config.scaling_factor)
        return torch.cat(latents)

    def _control_rows(self, videos: list[_Video], uncond: ControlResiduals) -> ControlResiduals:
        """Control residuals for every frame of every video; row 0 is the unconditional control."""
        c = self.components
        total = sum(len(v.control_frames) for v in videos)
        cache = uncond.map(lambda t: t.new_empty((1 + total, *t.shape[1:])))
        for dst, src in zip(cache.down + cache.up, uncond.down + uncond.up):
            dst[:1] = src
        jobs = [(v, f) for v in videos for f in v.control_frames]
        expected = c.expression_encoder.config.image_size
        for start in range(0, len(jobs), self.config.condition_batch):
            chunk = jobs[start : start + self.config.condition_batch]
            size = chunk[0][0].request.size
            rotations = np.stack([v.request.head_pose.rotation[f - v.frame_offset] for v, f in chunk])
            translations = np.stack([v.request.head_pose.translation[f - v.frame_offset] for v, f in chunk])
            poses = draw_pose_images(HeadPoseTrack(rotations, translations), canvas=size)
            faces = np.stack([v.request.expression_faces[f - v.frame_offset] for v, f in chunk])
            if faces.shape[1] != expected:
                raise ValueError(f"expression faces must be {expected}x{expected}, got {faces.shape[1:3]}")
            codes = c.expression_encoder(to_model_range(faces).to(c.device, c.dtype))
            residuals = c.control_proj(c.control_net(to_model_range(poses).to(c.device, c.dtype), codes))
            rows = torch.tensor([v.control_row(f) for v, f in chunk], device=c.device)
            for dst, src in zip(cache.down + cache.up, residuals.down + residuals.up):
                dst.index_copy_(0, rows, src)
        return cache

    # ------------------------------------------------------------------------------------------
    # rendering

    def _render_group(self, requests: list[VideoRequest], size: int, steps: int) -> list[np.ndarray]:
        """Whole videos of one size, step count and LoRA, their windows batched together."""
        videos, offset = [], 0
        for slot, request in enumerate(requests):
            videos.append(self._video(request, slot + 1, offset, plan_passes(request.num_frames, self.config.windows)))
            offset += request.num_frames
        self._run(videos, size, steps)
        return [v.frames_out for v in videos]  # type: ignore[misc]

    def _video(self, request: VideoRequest, slot: int, control_offset: int, passes: tuple[DenoisePass, ...],
               **extra) -> _Video:
        c = self.components
        side = request.size // c.vae_scale_factor
        noise = NOISE_KINDS[self.config.noise](request.seed, request.num_frames, self.config.windows.size,
                                               (c.latent_channels, side, side), c.dtype)
        return _Video(request, slot, control_offset, passes, noise, **extra)

    def _run(self, videos: list[_Video], size: int, steps: int,
             given_ends: tuple[tuple[int, ...], torch.Tensor] | None = None) -> None:
        """Encode the videos' conditions, then denoise their passes round by round.

        ``given_ends`` (one video only): end frames and their finished latents, which condition its
        first pass instead of an earlier round.
        """
        c = self.components
        side = size // c.vae_scale_factor
        latent_shape = (c.latent_channels, side, side)
        unconditional = self._unconditional_branch(size)
        prompts = [self._full_prompt(v.request.prompt) for v in videos]
        reference_text = self._encode_prompts(c.reference_text_encoder, prompts)
        denoiser_text = (reference_text if c.denoiser_text_encoder is c.reference_text_encoder
                         else self._encode_prompts(c.denoiser_text_encoder, prompts))
        reference = c.reference_net(self._encode_references(videos), reference_text)
        caches = _GroupCaches(
            text=torch.cat([unconditional.text, denoiser_text]),
            reference=tuple(torch.cat([u, r]) for u, r in zip(unconditional.reference.up, reference.up)),
            control=self._control_rows(videos, unconditional.control),
        )
        if given_ends is not None:
            (video,) = videos
            frames, latents = given_ends
            self._set_end_features(caches, [(video, frames, latents.to(c.device))], unconditional.end_features)
        logger.info("rendering %d videos (%d control frames) at %d px, %d steps", len(videos),
                    sum(len(v.control_frames) for v in videos), size, steps)

        rounds = max(len(v.passes) for v in videos)
        for round_index in range(rounds):
            active = [(v, v.passes[round_index]) for v in videos if round_index < len(v.passes)]
            latents = self._denoise_round(active, caches, latent_shape, steps)
            self._finish_round(active, latents, caches, unconditional.end_features)

    def _round_windows(self, active: list[tuple[_Video, DenoisePass]]) -> tuple[list[_Window], int]:
        windows, row = [], 0
        for video, denoise_pass in active:
            for positions, frames, weights in zip(denoise_pass.windows, denoise_pass.window_frames(),
                                                  denoise_pass.weights):
                rows = tuple(row + p for p in positions)
                windows.append(_Window(video, frames, rows, weights, denoise_pass.conditioned_on_ends))
            row += len(denoise_pass.frames)
        return windows, row

    def _batches(self, windows: list[_Window], caches: _GroupCaches) -> list[_Batch]:
        device = self.components.device
        by_shape: dict[tuple[int, bool, bool], list[_Window]] = {}
        for window in windows:
            key = (len(window.frames), window.conditioned_on_ends, window.video.request.uses_guidance)
            by_shape.setdefault(key, []).append(window)
        batches = []
        for (frames, with_ends, guided), group in by_shape.items():
            branches = 2 if guided else 1
            per_batch = max(1, self.config.frames_per_batch // (branches * frames))
            for start in range(0, len(group), per_batch):
                chunk = group[start : start + per_batch]
                weights = [w.weights for w in chunk]
                if self.config.static_batch_shapes and len(chunk) < per_batch:
                    # Repeat the first window with zero weight so every call has the same shape.
                    pad = per_batch - len(chunk)
                    weights += [np.zeros_like(chunk[0].weights)] * pad
                    chunk = chunk + [chunk[0]] * pad
                slots = [w.video.slot for w in chunk]
                control = [w.video.control_row(f) for w in chunk for f in w.frames]
                end_rows = None
                if with_ends:
                    end_rows = [caches.end_rows[(w.video.slot, f)] for w in chunk for f in (w.frames[0], w.frames[-1])]
                if guided:
                    slots = [0] * len(chunk) + slots
                    control = [0] * (len(chunk) * frames) + control
                    end_rows = None if end_rows is None else [0, 0] * len(chunk) + end_rows
                batches.append(_Batch(
                    num_frames=frames,
                    guided=guided,
                    latent_rows=torch.tensor([r for w in chunk for r in w.rows], device=device),
                    weights=torch.from_numpy(np.concatenate(weights)).to(device),
                    guidance=torch.tensor([w.video.request.guidance for w in chunk for _ in w.frames],
                                          dtype=torch.float32, device=device),
                    video_slots=torch.tensor(slots, device=device),
                    control_rows=torch.tensor(control, device=device),
                    end_rows=None if end_rows is None else torch.tensor(end_rows, device=device),
                ))
        return batches

    def _denoise_round(self, active, caches: _GroupCaches, latent_shape: tuple[int, int, int],
                       steps: int) -> torch.Tensor:
        c = self.components
        windows, rows = self._round_windows(active)
        batches = self._batches(windows, caches)
        latents = torch.cat([video.noise.initial(p.frames) for video, p in active]).to(c.device)
        weight_sum = torch.zeros(rows, device=c.device)
        for batch in batches:
            weight_sum.index_add_(0, batch.latent_rows, batch.weights)
        scheduler = hellomeme_scheduler()
        scheduler.set_timesteps(steps, device=c.device)
        latents = latents * scheduler.init_noise_sigma
        logger.info("round: %d frames in %d windows, %d UNet calls per step", rows, len(windows), len(batches))
        for step, timestep in enumerate(scheduler.timesteps):
            prediction = torch.zeros_like(latents)
            model_input = scheduler.scale_model_input(latents, timestep)
            for batch in batches:
                predicted = self._predict(batch, model_input, timestep, caches)
                prediction.index_add_(0, batch.latent_rows, predicted * batch.weights[:, None, None, None])
            prediction = prediction / weight_sum[:, None, None, None]
            noise = torch.cat([video.noise.step(p.frames, step) for video, p in active]).to(c.device)
            latents = scheduler.step(prediction, timestep, latents, variance_noise=noise).prev_sample
        return latents

    def _predict(self, batch: _Batch, model_input: torch.Tensor, timestep, caches: _GroupCaches) -> torch.Tensor:
        c = self.components
        frames = batch.num_frames
        sample = model_input.index_select(0, batch.latent_rows).to(c.dtype)
        if batch.guided:
            sample = torch.cat([sample, sample])
        text = caches.text.index_select(0, batch.video_slots)
        reference = tuple(t.index_select(0, batch.video_slots) for t in caches.reference)
        control = caches.control.map(lambda t: t.index_select(0, batch.control_rows))
        ends = None
        if batch.end_rows is not None:
            windows = batch.video_slots.shape[0]
            ends = caches.end_features.map(lambda t: t.index_select(0, batch.end_rows).unflatten(0, (windows, 2)))
        noise = self._denoise(sample, timestep, text, reference, control, ends, frames).float()
        if not batch.guided:
            return noise
        unconditional, conditional = noise.chunk(2)
        return unconditional + batch.guidance[:, None, None, None] * (conditional - unconditional)

    def _finish_round(
        self, active, latents: torch.Tensor, caches: _GroupCaches, unconditional_ends: UNetFeatures
    ) -> None:
        """Decode (or keep) finished videos; turn frames that condition the next round into end features."""
        row = 0
        finished = []
        for video, denoise_pass in active:
            rows = slice(row, row + len(denoise_pass.frames))
            row += len(denoise_pass.frames)
            if denoise_pass is not video.passes[-1]:
                finished.append((video, denoise_pass.frames, latents[rows]))
            elif video.keep_latents:
                video.latents_out = latents[rows]
            else:
                video.frames_out = self._decode(latents[rows][video.decode_from :])
        self._set_end_features(caches, finished, unconditional_ends)

    def _set_end_features(self, caches: _GroupCaches, finished, unconditional_ends: UNetFeatures) -> None:
        """The reference net's features of finished frames, ``(video, frames, latents)`` each: the next round's ends."""
        c = self.components
        parts, end_rows = [unconditional_ends], {}
        next_row = 1
        for video, frames, latents in finished:
            latents = latents.to(c.dtype)
            text = caches.text[video.slot : video.slot + 1]
            for start in range(0, len(latents), self.config.frames_per_batch):
                chunk = latents[start : start + self.config.frames_per_batch]
                parts.append(c.reference_net(chunk, text.expand(len(chunk), -1, -1)))
            for frame in frames:
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
