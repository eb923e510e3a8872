"""The `hellomeme-batch` command: render, demo, manifest build, submit."""

from __future__ import annotations

import argparse
import logging
import sys

from jobs import demo, manifest_cmd, render, submit
from jobs.options import CommandLineParser
from jobs.terminal_noise import quiet_third_party_noise
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
