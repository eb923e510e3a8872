"""The `hellomeme-batch` command: render, demo, manifest build, submit."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from jobs import demo, manifest_cmd, render, submit
from jobs.options import CommandLineParser
from mediaio.redaction import install_log_safety


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="hellomeme-batch",
        description="Render expression videos (memes) from a Parquet manifest of (portrait, driving clip) pairs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    render_parser = commands.add_parser("render", help="render a manifest here or on a Ray cluster")
    render.add_arguments(render_parser)
    render_parser.set_defaults(run=render.run)

    submit_parser = commands.add_parser("submit", help="render a manifest on a Ray cluster through its Jobs API, once")
    submit.add_arguments(submit_parser)
    submit_parser.set_defaults(run=submit.run)

    demo_parser = commands.add_parser("demo", help="render the built-in demo memes locally")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=demo.run)

    manifest_parser = commands.add_parser("manifest", help="manifest tools")
    manifest_commands = manifest_parser.add_subparsers(dest="manifest_command", required=True)
    build_parser_ = manifest_commands.add_parser("build", help="write a manifest from folders or a CSV")
    manifest_cmd.add_arguments(build_parser_)
    build_parser_.set_defaults(run=manifest_cmd.run)
    # -v after the command too (`render -v ...`), as users write it; SUPPRESS keeps the one before it.
    for command in (render_parser, submit_parser, demo_parser, build_parser_):
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return parser


def quiet_third_party_noise() -> None:
    """Keep Ray's, TensorFlow Lite's and mediapipe's own chatter out of the terminal (``-v`` brings it back).

    Our per-row and progress lines say what the user needs; Ray Data's progress lines repeat them,
    and the native libraries print start-up notices on every actor.  Environment variables are set
    before Ray or mediapipe start, so they reach the processes they start too.
    """
    import warnings

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the C++ core's notices (constructor args...)
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's graph notices
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow Lite's delegate notices
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray.*")
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype")  # protobuf, via mediapipe
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _route_cluster_errors_to_debug_log()


# The cluster's notices of a worker this job stopped (a row past its time limit) or lost (the row's own
# result names it: "its worker process died ... killed for memory"), and of the retry that follows.
_WORKER_LOSS_NOTICES = re.compile(r"^(A worker died or was killed while executing|Task \S+ failed\. There are "
                                  r"(infinite|\d+) retries remaining)")


def _route_cluster_errors_to_debug_log() -> None:
    """Send the cluster's worker-loss notices ("A worker died or was killed ...", a screen each) to the debug log.

    Ray's driver prints them straight to the terminal whatever its logging says, one per worker a
    stopped row took with it.  Its other notices (a request no node can hold, say) still print.
    ``-v`` leaves them all as Ray prints them.
    """
    from ray._private import worker as ray_worker

    printer = getattr(ray_worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "routed_to_log", False):
        return  # another Ray version: its notices stay as they are
    cluster_log = logging.getLogger("hellomeme_batch.cluster_errors")

    def print_or_log(data: dict, ignore_prefix: bool) -> None:
        lines = data.get("lines", [])
        if data.get("pid") == "raylet" and lines and all(_WORKER_LOSS_NOTICES.match(line) for line in lines):
            for line in lines:
                cluster_log.debug("%s", line)
        else:
            printer(data, ignore_prefix)

    print_or_log.routed_to_log = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_or_log


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_safety()  # no secret and no control character reaches a log line, at any verbosity
    if not args.verbose:
        quiet_third_party_noise()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
