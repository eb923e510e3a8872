"""`hellomeme-batch manifest build`: write a manifest from folders of portraits and clips, or a CSV."""

from __future__ import annotations

import argparse
import logging

from mediaio import storage
from pipelines.manifest import ManifestError
from jobs.manifest_builder import pair_folders, rows_from_csv_file, write_manifest

logger = logging.getLogger("pipelines.manifest")


def run(args: argparse.Namespace) -> int:
    try:
        if args.csv:
            rows = rows_from_csv_file(args.csv, args.out)  # relative paths rebased for the output
        elif args.portraits and args.drivers:
            rows = pair_folders(args.portraits, args.drivers, args.pairing)
        else:
            raise ManifestError("give --csv FILE, or --portraits DIR and --drivers DIR")
        count = write_manifest(rows, args.out)
    except (ManifestError, storage.StorageError, OSError, UnicodeDecodeError) as exc:
        logger.error("manifest not written: %s", exc)
        return 1
    logger.info("wrote %d rows to %s", count, args.out)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--portraits", help="folder of reference portraits")
    parser.add_argument("--drivers", help="folder of driving clips")
    parser.add_argument("--pairing", choices=("zip", "all"), default="zip",
                        help="zip: pair in name order (cycling the shorter list); all: every pair")
    parser.add_argument("--csv", help="CSV with a header of manifest columns, instead of folders "
                        "(',', ';', tab or '|' separated; relative paths taken beside the CSV)")
    parser.add_argument("-o", "--out", required=True, help="manifest to write (.parquet)")
