"""Weights from object storage: one download per node under a lock, verified by size and safetensors header.

Runs against a real S3 server (moto) on 127.0.0.1; "one node" is several processes sharing a cache folder.
"""

from __future__ import annotations

import multiprocessing
import struct

import pytest
import s3fs

from engines.hellomeme_weights_cache import WeightsCacheError, folder_selector, sync, verify_file
from hellomeme.weights import get_release

from .cache_worker import sync_after_barrier
from .tiny_models import save_tiny_weights


def _fs(endpoint) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(**endpoint.storage_options, skip_instance_cache=True)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "hellomeme", seed=0)


@pytest.fixture(scope="module")
def s3_weights(s3_endpoint, tiny_dir):
    uri = f"s3://{s3_endpoint.bucket}/models/hellomeme"
    fs = _fs(s3_endpoint)
    fs.put(str(tiny_dir), uri, recursive=True)
    fs.pipe(f"{uri}/README.md", b"not needed")
    return uri


def test_processes_racing_on_one_cache_download_once(s3_endpoint, s3_weights, tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = 4
    barrier, results = context.Barrier(workers), context.Queue()
    folders = get_release("v5").folders()
    processes = [context.Process(target=sync_after_barrier,
                                 args=(s3_weights, str(tmp_path), s3_endpoint.storage_options, folders, barrier, results))
                 for _ in range(workers)]
    for process in processes:
        process.start()
    downloads = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    fetched = [d for d in downloads if d]
    assert len(fetched) == 1  # exactly one process downloaded; the others found the cache complete
    assert "hm5_motion/diffusion_pytorch_model.safetensors" in fetched[0]
    assert not any(name.endswith("README.md") for name in fetched[0])


def test_cache_is_reused_verified_and_repaired(s3_endpoint, s3_weights, tmp_path):
    select = folder_selector(get_release("v5").folders())
    first = sync(s3_weights, tmp_path, s3_endpoint.storage_options, select=select)
    assert first.downloaded and (first.path / "stable-diffusion-v1-5" / "unet" / "config.json").is_file()
    assert sync(s3_weights, tmp_path, s3_endpoint.storage_options, select=select).downloaded == ()
    damaged = first.path / "hm5_reference" / "diffusion_pytorch_model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a node's disk lost the end of a file
    again = sync(s3_weights, tmp_path, s3_endpoint.storage_options, select=select)
    assert again.downloaded == ("hm5_reference/diffusion_pytorch_model.safetensors",)
    verify_file(damaged, damaged.stat().st_size)


def test_truncated_remote_file_is_refused_and_never_put_in_place(s3_endpoint, tmp_path):
    uri = f"s3://{s3_endpoint.bucket}/broken/lora.safetensors"
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    _fs(s3_endpoint).pipe(uri, struct.pack("<Q", len(header)) + header + b"\0" * 8)  # 8 of 16 data bytes
    with pytest.raises(WeightsCacheError, match="beyond the end"):
        sync(uri, tmp_path, s3_endpoint.storage_options, single=True)
    assert not list(tmp_path.rglob("lora.safetensors"))


def test_single_object_sync_returns_the_local_file(s3_endpoint, tiny_dir, tmp_path):
    uri = f"s3://{s3_endpoint.bucket}/loras/style.safetensors"
    source = tiny_dir / "hm5_motion" / "diffusion_pytorch_model.safetensors"
    _fs(s3_endpoint).put(str(source), uri)
    result = sync(uri, tmp_path, s3_endpoint.storage_options, single=True)
    assert result.path.name == "style.safetensors" and result.path.read_bytes() == source.read_bytes()
    with pytest.raises(WeightsCacheError, match="does not exist"):
        sync(f"s3://{s3_endpoint.bucket}/loras/absent.safetensors", tmp_path, s3_endpoint.storage_options, single=True)
