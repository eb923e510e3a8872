"""Text that is safe to print: credentials redacted, control characters escaped, at any log level.

Two things go wrong when a batch job prints what it was given.  Secrets leak: a URI with
``user:secret@``, a signed URL, a ``SecretAccessKey=`` in an error, or botocore's debug dump of
request headers (``Authorization``, ``X-Amz-Security-Token``) under ``-v``.  And a manifest can
write to the terminal: an id or URI holding a newline forges log lines, an ANSI escape rewrites the
screen.  :func:`redact` removes the first, :func:`escape_controls` the second, :func:`printable`
does both and is what ids, URIs and errors go through before they are printed.

:func:`install_log_safety` makes every log record pass through both, whoever logs it: it wraps the
log record factory (so handlers added later, pytest's and Ray's included, see clean records),
puts :class:`LogSafetyFilter` on the root handlers as well, and keeps the HTTP client libraries'
debug output (which dumps request headers) off even under ``-v``.

What counts as a secret is one definition, :func:`is_secret_name`, also used by ``submit`` to
decide which storage options are credentials.  It matches by pattern, case-insensitively, and errs
towards hiding: a harmless ``max_tokens=`` printed as ``max_tokens=***`` costs nothing.
"""

from __future__ import annotations

import logging
import re

# Name fragments that mark a credential, matched anywhere in the name with case and separators
# removed (``SecretAccessKey``, ``aws_secret_access_key``, ``X-Amz-Security-Token`` ...).
SECRET_NAME_FRAGMENTS = (
    "secret", "password", "passwd", "passphrase", "pwd", "token", "credential", "authorization",
    "session", "privatekey", "apikey", "accesskey", "accountkey", "sastoken", "cookie", "bearer",
    "connectionstring",
)
# Endings that mark a credential (``X-Amz-Signature``, but not ``signature_version``).
SECRET_NAME_SUFFIXES = ("signature",)
# Whole words (after splitting on separators and camelCase) that mark a credential on their own:
# s3fs's ``key`` is the access key id, Azure's ``sas`` a signature.
SECRET_NAME_WORDS = frozenset({"key", "sas", "sig", "pass", "auth", "private"})
# Headers whose whole value (to the end of the line) is secret, e.g. ``Authorization: Bearer x``.
WHOLE_VALUE_NAMES = ("authorization", "cookie", "token", "credential", "secret", "password", "passphrase")

# Exception class names (a secret-looking word inside: NoCredentialsError, AuthenticationError).
_EXCEPTION_ENDINGS = ("Error", "Exception", "Warning")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# scheme://user:password@host -> scheme://***@host
_CREDENTIALS_IN_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
# A name and its separator (``name=``, ``name: ``, ``'name': b``); the value is matched after it.
_NAME_SEP = re.compile(r"""(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>['"]?\s*[:=]\s*b?)""")
# A value: quoted (to its closing quote or the line's end) or bare (to a space or delimiter).
_VALUE = re.compile(r"""'[^'\n]*'?|"[^"\n]*"?|[^\s,;&'"})\]]+""")
# A header value, to the end of its line or string.
_REST_OF_LINE = re.compile(r"[^\r\n'\"]+")

# What escape_controls escapes: C0 and C1 controls, DEL, and the invisible format characters that
# reorder or hide text on a terminal (bidi overrides, zero-width joiners, line/paragraph separators).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_secret_name(name: str) -> bool:
    """Whether a key, header or option name marks a credential (case and separators ignored)."""
    text = str(name)
    compact = _NON_ALNUM.sub("", text.lower())
    if any(fragment in compact for fragment in SECRET_NAME_FRAGMENTS) or compact.endswith(SECRET_NAME_SUFFIXES):
        return True
    words = _NON_ALNUM.split(_CAMEL_BOUNDARY.sub(" ", text).lower())
    return any(word in SECRET_NAME_WORDS for word in words)


