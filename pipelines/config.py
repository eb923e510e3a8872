"""Everything one render job needs to know, fixed before it starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from engines.base import EngineOptions
from mediaio.media import MediaLimits
from mediaio.storage import StoragePolicy


@dataclass(frozen=True)
class RenderJobConfig:
    """A render job: manifest in, memes under ``output_uri``, results table beside them."""

    manifest_uri: str
    output_uri: str
    engine: str = "warp"
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    window: int | None = None  # None: the engine's own window size
    overlap: int | None = None  # None: the engine's own overlap
    size: int = 512  # output (and engine) resolution, square
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    policy: StoragePolicy = field(default_factory=StoragePolicy)
    limits: MediaLimits = field(default_factory=MediaLimits)
    interpolate: bool = True  # motion-compensated interpolation up to the driving clip's frame rate
    skip_existing: bool = True  # a rerun skips rows whose output exists
    render_batch_size: int = 1  # videos per render call (GPU engines batch their windows)
    report: bool = True  # write {output}/index.html and the small previews it shows
    max_input_bytes: int = 2 * 1024**3
    row_time_limit_s: float = 1800.0  # a row still unfinished this long after its first stage fails
    # Object-store memory the rows waiting between stages may hold, in MiB.  None: a share of the
    # cluster's object store that grows with the cluster.  Without a bound Ray Data lets a fast stage
    # run ahead of a slow one until half the store is full, so memory would grow with the manifest
    # (see pipelines/render_pipeline.py).
    queue_memory_mib: int | None = None
