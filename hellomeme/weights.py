"""Finding, checking and loading HelloMeme v5 weights.

A weights directory is laid out like the hub repositories, one folder per repo:

    stable-diffusion-v1-5/{unet,vae,text_encoder,tokenizer}/   (diffusers layout)
    hm5_reference/ (or hm5b_reference/)  hm5_control_base/  hm5_control_proj/  hm5_motion/  pd_fgc_motion/
        config.json + diffusion_pytorch_model.safetensors   (ModelMixin.save_pretrained layout)

Without a directory the same folders come from the hub (``songkey/<folder>``) through
huggingface_hub's cache (``cache_dir``, ``HF_HUB_OFFLINE`` honoured). :func:`check_weights`
finds every missing or mismatched file up front (tensor names and shapes are read from the
safetensors headers, nothing is loaded), so a job can fail before it renders anything.
Adapters load strictly: every published tensor must match a parameter of our modules.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.modeling_utils import ModelMixin
from transformers import CLIPTextModel, CLIPTokenizer

from hellomeme.components import HelloMemeComponents, assemble_components, prepare_module
from hellomeme.control import HM5ControlNetBase, HM5SD15ControlProj
from hellomeme.expression import PDFGCMotionEncoder
from hellomeme.lora import fuse_lora
from hellomeme.motion_adapter import HM5MotionAdapter
from hellomeme.reference_adapter import HM5bReferenceAdapter, HM5ReferenceAdapter

logger = logging.getLogger(__name__)

HUB_OWNER = "songkey"
BASE_MODEL_DIR = "stable-diffusion-v1-5"
ADAPTER_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                        "diffusion_pytorch_model.bin")
TEXT_ENCODER_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
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


RELEASES = {
    "v5": Release("v5", AdapterSpec("hm5_reference", HM5ReferenceAdapter)),
    "v5b": Release("v5b", AdapterSpec("hm5b_reference", HM5bReferenceAdapter)),
}


@dataclass(frozen=True)
class WeightsLayout:
    """Resolved local folders of every part."""

    release: Release
    base: Path
    adapters: tuple[tuple[str, Path], ...]
    checkpoint: Path | None = None

    def adapter(self, role: str) -> Path:
        return dict(self.adapters)[role]


def get_release(name: str) -> Release:
    if name not in RELEASES:
        raise ValueError(f"unknown HelloMeme release {name!r}; known: {sorted(RELEASES)}")
    return RELEASES[name]


# ----------------------------------------------------------------------------------------------
# Checking


def _weights_file(folder: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes from safetensors headers (single file or index); None for other formats."""
    from safetensors import safe_open

    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        files = [path.parent / shard for shard in shards]
    elif path.suffix == ".safetensors":
        files = [path]
    else:
        return None
    shapes = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


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


def _check_sd_folder(base: Path, missing: list[str]) -> None:
    for part in ("unet", "vae"):
        folder = base / part
        if not (folder / "config.json").is_file():
            missing.append(f"{folder}/config.json")
        if _weights_file(folder, ADAPTER_WEIGHT_FILES) is None:
            missing.append(f"{folder}/diffusion_pytorch_model.safetensors (or .bin)")
    folder = base / "text_encoder"
    if not (folder / "config.json").is_file():
        missing.append(f"{folder}/config.json")
    if _weights_file(folder, TEXT_ENCODER_WEIGHT_FILES) is None:
        missing.append(f"{folder}/model.safetensors (or pytorch_model.bin)")
    folder = base / "tokenizer"
    if not ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
        missing.append(f"{folder}/tokenizer.json (or vocab.json + merges.txt)")


