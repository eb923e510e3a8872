"""HelloMeme v5 denoising throughput on one GPU: our batched pipeline against the reference implementation's way.

    .venv/bin/python bench/gpu_throughput.py [--videos 4] [--frames 47] [--steps 25] [--baseline-frames 23]

Full-size SD1.5 + v5 adapters with random weights (no downloads), 512x512, 25 DPM-Solver++
steps, guidance on, fp16, windows as the official script plans them (12 frames, stride 11, a
shorter last window, window ends first). Runs, in one process:

* ours: every video's windows batched together through the UNet, modules resident on the GPU,
  the scheduler on the GPU;
* the baseline: the same modules driven the way HelloMeme's own pipeline drives them: one
  window at a time at batch 2 (the two guidance branches), every module moved to the GPU before
  its call and back to the CPU after, features kept on the CPU and copied in for every window
  and step, the scheduler stepping on the CPU.

Prints output frames/s per GPU for both and their ratio, the GPU busy share (NVML or
nvidia-smi sampling) and peak GPU memory of ours, and the denoiser's achieved TFLOP/s; appends
the figures to bench/RESULTS.md. Without CUDA it runs the tiny random model on the CPU so the
script stays tested.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench import _common  # noqa: E402
from hellomeme.components import HelloMemeComponents  # noqa: E402
from hellomeme.control import ControlResiduals  # noqa: E402
from hellomeme.denoiser import UNetFeatures  # noqa: E402
from hellomeme.images import to_model_range, to_uint8  # noqa: E402
from hellomeme.noise import OfficialNoise  # noqa: E402
from hellomeme.passes import plan_passes  # noqa: E402
from hellomeme.pose_control import HeadPoseTrack, draw_pose_images  # noqa: E402
from hellomeme.video_pipeline import (  # noqa: E402
    HelloMemeVideoPipeline,
    PipelineConfig,
    VideoRequest,
    hellomeme_scheduler,
)
from hellomeme.windows import WindowRule  # noqa: E402
from tests.hellomeme.full_size_models import random_full_size_components  # noqa: E402
from tests.hellomeme.tiny_models import tiny_components  # noqa: E402

logger = logging.getLogger("bench.gpu_throughput")
H100_BF16_DENSE_TFLOPS = 989.0


# ------------------------------------------------------------------------------------------------
# Models


def synthetic_requests(videos: int, frames: int, size: int, face_size: int, steps: int) -> list[VideoRequest]:
    rng = np.random.default_rng(0)
    return [
        VideoRequest(
            reference_image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            head_pose=HeadPoseTrack(rotation=rng.normal(0, 0.2, (frames, 3)),
                                    translation=np.tile([0.0, 0.0, -5.0], (frames, 1))),
            expression_faces=rng.integers(0, 256, (frames, face_size, face_size, 3), dtype=np.uint8),
            seed=index,
            steps=steps,
        )
        for index in range(videos)
    ]


# ------------------------------------------------------------------------------------------------
# The reference implementation's way


class ReferenceStyleRenderer:
    """Drives the same modules as HelloMeme's HM5VideoPipeline does (see the module docstring)."""

    def __init__(self, components: HelloMemeComponents) -> None:
        self.c = components
        self.device = components.device
        for module in components.modules().values():
            module.to("cpu")

    def _on_device(self, module: torch.nn.Module):
        return _Resident(module, self.device)

    def _text(self, prompts: list[str]) -> torch.Tensor:
        tokenizer = self.c.tokenizer
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        with self._on_device(self.c.reference_text_encoder) as encoder:
            return encoder(ids.to(self.device))[0]

    def _reference_features(self, latent: torch.Tensor, text: torch.Tensor) -> UNetFeatures:
        """HelloMeme's gen_ref_cache: the UNet moves to the GPU for one batch-2 call and back."""
        with self._on_device(self.c.reference_net) as reference_net:
            batch = torch.cat([torch.zeros_like(latent), latent]).to(self.device)
            features = reference_net(batch, text)
        return features.map(lambda t: t.cpu())

    @torch.inference_mode()
    def render(self, request: VideoRequest) -> np.ndarray:
        c, dtype = self.c, self.c.dtype
        text = self._text(["", "a person"])  # negative, positive
        frames = request.num_frames
        side = request.size // c.vae_scale_factor
        noise_source = OfficialNoise(request.seed, frames, 12, (c.latent_channels, side, side), dtype)
        with self._on_device(c.encoder_vae) as vae:
            pixels = to_model_range(request.reference_image[None]).to(self.device, dtype)
            posterior = vae.encode(pixels).latent_dist
            sample = noise_source.reference(dtype).to(self.device)
            reference_latent = ((posterior.mean + posterior.std * sample) * vae.config.scaling_factor).cpu()
        reference = self._reference_features(reference_latent, text)

        controls = []
        with self._on_device(c.control_net) as control_net, self._on_device(c.control_proj) as control_proj, \
                self._on_device(c.expression_encoder) as expression_encoder:
            size = request.size
            negative = control_proj(control_net(-torch.ones(1, 3, size, size, device=self.device, dtype=dtype),
                                                torch.zeros(1, control_net.config.expression_dim, device=self.device,
                                                            dtype=dtype)))
            for frame in range(frames):  # one frame at a time, as HelloMeme's stage 1
                pose = draw_pose_images(HeadPoseTrack(request.head_pose.rotation[frame : frame + 1],
                                                      request.head_pose.translation[frame : frame + 1]), size)
                code = expression_encoder(to_model_range(request.expression_faces[frame : frame + 1]).to(
                    self.device, dtype))
                positive = control_proj(control_net(to_model_range(pose).to(self.device, dtype), code))
                controls.append(ControlResiduals(
                    tuple(torch.cat([n, p]).cpu() for n, p in zip(negative.down, positive.down)),
                    tuple(torch.cat([n, p]).cpu() for n, p in zip(negative.up, positive.up)),
                ))

        ends: dict[int, UNetFeatures] = {}
        latents_out = None
        passes = plan_passes(frames)
        for denoise_pass in passes:
            count = len(denoise_pass.frames)
            latents = noise_source.initial(denoise_pass.frames)
            scheduler = hellomeme_scheduler()
            scheduler.set_timesteps(request.steps)  # on the CPU
            with self._on_device(c.denoiser) as denoiser:
                for step, timestep in enumerate(scheduler.timesteps):
                    prediction = torch.zeros(2, *latents.shape)
                    counts = torch.zeros(count)
                    for positions, window in zip(denoise_pass.windows, denoise_pass.window_frames()):
                        index = list(positions)
                        sample = latents[index].to(self.device, dtype)
                        control = ControlResiduals(
                            tuple(torch.cat([controls[f].down[i][k : k + 1] for k in (0, 1) for f in window])
                                  .to(self.device) for i in range(4)),
                            tuple(torch.cat([controls[f].up[i][k : k + 1] for k in (0, 1) for f in window])
                                  .to(self.device) for i in range(4)),
                        )
                        pad = None
                        if denoise_pass.conditioned_on_ends:
                            first, last = ends[window[0]], ends[window[-1]]
                            pad = UNetFeatures(
                                tuple(torch.stack(pair, dim=1).to(self.device) for pair in zip(first.down, last.down)),
                                tuple(torch.stack(pair, dim=1).to(self.device) for pair in zip(first.up, last.up)),
                            )
                        noise = denoiser(
                            torch.cat([sample, sample]), timestep.to(self.device), text,
                            tuple(t.to(self.device) for t in reference.up), control, pad, len(window),
                        ).float().cpu()
                        prediction[:, index] += noise.unflatten(0, (2, len(window)))
                        counts[index] += 1
                    prediction = prediction / counts[None, :, None, None, None]
                    guided = prediction[0] + request.guidance * (prediction[1] - prediction[0])
                    noise = noise_source.step(denoise_pass.frames, step)
                    latents = scheduler.step(guided, timestep, latents, variance_noise=noise).prev_sample
            if denoise_pass is passes[-1]:
                latents_out = latents
            else:
                for position, frame in enumerate(denoise_pass.frames):  # one reference-net call per frame
                    ends[frame] = self._reference_features(latents[position : position + 1].to(dtype), text)

        out = []
        with self._on_device(c.decoder_vae) as vae:
            for frame in range(frames):  # one frame at a time
                latent = latents_out[frame : frame + 1].to(self.device, dtype) / vae.config.scaling_factor
                out.append(to_uint8(vae.decode(latent).sample))
        return np.concatenate(out)


