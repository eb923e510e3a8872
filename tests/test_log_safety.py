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

    from jobs import terminal_noise

    monkeypatch.setattr(ray_worker, "print_to_stdstream", ray_worker.print_to_stdstream)  # restored afterwards
    terminal_noise._route_cluster_errors_to_debug_log()
    terminal_noise._route_cluster_errors_to_debug_log()  # once is enough: not wrapped twice
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


NATIVE_NOTICES = (
    "[2026-12-03 03:49:38,456 I 24824 24824] logging.cc:303: Set ray log level from environment variable "
    "RAY_BACKEND_LOG_LEVEL to 3",
    "W0000 00:00:1796269770.271251   24898 inference_feedback_manager.cc:114] Feedback manager requires a model "
    "with a single signature inference. Disabling support for feedback tensors.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
)


def test_native_start_up_notices_go_to_the_debug_log_and_everything_else_passes_on(capfd, caplog):
    """Native libraries write their notices to descriptor 2 from C++, past Python's logging: `make demo`
    opened with a screen of them.  Within the block they reach the debug log; a warning, an error line
    of theirs or a traceback written meanwhile still reaches standard error, whole and in order."""
    import os

    from mediaio.native_notices import notices_to_debug_log

    logger = logging.getLogger("test.native")
    caplog.set_level(logging.DEBUG, logger="test.native")
    others = ["E0000 00:00:1796269770.3 24898 graph.cc:7] a native error line", "Traceback (most recent call last):",
              "  a line of the user's own"]
    with notices_to_debug_log(logger):
        for line in NATIVE_NOTICES[:2] + (others[0],) + NATIVE_NOTICES[2:] + tuple(others[1:]):
            os.write(2, (line + "\n").encode())
    os.write(2, b"after the block\n")
    err = capfd.readouterr().err
    assert err.splitlines() == others + ["after the block"]
    assert [r.getMessage() for r in caplog.records if r.name == "test.native"] == list(NATIVE_NOTICES)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "test.native")


@pytest.mark.ray
def test_starting_local_ray_and_the_demos_face_tracker_print_no_native_notices(tmp_path):
    """As the CLI runs them (its environment set to quieten Ray's C++ core, which then announces the
    level it was set to): starting a local Ray instance and synthesising the demo's driving clips."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import logging, sys\n"
        "from jobs.terminal_noise import quiet_third_party_noise\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "quiet_third_party_noise()\n"
        "from jobs.demo import build_demo_inputs\n"
        "from pipelines import ray_runtime\n"
        f"build_demo_inputs({str(tmp_path / 'inputs')!r})\n"
        "ray_runtime._init(None, 1, 0)\n"
        "ray_runtime.shutdown_local_ray()\n"
        "logging.getLogger('test').info('done')\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=300)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert "starting a local Ray instance" in printed and "INFO:test:done" in printed
    for shape in ("logging.cc", "inference_feedback_manager", "TensorFlow Lite", "absl::InitializeLog"):
        assert shape not in printed, printed


def test_an_exceptions_message_is_not_taken_for_a_secret_value():
    """``NoCredentialsError: Unable to locate credentials`` printed as ``NoCredentialsError: ***``: the
    user never learnt what was wrong.  A secret inside such a message is still masked."""
    from mediaio.redaction import redact

    assert redact("not writable: NoCredentialsError: Unable to locate credentials") == \
        "not writable: NoCredentialsError: Unable to locate credentials"
    assert redact("AuthError: token=abc123") == "AuthError: token=***"
    assert redact("aws_secret_access_key: abc123") == "aws_secret_access_key: ***"


def test_botocores_credential_notice_stays_out_of_the_terminal(caplog):
    """Every s3:// command printed "INFO aiobotocore.credentials: Found credentials in environment
    variables."; -v (which skips the quietening) still shows it."""
    from jobs.terminal_noise import BOTOCORE_LOGGERS, quiet_botocore_notices

    previous = {name: logging.getLogger(name).level for name in BOTOCORE_LOGGERS}
    try:
        quiet_botocore_notices()
        with caplog.at_level(logging.INFO):
            logging.getLogger("aiobotocore.credentials").info("Found credentials in environment variables.")
            logging.getLogger("botocore.credentials").warning("Refreshing temporary credentials failed")
        assert [record.levelname for record in caplog.records] == ["WARNING"]
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)
