"""The storage and output layer on a real S3 endpoint (moto's server on 127.0.0.1), without Ray."""

from __future__ import annotations

import subprocess
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mediaio import storage
from mediaio.storage import StorageError
from pipelines import outputs
from pipelines.manifest import ManifestError, ManifestLimits, read_manifest

FINGERPRINT = "00112233445566778899aabbccddeeff"


@pytest.fixture()
def s3(s3_endpoint):
    return fsspec.filesystem("s3", skip_instance_cache=True, **s3_endpoint.storage_options)


def test_bounded_reads_of_objects(s3_endpoint, s3):
    bucket, options = s3_endpoint.bucket, s3_endpoint.storage_options
    s3.pipe_file(f"{bucket}/reads/a.bin", b"a" * 1000)
    assert storage.read_bytes(f"s3://{bucket}/reads/a.bin", options, max_bytes=1000) == b"a" * 1000
    with pytest.raises(StorageError, match="is 1000 bytes, over the limit of 999 bytes"):
        storage.read_bytes(f"s3://{bucket}/reads/a.bin", options, max_bytes=999)
    with pytest.raises(StorageError, match="is a directory"):
        storage.read_bytes(f"s3://{bucket}/reads", options)
    with pytest.raises(storage.NotFoundError):
        storage.read_bytes(f"s3://{bucket}/reads/none.bin", options)



def test_objects_carry_the_content_type_a_browser_needs(s3_endpoint, s3):
    # Stored as binary/octet-stream, a shared link to the report downloaded it instead of showing it.
    bucket, options = s3_endpoint.bucket, s3_endpoint.storage_options
    storage.write_replace(f"s3://{bucket}/typed/index.html", b"<html></html>", options)
    storage.write_create_only(f"s3://{bucket}/typed/a.mp4", b"not really a video", options)
    storage.write_create_only(f"s3://{bucket}/typed/a.bin", b"?", options)
    assert s3.info(f"{bucket}/typed/index.html")["ContentType"] == "text/html; charset=utf-8"
    assert s3.info(f"{bucket}/typed/a.mp4")["ContentType"] == "video/mp4"
    assert s3.info(f"{bucket}/typed/a.bin")["ContentType"] != "video/mp4"


def test_probe_and_plan_on_a_bucket(s3_endpoint, s3):
    bucket, options = s3_endpoint.bucket, s3_endpoint.storage_options
    outputs.probe_output_writable(f"s3://{bucket}/probed", options)
    assert not s3.exists(f"{bucket}/probed") or s3.ls(f"{bucket}/probed", refresh=True) == []
    with pytest.raises(StorageError, match="--output s3://no-such-bucket/out is not writable"):
        outputs.probe_output_writable("s3://no-such-bucket/out", options)

    s3.pipe_file(f"{bucket}/planned/have.mp4", b"x")
    prefix = outputs.check_output_prefix(f"s3://{bucket}/planned", storage.StoragePolicy(), local_job=False)
    plans = outputs.plan_outputs(prefix, [outputs.OutputRequest(0, "have"), outputs.OutputRequest(1, "new")],
                                 storage.StoragePolicy(), local_job=False, storage_options=options)
    assert [(plan.uri, plan.exists) for plan in plans] == [
        (f"s3://{bucket}/planned/have.mp4", True), (f"s3://{bucket}/planned/new.mp4", False)]


def test_ownership_of_an_object(s3_endpoint, s3, ffmpeg, tmp_path: Path):
    bucket, options = s3_endpoint.bucket, s3_endpoint.storage_options
    video = tmp_path / "v.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=8:duration=0.5",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-metadata",
                    f"comment={outputs.fingerprint_comment(FINGERPRINT)}",
                    str(video)], check=True, capture_output=True)
    s3.put_file(str(video), f"{bucket}/owned/v.mp4")
    s3.pipe_file(f"{bucket}/owned/empty.mp4", b"")
    assert outputs.owns_existing_output(f"s3://{bucket}/owned/v.mp4", FINGERPRINT, options)
    assert not outputs.owns_existing_output(f"s3://{bucket}/owned/v.mp4", "f" * 32, options)
    assert outputs.inspect_existing_output(f"s3://{bucket}/owned/empty.mp4", FINGERPRINT, options).reason == \
        "is empty (0 bytes)"


def test_manifest_caps_on_a_bucket(s3_endpoint, s3, tmp_path: Path):
    bucket, options = s3_endpoint.bucket, s3_endpoint.storage_options
    local = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["a"], "reference_uri": ["r"], "driving_uri": ["d"], "prompt": ["p" * 5000]}), local)
    s3.put_file(str(local), f"{bucket}/manifests/m.parquet")
    table = read_manifest(f"s3://{bucket}/manifests/m.parquet", options)
    assert table.column("prompt").to_pylist() == [None]
    with pytest.raises(ManifestError, match="over the limit of 10 bytes"):
        read_manifest(f"s3://{bucket}/manifests/m.parquet", options, limits=ManifestLimits(max_bytes=10))