class _Resident:
    """Context manager: the module is on the GPU inside, back on the CPU after (HelloMeme's habit)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device

    def __enter__(self) -> torch.nn.Module:
        return self.module.to(self.device)

    def __exit__(self, *exc_info) -> None:
        self.module.to("cpu")


# ------------------------------------------------------------------------------------------------
# Measuring


class GpuBusySampler:
    """Fraction of samples in which the GPU was running a kernel (NVML, else nvidia-smi; None if neither)."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.index = device.index or 0
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._read = self._reader()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _reader(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 -- NVML bindings absent or unusable: try the CLI
            pass
        if shutil.which("nvidia-smi"):
            command = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                       "--format=csv,noheader,nounits"]
            return lambda: float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip())
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._read())
            except Exception:  # noqa: BLE001 -- a failed sample is skipped
                pass
            time.sleep(self.interval)

    def __enter__(self) -> GpuBusySampler:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def busy_share(self) -> float | None:
        return None if not self.samples else float(np.mean(self.samples)) / 100.0


def denoiser_flops_per_image(components: HelloMemeComponents, size: int) -> float:
    """FLOPs of one denoiser call per UNet image (one frame, one guidance branch), counted on a 12-frame window."""
    c = components
    side, frames = size // c.vae_scale_factor, 12
    with torch.inference_mode():
        latent = torch.zeros(1, c.latent_channels, side, side, device=c.device, dtype=c.dtype)
        text = torch.zeros(1, c.tokenizer.model_max_length, c.reference_text_encoder.config.hidden_size,
                           device=c.device, dtype=c.dtype)
        features = c.reference_net(latent, text)
        control = c.control_proj(c.control_net(torch.zeros(frames, 3, size, size, device=c.device, dtype=c.dtype),
                                               torch.zeros(frames, c.control_net.config.expression_dim,
                                                           device=c.device, dtype=c.dtype)))
        ends = features.map(lambda t: torch.stack([t, t], dim=1))
        sample = torch.zeros(frames, c.latent_channels, side, side, device=c.device, dtype=c.dtype)
        with FlopCounterMode(display=False) as counter:
            c.denoiser(sample, 999, text, features.up, control, ends, frames)
    return counter.get_total_flops() / frames


