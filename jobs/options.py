"""Command-line options shared by the commands that run or submit render jobs."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import signal
import sys
from typing import Any, NoReturn

from engines.base import EngineOptionError, EngineSpec
from engines.registry import DEFAULT_ENGINE, ENGINES, engine_spec, options_class
from mediaio.media import MediaLimits
from mediaio.storage import DEFAULT_SCHEMES, StoragePolicy
from pipelines.manifest import MIN_SECONDS
from pipelines.plan import JobConfig
from pipelines.render_pipeline import QUEUE_STORE_FRACTION
from reporting.metrics import DEFAULT_DRIVER_HOST, DEFAULT_DRIVER_PORT

STORAGE_OPTIONS_ENV = "HELLOMEME_STORAGE_OPTIONS"

# The commands' exit statuses (README, "Exit status").
EXIT_OK, EXIT_JOB_ERROR, EXIT_ROWS_FAILED = 0, 1, 2
EXIT_SIGNAL_BASE = 128  # stopped by signal N: exit 128 + N (130 for SIGINT, 143 for SIGTERM), as shells do
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + int(signal.SIGINT)  # 130: stopped by Ctrl-C


class CommandLineParser(argparse.ArgumentParser):
    """argparse's parser, except that a mistyped command line exits with :data:`EXIT_JOB_ERROR`.

    argparse exits 2, which this tool's statuses keep for "some row failed": a nightly script that
    publishes what rendered on 2 would take a typo'd flag, with nothing run, for a partial success.
    Sub-commands' parsers are of this class too (``add_subparsers`` makes its own class's).
    """

    _argv: list[str] = []

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001 - argparse's signature
        self._argv = list(sys.argv[1:] if args is None else args)  # for error()'s "did you mean"
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001 - argparse's signature
        """argparse's, except that a flag no parser knows is refused by the sub-command it was given to,
        with its usage and a "did you mean": argparse's top parser named it under its own usage."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self._chosen(namespace).error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def _chosen(self, namespace: argparse.Namespace) -> "CommandLineParser":
        for action in self._actions:
            command = getattr(namespace, action.dest, None)
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                chosen = action.choices[command]
                return chosen._chosen(namespace) if isinstance(chosen, CommandLineParser) else self
        return self

    def _misspelt_flags(self) -> list[str]:
        """'--outptu: did you mean --output?' for each flag of the command line this parser does not know."""
        known = [option for option in self._option_string_actions if option.startswith("--")]
        notes = []
        for token in self._argv:
            flag = token.split("=", 1)[0]
            if not flag.startswith("--") or flag == "--" or any(option.startswith(flag) for option in known):
                continue  # not a long flag, or one of this parser's (or an abbreviation of one)
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            notes.append(f"{flag} is not an option of {self.prog}" + (f": did you mean {close[0]}?" if close else ""))
        return notes

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        notes = "".join(f"\n  {note}" for note in self._misspelt_flags())
        self.exit(EXIT_JOB_ERROR, f"{self.prog}: error: {message}{notes}\n")


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (dotted keys nest, values parsed as JSON when they parse) over $HELLOMEME_STORAGE_OPTIONS."""
    try:
        options = json.loads(os.environ.get(STORAGE_OPTIONS_ENV) or "{}")
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"${STORAGE_OPTIONS_ENV} is not JSON ({exc.msg} at character "
                                         f"{exc.pos}): give a JSON object such as '{{\"anon\": true}}'") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"${STORAGE_OPTIONS_ENV} must be a JSON object ({{...}}), got a "
                                         f"{type(options).__name__}")
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            # (said as OPTION=VALUE: the log's redaction takes "KEY=..." for a secret and masks it)
            raise argparse.ArgumentTypeError(f"--storage-option takes OPTION=VALUE pairs (such as anon=true), got "
                                             f"{pair.split('=')[0]!r} without '='")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = options
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise argparse.ArgumentTypeError(f"--storage-option {key}=...: {parent!r} is already a value, "
                                                 "not a group of options")
        target[leaf] = value
    return options


MAX_PERIOD_S = 7 * 24 * 3600.0  # a period or a wait longer than this is a typo (1e20 overflowed the timers)


def seconds_or_off(text: str) -> float:
    """A period in seconds, 0 for off: a negative or non-finite one is refused, not taken as off."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (0: off), got {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_PERIOD_S:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 (off) to {MAX_PERIOD_S:g} (a week), got {text!r}")
    return value


