"""Start-up notices that native libraries write straight to the process's standard error.

Ray's C++ core ("Set ray log level from environment variable ..."), mediapipe's absl logging
("W0000 ... inference_feedback_manager.cc ...") and TensorFlow Lite ("INFO: Created TensorFlow Lite
XNNPACK delegate") write to file descriptor 2 from C++, past Python's logging and past the
environment variables that are meant to quieten them, so `make demo` opened with a screen of them.
:func:`notices_to_debug_log` holds descriptor 2 in a temporary file around the calls that print
them and afterwards logs those lines at debug level (``-v`` shows them); every other line written
meanwhile (a warning, a traceback) is passed on to standard error unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

# The shapes of the libraries' own information and warning lines (their errors pass on): glog/absl
# ("W0000 00:00:1796269770.27 24898 file.cc:114] ..."), Ray's C++ core ("[2026-12-03 03:49:38,456 I 24824 24824] logging.cc:303: ...") and TensorFlow Lite's
# and absl's start-up lines.
NATIVE_NOTICE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w./-]+:\d+\] "
    r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IW] \d+ \d+\] [\w./-]+:\d+: "
    r"|INFO: Created TensorFlow Lite "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)"
)

STDERR_FD = 2


@contextlib.contextmanager
def notices_to_debug_log(logger: logging.Logger) -> Iterator[None]:
    """Within the block, the native libraries' notices go to ``logger.debug``; other stderr lines pass on.

    The lines are passed on when the block ends, not as they are written, so keep the block to
    start-up calls (seconds).  Where standard error is not a file descriptor (an embedding host),
    nothing is changed.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(STDERR_FD)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), STDERR_FD)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, STDERR_FD)
            os.close(saved)
            capture.seek(0)
            _pass_on(capture.read(), logger)


def _pass_on(written: bytes, logger: logging.Logger) -> None:
    """Log the notices among ``written``; the other lines go to descriptor 2 as they were written."""
    others = []
    for line in written.splitlines(keepends=True):
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if NATIVE_NOTICE.match(text):
            logger.debug("%s", text)
        else:
            others.append(line)
    with contextlib.suppress(OSError):
        os.write(STDERR_FD, b"".join(others))
