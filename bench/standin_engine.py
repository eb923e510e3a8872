"""A stand-in for the HelloMeme engine on simulated GPUs: holds its GPU for a calibrated time per window.

``bench/scale_out.py`` measures how the pipeline keeps many GPUs busy; what happens on a GPU
does not matter there, only how long it is held and in what pieces.  This engine plans a clip's
passes and windows exactly as the HelloMeme engine does (``hellomeme.passes``, and with
``spread_windows`` its groups, ``hellomeme.groups``), and for each window holds its "GPU" for
``seconds_per_frame`` x the window's frames, then returns frames of the right shape (the driving
crops).  It splits long clips like the HelloMeme engine (edge passes in the render pool, each
group in the parts pool), with a state of the size HelloMeme's end-frame latents have.

Simulated GPUs are logical Ray GPUs on ``ray.cluster_utils.Cluster`` nodes on one machine.  Two
actors share each GPU (one of the render pool, one of the parts pool), so holding the GPU is an
exclusive file lock per (node, GPU id): while one actor runs a window, the other waits, as kernels
from two processes on one real GPU share its time.  Each window's start and end are appended to
``{record_dir}/{pid}.jsonl``, from which the bench computes every actor's and GPU's busy share.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engines.base import Engine, EngineSpec, PartInput, RenderInput, VideoPart
from hellomeme.groups import plan_groups
from hellomeme.passes import plan_passes
from hellomeme.windows import WindowRule

LATENT_CHANNELS, LATENT_SCALE = 4, 8  # HelloMeme's (SD1.5's) latents: 4 channels at 1/8 of the image


@dataclass(frozen=True)
class StandInOptions:
    """How long a window holds the GPU, how clips are cut, where the timings go."""

    seconds_per_frame: float = 0.1  # GPU seconds per frame of a window, all steps and both guidance branches
    window: int = 12
    overlap: int = 1
    spread_windows: int = 0
    record_dir: str = ""

    def check(self, size: int) -> None:
        if self.seconds_per_frame < 0:
            raise ValueError(f"seconds_per_frame must be >= 0, got {self.seconds_per_frame}")
        if not self.record_dir:
            raise ValueError("record_dir is required")


class StandInEngine(Engine):
    """Needs a GPU like the HelloMeme engine; renders nothing, holds the GPU for the time HelloMeme would."""

    name = "standin"
    needs_gpu = True
    default_fps = 8

    def __init__(self, spec: EngineSpec, storage_options=None) -> None:
        import ray

        super().__init__(spec, storage_options)
        self.options: StandInOptions = spec.options
        gpus = ray.get_gpu_ids()
        if not gpus:
            raise RuntimeError("the stand-in engine was built in an actor that holds no GPU")
        self.gpu = f"{ray.get_runtime_context().get_node_id()[:12]}-{gpus[0]}"
        folder = Path(self.options.record_dir)
        self._lock_path = folder / f"gpu-{self.gpu}.lock"
        self._record = open(folder / f"{os.getpid()}.jsonl", "a", buffering=1)
        self.rule = WindowRule(self.options.window, self.options.overlap)

    @classmethod
    def splits(cls, spec: EngineSpec) -> bool:
        return spec.options.spread_windows > 0

    def _hold(self, kind: str, frames: int) -> None:
        """Hold this actor's GPU for ``frames`` window frames; record when."""
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                start = time.time()
                time.sleep(self.options.seconds_per_frame * frames)
                end = time.time()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._record.write(json.dumps({"pid": os.getpid(), "kind": kind, "gpu": self.gpu, "start": start,
                                       "end": end, "frames": frames}) + "\n")

    def _groups(self, frames: int):
        return plan_groups(frames, self.rule, self.options.spread_windows) if self.options.spread_windows else ()

    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        for item in inputs:
            for denoise_pass in plan_passes(len(item.driving_frames), self.rule):
                for window in denoise_pass.windows:
                    self._hold("render", len(window))
        return [np.array(item.driving_frames, copy=True) for item in inputs]

    def render_or_split(self, inputs: Sequence[RenderInput]) -> list:
        out: list = []
        for item in inputs:
            frames = len(item.driving_frames)
            groups = self._groups(frames)
            if not groups:
                out.extend(self.render([item]))
                continue
            for denoise_pass in plan_passes(frames, self.rule)[:-1]:
                for window in denoise_pass.windows:
                    self._hold("render", len(window))
            side = self.spec.size // LATENT_SCALE
            out.append([VideoPart(index=g.index, count=g.count, start=g.start, stop=g.stop, keep_from=g.keep_from,
                                  state=np.zeros((len(g.end_frames), LATENT_CHANNELS, side, side), np.float32))
                        for g in groups])
        return out

    def render_parts(self, parts: Sequence[PartInput]) -> list[np.ndarray]:
        out = []
        for item in parts:
            part = item.part
            group = self._groups(len(item.video.driving_face))[part.index]
            for window in group.denoise_pass.windows:
                self._hold("parts", len(window))
            out.append(np.array(item.video.driving_frames[part.keep_from - part.start :], copy=True))
        return out
