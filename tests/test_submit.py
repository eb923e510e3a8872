"""`hellomeme-batch submit`: what it sends to the Jobs API, and that a job renders once.

The unit tests drive :func:`jobs.submit.run` against an in-memory stand-in for the Jobs API.
The ``ray`` tests start a real head (``ray start --head --block``) on 127.0.0.1 with token
authentication, in a private temp dir, and submit through the command line as a user would.
That head is stopped by signalling the ``ray start --block`` process it belongs to: `ray stop`
cannot be scoped and would end every Ray instance on the machine, other tests' included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient, JobType

from jobs.manifest_builder import write_manifest
from reporting.results import results_uri
from jobs import render, submit
from jobs.options import STORAGE_OPTIONS_ENV, job_config
from tests.isolated_ray import (
    end_processes_under,
    free_port,
    isolated_environment,
    outside_environment,
    private_temp_dir,
)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 300


def parse_submit(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    submit.add_arguments(parser)
    return parser.parse_args(["--address", "http://127.0.0.1:1", *argv])


# --- what is submitted --------------------------------------------------------------------------

def test_same_job_gets_the_same_submission_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)

    def submission_of(*argv: str) -> str:
        return submit.build_request(parse_submit(*argv)).base_id

    first = submission_of("m.parquet", "--output", "out")
    assert first.startswith(submit.SUBMISSION_PREFIX)
    assert submission_of(str(tmp_path / "m.parquet"), "--output", "out", "--engine", "warp", "--size", "512") == first
    assert submission_of("m.parquet", "--output", "out", "--metrics-port", "0") == first  # renders the same
    assert submission_of("m.parquet", "--output", "out2") != first
    assert submission_of("m.parquet", "--output", "out", "--size", "256") != first
    assert submission_of("m.parquet", "--output", "out",
                         "--storage-option", "client_kwargs.endpoint_url=http://127.0.0.1:9000") != first


def test_the_cluster_renders_with_the_same_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)
    args = parse_submit(
        "s3://bucket/manifest.parquet", "--output", "s3://bucket/out", "--engine", "hellomeme", "--weights", "w",
        "--window", "8", "--overlap", "2", "--size", "256", "--videos-per-batch", "2", "--no-interpolate",
        "--no-skip-existing", "--no-report", "--max-seconds", "10", "--allow-scheme", "s3", "--allow-scheme", "file",
        "--allow-root", "s3://bucket", "--storage-option", "client_kwargs.endpoint_url=http://127.0.0.1:9000",
        "--storage-option", "anon=false", "--metrics-port", "0")
    request = submit.build_request(args)

    command = shlex.split(request.entrypoint)
    assert command[:3] == ["python", "-m", "jobs.render"]
    assert "endpoint_url" not in request.entrypoint  # storage options travel in the environment
    job_parser = argparse.ArgumentParser()
    render.add_arguments(job_parser)
    job_args = job_parser.parse_args(command[3:])
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, request.runtime_env["env_vars"][STORAGE_OPTIONS_ENV])
    on_cluster = job_config(job_args)  # as the job sees it: its arguments, and its environment
    monkeypatch.delenv(STORAGE_OPTIONS_ENV)
    here = job_config(args)
    assert here.engine.options.weights == "w" and on_cluster.engine.options.weights == str(tmp_path / "w")
    assert on_cluster == replace(here, engine=on_cluster.engine)  # paths made absolute, the rest equal
    assert (job_args.metrics_port, job_args.address) == (0, None)  # the job joins its cluster through RAY_ADDRESS
    assert request.runtime_env["working_dir"] == str(REPO)


def test_storage_credentials_are_refused_without_token_authentication(caplog: pytest.LogCaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    caplog.set_level(logging.DEBUG)

    def no_client(address: str):
        raise AssertionError("nothing may be sent to the cluster")

    args = parse_submit("s3://bucket/m.parquet", "--output", "s3://bucket/out",
                        "--storage-option", "key=AKIAEXAMPLEKEY",
                        "--storage-option", "client_kwargs.aws_secret_access_key=EXAMPLESECRET")
    assert submit.run(args, client_factory=no_client) == submit.EXIT_JOB_ERROR
    assert "key, client_kwargs.aws_secret_access_key look like credentials" in caplog.text
    assert "token authentication" in caplog.text
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # even with a token: never in a URI on the command line
    args = parse_submit("s3://bucket/m.parquet", "--output", "s3://AKIAEXAMPLEKEY:EXAMPLESECRET@bucket/out")
    assert submit.run(args, client_factory=no_client) == submit.EXIT_JOB_ERROR
    assert "AKIAEXAMPLEKEY" not in caplog.text and "EXAMPLESECRET" not in caplog.text


def test_credential_filter_works_by_key_pattern_whatever_the_case() -> None:
    assert submit.secret_option_keys({
        "anon": False, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
        "config_kwargs": {"signature_version": "s3v4"}, "requester_pays": True,
    }) == []
    assert submit.secret_option_keys({"token": "t", "client_kwargs": {"endpoint_url": "http://u:p@host"},
                                      "credentials": {"x": 1}}) == [
        "token", "client_kwargs.endpoint_url", "credentials"]
    sneaky = {"SecretAccessKey": "s", "accessKeyId": "a", "AWS_SESSION_TOKEN": "t", "pwd": "p", "Passphrase": "p",
              "client_kwargs": {"headers": {"Authorization": "Bearer b"}, "aws_secret_access_key": "s"},
              "connection_string": "c", "account_key": "k", "sas_token": "s", "PASSWORD": "p"}
    assert sorted(submit.secret_option_keys(sneaky)) == sorted([
        "SecretAccessKey", "accessKeyId", "AWS_SESSION_TOKEN", "pwd", "Passphrase", "client_kwargs.headers.Authorization",
        "client_kwargs.aws_secret_access_key", "connection_string", "account_key", "sas_token", "PASSWORD"])
    public, secret = submit.split_storage_options(
        {"anon": False, "key": "AK", "client_kwargs": {"endpoint_url": "http://e", "aws_session_token": "T"}})
    assert public == {"anon": False, "client_kwargs": {"endpoint_url": "http://e"}}
    assert secret == {"key": "AK", "client_kwargs": {"aws_session_token": "T"}}


def test_credentials_travel_sealed_with_the_cluster_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs import sealed_options

    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)
    token = secrets.token_hex(16)
    options = ["s3://bucket/m.parquet", "--output", "s3://bucket/out",
               "--storage-option", "client_kwargs.endpoint_url=http://127.0.0.1:9000",
               "--storage-option", "key=AKIAEXAMPLEKEY", "--storage-option", "secret=EXAMPLESECRET",
               "--storage-option", "token=EXAMPLESESSION"]
    request = submit.build_request(parse_submit(*options), token_source=lambda: token)

    everything = json.dumps({"entrypoint": request.entrypoint, "runtime_env": request.runtime_env,
                             "metadata": request.metadata, "id": request.base_id})
    for value in ("AKIAEXAMPLEKEY", "EXAMPLESECRET", "EXAMPLESESSION"):
        assert value not in everything
    assert shlex.split(request.entrypoint)[:3] == ["python", "-m", "jobs.job_entry"]
    env = dict(request.runtime_env["env_vars"])
    assert json.loads(env[STORAGE_OPTIONS_ENV]) == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}

    # On the cluster: the job's entry opens them with the same token, into its own process only.
    job_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    assert sealed_options.unseal_into_environment(STORAGE_OPTIONS_ENV, job_env)
    assert sealed_options.SEALED_OPTIONS_ENV not in job_env
    assert json.loads(job_env[STORAGE_OPTIONS_ENV]) == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}, "key": "AKIAEXAMPLEKEY",
        "secret": "EXAMPLESECRET", "token": "EXAMPLESESSION"}
    with pytest.raises(sealed_options.SealError, match="do not open with this cluster's token"):
        sealed_options.unseal_into_environment(STORAGE_OPTIONS_ENV, {**env, "RAY_AUTH_TOKEN": "another"})
    with pytest.raises(sealed_options.SealError, match="finds no token"):
        sealed_options.unseal_into_environment(STORAGE_OPTIONS_ENV, {**env, "RAY_AUTH_MODE": "disabled"})

    rotated = submit.build_request(parse_submit(*options[:-4], "--storage-option", "key=OTHERKEY",
                                                "--storage-option", "secret=OTHER", "--storage-option", "token=T2"),
                                   token_source=lambda: token)
    assert rotated.base_id == request.base_id  # a rotated key is the same job


def test_the_cluster_token_is_found_where_ray_finds_it(tmp_path: Path) -> None:
    from jobs.sealed_options import cluster_token

    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    assert cluster_token({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "env-token"}) == "env-token"
    assert cluster_token({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}) == "file-token"
    assert cluster_token({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "env-token"}) is None


# --- submit once, follow, report ----------------------------------------------------------------

def job(submission: str, status: JobStatus, exit_code: int | None = None, message: str = "") -> JobDetails:
    return JobDetails(type=JobType.SUBMISSION, submission_id=submission, entrypoint="python -m jobs.render",
                      status=status, driver_exit_code=exit_code, message=message)


class InMemoryJobs:
    """Stands in for JobSubmissionClient: a submitted job runs to ``outcome`` while its log is followed."""

    def __init__(self, *existing: JobDetails, outcome: JobDetails | None = None) -> None:
        self.jobs = {item.submission_id: item for item in existing}
        self.outcome = outcome or job("", JobStatus.SUCCEEDED, 0)
        self.submitted: list[str] = []
        self.followed: list[str] = []

    def list_jobs(self) -> list[JobDetails]:
        return list(self.jobs.values())

    def submit_job(self, *, entrypoint: str, submission_id: str, runtime_env: dict, metadata: dict) -> str:
        if submission_id in self.jobs:
            raise RuntimeError(f"Job with submission_id {submission_id} already exists.")
        self.submitted.append(submission_id)
        self.jobs[submission_id] = job(submission_id, JobStatus.RUNNING)
        return submission_id

    async def tail_job_logs(self, submission: str):
        self.followed.append(submission)
        yield f"log of {submission}\n"
        self.jobs[submission] = self.outcome.model_copy(update={"submission_id": submission})

    def get_job_info(self, submission: str) -> JobDetails:
        return self.jobs[submission]


@pytest.fixture()
def render_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)
    return parse_submit(str(tmp_path / "m.parquet"), "--output", str(tmp_path / "out"))


def test_a_new_job_is_submitted_followed_and_ends_with_its_exit_status(render_args, capsys) -> None:
    base = submit.build_request(render_args).base_id
    jobs = InMemoryJobs(outcome=job("", JobStatus.FAILED, 2, "Job entrypoint command failed with exit code 2"))
    assert submit.run(render_args, client_factory=lambda address: jobs) == 2
    assert jobs.submitted == jobs.followed == [base]
    assert f"log of {base}" in capsys.readouterr().out


def test_a_submitted_job_is_followed_or_reported_not_submitted_again(render_args) -> None:
    base = submit.build_request(render_args).base_id
    running = InMemoryJobs(job(base, JobStatus.RUNNING))
    assert submit.run(render_args, client_factory=lambda address: running) == 0
    assert (running.submitted, running.followed) == ([], [base])

    finished = InMemoryJobs(job(base, JobStatus.SUCCEEDED, 0))
    assert submit.run(render_args, client_factory=lambda address: finished) == 0
    assert (finished.submitted, finished.followed) == ([], [])

    failed = InMemoryJobs(job(base, JobStatus.FAILED, 2))
    assert submit.run(render_args, client_factory=lambda address: failed) == 2
    failed_early = InMemoryJobs(job(base, JobStatus.FAILED, None, "runtime env setup failed"))
    assert submit.run(render_args, client_factory=lambda address: failed_early) == submit.EXIT_JOB_ERROR
    assert failed.submitted == failed_early.submitted == []


def test_retry_submits_a_new_attempt_once_the_last_has_ended(render_args) -> None:
    """After a failure or a stop; and, asked for, after a success too (its videos deleted since, say):
    the new attempt skips the rows already written.  Without --retry an ended job is only reported."""
    base = submit.build_request(render_args).base_id
    render_args.retry = True
    jobs = InMemoryJobs(job(base, JobStatus.FAILED, 2), job(f"{base}-2", JobStatus.STOPPED))
    assert submit.run(render_args, client_factory=lambda address: jobs) == 0
    assert jobs.submitted == [f"{base}-3"]
    render_args.retry = False
    assert submit.run(render_args, client_factory=lambda address: jobs) == 0  # attempt 3 succeeded: reported
    assert jobs.submitted == [f"{base}-3"]
    render_args.retry = True
    assert submit.run(render_args, client_factory=lambda address: jobs) == 0
    assert jobs.submitted == [f"{base}-3", f"{base}-4"]


def test_a_manifest_written_again_under_the_same_name_is_a_new_job(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Tonight's manifest written over last night's: the same path gave the same id, and submit said
    "submitted before (SUCCEEDED)", rendered nothing and exited 0."""
    import os

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)
    manifest = tmp_path / "nightly.parquet"
    manifest.write_bytes(b"last night's rows")

    def submission() -> str:
        return submit.build_request(parse_submit(str(manifest), "--output", "out")).base_id

    last_night = submission()
    assert submission() == last_night  # unchanged: the same job, followed or reported
    manifest.write_bytes(b"tonight's rows, more of them")
    os.utime(manifest, (1_900_000_000, 1_900_000_000))
    assert submission() != last_night
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"a")
    before = submit.build_request(parse_submit(str(folder), "--output", "out")).base_id
    (folder / "part-1.parquet").write_bytes(b"b")
    assert submit.build_request(parse_submit(str(folder), "--output", "out")).base_id != before


