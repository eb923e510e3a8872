"""`hellomeme-batch submit`: run a render job on a Ray cluster through the Jobs API, once per job.

    hellomeme-batch submit MANIFEST --output URI --address http://HEAD:8265 [render options]

The cluster runs ``python -m jobs.render`` with the same render options.  The submission id is a
hash of what the job renders (manifest, output, render options), so submitting the same job again
does not render it twice: while the first submission runs, the command follows it; once it has
finished, the command reports how it ended.  The manifest's version (size and change time, or ETag)
is part of the hash where the submitting machine can see it, so a manifest written again under the
same name is a new job.  ``--retry`` submits a new attempt of a job whose last attempt has ended
(rows already written are skipped).

Credentials never travel in the clear.  Ray writes a job's runtime environment, environment
variables included, to the cluster's logs (runtime_env_agent.log) and shows it to whoever lists
jobs, and writes the entrypoint to the job's log.  Non-secret storage options (endpoint, region)
go along in $HELLOMEME_STORAGE_OPTIONS.  Options that look like credentials -- by key pattern,
case-insensitively: secret, key, key id, token, session, password/pwd/passphrase, authorization,
credential, signature ... (see :func:`mediaio.redaction.is_secret_name`), or a value carrying
them -- go only to a cluster with token authentication, sealed with its token in
$HELLOMEME_SEALED_STORAGE_OPTIONS, and the job starts through ``jobs.job_entry``, which opens them
in the driver's process (why this channel: :mod:`jobs.sealed_options`).  Without token
authentication they are refused.  Better still, give the cluster its own credentials (an
instance profile, IRSA, the nodes' environment) and send none.

The Jobs API runs code for whoever reaches it: keep the dashboard on 127.0.0.1 behind
`ray dashboard cluster.yaml` (an SSH tunnel to http://127.0.0.1:8265, the default address), and
on clusters with token authentication set RAY_AUTH_MODE=token and the cluster's token
(RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token) here too.

Exit status: the job's (0 every row ok or skipped, 2 some row failed, 1 job error); 1 when the
job could not be submitted or its outcome is unknown; 130 when interrupted (the job goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ray.exceptions import AuthenticationError, RpcError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from mediaio import storage
from mediaio.redaction import install_log_safety, is_secret_name, printable, redact
from pipelines.ray_runtime import ClusterUnreachableError, check_answers
from jobs import sealed_options
from jobs.options import (
    EXIT_INTERRUPTED,
    EXIT_JOB_ERROR,
    EXIT_OK,
    STORAGE_OPTIONS_ENV,
    CommandLineParser,
    add_metrics_arguments,
    add_render_arguments,
    parse_storage_options,
)

logger = logging.getLogger("hellomeme_batch.submit")

SUBMISSION_PREFIX = "hellomeme-render-"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the local end of `ray dashboard cluster.yaml`
STATUS_POLL_S = 1.0

# Render arguments that are paths: made absolute, because the job runs in another directory.
PATH_ARGUMENTS = frozenset({"manifest", "output", "weights", "allow_root"})
# Render arguments that never go on the job's command line (storage options travel in the environment).
NOT_ON_COMMAND_LINE = frozenset({"storage_option"})
# The job's entry point: plain, or opening sealed credentials first.
RENDER_MODULE, SEALED_ENTRY_MODULE = "jobs.render", "jobs.job_entry"


class SubmitError(Exception):
    """The job cannot be submitted or followed; the message says why."""


@dataclass(frozen=True)
class JobRequest:
    """Everything the Jobs API needs for one render job; ``base_id`` is its first attempt's submission id."""

    base_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]

    def attempt_id(self, attempt: int) -> str:
        return self.base_id if attempt == 1 else f"{self.base_id}-{attempt}"