def unet_block_channels(unet_config: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(outputs of the down blocks, inputs of the up blocks) of an SD-style UNet config."""
    down = tuple(unet_config["block_out_channels"])
    reversed_channels = tuple(reversed(down))
    up = (down[-1], *reversed_channels[:-1])
    return down, up


def _check_compatibility(unet_config: dict, configs: dict[str, dict], where: Path) -> list[str]:
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


def check_layout(layout: WeightsLayout, deep: bool = True) -> WeightsLayout:
    """Raise MissingWeightsError / MismatchedWeightsError describing every problem with ``layout``."""
    missing: list[str] = []
    mismatched: list[str] = []
    searched = [str(layout.base), *(str(p) for _, p in layout.adapters)]
    if layout.checkpoint is not None:
        searched.append(str(layout.checkpoint))
    _check_sd_folder(layout.base, missing)
    if layout.checkpoint is not None and not (layout.checkpoint / "unet" / "config.json").is_file():
        missing.append(f"{layout.checkpoint}/unet/config.json (a diffusers-layout SD1.5 checkpoint)")
    configs: dict[str, dict] = {}
    for role, spec in layout.release.adapters().items():
        folder = layout.adapter(role)
        config_path = folder / "config.json"
        weights = _weights_file(folder, ADAPTER_WEIGHT_FILES)
        if not config_path.is_file():
            missing.append(f"{config_path}")
        if weights is None:
            missing.append(f"{folder}/diffusion_pytorch_model.safetensors")
        if not config_path.is_file():
            continue
        try:
            configs[role] = spec.cls.load_config(str(folder))
        except (OSError, ValueError) as err:
            mismatched.append(f"{config_path}: unreadable config ({err})")
            continue
        if deep and weights is not None:
            found = _safetensors_shapes(weights)
            if found is not None:
                expected = expected_shapes(spec.cls, configs[role])
                mismatched.extend(compare_state(expected, found, f"{folder.name} ({spec.cls.__name__})"))
    unet_config_path = layout.base / "unet" / "config.json"
    if unet_config_path.is_file():
        unet_config = json.loads(unet_config_path.read_text())
        mismatched.extend(_check_compatibility(unet_config, configs, layout.base / "unet"))
    if missing:
        raise MissingWeightsError(f"HelloMeme {layout.release.name} weights are incomplete", missing + mismatched,
                                  searched)
    if mismatched:
        raise MismatchedWeightsError(f"HelloMeme {layout.release.name} weights do not fit the model", mismatched,
                                     searched)
    return layout


def local_layout(weights_dir: str | Path, release: str = "v5", checkpoint: str | Path | None = None) -> WeightsLayout:
    root = Path(weights_dir).expanduser()
    spec = get_release(release)
    adapters = tuple((role, root / a.folder) for role, a in spec.adapters().items())
    return WeightsLayout(spec, root / BASE_MODEL_DIR, adapters, None if checkpoint is None else Path(checkpoint))


def check_weights(
    weights_dir: str | Path, release: str = "v5", checkpoint: str | Path | None = None, deep: bool = True
) -> WeightsLayout:
    """Check a local weights directory without loading anything; raises a :class:`WeightsError`."""
    root = Path(weights_dir).expanduser()
    if not root.is_dir():
        raise MissingWeightsError(f"HelloMeme weights directory {root} does not exist", [f"{root}/"], [str(root)])
    return check_layout(local_layout(root, release, checkpoint), deep=deep)


# ----------------------------------------------------------------------------------------------
# The hub


def hub_layout(
    release: str = "v5", cache_dir: str | Path | None = None, checkpoint: str | Path | None = None
) -> WeightsLayout:
    """Fetch (or find in the cache, when HF_HUB_OFFLINE is set) every repo of ``release``."""
    spec = get_release(release)
    errors = []
    base = _snapshot(f"{HUB_OWNER}/{BASE_MODEL_DIR}", cache_dir, ("unet", "vae", "text_encoder"), errors,
                     extra_folders=("tokenizer",))
    adapters = []
    for role, adapter in spec.adapters().items():
        folder = _snapshot(f"{HUB_OWNER}/{adapter.folder}", cache_dir, (".",), errors)
        adapters.append((role, folder if folder is not None else Path(f"<hub:{HUB_OWNER}/{adapter.folder}>")))
    if errors:
        raise MissingWeightsError(f"HelloMeme {release} weights are not available from the hub or its cache", errors,
                                  [f"huggingface hub cache {cache_dir or '(default HF cache)'}"])
    layout = WeightsLayout(spec, base, tuple(adapters), None if checkpoint is None else Path(checkpoint))
    return check_layout(layout)


def _snapshot(
    repo_id: str, cache_dir, weight_folders: tuple[str, ...], errors: list[str], extra_folders: tuple[str, ...] = ()
) -> Path | None:
    """Download (or find cached) the parts of ``repo_id`` we use; safetensors preferred, .bin only where needed."""
    from huggingface_hub import snapshot_download

    def patterns(folders):
        return None if folders == (".",) else [f"{folder}/*" for folder in folders]

    ignore = ["*fp16*", "*non_ema*", "*.ckpt", "*.msgpack", "*.onnx*", "*.h5", "*.ot"]
    try:
        wanted = patterns(weight_folders + extra_folders)
        path = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=wanted,
                                      ignore_patterns=ignore + ["*.bin"]))
        lacking = tuple(f for f in weight_folders if not list((path / f).glob("*.safetensors")))
        if lacking:
            path = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=patterns(lacking),
                                          ignore_patterns=ignore))
        return path
    except Exception as err:  # huggingface_hub raises many types (offline, auth, network, missing)
        errors.append(f"{repo_id}: {type(err).__name__}: {err}")
        return None


# ----------------------------------------------------------------------------------------------
# Loading


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


def load_layout(
    layout: WeightsLayout,
    device: torch.device | str,
    dtype: torch.dtype,
    lora: str | Path | None = None,
    lora_scale: float = 1.0,
) -> HelloMemeComponents:
    """Load every part of ``layout`` and place it on ``device`` once."""
    device = torch.device(device)
    base = layout.base
    tokenizer = _load_sd_part(CLIPTokenizer.from_pretrained, base / "tokenizer")
    text_encoder = _load_sd_part(CLIPTextModel.from_pretrained, base / "text_encoder")
    vae = _load_sd_part(AutoencoderKL.from_pretrained, base / "vae")
    unet = _load_sd_part(UNet2DConditionModel.from_pretrained, base / "unet")

    denoiser_unet = decoder_vae = denoiser_text_encoder = None
    if layout.checkpoint is not None:
        checkpoint = layout.checkpoint
        denoiser_unet = _load_sd_part(UNet2DConditionModel.from_pretrained, checkpoint / "unet")
        if (checkpoint / "vae" / "config.json").is_file():
            decoder_vae = _load_sd_part(AutoencoderKL.from_pretrained, checkpoint / "vae")
    if lora is not None:
        # HelloMeme keeps the reference branch on base SD1.5: the LoRA goes to separate copies.
        denoiser_unet = copy.deepcopy(unet) if denoiser_unet is None else denoiser_unet
        denoiser_text_encoder = copy.deepcopy(text_encoder)
        fuse_lora(denoiser_unet, denoiser_text_encoder, lora, lora_scale)

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
        denoiser_text_encoder=denoiser_text_encoder,
        decoder_vae=decoder_vae,
    )


def load_hellomeme(
    weights_dir: str | Path | None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    release: str = "v5",
    checkpoint: str | Path | None = None,
    lora: str | Path | None = None,
    lora_scale: float = 1.0,
    cache_dir: str | Path | None = None,
) -> HelloMemeComponents:
    """Check, then load, HelloMeme from a local directory (or from the hub when ``weights_dir`` is None)."""
    if weights_dir is None:
        layout = hub_layout(release, cache_dir, checkpoint)
    else:
        layout = check_weights(weights_dir, release, checkpoint)
    logger.info("loading HelloMeme %s from %s onto %s (%s)", release, layout.base.parent, device, dtype)
    return load_layout(layout, device, dtype, lora=lora, lora_scale=lora_scale)
