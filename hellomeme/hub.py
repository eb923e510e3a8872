"""HelloMeme's weights on the Hugging Face hub (``songkey/<folder>`` repos): checked from metadata, fetched where used.

:func:`check_hub` is for the job's driver: online it reads file lists, configs and safetensors
headers through ``HfFileSystem`` (ranged reads, no model download); with ``HF_HUB_OFFLINE=1`` it
looks in the local cache only.  :func:`download_layout` is for the machines that render: it
fetches the parts HelloMeme uses into huggingface_hub's cache (which locks per file, so actors
sharing a node share one download) and returns the local layout.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import huggingface_hub.constants

from hellomeme.weight_files import WeightFiles
from hellomeme.weights import (
    BASE_MODEL_DIR,
    BASE_PARTS,
    HUB_OWNER,
    MissingWeightsError,
    WeightsLayout,
    check_layout,
    get_release,
)

logger = logging.getLogger(__name__)

_IGNORE = ["*fp16*", "*non_ema*", "*.ckpt", "*.msgpack", "*.onnx*", "*.h5", "*.ot"]


def repo_id(folder: str) -> str:
    return f"{HUB_OWNER}/{folder}"


# What the hub's client raises when the network or the hub is not there: its HTTP library's
# transport errors (httpx, its forks and requests name them so) and the OS's own.
_TRANSPORT_ERROR_NAMES = frozenset({"TransportError", "NetworkError", "ConnectError", "ConnectionError",
                                    "TimeoutException", "Timeout"})


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or any(cls.__name__ in _TRANSPORT_ERROR_NAMES for cls in type(exc).__mro__)


def offline() -> bool:
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _layout(release: str, folders: dict[str, str], checkpoint: str | None, files: WeightFiles) -> WeightsLayout:
    spec = get_release(release)
    adapters = tuple((role, folders[a.folder]) for role, a in spec.adapters().items())
    return WeightsLayout(spec, folders[BASE_MODEL_DIR], adapters, checkpoint, files)


def _snapshot(repo: str, cache_dir, base: bool, local_only: bool) -> Path:
    """Download (or find cached) the parts of ``repo`` we use; safetensors preferred, .bin only where needed."""
    from huggingface_hub import snapshot_download

    wanted = [f"{part}/*" for part in BASE_PARTS] if base else None
    path = Path(snapshot_download(repo, cache_dir=cache_dir, allow_patterns=wanted, ignore_patterns=_IGNORE + ["*.bin"],
                                  local_files_only=local_only))
    weight_folders = [p for p in BASE_PARTS if p != "tokenizer"] if base else ["."]
    lacking = [f for f in weight_folders if not list((path / f).glob("*.safetensors"))]
    if lacking and not local_only:
        patterns = None if lacking == ["."] else [f"{f}/*" for f in lacking]
        path = Path(snapshot_download(repo, cache_dir=cache_dir, allow_patterns=patterns, ignore_patterns=_IGNORE))
    return path


def _resolve(release: str, cache_dir, local_only: bool) -> dict[str, str]:
    folders, errors = {}, []
    for folder in get_release(release).folders():
        try:
            folders[folder] = str(_snapshot(repo_id(folder), cache_dir, folder == BASE_MODEL_DIR, local_only))
        except Exception as err:  # huggingface_hub raises many types (offline, auth, network, missing)
            errors.append(f"{repo_id(folder)}: {type(err).__name__}: {err}")
    if errors:
        where = "the local hub cache (HF_HUB_OFFLINE is set)" if local_only else "the hub or its cache"
        raise MissingWeightsError(f"HelloMeme {release} weights are not available from {where}", errors,
                                  [f"huggingface hub cache {cache_dir or '(default HF cache)'}"])
    return folders


def download_layout(release: str = "v5", cache_dir: str | Path | None = None,
                    checkpoint: str | Path | None = None) -> WeightsLayout:
    """Every repo of ``release`` in the local hub cache (fetched unless HF_HUB_OFFLINE is set)."""
    folders = _resolve(release, cache_dir, local_only=offline())
    return _layout(release, folders, None if checkpoint is None else str(checkpoint), WeightFiles())


def check_hub(release: str = "v5", cache_dir: str | Path | None = None, checkpoint: str | None = None,
              checkpoint_files: WeightFiles | None = None, files: WeightFiles | None = None) -> WeightsLayout:
    """Check the hub weights (and a checkpoint held elsewhere) from metadata only.

    Offline (HF_HUB_OFFLINE) the local hub cache is checked; online ``files`` reads the hub
    (default ``HfFileSystem``: listings and ranged reads of headers, never whole weight files).
    """
    checkpoint_files = checkpoint_files or WeightFiles()
    if offline():
        folders = _resolve(release, cache_dir, local_only=True)
        files = WeightFiles()
    else:
        if files is None:
            from huggingface_hub import HfFileSystem

            files = WeightFiles(HfFileSystem())
        folders = {folder: repo_id(folder) for folder in get_release(release).folders()}
    try:
        layout = _layout(release, folders, checkpoint, files)
        return check_layout(replace(layout, checkpoint_files=checkpoint_files))
    except Exception as exc:
        if offline() or not _unreachable(exc):
            raise
        raise MissingWeightsError(
            f"the Hugging Face hub could not be read to check the HelloMeme {release} weights "
            f"({type(exc).__name__}: {exc})",
            ["no network, or the hub is unreachable: pass --weights DIR|URI (a folder in the hub layout, local or "
             "in object storage), or set HF_HUB_OFFLINE=1 to use the weights already in the local hub cache"],
            [f"https://huggingface.co/{repo}" for repo in folders.values()]) from None
