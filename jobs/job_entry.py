"""What a submitted job runs when `submit` sent storage credentials: unseal them, then render.

    python -m jobs.job_entry MANIFEST --output URI [render options]

The credentials arrive sealed with the cluster's token (see :mod:`jobs.sealed_options`); they are
opened into this driver process's own environment, where the render job reads its storage
options, and nowhere else.  Logging is made safe first, so nothing printed afterwards carries
them.  Exit status: the render job's, or 1 when the credentials cannot be opened.
"""

from __future__ import annotations

import logging
import sys

from jobs import render
from jobs.options import STORAGE_OPTIONS_ENV
from jobs.sealed_options import SealError, unseal_into_environment
from mediaio.redaction import install_log_safety

logger = logging.getLogger("hellomeme_batch.job_entry")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    install_log_safety()
    try:
        if unseal_into_environment(STORAGE_OPTIONS_ENV):
            logger.info("storage credentials opened with the cluster's token")
    except SealError as exc:
        logger.error("job not started: %s", exc)
        return render.EXIT_JOB_ERROR
    return render.main(argv)


if __name__ == "__main__":
    sys.exit(main())
