"""Finding, checking and loading HelloMeme v5 weights.

A weights directory is laid out like the hub repositories, one folder per repo:

    stable-diffusion-v1-5/{unet,vae,text_encoder,tokenizer}/   (diffusers layout)
    hm5_reference/ (or hm5b_reference/)  hm5_control_base/  hm5_control_proj/  hm5_motion/  pd_fgc_motion/
        config.json + diffusion_pytorch_model.safetensors   (ModelMixin.save_pretrained layout)

Without a directory the same folders come from the hub (``songkey/<folder>``) through
huggingface_hub's cache (``HF_HUB_OFFLINE`` honoured).  A stylised SD1.5 checkpoint replaces the
denoiser's UNet (and decoding VAE): a diffusers folder or a single original-layout
``.safetensors`` file (:mod:`hellomeme.single_file`).

:func:`check_layout` finds every missing or mismatched file up front from metadata only (file
lists, JSON configs, tensor names and shapes from safetensors headers) through any fsspec
filesystem: a local folder, an object store, or the hub (``HfFileSystem``) — so the job's driver
checks the weights without downloading the model.  Adapters load strictly: every published
tensor must match a parameter of our modules.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.modeling_utils import ModelMixin
from transformers import CLIPTextModel, CLIPTokenizer

from hellomeme.components import HelloMemeComponents, assemble_components, prepare_module
from hellomeme.control import HM5ControlNetBase, HM5SD15ControlProj
from hellomeme.expression import PDFGCMotionEncoder
from hellomeme.motion_adapter import HM5MotionAdapter
from hellomeme.reference_adapter import HM5bReferenceAdapter, HM5ReferenceAdapter
from hellomeme.single_file import check_shapes as check_single_file_shapes
from hellomeme.single_file import load_single_file
from hellomeme.weight_files import WeightFileError, WeightFiles

logger = logging.getLogger(__name__)

HUB_OWNER = "songkey"
BASE_MODEL_DIR = "stable-diffusion-v1-5"
ADAPTER_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                        "diffusion_pytorch_model.bin")
TEXT_ENCODER_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
BASE_PARTS = ("unet", "vae", "text_encoder", "tokenizer")
# Bookkeeping buffers that change nothing in eval mode; files converted without them still load.
OPTIONAL_TENSOR_SUFFIXES = (".num_batches_tracked",)


class WeightsError(RuntimeError):
    """Weights cannot be used: lists every problem found and every place that was searched."""

    def __init__(self, summary: str, problems: Iterable[str], searched: Iterable[str]) -> None:
        self.problems = tuple(problems)
        self.searched = tuple(searched)
        lines = [summary, *(f"  - {p}" for p in self.problems), "searched:", *(f"  {s}" for s in self.searched)]
        super().__init__("\n".join(lines))


class MissingWeightsError(WeightsError):
    """Some weight folders or files are absent."""


class MismatchedWeightsError(WeightsError):
    """Files are there but their tensors or configs do not fit the model."""


@dataclass(frozen=True)
class AdapterSpec:
    """One HelloMeme module: its folder (= hub repo name) and class."""

    folder: str
    cls: type[ModelMixin]


@dataclass(frozen=True)
class Release:
    """Which adapter folders make up a release."""

    name: str
    reference: AdapterSpec
    control_base: AdapterSpec = AdapterSpec("hm5_control_base", HM5ControlNetBase)
    control_proj: AdapterSpec = AdapterSpec("hm5_control_proj", HM5SD15ControlProj)
    motion: AdapterSpec = AdapterSpec("hm5_motion", HM5MotionAdapter)
    expression: AdapterSpec = AdapterSpec("pd_fgc_motion", PDFGCMotionEncoder)

    def adapters(self) -> dict[str, AdapterSpec]:
        return {"reference": self.reference, "control_base": self.control_base, "control_proj": self.control_proj,
                "motion": self.motion, "expression": self.expression}

    def folders(self) -> tuple[str, ...]:
        """Every folder (hub repo) this release reads, the base model first."""
        return (BASE_MODEL_DIR, *(spec.folder for spec in self.adapters().values()))


RELEASES = {
    "v5": Release("v5", AdapterSpec("hm5_reference", HM5ReferenceAdapter)),
    "v5b": Release("v5b", AdapterSpec("hm5b_reference", HM5bReferenceAdapter)),
}


def get_release(name: str) -> Release:
    if name not in RELEASES:
        raise ValueError(f"unknown HelloMeme release {name!r}; known: {sorted(RELEASES)}")
    return RELEASES[name]


def is_single_file(checkpoint: str | Path | None) -> bool:
    """A checkpoint given as one original-layout file rather than a diffusers folder."""
    return checkpoint is not None and str(checkpoint).endswith(".safetensors")


@dataclass(frozen=True)
class WeightsLayout:
    """Where every part lives (paths in ``files``' filesystem)."""

    release: Release
    base: str
    adapters: tuple[tuple[str, str], ...]
    checkpoint: str | None = None  # a diffusers folder or a single .safetensors file
    files: WeightFiles = field(default_factory=WeightFiles, compare=False)
    checkpoint_files: WeightFiles | None = field(default=None, compare=False)  # when not under ``files``

    def adapter(self, role: str) -> str:
        return dict(self.adapters)[role]

    def searched(self) -> list[str]:
        places = [self.base, *(p for _, p in self.adapters)]
        return places + ([self.checkpoint] if self.checkpoint is not None else [])


def _root(root: str | Path, files: WeightFiles) -> str:
    return str(Path(root).expanduser()) if files.is_local else str(root).rstrip("/")


def layout_under(root: str | Path, release: str = "v5", checkpoint: str | Path | None = None,
                 files: WeightFiles | None = None) -> WeightsLayout:
    """The layout of a weights folder (or object-store prefix) in the hub layout."""
    files = files or WeightFiles()
    root = _root(root, files)
    spec = get_release(release)
    adapters = tuple((role, files.join(root, a.folder)) for role, a in spec.adapters().items())
    return WeightsLayout(spec, files.join(root, BASE_MODEL_DIR), adapters,
                         None if checkpoint is None else str(checkpoint), files)


# ----------------------------------------------------------------------------------------------
# Checking (metadata only)


def expected_shapes(cls: type[ModelMixin], config: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the state dict of ``cls(**config)``, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = cls.from_config(config)
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def compare_state(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: str) -> list[str]:
    problems = []
    missing = sorted(k for k in set(expected) - set(found) if not k.endswith(OPTIONAL_TENSOR_SUFFIXES))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"{where}: {len(missing)} tensors missing, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{where}: {len(unexpected)} unexpected tensors, e.g. {unexpected[:5]}")
    wrong = [f"{k} {found[k]} != {expected[k]}" for k in sorted(set(expected) & set(found)) if found[k] != expected[k]]
    if wrong:
        problems.append(f"{where}: {len(wrong)} tensors with wrong shapes, e.g. {wrong[:5]}")
    return problems


def unet_block_channels(unet_config: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(outputs of the down blocks, inputs of the up blocks) of an SD-style UNet config."""
    down = tuple(unet_config["block_out_channels"])
    reversed_channels = tuple(reversed(down))
    up = (down[-1], *reversed_channels[:-1])
    return down, up


class _Checker:
    """Collects problems while reading one layout's metadata."""

    def __init__(self, layout: WeightsLayout, deep: bool) -> None:
        self.layout = layout
        self.files = layout.files
        self.deep = deep
        self.missing: list[str] = []
        self.mismatched: list[str] = []

    def config(self, path: str) -> dict[str, Any] | None:
        if not self.files.is_file(path):
            self.missing.append(path)
            return None
        try:
            return self.files.read_json(path)
        except (OSError, ValueError) as err:
            self.mismatched.append(f"{path}: unreadable config ({err})")
            return None

    def weights(self, folder: str, names: tuple[str, ...], what: str) -> str | None:
        path = self.files.first_file(folder, names)
        if path is None:
            self.missing.append(f"{self.files.join(folder, names[0])} ({what})")
        return path

    def shapes(self, path: str) -> dict[str, tuple[int, ...]] | None:
        try:
            return self.files.safetensors_shapes(path)
        except (OSError, ValueError, KeyError, WeightFileError) as err:
            self.mismatched.append(f"{path}: {err}")
            return None

    def module(self, cls: type[ModelMixin], folder: str, config: dict | None, where: str) -> None:
        """A diffusers-layout module folder: weights present and (deep) their shapes fit the config."""
        weights = self.weights(folder, ADAPTER_WEIGHT_FILES, cls.__name__)
        if config is None or weights is None or not self.deep:
            return
        found = self.shapes(weights)
        if found is not None:
            self.mismatched.extend(compare_state(expected_shapes(cls, config), found, where))


def _check_compatibility(unet_config: dict, configs: dict[str, dict], where: str) -> list[str]:
    """The adapters must have been made for this UNet's widths, and agree with each other."""
    down, up = unet_block_channels(unet_config)
    problems = []
    checks = [
        ("reference", "block_up_channels", up),
        ("motion", "block_down_channels", down),
        ("motion", "block_up_channels", up),
        ("control_proj", "block_down_channels", down),
        ("control_proj", "block_up_channels", up),
    ]
    for role, key, wanted in checks:
        config = configs.get(role)
        if config is None:
            continue
        got = config.get(key)
        if got is not None and tuple(got) != tuple(wanted):
            problems.append(f"{role} config {key}={tuple(got)} does not fit the UNet in {where} ({tuple(wanted)})")
    base, proj = configs.get("control_base"), configs.get("control_proj")
    if base is not None and proj is not None:
        channels = tuple(base.get("block_out_channels", (320, 640, 1280)))
        if tuple(proj.get("control_channels", (320, 640, 1280))) != channels:
            problems.append(f"control_proj control_channels do not match control_base block_out_channels {channels}")
    expression = configs.get("expression")
    if base is not None and expression is not None:
        code_dim = (expression.get("eye_dim", 6) + expression.get("emotion_dim", 30)
                    + expression.get("feature_dim", 512))
        if base.get("expression_dim", 548) != code_dim:
            problems.append(f"control_base expects {base.get('expression_dim', 548)}-d expression codes, "
                            f"pd_fgc_motion makes {code_dim}-d")
    return problems


def _check_checkpoint(check: _Checker, unet_config: dict | None, vae_config: dict | None) -> None:
    checkpoint = check.layout.checkpoint
    files = check.layout.checkpoint_files or check.files
    if is_single_file(checkpoint):
        if not files.is_file(checkpoint):
            check.missing.append(f"{checkpoint} (a single-file SD1.5 checkpoint)")
            return
        try:
            shapes = files.safetensors_shapes(checkpoint)
        except (OSError, ValueError, KeyError, WeightFileError) as err:
            check.mismatched.append(f"{checkpoint}: {err}")
            return
        if shapes is not None and unet_config is not None and vae_config is not None:
            check.mismatched.extend(check_single_file_shapes(shapes, unet_config, vae_config, checkpoint))
        return
    unet_folder = files.join(checkpoint, "unet")
    if not files.is_file(files.join(unet_folder, "config.json")):
        check.missing.append(f"{unet_folder}/config.json (a diffusers-layout SD1.5 checkpoint, or a .safetensors file)")
        return
    inner = _Checker(replace(check.layout, files=files), check.deep)
    config = inner.config(files.join(unet_folder, "config.json"))
    inner.module(UNet2DConditionModel, unet_folder, config, f"{checkpoint} (UNet)")
    vae_folder = files.join(checkpoint, "vae")
    if files.is_file(files.join(vae_folder, "config.json")):
        inner.module(AutoencoderKL, vae_folder, inner.config(files.join(vae_folder, "config.json")),
                     f"{checkpoint} (VAE)")
    check.missing.extend(inner.missing)
    check.mismatched.extend(inner.mismatched)


def check_layout(layout: WeightsLayout, deep: bool = True) -> WeightsLayout:
    """Raise MissingWeightsError / MismatchedWeightsError describing every problem with ``layout``.

    Reads configs and safetensors headers only.
    """
    check = _Checker(layout, deep)
    files = check.files
    base = layout.base
    unet_config = check.config(files.join(base, "unet", "config.json"))
    check.module(UNet2DConditionModel, files.join(base, "unet"), unet_config, f"{base}/unet")
    vae_config = check.config(files.join(base, "vae", "config.json"))
    check.weights(files.join(base, "vae"), ADAPTER_WEIGHT_FILES, "VAE")
    if not files.is_file(files.join(base, "text_encoder", "config.json")):
        check.missing.append(files.join(base, "text_encoder", "config.json"))
    check.weights(files.join(base, "text_encoder"), TEXT_ENCODER_WEIGHT_FILES, "CLIP text encoder")
    tokenizer = files.join(base, "tokenizer")
    if files.first_file(tokenizer, ("tokenizer.json", "vocab.json")) is None:
        check.missing.append(f"{tokenizer}/tokenizer.json (or vocab.json + merges.txt)")

    configs: dict[str, dict] = {}
    for role, spec in layout.release.adapters().items():
        folder = layout.adapter(role)
        config = check.config(files.join(folder, "config.json"))
        if config is not None:
            configs[role] = config
        check.module(spec.cls, folder, config, f"{folder} ({spec.cls.__name__})")
    if unet_config is not None:
        check.mismatched.extend(_check_compatibility(unet_config, configs, f"{base}/unet"))
    if layout.checkpoint is not None:
        _check_checkpoint(check, unet_config, vae_config)

    name = layout.release.name
    if check.missing:
        raise MissingWeightsError(f"HelloMeme {name} weights are incomplete", check.missing + check.mismatched,
                                  layout.searched())
    if check.mismatched:
        raise MismatchedWeightsError(f"HelloMeme {name} weights do not fit the model", check.mismatched,
                                     layout.searched())
    return layout


def check_weights(weights_dir: str | Path, release: str = "v5", checkpoint: str | Path | None = None,
                  deep: bool = True, files: WeightFiles | None = None) -> WeightsLayout:
    """Check a weights folder (local, or under ``files``' filesystem) without loading anything."""
    files = files or WeightFiles()
    root = _root(weights_dir, files)
    layout = layout_under(root, release, checkpoint, files)
    if not files.is_dir(root):
        raise MissingWeightsError(f"HelloMeme weights directory {root} does not exist", [f"{root}/"], [root])
    return check_layout(layout, deep=deep)


# ----------------------------------------------------------------------------------------------
# Loading (local files)


def _weights_file(folder: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def load_adapter(
    cls: type[ModelMixin], folder: str | Path, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> ModelMixin:
    """Build ``cls`` from ``folder``'s config and load its weights strictly (names and shapes must match).

    Without ``device``/``dtype`` the module stays on the CPU in the file's dtype, for the caller to place.
    """
    folder = Path(folder)
    config = cls.load_config(str(folder))
    weights = _weights_file(folder, ADAPTER_WEIGHT_FILES)
    if weights is None:
        raise MissingWeightsError(f"no weights for {cls.__name__}", [f"{folder}/diffusion_pytorch_model.safetensors"],
                                  [str(folder)])
    state = _read_state(weights)
    with torch.device("meta"):
        model = cls.from_config(config)
    for key, tensor in model.state_dict().items():
        if key.endswith(OPTIONAL_TENSOR_SUFFIXES) and key not in state:
            state[key] = torch.zeros(tensor.shape, dtype=tensor.dtype)
    problems = compare_state({k: tuple(v.shape) for k, v in model.state_dict().items()},
                             {k: tuple(v.shape) for k, v in state.items()}, f"{folder.name} ({cls.__name__})")
    if problems:
        raise MismatchedWeightsError(f"weights in {folder} do not fit {cls.__name__}", problems, [str(folder)])
    model.load_state_dict(state, strict=True, assign=True)
    if device is None and dtype is None:
        return model.eval().requires_grad_(False)
    return prepare_module(model, device or torch.device("cpu"), dtype or torch.float32)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if path.name.endswith(".index.json"):
        state = {}
        for shard in sorted(set(json.loads(path.read_text())["weight_map"].values())):
            state.update(load_file(str(path.parent / shard)))
        return state
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _load_sd_part(loader, folder: Path, **kwargs):
    try:
        return loader(str(folder), **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise MismatchedWeightsError(f"cannot load {folder}", [f"{type(err).__name__}: {err}"], [str(folder)]) from err


def _load_checkpoint(checkpoint: Path, base: Path):
    """(denoiser UNet, decoding VAE or None) from a stylised SD1.5 checkpoint (folder or single file)."""
    if is_single_file(checkpoint):
        unet_config = UNet2DConditionModel.load_config(str(base / "unet"))
        vae_config = AutoencoderKL.load_config(str(base / "vae"))
        try:
            return load_single_file(str(checkpoint), unet_config, vae_config)
        except ValueError as err:
            raise MismatchedWeightsError(f"cannot use checkpoint {checkpoint}", [str(err)], [str(checkpoint)]) from err
    unet = _load_sd_part(UNet2DConditionModel.from_pretrained, checkpoint / "unet")
    vae = None
    if (checkpoint / "vae" / "config.json").is_file():
        vae = _load_sd_part(AutoencoderKL.from_pretrained, checkpoint / "vae")
    return unet, vae


def load_layout(layout: WeightsLayout, device: torch.device | str, dtype: torch.dtype) -> HelloMemeComponents:
    """Load every part of a local ``layout`` and place it on ``device`` once.

    As the published script (its 'x1' style): the reference net, both text encoders and the
    encoding VAE are base SD1.5; a checkpoint gives the denoiser's UNet and the decoding VAE.
    """
    device = torch.device(device)
    base = Path(layout.base)
    tokenizer = _load_sd_part(CLIPTokenizer.from_pretrained, base / "tokenizer")
    text_encoder = _load_sd_part(CLIPTextModel.from_pretrained, base / "text_encoder")
    vae = _load_sd_part(AutoencoderKL.from_pretrained, base / "vae")
    unet = _load_sd_part(UNet2DConditionModel.from_pretrained, base / "unet")

    denoiser_unet = decoder_vae = None
    if layout.checkpoint is not None:
        denoiser_unet, decoder_vae = _load_checkpoint(Path(layout.checkpoint), base)

    release = layout.release
    adapters = {role: load_adapter(spec.cls, layout.adapter(role)) for role, spec in release.adapters().items()}
    return assemble_components(
        tokenizer, text_encoder, vae, unet,
        reference_adapter=adapters["reference"],
        motion_adapter=adapters["motion"],
        control_net=adapters["control_base"],
        control_proj=adapters["control_proj"],
        expression_encoder=adapters["expression"],
        device=device,
        dtype=dtype,
        denoiser_unet=denoiser_unet,
        decoder_vae=decoder_vae,
    )


def load_hellomeme(
    weights_dir: str | Path | None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    release: str = "v5",
    checkpoint: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> HelloMemeComponents:
    """Check, then load, HelloMeme from a local folder (or from the hub when ``weights_dir`` is None)."""
    if weights_dir is None:
        from hellomeme.hub import download_layout

        layout = check_layout(download_layout(release, cache_dir, checkpoint))
    else:
        layout = check_weights(weights_dir, release, checkpoint)
    logger.info("loading HelloMeme %s from %s onto %s (%s)", release, Path(layout.base).parent, device, dtype)
    return load_layout(layout, device, dtype)