def unet_images(requests: list[VideoRequest]) -> int:
    """UNet images (frames x windows x guidance branches x steps) our pipeline runs for ``requests``."""
    total = 0
    for request in requests:
        for denoise_pass in plan_passes(request.num_frames, WindowRule()):
            total += sum(len(w) for w in denoise_pass.windows) * 2 * request.steps
    return total


@dataclass(frozen=True)
class Measurement:
    frames: int
    seconds: float
    busy_share: float | None = None
    peak_memory_gib: float | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_ours(pipeline: HelloMemeVideoPipeline, requests: list[VideoRequest]) -> Measurement:
    device = pipeline.components.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    with GpuBusySampler(device) if device.type == "cuda" else _Nothing() as sampler:
        started = time.perf_counter()
        outputs = pipeline(requests)
        _sync(device)
        seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    busy = sampler.busy_share if isinstance(sampler, GpuBusySampler) else None
    return Measurement(sum(len(o) for o in outputs), seconds, busy, peak)


def measure_baseline(components: HelloMemeComponents, requests: list[VideoRequest]) -> Measurement:
    renderer = ReferenceStyleRenderer(components)
    _sync(components.device)
    started = time.perf_counter()
    frames = sum(len(renderer.render(request)) for request in requests)
    _sync(components.device)
    return Measurement(frames, time.perf_counter() - started)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None


# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=None, help="videos rendered together (GPU 4, CPU 2)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (GPU 47, CPU 9)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (GPU 25, CPU 3)")
    parser.add_argument("--baseline-frames", type=int, default=None, help="frames the baseline renders (GPU 23, CPU 9)")
    parser.add_argument("--frames-per-batch", type=int, default=96, help="UNet images per call in our pipeline")
    parser.add_argument("--dtype", choices=("bf16", "fp16"), default="fp16", help="fp16 as the official script")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser (static batch shapes)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    if on_gpu:
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
        components = random_full_size_components(device, dtype)
        size, videos, frames, steps, baseline_frames = 512, 4, 47, 25, 23
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        dtype = torch.float32
        components = tiny_components(device, dtype)
        size, videos, frames, steps, baseline_frames = 128, 2, 9, 3, 9
    videos = args.videos or videos
    frames = args.frames or frames
    steps = args.steps or steps
    baseline_frames = args.baseline_frames or baseline_frames
    face_size = components.expression_encoder.config.image_size
    config = PipelineConfig(frames_per_batch=args.frames_per_batch, static_batch_shapes=args.compile)
    pipeline = HelloMemeVideoPipeline(components, config, compile=args.compile)

    if on_gpu:
        logger.info("warming up (kernel selection, compilation)")
        pipeline(synthetic_requests(1, 13, size, face_size, 2))
    flops_per_image = denoiser_flops_per_image(components, size)

    requests = synthetic_requests(videos, frames, size, face_size, steps)
    ours = measure_ours(pipeline, requests)
    denoiser_tflops = flops_per_image * unet_images(requests) / ours.seconds / 1e12

    baseline = None
    if not args.no_baseline:
        baseline = measure_baseline(components, synthetic_requests(1, baseline_frames, size, face_size, steps))

    threads = torch.get_num_threads()
    device_name = torch.cuda.get_device_name(device) if on_gpu else f"CPU (tiny model, {threads} threads)"
    results = {
        "device": device_name,
        "ours_fps": ours.frames_per_second,
        "baseline_fps": None if baseline is None else baseline.frames_per_second,
        "ratio": None if baseline is None else ours.frames_per_second / baseline.frames_per_second,
        "busy_share": ours.busy_share,
        "peak_memory_gib": ours.peak_memory_gib,
        "denoiser_tflops_per_image": flops_per_image / 1e12,
        "denoiser_tflops_per_second": denoiser_tflops,
    }
    lines = [
        f"device: {device_name}, {dtype}, {size}x{size}, {steps} steps, guidance on, official windows (12, stride 11)",
        f"ours: {videos} videos x {frames} frames batched, {ours.frames} frames in {ours.seconds:.1f} s = "
        f"{ours.frames_per_second:.2f} frames/s",
        f"denoiser: {flops_per_image / 1e9:.4g} GFLOP per UNet image, achieved {denoiser_tflops:.4g} TFLOP/s"
        + (f" ({denoiser_tflops / H100_BF16_DENSE_TFLOPS:.0%} of H100 bf16 dense peak)" if on_gpu else ""),
        "GPU busy share: " + ("n/a" if ours.busy_share is None else f"{ours.busy_share:.0%}"),
        "peak GPU memory: " + ("n/a" if ours.peak_memory_gib is None else f"{ours.peak_memory_gib:.1f} GiB"),
    ]
    if baseline is not None:
        lines.append(f"baseline (reference implementation's way): {baseline.frames} frames in "
                     f"{baseline.seconds:.1f} s = {baseline.frames_per_second:.2f} frames/s")
        lines.append(f"ratio ours / baseline: {results['ratio']:.2f}x")
    for line in lines:
        print(line)
    if not args.no_results:
        command = "python bench/gpu_throughput.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        _common.append_results("HelloMeme GPU throughput", command.strip(), lines)
    return results


if __name__ == "__main__":
    main()