def command_line(args: argparse.Namespace, add_arguments: Callable[[argparse.ArgumentParser], None]) -> list[str]:
    """The arguments, among those ``add_arguments`` defines, that reproduce ``args`` (defaults left out).

    Built from the argument definitions themselves, so an option added to jobs/options.py travels
    to the cluster without a change here.
    """
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    argv: list[str] = []
    for action in parser._actions:  # argparse's own list of what it parses; there is no public one
        if action.dest in NOT_ON_COMMAND_LINE:
            continue
        value = getattr(args, action.dest)
        if action.dest in PATH_ARGUMENTS and value is not None:
            value = [storage.normalize(item) for item in value] if isinstance(value, list) else storage.normalize(value)
        if not action.option_strings:
            argv.append(str(value))
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # a switch such as --no-interpolate
            if value != action.default:
                argv.append(flag)
        elif isinstance(value, list):  # a repeatable option such as --allow-root
            for item in value:
                argv += [flag, str(item)]
        elif value is not None and value != action.default:
            argv += [flag, str(value)]
    return argv


def _is_secret_option(key: Any, value: Any) -> bool:
    """A credential by its key's name, or a string value that carries one (``http://u:p@host``, ``token=...``)."""
    if is_secret_name(str(key)):
        return True
    if isinstance(value, str):
        return redact(value) != value
    if isinstance(value, (list, tuple)):
        return any(_is_secret_option(key, item) for item in value)
    return False


def secret_option_keys(options: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of the storage options that look like credentials (key pattern, case-insensitive, or value)."""
    found = []
    for key, value in options.items():
        dotted = f"{prefix}{key}"
        if _is_secret_option(key, value):
            found.append(dotted)
        elif isinstance(value, Mapping):
            found += secret_option_keys(value, f"{dotted}.")
    return found


def split_storage_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the options that are not credentials, the credentials), each keeping the nesting of ``options``."""
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for key, value in options.items():
        if _is_secret_option(key, value):
            secret[key] = value
        elif isinstance(value, Mapping):
            inner_public, inner_secret = split_storage_options(value)
            if inner_public or not inner_secret:
                public[key] = inner_public
            if inner_secret:
                secret[key] = inner_secret
        else:
            public[key] = value
    return public, secret


def submission_id(render_argv: list[str], storage_options: Mapping[str, Any],
                  manifest_version: str | None = None) -> str:
    """A stable id for what a job renders: the same manifest, output and options give the same id.

    The manifest counts by its content's version too (``storage.version_of``: size and change time
    or ETag), where this machine can see it: a nightly manifest written again under the same name
    is a new job (it was taken for last night's, "submitted before (SUCCEEDED)", and nothing
    rendered, exit 0).  Credentials count by name only (``storage_options`` holds their keys, not
    their values): rotating a key is not a new job, and no hash of a secret is published.
    """
    public, secret = split_storage_options(storage_options)
    identity = json.dumps({"render": render_argv, "storage_options": public,
                           "credentials": sorted(secret_option_keys(secret)),
                           **({"manifest_version": manifest_version} if manifest_version else {})}, sort_keys=True)
    return SUBMISSION_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:20]


