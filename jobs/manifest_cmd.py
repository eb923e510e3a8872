"""`hellomeme-batch manifest build`: write a manifest from folders of portraits and clips, or a CSV."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Mapping

from mediaio import storage
from mediaio.redaction import printable
from pipelines.manifest import ID_PATTERN, ManifestError, RowError, parse_row
from jobs.manifest_builder import pair_folders, rows_from_csv_file, write_manifest
from jobs.options import EXIT_JOB_ERROR, EXIT_OK, add_storage_option_argument, parse_storage_options

logger = logging.getLogger("pipelines.manifest")

PARQUET_MAGIC = b"PAR1"  # the first bytes of every Parquet file


def run(args: argparse.Namespace) -> int:
    try:
        options = parse_storage_options(args.storage_option)
    except argparse.ArgumentTypeError as exc:
        logger.error("manifest not written: %s", exc)
        return EXIT_JOB_ERROR
    try:
        if args.csv and (args.portraits or args.drivers):
            raise ManifestError("give --csv FILE or --portraits DIR --drivers DIR, not both: which rows were meant?")
        if args.csv:
            rows = rows_from_csv_file(args.csv, args.out, options)  # relative paths rebased for the output
        elif args.portraits and args.drivers:
            rows = pair_folders(args.portraits, args.drivers, args.pairing, options)
        else:
            raise ManifestError("give --csv FILE, or --portraits DIR and --drivers DIR")
        _check_target(args.out, options)
        _warn_of_failing_rows(rows)
        count = write_manifest(rows, args.out, options)
    except (ManifestError, storage.StorageError, OSError, UnicodeDecodeError) as exc:
        logger.error("manifest not written: %s", exc)
        return EXIT_JOB_ERROR
    logger.info("wrote %d rows to %s", count, args.out)
    return EXIT_OK


def _warn_of_failing_rows(rows: list[dict[str, Any]]) -> None:
    """Name the rows whose ids or settings the render would fail (an invalid or repeated id; fps 0, a negative
    seed), now rather than at render time; settings by the render's own rule (:func:`parse_row`)."""
    seen: set[str] = set()
    invalid, repeated, settings = [], [], []
    for index, row in enumerate(rows):
        meme_id = str(row.get("id") or "")
        if not ID_PATTERN.fullmatch(meme_id):
            invalid.append(meme_id)
            continue
        if meme_id in seen:
            repeated.append(meme_id)
        seen.add(meme_id)
        try:
            parse_row(index, row)
        except RowError as exc:
            settings.append(f"{meme_id[:64]} ({printable(str(exc))[:120]})")
    for problem, ids, cut in (("invalid ids (use ASCII letters, digits, '.', '_' or '-')", invalid, 64),
                              ("ids used more than once (the render fails every row after the first)", repeated, 64),
                              ("settings the render refuses", settings, 200)):
        if ids:
            shown = ", ".join(printable(meme_id)[:cut] for meme_id in ids[:5]) + (
                f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            logger.warning("%d rows have %s: %s; their rows will fail", len(ids), problem, shown)


NOT_A_MANIFEST_NAME = (".csv", ".tsv", ".txt", ".xlsx", ".xls", ".json")


def _check_target(out: str, storage_options: Mapping[str, Any]) -> None:
    """Refuse a manifest target that holds anything but a Parquet file: the build's own CSV, a portrait, a
    clip or any other file of the user's would be lost.  An earlier manifest is rebuilt in place."""
    if out.lower().endswith(NOT_A_MANIFEST_NAME):
        raise ManifestError(f"-o {out}: the manifest is a Parquet file, and a name ending "
                            f"{out[out.rfind('.'):]!r} would say otherwise: name it e.g. manifest.parquet")
    try:
        with storage.open_input(out, storage_options, what="manifest") as reader:
            head = reader.read(len(PARQUET_MAGIC))
    except storage.NotFoundError:
        return
    if head != PARQUET_MAGIC:
        raise ManifestError(f"-o {out} exists and is not a Parquet manifest (the CSV, a portrait or a clip?); "
                            "it is not replaced: give the manifest another name, e.g. manifest.parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--portraits", help="folder of reference portraits")
    parser.add_argument("--drivers", help="folder of driving clips")
    parser.add_argument("--pairing", choices=("zip", "all"), default="zip",
                        help="zip: pair in name order (cycling the shorter list); all: every pair (default: zip)")
    parser.add_argument("--csv", help="CSV with a header of manifest columns, instead of folders "
                        "(',', ';', tab or '|' separated; relative paths taken beside the CSV)")
    parser.add_argument("-o", "--out", required=True, help="manifest to write (.parquet): local path or URI")
    add_storage_option_argument(parser)