def add_storage_option_argument(parser: argparse.ArgumentParser) -> None:
    """``--storage-option KEY=VALUE`` (see :func:`parse_storage_options`), the same for every command."""
    parser.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                        help=f"fsspec storage option, e.g. client_kwargs.endpoint_url=http://127.0.0.1:9000 "
                             f"(over ${STORAGE_OPTIONS_ENV}, a JSON object)")


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="Parquet manifest, a file or a folder of them (Spark, Dask, DuckDB): "
                                         "local path or fsspec URI (s3://, gs://, memory://)")
    parser.add_argument("--output", required=True, help="where the MP4s and _results/ go (path or URI)")
    parser.add_argument("--engine", default=DEFAULT_ENGINE, choices=sorted(ENGINES),
                        help="warp (default, CPU, no weights) or hellomeme (GPU)")
    parser.add_argument("--size", type=int, default=EngineSpec.size,
                        help="output width and height in pixels (default: %(default)s)")
    parser.add_argument("--videos-per-batch", type=int, default=JobConfig.videos_per_batch,
                        help="videos per render call, whose windows share the UNet's batches (GPU engines; "
                             "default: %(default)s)")
    parser.add_argument("--no-interpolate", action="store_true",
                        help="repeat frames instead of motion-compensated interpolation up to the clip's rate")
    parser.add_argument("--no-skip-existing", action="store_true",
                        help="render rows whose output already exists again, replacing this tool's earlier videos "
                        "(a file it did not make fails its row)")
    parser.add_argument("--no-report", action="store_true",
                        help="write no index.html report and no previews under _report/")
    parser.add_argument("--max-seconds", type=float, default=MediaLimits.max_seconds,
                        help=f"longest driving clip accepted, in seconds, at least {MIN_SECONDS:g} (default: %(default)s)")
    parser.add_argument("--row-time-limit", type=float, default=JobConfig.row_time_limit_s,
                        help="seconds one stage may work on one row; past it the stage is stopped and the row "
                             "fails (default: %(default)s)")
    parser.add_argument("--results-every", type=float, default=JobConfig.results_every_s, metavar="S",
                        help="write the results table every S seconds while the job runs, the rows not finished "
                             "as not_run, so a driver killed mid-job leaves its record (0: after every row; "
                             "default: %(default)s)")
    parser.add_argument("--queue-memory", type=int, metavar="MIB",
                        help="object-store memory the rows waiting between stages may hold "
                             f"(default: {QUEUE_STORE_FRACTION:.0%}% of the cluster's object store, growing with the "
                             "cluster)")
    add_storage_option_argument(parser)
    parser.add_argument("--allow-scheme", action="append", metavar="SCHEME",
                        help=f"URI schemes inputs and outputs may use (default: {', '.join(DEFAULT_SCHEMES)})")
    parser.add_argument("--allow-root", action="append", metavar="URI",
                        help="only read and write under these prefixes (default: anywhere)")
    add_engine_option_arguments(parser)


def engine_option_fields(engine: str) -> list[dataclasses.Field]:
    """The fields of an engine's options class that the command line sets (metadata ``flag`` not None)."""
    return [f for f in dataclasses.fields(options_class(engine)) if f.metadata.get("flag")]


def add_engine_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per engine option, from each engine's options dataclass (its metadata gives flag and help).

    Defaults are None here, so the job knows which flags were given: an engine option's default
    lives only in its dataclass.
    """
    for engine in sorted(ENGINES):
        group = parser.add_argument_group(f"{engine} engine options")
        for option in engine_option_fields(engine):
            flag = option.metadata["flag"]
            if any(flag in action.option_strings for action in parser._actions):
                continue  # two engines with the same option share one flag
            kind = _option_type(option)
            kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": _option_help(option)}
            if kind is bool:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = kind
                if option.metadata.get("choices"):
                    kwargs["choices"] = option.metadata["choices"]
            group.add_argument(flag, **kwargs)


def _option_type(option: dataclasses.Field) -> type:
    """str, int, float or bool from a field's annotation (``X | None`` gives X)."""
    text = str(option.type).replace(" ", "")
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if text == name or text.startswith(f"{name}|") or text.endswith(f"|{name}"):
            return kind
    raise TypeError(f"engine option {option.name} has a type the command line cannot set: {option.type}")


def _option_help(option: dataclasses.Field) -> str:
    """The option's help with its default, unless the help already says it in words.

    `--weights` read "(default: the Hugging Face hub ...) (default: none)": two defaults, one wrong.
    """
    text = option.metadata.get("help", "")
    return text if "(default:" in text else f"{text} (default: {_default_text(option)})"


def _default_text(option: dataclasses.Field) -> str:
    value = option.default if option.default is not dataclasses.MISSING else option.default_factory()
    return "off" if value is False else "none" if value is None else str(value)


def engine_spec_from_args(args: argparse.Namespace) -> EngineSpec:
    """The engine spec: the chosen engine's options from the flags given, its own defaults for the rest.

    A flag that belongs to another engine only is an error naming it.
    """
    chosen = {option.name: option for option in engine_option_fields(args.engine)}
    for engine in ENGINES:
        for option in engine_option_fields(engine):
            if option.name not in chosen and getattr(args, option.name, None) is not None:
                raise EngineOptionError(option.metadata["flag"], f"applies to the {engine} engine, not {args.engine}")
    given = {name: getattr(args, name) for name in chosen if getattr(args, name, None) is not None}
    return engine_spec(args.engine, size=args.size, **given)


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
    parser.add_argument("--metrics-linger", type=seconds_or_off, default=0.0, metavar="S",
                        help="keep serving the metrics S seconds after the job ends, so Prometheus scrapes the "
                             "finished job (set it to your scrape interval or more; default: 0, the endpoint "
                             "closes with the job)")


def job_config(args: argparse.Namespace) -> JobConfig:
    """The job config from parsed render arguments."""
    return JobConfig(
        manifest_uri=args.manifest,
        output_uri=args.output,
        engine=engine_spec_from_args(args),
        storage_options=parse_storage_options(args.storage_option),
        policy=StoragePolicy(
            allowed_schemes=tuple(args.allow_scheme) if args.allow_scheme else DEFAULT_SCHEMES,
            allowed_roots=tuple(args.allow_root or ()),
        ),
        limits=MediaLimits(max_seconds=args.max_seconds),
        interpolate=not args.no_interpolate,
        skip_existing=not args.no_skip_existing,
        report=not args.no_report,
        videos_per_batch=args.videos_per_batch,
        row_time_limit_s=args.row_time_limit,
        queue_memory_mib=args.queue_memory,
        results_every_s=args.results_every,
    )