def test_a_job_submitted_meanwhile_by_someone_else_is_followed(render_args) -> None:
    base = submit.build_request(render_args).base_id

    class LateJobs(InMemoryJobs):
        def list_jobs(self):  # the first look finds nothing; the other submitter wins the race
            listed, self.jobs[base] = list(self.jobs.values()), job(base, JobStatus.RUNNING)
            return listed

    jobs = LateJobs()
    assert submit.run(render_args, client_factory=lambda address: jobs) == 0
    assert (jobs.submitted, jobs.followed) == ([], [base])


# --- against a real head --------------------------------------------------------------------------

@dataclass(frozen=True)
class RayHead:
    address: str  # the Jobs API
    client_env: dict[str, str]  # the environment a user of this cluster has (its token included)
    token: str
    temp_dir: str  # the head's Ray temp dir: its session logs are under it

    def client(self) -> JobSubmissionClient:
        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})

    def jobs_of(self, manifest: str) -> list[str]:
        """Submission ids of the jobs that rendered ``manifest``, oldest first."""
        client = JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})
        return sorted(item.submission_id for item in client.list_jobs()
                      if (item.metadata or {}).get("manifest") == manifest)

    def submit(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobs.cli", "submit", *argv, "--address", self.address,
                               "--metrics-port", "0"],
                              cwd=REPO, env=self.client_env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)