def checkout_root() -> Path | None:
    """This project's source tree when running from a checkout (uploaded as the job's working dir), else None."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def build_request(args: argparse.Namespace, token_source: Callable[[], str | None] = sealed_options.cluster_token,
                  ) -> JobRequest:
    """The job for parsed submit arguments; SubmitError if it would carry credentials in the clear.

    Credentials among the storage options are sealed with the cluster token ``token_source``
    finds (SubmitError without one); credentials anywhere on the command line are refused.
    """
    storage_options = parse_storage_options(args.storage_option)
    public, secret = split_storage_options(storage_options)
    render_argv = command_line(args, add_render_arguments)
    carrying = [arg for arg in render_argv if redact(arg) != arg]
    if carrying:
        raise SubmitError(f"{', '.join(printable(arg) for arg in carrying)} carries credentials; "
                          "Ray would write them to the job's log")
    env_vars = {STORAGE_OPTIONS_ENV: json.dumps(public, sort_keys=True)} if public else {}
    entry = RENDER_MODULE
    if secret:
        token = token_source()
        if token is None:
            raise SubmitError(
                f"storage options {', '.join(secret_option_keys(secret))} look like credentials; they are sent only "
                "to a cluster with token authentication, sealed with its token (set RAY_AUTH_MODE to \"token\" and "
                "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN to the cluster's token). Better: give the cluster its own "
                "credentials (instance profile, IRSA, the nodes' environment)")
        env_vars[sealed_options.SEALED_OPTIONS_ENV] = sealed_options.seal(secret, token)
        entry = SEALED_ENTRY_MODULE
    local = [arg for arg in (args.manifest, args.output) if storage.scheme_of(arg) == "file"]
    if local:
        logger.warning("%s: local path(s); the cluster's nodes must see them at the same place "
                       "(use object storage such as s3:// on a real cluster)", ", ".join(local))
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    root = None if args.no_upload else checkout_root()
    if root is not None:
        runtime_env["working_dir"] = str(root)  # Ray leaves out .git, .venv and what .gitignore names
    return JobRequest(
        base_id=submission_id(render_argv, storage_options, storage.version_of(args.manifest, storage_options)),
        entrypoint=shlex.join(["python", "-m", entry, *render_argv,
                               *command_line(args, add_metrics_arguments)]),
        runtime_env=runtime_env,
        metadata={"app": "hellomeme-batch", "manifest": storage.normalize(args.manifest),
                  "output": storage.normalize(args.output)},
    )


def _attempt_number(request: JobRequest, submission: str) -> int | None:
    if submission == request.base_id:
        return 1
    head, _, tail = submission.rpartition("-")
    return int(tail) if head == request.base_id and tail.isdigit() else None


def latest_attempt(client: JobSubmissionClient, request: JobRequest) -> tuple[int, JobDetails | None]:
    """The newest attempt of this job on the cluster: (attempt number, its JobDetails), or (0, None)."""
    attempts = {}
    for job in client.list_jobs():
        number = _attempt_number(request, job.submission_id or "")
        if number is not None:
            attempts[number] = job
    if not attempts:
        return 0, None
    newest = max(attempts)
    return newest, attempts[newest]


# A cluster that has just started (or is busy) answers "No available agent to submit job, please try
# again later" until a node's job agent is up: that is retried, for this long, not reported as a failure.
AGENT_WAIT_S = 60.0
AGENT_RETRY_S = 2.0
_NO_AGENT = "No available agent"


def _submit_when_an_agent_is_up(client: JobSubmissionClient, request: JobRequest, submission: str,
                                wait_s: float = AGENT_WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.submit_job(entrypoint=request.entrypoint, submission_id=submission,
                              runtime_env=request.runtime_env, metadata=request.metadata)
            return
        except RuntimeError as exc:
            if _NO_AGENT not in str(exc) or time.monotonic() >= deadline:
                raise
            logger.info("the cluster has no job agent ready yet; trying again in %.0f s", AGENT_RETRY_S)
            time.sleep(AGENT_RETRY_S)


def submit_or_attach(client: JobSubmissionClient, request: JobRequest,
                     retry: bool) -> tuple[str, JobDetails | None]:
    """Submit the job unless it already exists; returns its submission id and, when it existed, its details."""
    attempt, job = latest_attempt(client, request)
    if job is not None:
        if not (retry and job.status.is_terminal()):
            logger.info("job %s was submitted before (status %s); not submitting it again%s", job.submission_id,
                        job.status, "" if job.status.is_terminal() else ": following it")
            return job.submission_id, job
        logger.info("job %s ended %s; submitting attempt %d", job.submission_id, job.status, attempt + 1)
    submission = request.attempt_id(attempt + 1)
    try:
        _submit_when_an_agent_is_up(client, request, submission)
    except RuntimeError as exc:
        # Someone submitted the same job a moment ago: follow theirs.  Anything else is an error.
        racing = next((j for j in client.list_jobs() if j.submission_id == submission), None)
        if racing is None:
            raise SubmitError(f"job {submission} not submitted: {exc}") from None
        logger.info("job %s was submitted meanwhile by someone else; following it", submission)
        return submission, racing
    logger.info("submitted job %s: %s", submission, request.entrypoint)
    return submission, None


async def _print_logs(client: JobSubmissionClient, submission: str) -> None:
    async for lines in client.tail_job_logs(submission):
        sys.stdout.write(lines)
        sys.stdout.flush()


def follow(client: JobSubmissionClient, submission: str) -> JobDetails:
    """Stream the job's log to stdout until it ends; returns its final JobDetails."""
    try:
        asyncio.run(_print_logs(client, submission))
    except Exception as exc:  # the log is a courtesy; the job's outcome is what this command reports
        logger.warning("lost the job's log stream (%s: %s); waiting for the job to end", type(exc).__name__, exc)
    while True:  # the log stream can end a moment before the status does, or drop with the connection
        job = client.get_job_info(submission)
        if job.status.is_terminal():
            return job
        time.sleep(STATUS_POLL_S)