def test_manifest_build_from_bucket_folders_with_storage_options(s3_endpoint, s3, tmp_path, caplog):
    """A project kept in a bucket behind its own endpoint: `manifest build` lists the folders there and writes
    the manifest there with the job's --storage-option flags (it took none, so it could not reach the endpoint)."""
    from jobs.cli import build_parser

    bucket = s3_endpoint.bucket
    for key, data in [("faces/b.jpg", b"jpg"), ("faces/a.png", b"png"), ("faces/._a.png", b"apple"),
                      ("faces/notes.txt", b"text"), ("faces/empty.jpg", b""), ("faces/old/c.jpg", b"jpg"),
                      ("clips/x.mp4", b"mp4"), ("clips/y.mov", b"mov")]:
        s3.pipe_file(f"{bucket}/project/{key}", data)
    out = f"s3://{bucket}/project/manifest.parquet"

    def build(*argv: str) -> int:
        args = build_parser().parse_args(["manifest", "build", *argv, "-o", out, *s3_endpoint.cli_options()])
        return args.run(args)

    assert build("--portraits", f"s3://{bucket}/project/faces", "--drivers", f"s3://{bucket}/project/clips/") == 0
    rows = read_manifest(out, s3_endpoint.storage_options).to_pylist()
    assert [(r["reference_uri"], r["driving_uri"]) for r in rows] == [
        (f"s3://{bucket}/project/faces/a.png", f"s3://{bucket}/project/clips/x.mp4"),
        (f"s3://{bucket}/project/faces/b.jpg", f"s3://{bucket}/project/clips/y.mov")]
    assert "._a.png (hidden)" in caplog.text and "empty.jpg (empty)" in caplog.text
    # A prefix with nothing under it is named; nothing is written.
    s3.rm_file(f"{bucket}/project/manifest.parquet")
    assert build("--portraits", f"s3://{bucket}/project/nothing", "--drivers", f"s3://{bucket}/project/clips") == 1
    assert "no folder s3://memes/project/nothing" in caplog.text and not s3.exists(f"{bucket}/project/manifest.parquet")


def test_rows_under_a_mistyped_prefix_or_bucket_fail_at_planning(s3_endpoint, s3, tmp_path):
    """A mistyped prefix over a big manifest failed one row at a time in the prepare stage; now the rows whose
    input prefix holds nothing fail at planning, one lookup per prefix.  A missing file in a prefix that
    holds others is still the row's own business (it may be written before its row runs)."""
    from engines.registry import engine_spec
    from jobs.manifest_builder import manifest_table
    from pipelines.plan import JobConfig, plan_rows

    bucket = s3_endpoint.bucket
    s3.pipe_file(f"{bucket}/plan/faces/a.jpg", b"jpg")
    s3.pipe_file(f"{bucket}/plan/clips/x.mp4", b"mp4")

    def row(meme_id, reference, driving):
        return {"id": meme_id, "reference_uri": f"s3://{reference}", "driving_uri": f"s3://{driving}"}

    rows = [row("good", f"{bucket}/plan/faces/a.jpg", f"{bucket}/plan/clips/x.mp4"),
            row("gone-file", f"{bucket}/plan/faces/b.jpg", f"{bucket}/plan/clips/x.mp4"),
            row("typo", f"{bucket}/plan/faces/a.jpg", f"{bucket}/plan/clip/x.mp4"),
            row("no-bucket", f"no-such-bucket/faces/a.jpg", f"{bucket}/plan/clips/x.mp4")]
    config = JobConfig(manifest_uri="unused", output_uri=str(tmp_path / "out"), engine=engine_spec("warp"),
                       storage_options=s3_endpoint.storage_options)
    plan = plan_rows(manifest_table(rows), config)
    by_id = {r["id"]: r for r in plan.pending + plan.settled}
    assert [by_id[i]["status"] for i in ("good", "gone-file", "typo", "no-bucket")] == [
        "pending", "pending", "failed", "failed"]
    assert (f"driving_uri s3://{bucket}/plan/clip/x.mp4 not found: nothing is under s3://{bucket}/plan/clip/"
            in by_id["typo"]["error"])
    assert "reference_uri s3://no-such-bucket/faces/a.jpg not found" in by_id["no-bucket"]["error"]


def test_a_mistyped_storage_option_is_named_as_one(s3_endpoint, s3, caplog):
    """client_kwargs.endpoint-url (a dash for the underscore) surfaced as botocore's "AioSession._create_client()
    got an unexpected keyword argument", with no word of which option."""
    from jobs.cli import main as cli_main

    options = [option.replace("endpoint_url", "endpoint-url") for option in s3_endpoint.cli_options()]
    code = cli_main(["render", f"s3://{s3_endpoint.bucket}/manifests/none.parquet", "--output",
                     f"s3://{s3_endpoint.bucket}/typo-out", *options])
    assert code == 1
    assert "unexpected keyword argument 'endpoint-url'" in caplog.text
    assert "a storage option the file system does not take" in caplog.text
    assert s3_endpoint.secret not in caplog.text