@pytest.fixture(scope="module")
def ray_head():
    """A one-node Ray head on 127.0.0.1 with token authentication, stopped (only it) afterwards."""
    temp_dir = private_temp_dir("hm-head-")
    token = secrets.token_hex(16)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head_env = isolated_environment(
        temp_dir, **auth,
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # nothing to drain: stop at once, not after 30 s
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # the job's `python` is this one
    dashboard_port = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dashboard_port, "--ray-client-server-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
             "--node-manager-port": free_port(), "--object-manager-port": free_port()}
    command = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--num-cpus", "2",
               "--temp-dir", temp_dir, "--disable-usage-stats"]
    for flag, port in ports.items():
        command += [flag, str(port)]
    log_path = Path(temp_dir) / "head.log"
    with open(log_path, "wb") as log:
        head = subprocess.Popen(command, cwd=temp_dir, env=head_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_jobs_api(address, token, head, log_path)
        yield RayHead(address=address, client_env={**outside_environment(), **auth}, token=token, temp_dir=temp_dir)
    finally:
        _stop_head(head, temp_dir)


def _wait_for_jobs_api(address: str, token: str, head: subprocess.Popen, log_path: Path, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"}).list_jobs()
            return
        except Exception:  # not up yet; the head's own log says why if it never comes up
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not come up:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)


def _stop_head(head: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM to `ray start --block` stops the processes it started; anything left is ended by pid."""
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    end_processes_under(temp_dir)


def small_manifest(media: Path, folder: Path, rows: int = 2) -> str:
    portraits = sorted((media / "reference_images").glob("*.*"))
    clips = sorted((media / "drive_videos").glob("*.mp4"))
    path = folder / "manifest.parquet"
    write_manifest([{"id": f"submitted_{i}", "reference_uri": str(portraits[i]), "driving_uri": str(clips[i]),
                     "fps": 8.0, "max_seconds": 1.0} for i in range(rows)], str(path))
    return str(path)


@pytest.mark.ray
def test_the_jobs_api_refuses_requests_without_the_token(ray_head: RayHead, tmp_path: Path) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{ray_head.address}/api/jobs/", timeout=30)
    assert refused.value.code == 401

    without_token = {**outside_environment(), "RAY_AUTH_MODE": "disabled"}
    attempt = subprocess.run([sys.executable, "-m", "jobs.cli", "submit", str(tmp_path / "m.parquet"),
                              "--output", str(tmp_path / "out"), "--address", ray_head.address],
                             cwd=REPO, env=without_token, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert attempt.returncode == submit.EXIT_JOB_ERROR
    assert "refused this client's token" in attempt.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_a_submitted_job_renders_once(ray_head: RayHead, synthetic_media: Path, tmp_path: Path) -> None:
    manifest, output = small_manifest(synthetic_media, tmp_path), tmp_path / "out"
    options = [manifest, "--output", str(output), "--size", "128", "--no-interpolate"]

    first = ray_head.submit(*options)
    assert first.returncode == 0, f"{first.stdout[-4000:]}\n{first.stderr[-4000:]}"
    assert "SUCCEEDED" in first.stdout
    results = pq.read_table(results_uri(str(output))).to_pylist()
    assert [row["status"] for row in results] == ["ok", "ok"], results
    videos = sorted(output.glob("*.mp4"))
    assert [video.name for video in videos] == ["submitted_0.mp4", "submitted_1.mp4"]
    written = {path: path.stat().st_mtime_ns for path in [*videos, Path(results_uri(str(output)))]}
    [submission] = ray_head.jobs_of(manifest)

    again = ray_head.submit(*options)
    assert again.returncode == 0, f"{again.stdout[-4000:]}\n{again.stderr[-4000:]}"
    assert "not submitting it again" in again.stderr and "SUCCEEDED" in again.stdout
    assert ray_head.jobs_of(manifest) == [submission]
    assert {path: path.stat().st_mtime_ns for path in written} == written  # nothing rendered or rewritten


@pytest.mark.ray
def test_credentials_reach_the_job_sealed_and_appear_nowhere_else(ray_head: RayHead, s3_endpoint, tmp_path: Path,
                                                                  ) -> None:
    from tests.s3_server import CANARY_SECRET

    canary_token = "canary-session-token-51be07"
    bucket = s3_endpoint.bucket
    manifest = f"s3://{bucket}/sealed/manifest.parquet"  # the job must read it with the credentials it was sent
    write_manifest([{"id": "sealed", "reference_uri": f"s3://{bucket}/sealed/none.jpg",
                     "driving_uri": f"s3://{bucket}/sealed/none.mp4"}], manifest, s3_endpoint.storage_options)
    result = ray_head.submit(manifest, "--output", str(tmp_path / "out"), *s3_endpoint.cli_options(),
                             "--storage-option", f"token={canary_token}")
    # The manifest was read on the cluster (so the sealed options were opened there); its one row has no inputs,
    # so the job ends with status 2, its own log (followed) naming the row's cause.
    assert result.returncode == 2, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "FAILED" in result.stdout and "not found" in result.stdout

    client = ray_head.client()
    [job] = [item for item in client.list_jobs() if (item.metadata or {}).get("manifest") == manifest]
    seen_by_api = json.dumps(job.model_dump(mode="json")) + client.get_job_logs(job.submission_id)
    assert "jobs.job_entry" in job.entrypoint and "HELLOMEME_SEALED_STORAGE_OPTIONS" in seen_by_api
    canaries = (CANARY_SECRET, canary_token, s3_endpoint.key)
    for canary in canaries:
        assert canary not in seen_by_api + result.stdout + result.stderr, canary
    scanned = 0
    for logs in Path(ray_head.temp_dir).rglob("logs"):
        for path in logs.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                content = path.read_bytes()
                scanned += 1
                for canary in canaries:
                    assert canary.encode() not in content, (canary, path)
    assert scanned > 0  # the head's session logs (runtime_env_agent.log, the job's driver log ...) were read

    # The same manifest again, its credentials sealed anew, is the same job: followed, not run again.
    # (--retry's new attempt is test_retry_submits_a_new_attempt_once_the_last_has_ended's: a second
    # real job here would add half a minute of the suite and nothing a reader does not see there.)
    options = [manifest, "--output", str(tmp_path / "out"), *s3_endpoint.cli_options(),
               "--storage-option", f"token={canary_token}"]
    assert ray_head.submit(*options).returncode == 2
    assert ray_head.jobs_of(manifest) == [job.submission_id]


def test_a_cluster_without_a_job_agent_yet_is_asked_again(monkeypatch):
    """A cluster that has just started answers 'No available agent' until its job agent is up: the
    submission waits for it rather than failing the whole submit."""
    from jobs import submit

    class StartingCluster:
        def __init__(self, refusals):
            self.refusals, self.submitted = refusals, []

        def submit_job(self, **kwargs):
            if self.refusals:
                self.refusals -= 1
                raise RuntimeError("Request failed with status code 500: No available agent to submit job, "
                                   "please try again later..")
            self.submitted.append(kwargs["submission_id"])

    monkeypatch.setattr(submit, "AGENT_RETRY_S", 0.0)
    request = submit.JobRequest(base_id="job", entrypoint="true", runtime_env={}, metadata={})
    cluster = StartingCluster(refusals=2)
    submit._submit_when_an_agent_is_up(cluster, request, "job-1")
    assert cluster.submitted == ["job-1"]
    with pytest.raises(RuntimeError, match="No available agent"):
        submit._submit_when_an_agent_is_up(StartingCluster(refusals=5), request, "job-2", wait_s=0.0)


def test_an_address_without_its_scheme_is_said_at_once() -> None:
    """The dashboard's address without http:// (or nothing there) made Ray wait 40 s for a GCS, then a traceback."""
    import http.server
    import socket
    import threading

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(submit.SubmitError, match=f"cannot reach the Ray Jobs API at 127.0.0.1:{closed}.*no Ray cluster answers"):
        submit.jobs_client(f"127.0.0.1:{closed}")
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        with pytest.raises(submit.SubmitError, match=f"give it as http://127.0.0.1:{port}"):
            submit.jobs_client(f"127.0.0.1:{port}")
    finally:
        server.shutdown()
