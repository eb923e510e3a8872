"""The engine interface that the render actor pool drives, and the two settings types engines see.

An engine is built once per actor from an :class:`EngineSpec` (weights loaded once) and renders
many videos.  It sees everything in one coordinate frame: the reference portrait and the driving
frames are both stable square face crops of ``spec.size`` pixels, and the landmarks of both face
tracks are in those crops' pixel coordinates.  How a clip is cut into windows is the engine's own
business (the warp engine needs none; HelloMeme plans them as its video script does).

The settings types, decided once on the driver before any row runs:

- :class:`EngineSpec`: the engine's name, where its class lives, the output size and the engine's
  own options (a frozen dataclass per engine, see ``options_class`` in :mod:`engines.registry`).
  It is small and serialisable, sent to every render actor once.
- :class:`RowSettings`: a manifest row's own settings, with every default applied.

Engines import only ``faces`` and ``mediaio`` (shared utilities) and ``hellomeme`` (the model); never Ray,
``pipelines``, ``actors`` or ``jobs``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from faces.tracking import FaceTrack


class EngineOptionError(ValueError):
    """An engine option the engine cannot run with; the message names the option as the CLI spells it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


def import_object(path: str) -> Any:
    """The object at ``module:name`` (engines and their option classes are named this way)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'module:name', got {path!r}")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class NoOptions:
    """Options of an engine that has none."""

    def check(self, size: int) -> None:
        """Nothing to check."""


@dataclass(frozen=True)
class EngineSpec:
    """Which engine renders, at what size, with which of its options; fixed before the job starts.

    ``engine_path`` (``module:Class``) is resolved from the registry on the driver, so actors import
    the engine class by path and need no registry of their own (tests add toy engines this way).
    """

    name: str
    engine_path: str
    size: int = 512
    options: Any = field(default_factory=NoOptions)  # the engine's options dataclass

    def engine_class(self) -> type["Engine"]:
        return import_object(self.engine_path)

    def option(self, name: str, default: Any = None) -> Any:
        """One option by field name (``default`` when this engine has no such option)."""
        return getattr(self.options, name, default)

    def unused_settings(self) -> tuple[str, ...]:
        """The per-row settings of :data:`ENGINE_SETTINGS` this engine does not read (the warp engine: all)."""
        used = self.engine_class().settings_used
        return tuple(name for name in ENGINE_SETTINGS if name not in used)

    def describe(self) -> dict[str, Any]:
        """The spec as plain values, for logs and the report."""
        options = dataclasses.asdict(self.options) if dataclasses.is_dataclass(self.options) else {}
        return {"engine": self.name, "size": self.size, **options}


# RowSettings fields an engine may read or ignore (``Engine.settings_used``); the rest are the pipeline's.
ENGINE_SETTINGS = ("seed", "steps", "guidance", "prompt", "lora", "lora_scale")


@dataclass(frozen=True)
class RowSettings:
    """One manifest row's settings, every default applied once on the driver.

    The diffusion defaults are HelloMeme v5's video script's; the warp engine ignores them.
    ``fps`` None renders at the engine's rate (or the clip's own for the warp engine).
    """

    seed: int = 0
    steps: int = 25
    guidance: float = 1.5
    prompt: str = ""
    lora: str | None = None  # a LoRA file for this row (hellomeme engine); the job's --lora when the row names none
    lora_scale: float = 1.0
    fps: float | None = None
    max_seconds: float | None = None

    @classmethod
    def from_columns(cls, row: Mapping[str, Any]) -> "RowSettings":
        """A row's settings from its columns (Ray Data gives a null float as NaN, a null string as None)."""
        return cls(
            seed=int(row["seed"]), steps=int(row["steps"]), guidance=float(row["guidance"]), prompt=str(row["prompt"]),
            lora=null_as_none(row["lora"]), lora_scale=float(row["lora_scale"]), fps=null_as_none(row["fps"]),
            max_seconds=null_as_none(row["max_seconds"]),
        )


