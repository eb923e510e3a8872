"""Inputs and outputs on s3:// through s3fs against a real S3 endpoint (moto's server) on 127.0.0.1."""

from __future__ import annotations

import io
import os
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
import ray

from mediaio import clips, media, storage
from tests.bucket_manifest import upload_job
from jobs.cli import main as cli_main
from tests.s3_server import CANARY_SECRET

pytestmark = pytest.mark.ray


def _s3(endpoint):
    return fsspec.filesystem("s3", **endpoint.storage_options)


def test_create_only_write_on_s3(s3_endpoint):
    uri = f"s3://{s3_endpoint.bucket}/unit/a.mp4"
    storage.write_create_only(uri, b"first", s3_endpoint.storage_options)
    with pytest.raises(FileExistsError):
        storage.write_create_only(uri, b"second", s3_endpoint.storage_options)
    assert _s3(s3_endpoint).cat_file(uri) == b"first"


def test_render_from_s3_to_s3(ray_local, s3_endpoint, synthetic_media, tmp_path, capsys, caplog):
    media_dir = synthetic_media
    fs = _s3(s3_endpoint)
    bucket = s3_endpoint.bucket
    pairs = [("astronaut.png", "grace_hopper.mp4"), ("grace_hopper.png", "astronaut.mp4")]
    manifest = upload_job(fs, "s3", bucket, media_dir, pairs, s3_endpoint.storage_options)
    output = f"s3://{bucket}/out"
    args = ["render", manifest, "--output", output, *s3_endpoint.cli_options()]

    assert cli_main(args) == 2
    names = set(fs.ls(f"{bucket}/out", detail=False))
    assert {f"{bucket}/out/grace_hopper.mp4", f"{bucket}/out/astronaut.mp4"} <= names
    assert not any(name.endswith(".partial") for name in names)
    local = tmp_path / "grace_hopper.mp4"
    fs.get_file(f"{bucket}/out/grace_hopper.mp4", str(local))
    clip = media_dir / "drive_videos" / "grace_hopper.mp4"
    assert abs(clips.count_frames(str(local)) - clips.count_frames(str(clip))) <= 1
    results = pq.read_table(io.BytesIO(fs.cat_file(f"{bucket}/out/_results/results.parquet"))).to_pylist()
    assert [r["status"] for r in results] == ["ok", "ok", "failed"]
    assert "nothing.mp4 not found" in results[2]["error"]

    # A rerun renders nothing again: the outputs are there.
    etag_before = fs.info(f"{bucket}/out/grace_hopper.mp4")["ETag"]
    assert cli_main(args) == 2
    assert "0 ok, 1 failed, 2 skipped" in capsys.readouterr().out
    assert fs.info(f"{bucket}/out/grace_hopper.mp4")["ETag"] == etag_before

    # The secret appears nowhere: not in what we printed or logged, not in results, not in Ray's logs.
    printed = capsys.readouterr()
    assert CANARY_SECRET not in printed.out + printed.err + caplog.text
    assert not any(CANARY_SECRET in str(value) for row in results for value in row.values())
    logs_dir = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    for path in logs_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert CANARY_SECRET.encode() not in path.read_bytes(), path
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != CANARY_SECRET
