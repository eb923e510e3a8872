"""No secret reaches a log line at any verbosity, and nothing a manifest holds can forge one."""

from __future__ import annotations

import io
import logging

import fsspec
import pytest

from mediaio import redaction
from mediaio.redaction import LogSafetyFilter, install_log_safety, is_secret_name, printable, redact
from tests.s3_server import CANARY_SECRET

CANARY_TOKEN = "canary-session-token-7d41e2"


@pytest.mark.parametrize("text, secret", [
    ("Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/2024/us-east-1/s3/aws4_request, "
     "SignedHeaders=host, Signature=deadbeef", "AKIAEXAMPLE"),
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
    ("{'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/x', 'Key': 'k'}", "AKIAEXAMPLE"),
    ("headers={'X-Amz-Security-Token': b'TOKENVALUE', 'Host': 'h'}", "TOKENVALUE"),
    ("x-amz-security-token:TOKENVALUE", "TOKENVALUE"),
    ("https://h/o?X-Amz-Signature=SIGVALUE&X-Amz-Date=20240101", "SIGVALUE"),
    ("SecretAccessKey=SECRETVALUE", "SECRETVALUE"),
    ("accessKeyId=AKIAEXAMPLE", "AKIAEXAMPLE"),
    ("aws_secret_access_key = SECRETVALUE", "SECRETVALUE"),
    ('{"AWS_SESSION_TOKEN": "TOKENVALUE"}', "TOKENVALUE"),
    ("db pwd=PWVALUE", "PWVALUE"),
    ("PASSWORD: PWVALUE", "PWVALUE"),
    ("passphrase='PWVALUE'", "PWVALUE"),
    ("token=TOKENVALUE", "TOKENVALUE"),
    ("s3://AKIAEXAMPLE:SECRETVALUE@bucket/key", "SECRETVALUE"),
    ("sas=SIGVALUE&sv=2020", "SIGVALUE"),
])
def test_secrets_are_redacted_in_every_usual_form(text, secret):
    cleaned = redact(text)
    assert secret not in cleaned and "***" in cleaned


def test_ordinary_text_is_left_alone():
    for text in ("row 3 (a-1) ok -> s3://bucket/out/a-1.mp4", "fps=8 size=512 engine=warp",
                 "https://h/o?X-Amz-Date=20240101&a=1", "SignedHeaders=host;x-amz-date"):
        assert redact(text) == text


def test_secret_names_match_by_pattern_whatever_the_case():
    for name in ("key", "secret", "SecretAccessKey", "accessKeyId", "aws_access_key_id", "AWS_SECRET_ACCESS_KEY",
                 "token", "session_token", "X-Amz-Security-Token", "Authorization", "pwd", "DB_PWD", "password",
                 "passphrase", "credentials", "account_key", "sas_token", "client_kwargs.aws_secret_access_key"):
        assert is_secret_name(name), name
    for name in ("endpoint_url", "region_name", "anon", "signature_version", "client_kwargs", "config_kwargs",
                 "use_ssl", "requester_pays", "default_block_size"):
        assert not is_secret_name(name), name


def test_control_characters_are_printed_escaped():
    assert printable("a\nb") == "a\\nb"
    assert printable("x\x1b[2J\ry") == "x\\x1b[2J\\ry"
    assert printable("rtl\u202eevil\u200b") == "rtl\\u202eevil\\u200b"
    assert printable("héllo wörld 😀 / é") == "héllo wörld 😀 / é"


@pytest.fixture()
def log_safety():
    """install_log_safety() for one test, then the logging setup as it was."""
    factory = logging.getLogRecordFactory()
    levels = {name: logging.getLogger(name).level for name in redaction.CHATTY_LOGGERS}
    install_log_safety()
    install_log_safety()  # twice changes nothing
    yield
    logging.setLogRecordFactory(factory)
    redaction._installed_factory = None
    for handler in logging.getLogger().handlers:
        for existing in [f for f in handler.filters if isinstance(f, LogSafetyFilter)]:
            handler.removeFilter(existing)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture()