def null_as_none(value: Any) -> Any:
    """A cell read from a Ray Data row, with a null as None.

    A column that is null in every row of a block has Arrow's null type, which Ray Data hands to
    the next stage as NaN, whatever the column holds when it is not null (bytes, strings, floats).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


@dataclass(frozen=True)
class RenderInput:
    """One video to render."""

    meme_id: str
    reference: np.ndarray  # (size, size, 3) uint8 RGB: the reference portrait's face crop
    reference_face: FaceTrack  # one frame, landmarks in ``reference`` pixel coordinates
    driving_frames: np.ndarray  # (T, size, size, 3) uint8 RGB: the driving clip's stable face crop (none, (0, ...),
    #                             for an engine whose needs_driving_frames is False)
    driving_face: FaceTrack  # T frames, landmarks in ``driving_frames`` pixel coordinates
    settings: RowSettings = field(default_factory=RowSettings)


@dataclass(frozen=True, eq=False)  # holds an array: compare parts field by field
class VideoPart:
    """One part of a video whose rendering an engine split (:meth:`Engine.render_or_split`).

    Any render actor's engine finishes it (:meth:`Engine.render_parts`), independently of the
    other parts; the parts' outputs, in ``index`` order, make the video.  The cut is the engine's
    and depends only on the video and the engine's options, never on the cluster.
    """

    index: int  # 0-based, in output order
    count: int  # parts of the video
    start: int  # the driving frames this part renders: start .. stop-1
    stop: int
    keep_from: int  # the first of them its output holds (frames before it come from the part before)
    state: np.ndarray  # float32: what the part needs from the work done before the split (HelloMeme: end-frame latents)

    def __post_init__(self) -> None:
        if not (0 <= self.index < self.count and 0 <= self.start <= self.keep_from < self.stop):
            raise ValueError(f"inconsistent video part {self.index}/{self.count} frames {self.start}-{self.stop} "
                             f"keeping from {self.keep_from}")

    @property
    def output_frames(self) -> int:
        return self.stop - self.keep_from


@dataclass(frozen=True)
class PartInput:
    """A part to render: the video's inputs with the driving crops of the part's frames only.

    ``video.driving_frames`` holds frames ``part.start .. part.stop-1``; ``video.driving_face``
    is still the whole clip's track (an engine may need the whole clip's motion, as HelloMeme's
    head translation relative to the first frame).
    """

    video: RenderInput
    part: VideoPart


class Engine(ABC):
    """Renders videos from :class:`RenderInput`; subclasses declare their needs as class attributes."""

    name: ClassVar[str]
    needs_gpu: ClassVar[bool] = False
    # Generation frame rate when the manifest row gives none; None renders at the driving clip's rate.
    default_fps: ClassVar[float | None] = None
    # The square face crop this engine expects, as ``module:function`` (FaceTrack -> CropBox): named by
    # path so the prepare actors use it without importing the engine (and its model libraries).
    crop_rule: ClassVar[str] = "faces.tracking:stable_crop_box"
    # False for an engine that reads only the driving face track, not its pixels: the prepare stage
    # then skips the clip's second, full-resolution decode and sends no driving crops (empty, (0, S, S, 3)).
    needs_driving_frames: ClassVar[bool] = True
    # The manifest's per-row settings this engine reads (``fps`` and ``max_seconds`` are the pipeline's
    # and always apply); the plan warns about rows that set others, which would be ignored silently.
    settings_used: ClassVar[frozenset[str]] = frozenset(ENGINE_SETTINGS)

    def __init__(self, spec: EngineSpec, storage_options: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.storage_options = dict(storage_options or {})  # the job's, for weights in object storage

    @classmethod
    def check_ready(cls, spec: EngineSpec, storage_options: Mapping[str, Any] | None = None) -> None:
        """Raise before any row runs if this engine cannot run with ``spec`` (missing weights); reads metadata only."""


    @staticmethod
    def batch_key(settings: RowSettings) -> Any:
        """Rows whose keys are equal may be rendered in one call (HelloMeme: the same LoRA)."""
        return None

    @abstractmethod
    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        """Render each input to (T, size, size, 3) uint8 RGB frames, one array per input, same order.

        All inputs of one call share :meth:`batch_key`.
        """

    # --- splitting one video over several actors (optional; by default no engine splits) -----------

    @classmethod
    def splits(cls, spec: EngineSpec) -> bool:
        """Whether this engine, with ``spec``'s options, may split a video into parts (the pipeline then adds
        a parts stage and a stitch stage)."""
        return False

    def render_or_split(self, inputs: Sequence[RenderInput]) -> list["np.ndarray | list[VideoPart]"]:
        """Render each input whole, or do the work that must come first and return its parts.

        The result of a split video must equal what :meth:`render` gives for it, once its parts'
        outputs are put back in order.  By default every video is rendered whole.
        """
        return list(self.render(inputs))

    def render_parts(self, parts: Sequence[PartInput]) -> list[np.ndarray]:
        """Each part's (part.output_frames, size, size, 3) uint8 frames, same order; parts share :meth:`batch_key`."""
        raise NotImplementedError(f"the {self.name} engine does not split videos")
