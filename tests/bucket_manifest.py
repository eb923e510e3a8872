"""A render job's inputs in a bucket (S3 or GCS test servers): portraits and clips uploaded, a manifest naming them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from jobs.manifest_builder import write_manifest


def upload_job(fs: Any, scheme: str, bucket: str, media_dir: Path, pairs: Sequence[tuple[str, str]],
               storage_options: Mapping[str, Any]) -> str:
    """Upload each (portrait, clip) pair under ``{bucket}/in/`` and write a manifest of them plus a row
    ``missing`` whose clip is not there; returns the manifest's URI."""
    rows = []
    for portrait, clip in pairs:
        fs.put_file(str(media_dir / "reference_images" / portrait), f"{bucket}/in/{portrait}")
        fs.put_file(str(media_dir / "drive_videos" / clip), f"{bucket}/in/{clip}")
        rows.append({"id": Path(clip).stem, "reference_uri": f"{scheme}://{bucket}/in/{portrait}",
                     "driving_uri": f"{scheme}://{bucket}/in/{clip}"})
    rows.append({"id": "missing", "reference_uri": f"{scheme}://{bucket}/in/{pairs[0][0]}",
                 "driving_uri": f"{scheme}://{bucket}/in/nothing.mp4"})
    manifest = f"{scheme}://{bucket}/manifests/nightly.parquet"
    write_manifest(rows, manifest, storage_options)
    return manifest
