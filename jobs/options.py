"""Command-line options shared by the commands that run or submit render jobs."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from engines.base import EngineOptions
from mediaio.media import MediaLimits
from reporting.metrics import DEFAULT_DRIVER_HOST, DEFAULT_DRIVER_PORT
from mediaio.storage import DEFAULT_SCHEMES, StoragePolicy
from pipelines.config import RenderJobConfig

STORAGE_OPTIONS_ENV = "HELLOMEME_STORAGE_OPTIONS"


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (dotted keys nest, values parsed as JSON when they parse) over $HELLOMEME_STORAGE_OPTIONS."""
    options: dict[str, Any] = json.loads(os.environ.get(STORAGE_OPTIONS_ENV) or "{}")
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--storage-option expects KEY=VALUE, got {pair.split('=')[0]!r}=...")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = options
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return options


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="Parquet manifest: local path or fsspec URI (s3://, gs://, memory://)")
    parser.add_argument("--output", required=True, help="where the MP4s and _results/ go (path or URI)")
    parser.add_argument("--engine", default="warp", help="warp (default, CPU, no weights) or hellomeme (GPU)")
    parser.add_argument("--weights", default=None, help="local weights folder for the hellomeme engine")
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                        help="hellomeme engine precision (auto: bf16 where the GPU supports it, fp32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the hellomeme denoiser")
    parser.add_argument("--random-weights", action="store_true",
                        help="hellomeme engine at full size with random weights: for GPU benchmarks only")
    parser.add_argument("--window", type=int, default=None, help="frames per window (default: the engine's)")
    parser.add_argument("--overlap", type=int, default=None, help="frames shared by neighbouring windows")
    parser.add_argument("--size", type=int, default=512, help="output width and height in pixels")
    parser.add_argument("--videos-per-batch", type=int, default=1, help="videos per render call (GPU engines)")
    parser.add_argument("--no-interpolate", action="store_true",
                        help="repeat frames instead of motion-compensated interpolation up to the clip's rate")
    parser.add_argument("--no-skip-existing", action="store_true", help="render rows whose output already exists")
    parser.add_argument("--no-report", action="store_true",
                        help="write no index.html report and no previews under _report/")
    parser.add_argument("--max-seconds", type=float, default=MediaLimits.max_seconds,
                        help="longest driving clip accepted, in seconds")
    parser.add_argument("--row-time-limit", type=float, default=RenderJobConfig.row_time_limit_s,
                        help="seconds a row may take from its first stage before it fails (default: %(default)s)")
    parser.add_argument("--queue-memory", type=int, metavar="MIB",
                        help="object-store memory the rows waiting between stages may hold "
                             "(default: 15%% of the cluster's object store, growing with the cluster)")
    parser.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                        help="fsspec storage option, e.g. client_kwargs.endpoint_url=http://127.0.0.1:9000")
    parser.add_argument("--allow-scheme", action="append", metavar="SCHEME",
                        help=f"URI schemes inputs and outputs may use (default: {', '.join(DEFAULT_SCHEMES)})")
    parser.add_argument("--allow-root", action="append", metavar="URI",
                        help="only read and write under these prefixes (default: anywhere)")


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the driver serves the job's Prometheus metrics."""
    parser.add_argument("--metrics-port", type=port_number, default=DEFAULT_DRIVER_PORT,
                        help=f"serve the job's Prometheus metrics from the driver at http://HOST:PORT/metrics "
                             f"(default: {DEFAULT_DRIVER_PORT}; 0: off; a port in use only logs a warning)")
    parser.add_argument("--metrics-host", default=DEFAULT_DRIVER_HOST,
                        help=f"address the metrics endpoint binds (default: {DEFAULT_DRIVER_HOST}, this machine only; "
                             "0.0.0.0 lets a Prometheus elsewhere scrape it)")


def render_config(args: argparse.Namespace) -> RenderJobConfig:
    """The job config from parsed render arguments."""
    return RenderJobConfig(
        manifest_uri=args.manifest,
        output_uri=args.output,
        engine=args.engine,
        engine_options=EngineOptions(weights_dir=args.weights, dtype=args.dtype, compile=args.compile,
                                     random_weights=args.random_weights),
        window=args.window,
        overlap=args.overlap,
        size=args.size,
        storage_options=parse_storage_options(args.storage_option),
        policy=StoragePolicy(
            allowed_schemes=tuple(args.allow_scheme) if args.allow_scheme else DEFAULT_SCHEMES,
            allowed_roots=tuple(args.allow_root or ()),
        ),
        limits=MediaLimits(max_seconds=args.max_seconds),
        interpolate=not args.no_interpolate,
        skip_existing=not args.no_skip_existing,
        render_batch_size=args.videos_per_batch,
        report=not args.no_report,
        row_time_limit_s=args.row_time_limit,
        queue_memory_mib=args.queue_memory,
    )
