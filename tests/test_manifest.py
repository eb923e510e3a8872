"""Manifest validation: job-level errors name the column, row-level errors fail one row."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.manifest import ManifestError, RowError, check_schema, parse_row, read_manifest
from jobs.manifest_builder import pair_folders, rows_from_csv, safe_id, write_manifest

GOOD = {"id": "a-1", "reference_uri": "/x/a.jpg", "driving_uri": "/x/d.mp4"}


def test_missing_required_column_names_it(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["a"], "reference_uri": ["r"]}), path)
    with pytest.raises(ManifestError, match="driving_uri"):
        read_manifest(str(path))


def test_wrong_type_names_the_column():
    schema = pa.schema([("id", pa.string()), ("reference_uri", pa.string()), ("driving_uri", pa.string()),
                        ("seed", pa.string())])
    with pytest.raises(ManifestError, match="'seed'"):
        check_schema(schema)


def test_not_parquet_is_a_job_error(tmp_path):
    path = tmp_path / "m.parquet"
    path.write_text("id,reference_uri\n")
    with pytest.raises(ManifestError, match="not readable Parquet"):
        read_manifest(str(path))


def test_missing_manifest_is_a_job_error(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(str(tmp_path / "nope.parquet"))


def test_good_row_parses_with_optional_settings():
    spec = parse_row(3, {**GOOD, "seed": 7, "fps": 8, "steps": 20, "guidance": 2.0, "prompt": "p", "output_uri": None})
    assert (spec.row_index, spec.id, spec.seed, spec.fps, spec.steps, spec.guidance) == (3, "a-1", 7, 8.0, 20, 2.0)


@pytest.mark.parametrize(
    "change, cause",
    [
        ({"id": "../etc"}, "id"),
        ({"id": "a/b"}, "id"),
        ({"id": ".."}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": ""}, "id"),
        ({"id": None}, "id"),
        ({"reference_uri": "  "}, "reference_uri is empty"),
        ({"driving_uri": None}, "driving_uri is empty"),
        ({"seed": -1}, "seed"),
        ({"steps": 0}, "steps"),
        ({"guidance": math.nan}, "guidance"),
        ({"fps": 0}, "fps"),
        ({"max_seconds": -2.0}, "max_seconds"),
    ],
)
def test_bad_values_fail_the_row(change, cause):
    with pytest.raises(RowError, match=cause):
        parse_row(0, {**GOOD, **change})


def test_csv_and_folder_builders_write_a_valid_manifest(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "d").mkdir()
    for name in ("b.jpg", "a.png"):
        (tmp_path / "p" / name).write_bytes(b"x")
    (tmp_path / "d" / "clip one.mp4").write_bytes(b"x")
    rows = pair_folders(str(tmp_path / "p"), str(tmp_path / "d"), "all")
    assert [row["id"] for row in rows] == ["clip_one-a", "clip_one-b"]
    assert len(pair_folders(str(tmp_path / "p"), str(tmp_path / "d"), "zip")) == 2
    csv_rows = rows_from_csv("id,reference_uri,driving_uri,seed,guidance\nx,r,d,3,1.5\ny,r,d,,\n")
    assert csv_rows[0]["seed"] == 3 and csv_rows[1]["seed"] is None
    out = tmp_path / "m.parquet"
    assert write_manifest(rows + csv_rows, str(out)) == 4
    table = read_manifest(str(out))
    assert table.schema.field("seed").type == pa.int64()
    assert safe_id("/a/b/héllo wörld.mp4") == "h_llo_w_rld"
