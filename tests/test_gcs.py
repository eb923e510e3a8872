"""Inputs and outputs on gs:// through gcsfs against a real Google Cloud Storage endpoint (gcp-storage-emulator)
on 127.0.0.1.

The emulator does not enforce upload preconditions, so the create-only publish (gcsfs sends
``ifGenerationMatch=0``) is tested on S3 (tests/test_s3.py), not here.
"""

from __future__ import annotations

import io

import fsspec
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from mediaio import clips, storage
from tests.bucket_manifest import upload_job

pytestmark = pytest.mark.ray


def _gcs(endpoint):
    return fsspec.filesystem("gs", **endpoint.storage_options)


def test_bounded_reads_listing_and_writes_on_gcs(gcs_endpoint):
    options = gcs_endpoint.storage_options
    uri = f"gs://{gcs_endpoint.bucket}/unit/a.bin"
    storage.write_replace(uri, b"x" * 1000, options)
    assert storage.read_bytes(uri, options, max_bytes=1000) == b"x" * 1000
    with pytest.raises(storage.StorageError):
        storage.read_bytes(uri, options, max_bytes=999)
    assert storage.exists(uri, options) and not storage.exists(uri + ".nothing", options)
    assert storage.list_names(f"gs://{gcs_endpoint.bucket}/unit", options) == {"a.bin"}
    with pytest.raises(storage.NotFoundError):
        storage.read_bytes(f"gs://{gcs_endpoint.bucket}/unit/missing.bin", options)


def test_render_from_gcs_to_gcs(ray_local, gcs_endpoint, synthetic_media, tmp_path, capsys):
    fs = _gcs(gcs_endpoint)
    bucket = gcs_endpoint.bucket
    manifest = upload_job(fs, "gs", bucket, synthetic_media, [("astronaut.png", "grace_hopper.mp4")],
                          gcs_endpoint.storage_options)
    args = ["render", manifest, "--output", f"gs://{bucket}/out", *gcs_endpoint.cli_options()]

    assert cli_main(args) == 2  # a row failed; the others are written
    fs.invalidate_cache()
    names = set(fs.ls(f"{bucket}/out", detail=False))
    assert f"{bucket}/out/grace_hopper.mp4" in names
    local = tmp_path / "grace_hopper.mp4"
    fs.get_file(f"{bucket}/out/grace_hopper.mp4", str(local))
    clip = synthetic_media / "drive_videos" / "grace_hopper.mp4"
    assert abs(clips.count_frames(str(local)) - clips.count_frames(str(clip))) <= 1
    results = pq.read_table(io.BytesIO(fs.cat_file(f"{bucket}/out/_results/results.parquet"))).to_pylist()
    assert [r["status"] for r in results] == ["ok", "failed"]
    assert "nothing.mp4 not found" in results[1]["error"]

    # A rerun renders nothing again: the output is there.
    capsys.readouterr()
    assert cli_main(args) == 2
    assert "0 ok, 1 failed, 1 skipped" in capsys.readouterr().out