def redact(text: object) -> str:
    """``text`` with credentials replaced by ``***``: URI user info, and values of secret-named keys.

    Covers ``key=value``, ``key: value``, ``'key': 'value'`` and ``'key': b'value'`` forms (query
    strings, headers, dict reprs, JSON); a header such as ``Authorization: AWS4-HMAC-SHA256 ...``
    or ``Authorization: Bearer x`` loses its whole value, to the end of its line.
    """
    text = _CREDENTIALS_IN_URI.sub(r"\g<scheme>***@", str(text))
    out, position = [], 0
    for match in _NAME_SEP.finditer(text):
        if match.start() < position or not is_secret_name(match.group("name")):
            continue
        if match.group("name").endswith(_EXCEPTION_ENDINGS) and ":" in match.group("sep"):
            continue  # "NoCredentialsError: Unable to locate credentials" is an exception's message, not a value
        start = match.end()
        quoted = text[start:start + 1] in ("'", '"')
        whole_line = (not quoted and ":" in match.group("sep")
                      and any(name in match.group("name").lower() for name in WHOLE_VALUE_NAMES))
        value = (_REST_OF_LINE if whole_line else _VALUE).match(text, start)
        if value is None:
            continue
        quote = text[start] if quoted else ""
        closing = quote if quoted and value.group(0).endswith(quote) and len(value.group(0)) > 1 else ""
        out.append(text[position:start] + f"{quote}***{closing}")
        position = value.end()
    out.append(text[position:])
    return "".join(out)


def _escape(match: re.Match) -> str:
    char = match.group(0)
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: object) -> str:
    """``text`` with control and invisible formatting characters written as escapes (``\\x1b``, ``\\n``)."""
    escaped = _CONTROL.sub(_escape, str(text))
    if escaped.isprintable():
        return escaped
    # Anything else Unicode does not call printable (other format characters, odd spaces): escape it too.
    return "".join(ch if ch.isprintable() else
                   (f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}") for ch in escaped)


def printable(text: object) -> str:
    """An id, URI or error message as it may be printed: credentials redacted, control characters escaped."""
    return escape_controls(redact(text))


# --- logging ------------------------------------------------------------------------------------

# Libraries that log request headers or raw request arguments at DEBUG; kept at INFO and above.
CHATTY_LOGGERS = ("botocore", "boto3", "aiobotocore", "s3fs", "gcsfs", "urllib3", "google.auth",
                  "google_auth_httplib2", "aiohttp.client", "httpx", "httpcore", "fsspec")

_SANITISED = "_hellomeme_sanitised"


def sanitise_record(record: logging.LogRecord) -> logging.LogRecord:
    """Rewrite a record in place so that its message and traceback are redacted and escaped (idempotent).

    The message is formatted once here (``msg % args``) so that secrets passed as arguments are
    caught too; newlines in it are escaped, so one record is one line.  Tracebacks keep their line
    breaks but are redacted and lose other control characters.
    """
    if getattr(record, _SANITISED, False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: show what there is rather than lose the record
        message = f"{record.msg!r} % {record.args!r}"
    record.msg, record.args = printable(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = _multiline_safe(record.exc_text)
    if record.stack_info:
        record.stack_info = _multiline_safe(record.stack_info)
    setattr(record, _SANITISED, True)
    return record


def _multiline_safe(text: str) -> str:
    return "\n".join(printable(line) for line in redact(text).split("\n"))


class LogSafetyFilter(logging.Filter):
    """A handler filter that sanitises every record passing through (see :func:`sanitise_record`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        sanitise_record(record)
        return True


_installed_factory = None


def install_log_safety() -> None:
    """Make every log record of this process safe to print; call once at CLI startup, after logging is configured.

    Wraps the log record factory (every record, every handler, including ones added later),
    adds :class:`LogSafetyFilter` to the root logger's handlers, and keeps the HTTP client
    libraries in :data:`CHATTY_LOGGERS` at INFO even when the root logger is at DEBUG (their debug
    output is request headers and signing material).  Calling it again changes nothing.
    """
    global _installed_factory
    current = logging.getLogRecordFactory()
    if current is not _installed_factory:
        def factory(*args, **kwargs):
            return sanitise_record(current(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed_factory = factory
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, LogSafetyFilter) for existing in handler.filters):
            handler.addFilter(LogSafetyFilter())
    quiet_chatty_loggers()


def quiet_chatty_loggers() -> None:
    """Keep libraries that dump request headers at DEBUG at INFO and above (a level set higher is kept)."""
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)