def exit_status(job: JobDetails) -> int:
    """The job's outcome as an exit status: its driver's exit code where the job failed with one."""
    if job.status == JobStatus.SUCCEEDED:
        return EXIT_OK
    code = job.driver_exit_code
    return code if job.status == JobStatus.FAILED and isinstance(code, int) and 0 < code < 128 else EXIT_JOB_ERROR


def jobs_client(address: str) -> JobSubmissionClient:
    """A Jobs API client for ``address``; SubmitError naming the address if it cannot be reached.

    An address without a scheme is a cluster's GCS, from which Ray finds the Jobs API: it is
    checked first, so nothing answering, or the dashboard's own address given without ``http://``,
    is said at once (Ray waited 40 s for a GCS there, then raised a traceback).
    """
    if "://" not in address and address != "auto":
        try:
            check_answers(address)
        except ClusterUnreachableError as exc:
            hint = f" (give it as http://{address})" if "answers as a web server" in str(exc) else ""
            raise SubmitError(f"cannot reach the Ray Jobs API at {address}{hint}: {exc}") from None
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError, RpcError) as exc:
        raise SubmitError(f"cannot reach the Ray Jobs API at {address}: {exc}") from None


def run(args: argparse.Namespace, client_factory: Callable[[str], JobSubmissionClient] = jobs_client) -> int:
    """Submit (or attach to) the job described by parsed arguments; returns the exit status."""
    submission = None
    try:
        request = build_request(args)
        client = client_factory(args.address)
        submission, job = submit_or_attach(client, request, args.retry)
        if args.no_wait:
            sys.stdout.write(f"{submission}\n")
            return EXIT_OK
        if job is None or not job.status.is_terminal():
            job = follow(client, submission)
    except (SubmitError, argparse.ArgumentTypeError) as exc:
        logger.error("%s", printable(exc))
        return EXIT_JOB_ERROR
    except AuthenticationError as exc:
        logger.error("the cluster refused this client's token (set RAY_AUTH_MODE to \"token\" and RAY_AUTH_TOKEN_PATH "
                     "or RAY_AUTH_TOKEN to the cluster's token): %s",
                     printable(str(exc).splitlines()[0] if str(exc) else exc))
        return EXIT_JOB_ERROR
    except RuntimeError as exc:  # the Jobs API answered with an error
        logger.error("Ray Jobs API error: %s", printable(exc))
        return EXIT_JOB_ERROR
    except KeyboardInterrupt:
        if submission is not None:
            logger.warning("stopped following job %s; it goes on: run the same command to follow it again",
                           submission)
        return EXIT_INTERRUPTED
    status = exit_status(job)
    message = f"job {submission}: {job.status}" + (f" (exit status {status})" if status else "")
    if job.status != JobStatus.SUCCEEDED:
        message += f": {printable(job.message.splitlines()[0])}" if job.message else ""
        logger.info("pass --retry to submit it again; rows already written are skipped")
    sys.stdout.write(message + "\n")
    return status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_render_arguments(parser)
    add_metrics_arguments(parser)
    parser.add_argument("--address",
                        default=os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
                        or DEFAULT_ADDRESS,
                        help="the cluster's Jobs API (dashboard) address (default: $RAY_API_SERVER_ADDRESS, "
                             f"$RAY_ADDRESS, else {DEFAULT_ADDRESS}, where `ray dashboard cluster.yaml` tunnels it)")
    parser.add_argument("--retry", action="store_true",
                        help="if the job's last attempt has ended (failed, stopped, or succeeded and its outputs "
                             "have since been removed or its inputs replaced), submit a new attempt; rows already "
                             "written are skipped")
    parser.add_argument("--no-wait", action="store_true",
                        help="print the submission id and return instead of following the job")
    parser.add_argument("--no-upload", action="store_true",
                        help="run the hellomeme-batch installed on the cluster instead of uploading this checkout")


def main(argv: list[str] | None = None) -> int:
    parser = CommandLineParser(prog="python -m jobs.submit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    install_log_safety()
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
