"""Where the hellomeme engine's weights come from: a local folder, object storage, or the hub.

Two sides, never mixed up:

- the driver (:func:`check_hellomeme_weights`) checks from metadata only: file lists and sizes,
  JSON configs and safetensors headers, read from the local disk, the object store or the hub;
  it never downloads the model;
- each render actor (:func:`load_components`) brings what it needs onto its node first: object
  storage through the node-local cache (:mod:`engines.hellomeme_weights_cache`, one download per
  node), the hub through huggingface_hub's cache (``HF_HUB_OFFLINE=1`` honoured), then loads.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch

from engines.base import EngineOptionError
from engines.hellomeme_options import HelloMemeOptions
from engines.hellomeme_weights_cache import folder_selector, is_remote, sync
from hellomeme.components import HelloMemeComponents
from hellomeme.weight_files import WeightFiles
from hellomeme.weights import check_layout, check_weights, get_release, is_single_file, layout_under, load_layout
from mediaio.storage import filesystem_for, redact

logger = logging.getLogger(__name__)


StorageOptions = Mapping[str, Any] | None  # the job's fsspec options (credentials for object storage)


def _files_for(location: str, storage_options: StorageOptions) -> tuple[WeightFiles, str]:
    """Metadata reader and in-filesystem path for a local path or object-store URI."""
    if is_remote(location):
        fs, path = filesystem_for(location, storage_options)
        return WeightFiles(fs), path
    return WeightFiles(), str(Path(location).expanduser())


def check_hellomeme_weights(options: HelloMemeOptions, storage_options: StorageOptions = None) -> None:
    """Raise a WeightsError (or EngineOptionError) naming every problem; reads metadata only."""
    checkpoint_files, checkpoint = (None, None)
    if options.checkpoint is not None:
        checkpoint_files, checkpoint = _files_for(options.checkpoint, storage_options)
    if options.weights is None:
        from hellomeme.hub import check_hub

        check_hub(options.release, checkpoint=checkpoint, checkpoint_files=checkpoint_files)
    else:
        files, root = _files_for(options.weights, storage_options)
        layout = check_weights(root, options.release, files=files, deep=True)
        if checkpoint is not None:
            check_layout(replace(layout, checkpoint=checkpoint, checkpoint_files=checkpoint_files))
    if options.lora is not None:
        files, path = _files_for(options.lora, storage_options)
        if not files.is_file(path):
            raise EngineOptionError("--lora", f"{redact(options.lora)} does not exist")


def local_file(location: str, options: HelloMemeOptions, storage_options: StorageOptions = None) -> Path:
    """A local path for a file given as a path or object-store URI (synced into the node cache)."""
    if is_remote(location):
        return sync(location, options.weights_cache, storage_options, single=True).path
    return Path(location).expanduser()


def local_weights_dir(options: HelloMemeOptions, storage_options: StorageOptions = None) -> Path | None:
    """The weights folder on this node (synced from object storage once per node), or None for the hub."""
    if options.weights is None:
        return None
    if not is_remote(options.weights):
        return Path(options.weights).expanduser()
    release = get_release(options.release)
    result = sync(options.weights, options.weights_cache, storage_options,
                  select=folder_selector(release.folders()), single=False)
    return result.path


def local_checkpoint(options: HelloMemeOptions, storage_options: StorageOptions = None) -> Path | None:
    if options.checkpoint is None:
        return None
    if not is_remote(options.checkpoint):
        return Path(options.checkpoint).expanduser()
    if is_single_file(options.checkpoint):
        return sync(options.checkpoint, options.weights_cache, storage_options, single=True).path
    return sync(options.checkpoint, options.weights_cache, storage_options,
                select=folder_selector(("unet", "vae")), single=False).path


def load_components(options: HelloMemeOptions, device: torch.device, dtype: torch.dtype,
                    storage_options: StorageOptions = None) -> HelloMemeComponents:
    """Bring the weights onto this node, check them, load them onto ``device``."""
    weights = local_weights_dir(options, storage_options)
    checkpoint = local_checkpoint(options, storage_options)
    if weights is None:
        from hellomeme.hub import download_layout

        layout = download_layout(options.release, checkpoint=checkpoint)
    else:
        layout = layout_under(weights, options.release, checkpoint)
    check_layout(layout)
    logger.info("loading HelloMeme %s from %s onto %s (%s)", options.release, Path(layout.base).parent, device, dtype)
    return load_layout(layout, device, dtype)