def captured():
    """Every record's final formatted text, from a handler added after install (as Ray's and pytest's are)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_every_record_is_redacted_and_one_line(log_safety, captured):
    logger = logging.getLogger("hellomeme_batch.test")
    logger.warning("failed %s: %s", "row\n2024-01-01 INFO forged line", "SecretAccessKey=LEAKED1")
    try:
        raise ValueError("storage said password=LEAKED2 for s3://u:LEAKED3@b/k")
    except ValueError:
        logger.exception("read failed for %s", "id\x1b[2J")
    text = captured.getvalue()
    assert "LEAKED" not in text and "\x1b" not in text
    assert "row\\n2024-01-01 INFO forged line" in text
    assert not any(line.startswith("2024-01-01") for line in text.splitlines())
    assert "Traceback" in text  # tracebacks keep their lines, redacted


def test_no_secret_in_any_log_line_under_debug_with_s3(log_safety, captured, s3_endpoint, caplog):
    caplog.set_level(logging.DEBUG)
    options = {**s3_endpoint.storage_options, "token": CANARY_TOKEN, "skip_instance_cache": True}
    fs = fsspec.filesystem("s3", **options)
    fs.pipe_file(f"{s3_endpoint.bucket}/logs/a.bin", b"x")
    assert fs.cat_file(f"{s3_endpoint.bucket}/logs/a.bin") == b"x"
    # The HTTP libraries stay quiet under -v; turn them up anyway: the redaction still holds.
    for name in redaction.CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    fs = fsspec.filesystem("s3", **options)
    fs.pipe_file(f"{s3_endpoint.bucket}/logs/b.bin", b"y")
    fs.ls(f"{s3_endpoint.bucket}/logs", refresh=True)
    text = captured.getvalue() + "\n".join(record.getMessage() for record in caplog.records)
    assert "Authorization" in text or "authorization" in text.lower()  # the headers were logged, redacted
    for canary in (CANARY_SECRET, CANARY_TOKEN, s3_endpoint.key):
        assert canary not in text, canary


def test_the_clusters_worker_died_notices_go_to_the_debug_log_not_the_terminal(monkeypatch, capsys, caplog):
    """Ray's driver printed a screen per stopped worker ("A worker died or was killed ... OOM killer ...")
    straight to the terminal, for rows whose own result already says what happened."""
    import logging

    from ray._private import worker as ray_worker

    from jobs import cli

    monkeypatch.setattr(ray_worker, "print_to_stdstream", ray_worker.print_to_stdstream)  # restored afterwards
    cli._route_cluster_errors_to_debug_log()
    cli._route_cluster_errors_to_debug_log()  # once is enough: not wrapped twice
    caplog.set_level(logging.DEBUG, logger="hellomeme_batch.cluster_errors")
    ray_worker.print_to_stdstream({"lines": ["A worker died or was killed while executing a task"], "pid": "raylet",
                                   "is_err": False}, ignore_prefix=False)
    ray_worker.print_to_stdstream({"lines": ["a worker's own print"], "pid": 1234, "ip": "127.0.0.1",
                                   "is_err": False, "task_name": "t", "actor_name": "", "job": "01"},
                                  ignore_prefix=True)
    ray_worker.print_to_stdstream({"lines": ["Warning: The following resource request cannot be scheduled right "
                                             "now: {'GPU': 1.0}"], "pid": "raylet", "is_err": False},
                                  ignore_prefix=False)
    printed = capsys.readouterr()
    assert "cannot be scheduled" in printed.out + printed.err  # other notices still print
    lines = (printed.out + printed.err).splitlines()
    assert not [line for line in lines if "(raylet)" in line and "A worker died" in line]  # Ray's own print
    assert "a worker's own print" in printed.out + printed.err
    assert [r.getMessage() for r in caplog.records if r.name == "hellomeme_batch.cluster_errors"] == [
        "A worker died or was killed while executing a task"]
