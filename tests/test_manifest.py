"""Manifest validation: job-level errors name the column, row-level errors fail one row."""

import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.manifest import ManifestError, ManifestLimits, RowError, check_schema, parse_row, read_manifest
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


def test_a_csv_or_a_spreadsheet_given_as_the_manifest_says_how_to_make_one(tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_text("id;reference_uri;driving_uri\na;faces/a.jpg;clips/x.mp4\n")
    with pytest.raises(ManifestError, match=r"looks like a CSV: make the Parquet manifest with `hellomeme-batch "
                                            r"manifest build --csv FILE -o manifest.parquet`"):
        read_manifest(str(csv))
    sheet = tmp_path / "rows.xlsx"
    sheet.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ManifestError, match="looks like a spreadsheet"):
        read_manifest(str(sheet))
    old_sheet = tmp_path / "rows.xls"
    old_sheet.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100))
    with pytest.raises(ManifestError, match=r"looks like an Excel 97-2003 spreadsheet \(.xls\): save the sheet as CSV"):
        read_manifest(str(old_sheet))
    # JSON (pandas' to_json, JSON lines) names reference_uri on its first line too: it is not a CSV.
    for name, text in (("rows.json", '[{"id":"a","reference_uri":"r.jpg","driving_uri":"d.mp4"}]'),
                       ("rows.jsonl", '{"id":"a","reference_uri":"r.jpg","driving_uri":"d.mp4"}\n')):
        (tmp_path / name).write_text(text)
        with pytest.raises(ManifestError, match=r"looks like JSON: write it as Parquet, e.g. .*read_json") as error:
            read_manifest(str(tmp_path / name))
        assert "looks like a CSV" not in str(error.value)
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(ManifestError) as plain:
        read_manifest(str(other))
    assert "looks like" not in str(plain.value)


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
    assert safe_id("/a/b/héllo wörld.mp4") == "hello_world"  # accents dropped, not the letters


# --- what reading a manifest may cost ----------------------------------------------------------------

from pipelines.manifest import CELL_LIMITS, ROW_ERROR_COLUMN, ManifestLimits, describe_id  # noqa: E402


def _rows(count: int = 3, **extra) -> dict:
    columns = {"id": [f"r{i}" for i in range(count)], "reference_uri": ["/x/a.jpg"] * count,
               "driving_uri": ["/x/d.mp4"] * count}
    columns.update(extra)
    return columns


def test_a_huge_prompt_fails_its_row_only_and_never_becomes_a_python_string(tmp_path):
    path = tmp_path / "m.parquet"
    huge = "a" * 5_000_000  # compresses to almost nothing: the file is small, the cell is not
    pq.write_table(pa.table(_rows(prompt=["fine", huge, None])), path, compression="zstd")
    assert path.stat().st_size < 100_000
    table = read_manifest(str(path))
    assert table.column("prompt").to_pylist() == ["fine", None, None]
    errors = table.column(ROW_ERROR_COLUMN).to_pylist()
    assert errors == [None, f"prompt is 5000000 characters long, over the limit of {CELL_LIMITS['prompt']}", None]
    rows = table.to_pylist()
    assert parse_row(0, rows[0]).prompt == "fine"
    with pytest.raises(RowError, match="prompt is 5000000 characters long"):
        parse_row(1, rows[1])
    assert parse_row(2, rows[2]).prompt is None


def test_over_long_ids_and_uris_fail_their_rows(tmp_path):
    path = tmp_path / "m.parquet"
    columns = _rows(2)
    columns["id"][1] = "i" * 129
    columns["driving_uri"][0] = "/x/" + "d" * 5000
    pq.write_table(pa.table(columns), path)
    table = read_manifest(str(path))
    errors = table.column(ROW_ERROR_COLUMN).to_pylist()
    assert errors[0].startswith("driving_uri is 5003 characters long") and errors[1].startswith("id is 129 characters")
    # The row's line still names its id (it said "no id"), cut, never equal to a real id.
    assert table.column("id").to_pylist()[1] == "i" * 129 + "\u2026"
    assert table.column("driving_uri").to_pylist()[0] is None
    with pytest.raises(RowError, match="reference_uri is 4097 characters long"):
        parse_row(0, {**GOOD, "reference_uri": "r" * 4097})  # rows that did not come through read_manifest


def test_manifest_size_caps_are_job_errors(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table(_rows(50, prompt=[f"{i}" + "p" * 1000 for i in range(50)])), path)
    with pytest.raises(ManifestError, match=r"is \d+ bytes, over the limit of 100 bytes"):
        read_manifest(str(path), limits=ManifestLimits(max_bytes=100))
    with pytest.raises(ManifestError, match="has 50 rows, over the limit of 10"):
        read_manifest(str(path), limits=ManifestLimits(max_rows=10))
    with pytest.raises(ManifestError, match=r"would decode to \d+ bytes, over the limit of 10000 bytes"):
        read_manifest(str(path), limits=ManifestLimits(max_decoded_bytes=10_000))


def test_a_manifest_whose_footer_is_over_its_limit_is_refused_before_the_footer_is_parsed(tmp_path, monkeypatch):
    # Parsed, a footer takes 12-27 times its size: a 37 MB file of 200,000 empty columns held 780 MB on
    # the driver, within the 256 MB file cap.  Its size is read from the file's last 8 bytes.
    path = tmp_path / "m.parquet"
    table = pa.table({**{key: [value] * 20 for key, value in GOOD.items()},
                      **{f"c{index}": pa.nulls(20) for index in range(500)}})
    pq.write_table(table, path, row_group_size=1)
    parsed = []
    monkeypatch.setattr(pq, "ParquetFile", lambda *args, **kwargs: parsed.append(args))
    with pytest.raises(ManifestError, match=r"has a footer .* of \d+ bytes, over the limit of 100000 bytes: write it "
                                            "again with fewer columns or larger row groups"):
        read_manifest(str(path), limits=ManifestLimits(max_footer_bytes=100_000))
    assert parsed == []
    monkeypatch.undo()
    assert read_manifest(str(path)).num_rows == 20  # within the default limit


def test_a_manifest_that_is_a_pipe_or_a_folder_without_parquet_files_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="is a named pipe"):
        read_manifest(str(tmp_path / "m.parquet"))
    with pytest.raises(ManifestError, match="is a named pipe"):  # a folder's part too
        read_manifest(str(tmp_path))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("no manifest here")
    with pytest.raises(ManifestError, match="is a folder without .parquet files"):
        read_manifest(str(tmp_path / "other"))


def test_string_view_large_string_and_dictionary_columns_are_accepted(tmp_path):
    path = tmp_path / "m.parquet"
    table = pa.table({
        "id": pa.array(["a", "b"], pa.string_view()),
        "reference_uri": pa.array(["/x/a.jpg", "/x/b.jpg"], pa.large_string()),
        "driving_uri": pa.array(["/x/d.mp4", "/x/d.mp4"]).dictionary_encode(),
        "prompt": pa.array(["p" * 5000, "short"]).dictionary_encode(),
        "engine": pa.array([b"warp", None], pa.binary_view()),
    })
    pq.write_table(table, path)
    read = read_manifest(str(path))
    assert [read.schema.field(name).type for name in ("id", "reference_uri", "driving_uri", "prompt", "engine")] == [
        pa.string(), pa.string(), pa.string(), pa.string(), pa.binary()]
    rows = read.to_pylist()
    with pytest.raises(RowError, match="prompt is 5000 characters"):
        parse_row(0, rows[0])
    spec = parse_row(1, rows[1])
    assert (spec.id, spec.reference_uri, spec.driving_uri, spec.prompt) == ("b", "/x/b.jpg", "/x/d.mp4", "short")


def test_decimal_number_columns_are_read_as_numbers(tmp_path):
    """DuckDB and Spark SQL write a literal such as 1.5 as a decimal: it stopped the job as the wrong type."""
    from decimal import Decimal

    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({
        "id": ["a", "b"], "reference_uri": ["/x/a.jpg", "/x/b.jpg"], "driving_uri": ["/x/d.mp4", "/x/d.mp4"],
        "max_seconds": pa.array([Decimal("1.50"), None], pa.decimal128(5, 2)),
        "seed": pa.array([Decimal("7"), Decimal("7.5")], pa.decimal128(3, 1)),
    }), path)
    rows = read_manifest(str(path)).to_pylist()
    first = parse_row(0, rows[0])
    assert first.max_seconds == 1.5 and first.seed == 7 and isinstance(first.seed, int)
    with pytest.raises(RowError, match="seed must be a whole number, got 7.5"):
        parse_row(1, rows[1])


def test_unknown_columns_are_not_read_and_named_once(tmp_path, caplog):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table(_rows(2, notes=["n" * 10, "m"], **{"evil\x1b[2J": ["x", "y"]})), path)
    caplog.set_level("WARNING", logger="pipelines.manifest")
    table = read_manifest(str(path))
    assert "notes" not in table.column_names and "evil\x1b[2J" not in table.column_names
    [warning] = [record for record in caplog.records if "unknown column" in record.getMessage()]
    assert "notes" in warning.getMessage() and "evil\\x1b[2J" in warning.getMessage()
    assert "\x1b" not in warning.getMessage()



@pytest.mark.parametrize("written, meant", [("max_second", "max_seconds"), ("Max_Seconds", "max_seconds"),
                                            ("Seed", "seed"), ("FPS", "fps"), ("lora-scale", "lora_scale"),
                                            ("max_secnods", "max_seconds"), ("max-seconds", "max_seconds"),
                                            ("lora_scael", "lora_scale"), ("output_url", "output_uri")])
def test_a_misspelled_setting_column_stops_the_job_naming_the_setting(written, meant):
    # Ignored, it left every row on the default: a 3-s cap misspelled rendered whole clips all night.
    schema = pa.schema([*(pa.field(name, pa.string()) for name in GOOD), pa.field(written, pa.float64())])
    with pytest.raises(ManifestError, match=f"{written!r} is not one this tool reads: did you mean {meant!r}"):
        check_schema(schema)


def test_a_misspelled_required_column_is_named_and_columns_of_ones_own_are_not_misspellings():
    schema = pa.schema([("id", pa.string()), ("Reference_URI", pa.string()), ("driving_uri", pa.string())])
    with pytest.raises(ManifestError, match="no required column 'reference_uri': did you mean 'Reference_URI'"):
        check_schema(schema)
    own = ("ids", "notes", "reference", "output", "__index_level_0__", "speed", "fps2", "seed2", "sed", "loras",
           "lora_scales", "engines", "prompts", "step", "max_secs", "ID")
    check_schema(pa.schema([*(pa.field(name, pa.string()) for name in (*GOOD, *own))]))  # the user's own columns


def test_a_column_that_only_looks_like_a_setting_is_read_past_with_a_question(tmp_path, caplog):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table(_rows(2, speed=[1.0, 2.0], notes=["a", "b"])), path)
    caplog.set_level("WARNING", logger="pipelines.manifest")
    read_manifest(str(path))
    assert "speed (not 'seed': if it was meant to be, rename it), notes" in caplog.text


@pytest.mark.parametrize("columns", [2_000, 20_000])
def test_checking_a_wide_manifest_costs_work_in_proportion_to_its_columns(columns, monkeypatch):
    # Each column's name was checked against a fresh set of all the names: 20,000 columns took 17 s
    # on the driver before any row ran, 200,000 (a 37 MB file) half an hour.  The names the check
    # hashes are counted here, not timed.
    from pipelines import manifest

    hashed = []

    class CountingSet(set):
        def __init__(self, items=()):
            super().__init__(items)
            hashed.append(len(self))

    monkeypatch.setattr(manifest, "set", CountingSet, raising=False)
    names = ["id", "reference_uri", "driving_uri", "Max_Secs"] + [f"c{index}" for index in range(columns)]
    check_schema(pa.schema([(name, pa.string()) for name in names]))
    manifest.unknown_columns_note(pa.schema([(name, pa.string()) for name in names]))
    assert sum(hashed) <= 3 * len(names)


def test_a_repeated_known_column_is_a_job_error():
    schema = pa.schema([("id", pa.string()), ("id", pa.string()), ("reference_uri", pa.string()),
                        ("driving_uri", pa.string())])
    with pytest.raises(ManifestError, match="'id' appears 2 times"):
        check_schema(schema)


def test_ids_are_described_escaped_and_cut():
    assert describe_id("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert describe_id(b"\xffz") == "\\xffz"
    assert describe_id("x" * 10_000) == "x" * 200 + "..."


def test_the_builder_refuses_cells_the_job_would_refuse(tmp_path):
    with pytest.raises(ManifestError, match="row 1: prompt is 5000 characters long"):
        write_manifest([{**GOOD}, {**GOOD, "id": "b", "prompt": "p" * 5000}], str(tmp_path / "m.parquet"))


# --- hostile-input probe: what users really write ------------------------------------------------------

import logging  # noqa: E402

import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from engines.registry import engine_spec  # noqa: E402
from jobs.cli import build_parser  # noqa: E402
from mediaio import storage  # noqa: E402
from mediaio.clips import ALLOWED_DEMUXERS  # noqa: E402
from pipelines.manifest import ID_PATTERN  # noqa: E402
from pipelines.plan import JobConfig, plan_rows  # noqa: E402


def _build(*argv: str) -> int:
    """``hellomeme-batch manifest build ARGV`` as the CLI runs it, without starting logging or Ray."""
    args = build_parser().parse_args(["manifest", "build", *argv])
    return args.run(args)


def _plan_manifest(tmp_path, manifest_uri: str) -> list[dict]:
    config = JobConfig(manifest_uri=manifest_uri, output_uri=str(tmp_path / "out"), engine=engine_spec("warp"))
    plan = plan_rows(read_manifest(manifest_uri), config)
    return sorted(plan.pending + plan.settled, key=lambda r: r["row_index"])


def test_a_pandas_manifest_with_an_optional_integer_column_is_read(tmp_path):
    """pandas writes an optional int column as float64 with NaN for its gaps: whole values are integers."""
    path = tmp_path / "m.parquet"
    frame = pd.DataFrame({"id": ["a", "b", "c", "d", "e"], "reference_uri": ["/x/a.jpg"] * 5,
                          "driving_uri": ["/x/d.mp4"] * 5,
                          "seed": [3, None, 1.5, math.inf, 7], "steps": [20, 30, None, None, -math.inf]})
    frame.to_parquet(path)
    assert pq.read_schema(path).field("seed").type == pa.float64()
    table = read_manifest(str(path))
    rows = table.to_pylist()
    first = parse_row(0, rows[0])
    assert (first.seed, first.steps) == (3, 20) and isinstance(first.seed, int) and isinstance(first.steps, int)
    assert (parse_row(1, rows[1]).seed, parse_row(1, rows[1]).steps) == (None, 30)
    with pytest.raises(RowError, match=r"seed must be a whole number, got 1\.5"):
        parse_row(2, rows[2])
    with pytest.raises(RowError, match="seed must be a whole number, got inf"):
        parse_row(3, rows[3])
    with pytest.raises(RowError, match="steps must be a whole number, got -inf"):
        parse_row(4, rows[4])
    planned = _plan_manifest(tmp_path, str(path))
    assert [r["status"] for r in planned] == ["pending", "pending", "failed", "failed", "failed"]
    assert planned[1]["seed"] == 0  # the default, as for an integer column's null
    assert "seed must be a whole number, got 1.5" in planned[2]["error"]


def test_a_nan_in_a_float_integer_column_is_a_gap_and_strings_still_are_refused():
    assert parse_row(0, {**GOOD, "seed": math.nan, "steps": 12.0}).seed is None
    assert parse_row(0, {**GOOD, "seed": math.nan, "steps": 12.0}).steps == 12
    float_seed = pa.schema([("id", pa.string()), ("reference_uri", pa.string()), ("driving_uri", pa.string()),
                            ("seed", pa.float32())])
    check_schema(float_seed)
    with pytest.raises(ManifestError, match="'steps' has type string"):
        check_schema(float_seed.append(pa.field("steps", pa.string())))


def test_every_mistyped_column_is_named_at_once_with_the_way_to_write_it():
    """Text where numbers go ("30", "2s") and numbers where text goes (ids 1, 2): one stop names them all."""
    texts = pa.schema([("id", pa.string()), ("reference_uri", pa.string()), ("driving_uri", pa.string()),
                       ("seed", pa.large_string()), ("fps", pa.string()), ("max_seconds", pa.string())])
    with pytest.raises(ManifestError, match=r"columns of the wrong type: 'seed' has type large_string, expected "
                       r"integer .*; 'fps' has type string, expected number; 'max_seconds' .*\(seed, fps, "
                       r"max_seconds hold text: write numbers without units .*pd.to_numeric"):
        check_schema(texts)
    numbered = pa.schema([("id", pa.int64()), ("reference_uri", pa.string()), ("driving_uri", pa.string())])
    with pytest.raises(ManifestError, match=r"column 'id' has type int64, expected string \(write id as text, "
                                            r"e.g. df\['id'\] = df\['id'\].astype\(str\)\)"):
        check_schema(numbered)


def test_a_missing_id_says_missing_and_never_collides_with_the_id_none(tmp_path):
    for missing in (None, "", "  "):
        with pytest.raises(RowError, match="id is missing"):
            parse_row(0, {**GOOD, "id": missing})
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table(_rows(2, id=[None, "None"])), path)
    planned = _plan_manifest(tmp_path, str(path))
    assert "id is missing" in planned[0]["error"] and "'None'" not in planned[0]["error"]
    assert planned[1]["status"] == "pending"  # not a 'duplicate' of the row with no id


def test_csv_build_refuses_a_header_without_the_required_columns(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    misspelt = tmp_path / "misspelt.csv"
    misspelt.write_text("id,reference,driving_url\na,/x/a.jpg,/x/d.mp4\n")
    assert _build("--csv", str(misspelt), "-o", str(tmp_path / "m.parquet")) == 1
    assert not (tmp_path / "m.parquet").exists()
    message = caplog.records[-1].getMessage()
    assert "reference_uri" in message and "driving_uri" in message and "driving_url" in message
    # A spreadsheet's labels: every required column is hinted, as the render's misspelling rule reads them.
    with pytest.raises(ManifestError, match="did you mean 'id' for 'ID'.*did you mean 'reference_uri' for "
                       "'Reference URI'.*did you mean 'driving_uri' for 'Driving URI'"):
        rows_from_csv("ID,Reference URI,Driving URI\na,r,d\n")
    with pytest.raises(ManifestError, match="looks tab-separated"):
        rows_from_csv("id\treference\tdriving\na\tr\td\n")
    with pytest.raises(ManifestError, match="looks ';'-separated"):
        rows_from_csv("ID;reference_uri;driving_uri\na;r;d\n")
    with pytest.raises(ManifestError, match="no rows"):
        rows_from_csv("id,reference_uri,driving_uri\n")
    with pytest.raises(ManifestError, match="line 3: id is empty"):
        rows_from_csv("id,reference_uri,driving_uri\na,r,d\n,r,d\n")
    good = tmp_path / "good.csv"
    good.write_text("id,reference_uri,driving_uri\na,/x/a.jpg,/x/d.mp4\n")
    caplog.clear()  # both ways of giving rows at once: the folders were silently ignored
    assert _build("--csv", str(good), "--portraits", str(tmp_path), "-o", str(tmp_path / "m.parquet")) == 1
    assert "not both" in caplog.records[-1].getMessage() and not (tmp_path / "m.parquet").exists()


def test_csv_build_reads_a_semicolon_or_tab_separated_csv(tmp_path):
    for delimiter in (";", "\t"):
        text = delimiter.join(["id", "reference_uri", "driving_uri", "seed"]) + "\n"
        text += delimiter.join(["a", "/x/a.jpg", "/x/d.mp4", "4"]) + "\n"
        rows = rows_from_csv(text)
        assert rows == [{"id": "a", "reference_uri": "/x/a.jpg", "driving_uri": "/x/d.mp4", "seed": 4}]
    assert rows_from_csv(" id , reference_uri,driving_uri\na,r,d\n")[0]["id"] == "a"  # spaces around names
    # A European spreadsheet's ';' CSV writes decimal commas; in a ',' CSV "1,5" would be two fields.
    european = rows_from_csv("id;reference_uri;driving_uri;max_seconds;seed\na;r;d;1,5;3\n")
    assert european[0]["max_seconds"] == 1.5 and european[0]["seed"] == 3
    with pytest.raises(ManifestError, match="column 'seed' expects an integer, got '1,5'"):
        rows_from_csv("id;reference_uri;driving_uri;seed\na;r;d;1,5\n")


def test_csv_build_names_a_parquet_json_or_spreadsheet_given_as_the_csv(tmp_path):
    """Each said 'not UTF-8 text ... iconv -f cp1252' (or listed a JSON line as the header)."""
    from jobs.manifest_builder import rows_from_csv_file
    write_manifest([{"id": "a", "reference_uri": "r.jpg", "driving_uri": "d.mp4"}], str(tmp_path / "m.parquet"))
    (tmp_path / "rows.json").write_text('[{"id": "a", "reference_uri": "r.jpg", "driving_uri": "d.mp4"}]')
    (tmp_path / "rows.xlsx").write_bytes(b"PK\x03\x04" + bytes(100))
    (tmp_path / "rows.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100))
    for name, said in (("m.parquet", r"is a Parquet file, a manifest already: render it \(`hellomeme-batch render "),
                       ("rows.json", r"looks like JSON, not a CSV: write it as Parquet"),
                       ("rows.xlsx", r"is a spreadsheet \(.xlsx, .ods\) or a zip, not a CSV: save the sheet as "
                                     r"'CSV UTF-8'"),
                       ("rows.xls", r"is an Excel 97-2003 spreadsheet \(.xls\), not a CSV")):
        with pytest.raises(ManifestError, match=said):
            rows_from_csv_file(str(tmp_path / name), str(tmp_path / "out.parquet"))


def test_csv_build_refuses_a_windows_path_naming_its_row(tmp_path):
    from jobs.manifest_builder import rows_from_csv_file
    made_on_windows = tmp_path / "rows.csv"
    made_on_windows.write_text("id,reference_uri,driving_uri\na,faces/a.jpg,clips/d.mp4\nb,C:\\faces\\b.jpg,d.mp4\n")
    with pytest.raises(ManifestError,
                       match=r"row 2 \(id b\), reference_uri: C:\\faces\\b.jpg looks like a Windows path"):
        rows_from_csv_file(str(made_on_windows), str(tmp_path / "m.parquet"))


def test_csv_build_resolves_relative_paths_beside_the_csv(tmp_path):
    (tmp_path / "mb" / "faces").mkdir(parents=True)
    (tmp_path / "mb" / "faces" / "a.jpg").write_bytes(b"x")
    (tmp_path / "mb" / "d.mp4").write_bytes(b"x")
    (tmp_path / "mb" / "rows.csv").write_text(
        "id,reference_uri,driving_uri\n"
        f"a,faces/a.jpg,d.mp4\nb,{tmp_path / 'abs.jpg'},s3://bucket/d.mp4\n")
    out = tmp_path / "elsewhere" / "deep" / "m.parquet"
    out.parent.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert _build("--csv", "mb/rows.csv", "-o", str(out)) == 0
    finally:
        os.chdir(cwd)
    rows = read_manifest(str(out)).to_pylist()
    assert rows[0]["reference_uri"] == "../../mb/faces/a.jpg"  # relative to the manifest: the tree can move
    assert storage.normalize(storage.relative_to_file(rows[0]["reference_uri"], str(out))) == str(
        tmp_path / "mb" / "faces" / "a.jpg")
    assert (rows[1]["reference_uri"], rows[1]["driving_uri"]) == (str(tmp_path / "abs.jpg"), "s3://bucket/d.mp4")
    planned = _plan_manifest(tmp_path, str(out))
    assert planned[0]["reference_uri"] == str(tmp_path / "mb" / "faces" / "a.jpg")
    assert planned[0]["driving_uri"] == str(tmp_path / "mb" / "d.mp4")
    # A manifest written to a bucket cannot reach local files by a relative path: they become absolute.
    from jobs.manifest_builder import rebase_relative_paths

    [moved] = rebase_relative_paths([{"id": "a", "reference_uri": "faces/a.jpg", "driving_uri": "d.mp4",
                                      "lora": "l/x.safetensors"}], str(tmp_path / "mb" / "rows.csv"),
                                    "s3://bucket/m.parquet")
    assert moved["reference_uri"] == str(tmp_path / "mb" / "faces" / "a.jpg")
    assert moved["lora"] == str(tmp_path / "mb" / "l" / "x.safetensors")


def test_folder_build_gives_unique_readable_ids(tmp_path, caplog):
    (tmp_path / "p").mkdir()
    (tmp_path / "d").mkdir()
    for name in ("a.jpg", "a.png", "été.png", "日本.jpg", "中国.jpg", "ete.webp"):
        (tmp_path / "p" / name).write_bytes(b"x")
    (tmp_path / "d" / "clip.mp4").write_bytes(b"x")
    caplog.set_level(logging.WARNING, logger="jobs.manifest_builder")
    rows = pair_folders(str(tmp_path / "p"), str(tmp_path / "d"), "all")
    ids = [row["id"] for row in rows]
    assert len(set(ids)) == len(ids) == 6
    assert all(ID_PATTERN.fullmatch(meme_id) for meme_id in ids)
    by_file = {os.path.basename(row["reference_uri"]): row["id"] for row in rows}
    assert by_file["a.jpg"] == "clip-a" and by_file["a.png"] == "clip-a-2"
    assert by_file["ete.webp"] == "clip-ete" and by_file["été.png"] == "clip-ete-2"
    assert by_file["日本.jpg"] != by_file["中国.jpg"] and by_file["日本.jpg"].startswith("clip-")
    assert pair_folders(str(tmp_path / "p"), str(tmp_path / "d"), "all") == rows  # deterministic
    assert any("clip-a" in record.getMessage() for record in caplog.records)
    assert safe_id("/a/b/héllo wörld.mp4") == "hello_world" and safe_id("Straße.mp4") == "Strasse"


def test_folder_build_leaves_out_a_macs_metadata_files_hidden_names_folders_and_empty_files(tmp_path, caplog):
    """A folder copied from a Mac builds the manifest the clean folder builds, same ids and pairs."""
    clean, copied = tmp_path / "clean", tmp_path / "copied"
    for root in (clean, copied):
        (root / "p").mkdir(parents=True)
        (root / "d").mkdir()
        for name in ("harris.jpg", "trump.jpg"):
            (root / "p" / name).write_bytes(b"x")
        for name in ("nice.mp4", "jue.mp4"):
            (root / "d" / name).write_bytes(b"x")
    appledouble = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "
    for junk in ("p/._harris.jpg", "p/._trump.jpg", "d/._nice.mp4", "p/.hidden.jpg"):
        (copied / junk).write_bytes(appledouble)
    (copied / "p" / ".DS_Store").write_bytes(bytes(16))
    (copied / "p" / "empty.jpg").write_bytes(b"")
    (copied / "d" / "bundle.mov").mkdir()
    (copied / "p" / "more").mkdir()  # a sub-folder of portraits: not searched, and said so (it went unsaid)
    (copied / "p" / "more" / "kjl.jpg").write_bytes(b"x")
    caplog.set_level(logging.WARNING, logger="jobs.manifest_builder")
    for pairing in ("zip", "all"):
        rows = pair_folders(str(copied / "p"), str(copied / "d"), pairing)
        expected = pair_folders(str(clean / "p"), str(clean / "d"), pairing)
        assert [(row["id"], os.path.basename(row["reference_uri"]), os.path.basename(row["driving_uri"]))
                for row in rows] == [(row["id"], os.path.basename(row["reference_uri"]),
                                      os.path.basename(row["driving_uri"])) for row in expected]
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "._harris.jpg (hidden)" in warned and "empty.jpg (empty)" in warned and "bundle.mov (not a file)" in warned
    assert "more/ (a sub-folder: not searched)" in warned


def test_one_mixed_folder_takes_a_gif_as_a_clip_only(tmp_path):
    for name in ("face.jpg", "funny.gif", "talk.mp4"):
        (tmp_path / name).write_bytes(b"x")
    rows = pair_folders(str(tmp_path), str(tmp_path), "all")
    assert sorted((os.path.basename(r["reference_uri"]), os.path.basename(r["driving_uri"])) for r in rows) == [
        ("face.jpg", "funny.gif"), ("face.jpg", "talk.mp4")]


def test_folder_build_ids_differ_in_more_than_case(tmp_path):
    """``Cat`` and ``cat`` would be one file on a Mac's or Windows' disk: the second gets its own id."""
    (tmp_path / "p").mkdir()
    (tmp_path / "d").mkdir()
    for name in ("Cat.jpg", "cat.png", "cat-2.jpg"):
        (tmp_path / "p" / name).write_bytes(b"x")
    (tmp_path / "d" / "clip.mp4").write_bytes(b"x")
    ids = [row["id"] for row in pair_folders(str(tmp_path / "p"), str(tmp_path / "d"), "all")]
    assert ids == ["clip-Cat", "clip-cat-2", "clip-cat-3"]
    assert len({meme_id.casefold() for meme_id in ids}) == 3


def test_folder_build_finds_every_format_the_renderer_reads(tmp_path):
    from mediaio.clips import VIDEO_SUFFIXES
    from mediaio.media import IMAGE_SUFFIXES

    images = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic", ".heif", ".avif", ".tif", ".tiff", ".gif")
    videos = (".mp4", ".gif", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ogv", ".m4v",
              ".webm", ".mkv", ".mov", ".avi")
    (tmp_path / "p").mkdir()
    (tmp_path / "d").mkdir()
    for suffix in images:
        (tmp_path / "p" / f"i{suffix.upper()}").write_bytes(b"x")
    for suffix in videos:
        (tmp_path / "d" / f"v{suffix}").write_bytes(b"x")
    (tmp_path / "d" / "notes.txt").write_bytes(b"x")
    rows = pair_folders(str(tmp_path / "p"), str(tmp_path / "d"), "all")
    assert {os.path.basename(row["reference_uri"]) for row in rows} == {f"i{s.upper()}" for s in images}
    assert {os.path.basename(row["driving_uri"]) for row in rows} == {f"v{s}" for s in videos}
    # Each list is what its reader opens: Pillow's formats for portraits, the demuxer allow-list for clips.
    assert all(Image.registered_extensions()[suffix] in Image.OPEN for suffix in IMAGE_SUFFIXES)
    assert set(VIDEO_SUFFIXES.values()) <= set(ALLOWED_DEMUXERS)


def test_a_build_never_overwrites_its_own_inputs_or_a_file_that_is_not_a_manifest(tmp_path):
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("id,reference_uri,driving_uri\nm1,/x/face.jpg,/x/one.mp4\n")
    assert _build("--csv", str(csv_path), "-o", str(csv_path)) == 1
    assert csv_path.read_text().startswith("id,reference_uri")  # the user's CSV is still there
    faces, clips_dir = tmp_path / "faces", tmp_path / "clips"
    faces.mkdir()
    clips_dir.mkdir()
    (faces / "face.jpg").write_bytes(b"\xff\xd8\xffjpeg")
    (clips_dir / "one.mp4").write_bytes(b"mp4")
    assert _build("--portraits", str(faces), "--drivers", str(clips_dir), "-o", str(faces / "face.jpg")) == 1
    assert (faces / "face.jpg").read_bytes() == b"\xff\xd8\xffjpeg"
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert _build("--csv", str(csv_path), "-o", str(notes)) == 1 and notes.read_text() == "mine"
    # An earlier manifest is rebuilt in place.
    manifest = tmp_path / "m.parquet"
    assert _build("--csv", str(csv_path), "-o", str(manifest)) == 0
    assert _build("--csv", str(csv_path), "-o", str(manifest)) == 0


def test_a_folder_of_parquet_files_is_read_as_one_manifest_in_path_order(tmp_path):
    # What Spark (part files and _SUCCESS), Dask, DuckDB's PARTITION_BY and Ray Data's write_parquet make.
    import pyarrow.dataset as ds

    folder = tmp_path / "nightly.parquet"
    folder.mkdir()
    pq.write_table(pa.table(_rows(2)), folder / "part-00000.parquet")
    later = {name: [f"{value}-b" for value in values] for name, values in _rows(2).items()}
    pq.write_table(pa.table({**later, "seed": [7, 8]}), folder / "part-00001.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-00000.parquet.crc").write_bytes(b"\x00crc")
    (folder / "backup").mkdir()  # not a key=value partition: not the table's
    pq.write_table(pa.table(_rows(2)), folder / "backup" / "manifest-old.parquet")
    table = read_manifest(str(folder))
    assert table.column("id").to_pylist() == [*_rows(2)["id"], *later["id"]]
    assert table.column("seed").to_pylist()[2:] == ["7", "8"] or table.column("seed").to_pylist()[2:] == [7, 8]
    hive = tmp_path / "hive"
    ds.write_dataset(pa.table({**_rows(4), "batch": ["x", "x", "y", "y"]}), hive, format="parquet",
                     partitioning=["batch"], partitioning_flavor="hive")
    assert sorted(read_manifest(str(hive)).column("id").to_pylist()) == sorted(_rows(4)["id"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError, match="folder without .parquet files"):
        read_manifest(str(empty))
    with pytest.raises(ManifestError, match="rows, over the limit"):  # the limits hold for the whole folder
        read_manifest(str(folder), limits=ManifestLimits(max_rows=3))


def test_partition_folders_give_their_rows_the_value_in_their_name(tmp_path, caplog, monkeypatch):
    """pandas' and pyarrow's partition_cols, Spark's partitionBy and DuckDB's PARTITION_BY keep a partition
    column's value only in its folder's name: read without it, every row of max_seconds=0.5/ rendered
    its whole clip, marked ok."""
    folder = tmp_path / "partitioned"
    rows = {**_rows(4), "max_seconds": [0.5, 0.5, 2.0, 2.0], "engine": ["warp"] * 4, "team": ["a", "b", "a", "b"],
            "prompt": ["x y", "x y", None, None]}
    pq.write_to_dataset(pa.table(rows), folder, partition_cols=["max_seconds", "engine", "team", "prompt"])
    table = read_manifest(str(folder))
    by_id = {row["id"]: row for row in table.to_pylist()}
    assert {meme_id: (row["max_seconds"], row["engine"], row["prompt"]) for meme_id, row in by_id.items()} == {
        meme_id: (seconds, "warp", prompt) for meme_id, seconds, prompt in zip(rows["id"], rows["max_seconds"],
                                                                               rows["prompt"])}
    assert "team" not in table.column_names  # a column of the user's own, named with the unknown ones
    assert any("team" in record.getMessage() and "unknown column" in record.getMessage() for record in caplog.records)
    [spec] = [parse_row(0, row) for row in table.to_pylist() if row["id"] == rows["id"][0]]
    assert spec.max_seconds == 0.5
    # A folder that names a setting with a value that is not one, or a column the file also has, is refused.
    bad = tmp_path / "bad"
    pq.write_to_dataset(pa.table({**_rows(2), "fps": ["fast", "fast"]}), bad, partition_cols=["fps"])
    with pytest.raises(ManifestError, match=r"fps=fast gives 'fps' a value that is not a number"):
        read_manifest(str(bad))
    # However the folder is named: relative, file://, with a doubled slash (the values were dropped).
    monkeypatch.chdir(tmp_path)
    for name in ("partitioned", f"file://{folder}", f"{tmp_path}//partitioned"):
        assert sorted(read_manifest(name).column("max_seconds").to_pylist()) == [0.5, 0.5, 2.0, 2.0], name
    big = tmp_path / "big" / "seed=9007199254740993"
    big.mkdir(parents=True)
    pq.write_table(pa.table(_rows(1)), big / "part-0.parquet")
    pq.write_table(pa.table({**_rows(1), "seed": pa.array([5], pa.int64())}), big.parent / "part-1.parquet")
    assert read_manifest(str(big.parent)).column("seed").to_pylist() == [5, 9007199254740993] or \
        sorted(read_manifest(str(big.parent)).column("seed").to_pylist()) == [5, 9007199254740993]
    nested = tmp_path / "nested" / "fps=10" / "fps=12"
    nested.mkdir(parents=True)
    pq.write_table(pa.table(_rows(1)), nested / "part-0.parquet")
    with pytest.raises(ManifestError, match=r"fps is named by two folders of one path \(fps=10 and fps=12\)"):
        read_manifest(str(tmp_path / "nested"))
    twice = tmp_path / "twice" / "seed=3"
    twice.mkdir(parents=True)
    pq.write_table(pa.table({**_rows(2), "seed": [1, 2]}), twice / "part-0.parquet")
    with pytest.raises(ManifestError, match=r"'seed' is both a column of the file and the name of the folder"):
        read_manifest(str(twice.parent))


def test_a_delta_table_and_files_in_plain_sub_folders_are_refused_saying_why(tmp_path):
    """A Delta table's folder keeps the files an overwrite replaced until it is vacuumed: read as plain
    Parquet, the old rows rendered and the current ones failed as duplicates.  Files in dated
    sub-folders were "a folder without .parquet files"."""
    delta = tmp_path / "delta"
    (delta / "_delta_log").mkdir(parents=True)
    (delta / "_delta_log" / "00000000000000000001.json").write_text("{}")
    pq.write_table(pa.table(_rows(2)), delta / "part-00000-old.parquet")
    pq.write_table(pa.table(_rows(2)), delta / "part-00000-new.parquet")
    with pytest.raises(ManifestError, match=r"is a Delta table.*_delta_log/ tells apart"):
        read_manifest(str(delta))
    dated = tmp_path / "dated" / "2026-12-01"
    dated.mkdir(parents=True)
    pq.write_table(pa.table(_rows(2)), dated / "part-0.parquet")
    with pytest.raises(ManifestError, match=r"only in sub-folders that are not key=value partitions \(such as "
                                            r".*2026-12-01/\)"):
        read_manifest(str(dated.parent))


def test_pandas_index_column_is_not_named_among_the_unknown_columns(tmp_path, caplog):
    import pandas as pd

    frame = pd.DataFrame(_rows(4)).iloc[[3, 0, 1]]  # filtered: pandas writes its index as __index_level_0__
    frame.to_parquet(tmp_path / "m.parquet")
    assert "__index_level_0__" in pq.read_schema(tmp_path / "m.parquet").names
    assert read_manifest(str(tmp_path / "m.parquet")).column("id").to_pylist() == list(frame["id"])
    assert not [record for record in caplog.records if "unknown column" in record.getMessage()]


def test_a_bad_part_of_a_manifest_folder_is_named(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table(_rows(2)), folder / "part-0.parquet")
    pq.write_table(pa.table({**_rows(2), "seed": ["x", "y"]}), folder / "part-1.parquet")
    with pytest.raises(ManifestError, match=r"'seed' has type string.*\(in .*part-1\.parquet"):
        read_manifest(str(folder))


def test_padded_cells_are_empty_and_an_output_name_with_a_control_character_fails_its_row():
    # Spreadsheet exports pad cells: a blank output_uri is the default {id}.mp4, " WARP" the warp engine.
    spec = parse_row(0, {**GOOD, "output_uri": "   ", "engine": " WARP "})
    assert spec.output_uri is None and spec.engine == "warp"
    with pytest.raises(RowError, match=r"output_uri 'ctl\\nname.mp4' holds a control character"):
        parse_row(0, {**GOOD, "output_uri": "ctl\nname.mp4"})


def test_building_again_over_a_jobs_output_leaves_its_memes_out(tmp_path, caplog):
    """A nightly 'build, then render into the same folder': the rebuild took the night's memes as new driving
    clips (memes of memes, more each night).  The videos the folder's results table records are left out."""
    import numpy as np

    from mediaio import media
    from pipelines.outputs import FINGERPRINT_TAG
    from reporting.results import write_results

    project = tmp_path / "project"
    project.mkdir()
    Image.new("RGB", (64, 64)).save(project / "harris.jpg")
    (project / "clip.mp4").write_bytes(b"clip")
    assert _build("--portraits", str(project), "--drivers", str(project), "-o", str(project / "m.parquet")) == 0
    meme = media.encode_mp4(np.zeros((4, 64, 64, 3), np.uint8), 4.0, 4.0, 1.0, None, media.MediaLimits(),
                            metadata={"comment": FINGERPRINT_TAG + "a" * 32})
    (project / "clip-harris.mp4").write_bytes(meme)  # what the render left, with its results table
    write_results([{"row_index": 0, "id": "clip-harris", "status": "ok", "output_uri": str(project / "clip-harris.mp4"),
                    "frames": 12}], str(project))
    project = project.rename(tmp_path / "moved")  # the table names the meme where it was first written
    assert _build("--portraits", str(project), "--drivers", str(project), "-o", str(project / "m.parquet")) == 0
    rows = read_manifest(str(project / "m.parquet")).to_pylist()
    assert [(os.path.basename(r["reference_uri"]), os.path.basename(r["driving_uri"])) for r in rows] == [
        ("harris.jpg", "clip.mp4")]
    assert "1 video(s) in" in caplog.text and "memes this tool rendered there" in caplog.text


def test_csvs_as_spreadsheets_and_pandas_write_them(tmp_path):
    from jobs.manifest_builder import rows_from_csv, rows_from_csv_file

    # Excel's trailing empty columns; pandas' 1.0 for an integer column with gaps.
    rows = rows_from_csv("id,reference_uri,driving_uri,seed,,,\na,/x/a.jpg,/x/d.mp4,1.0,,,\nb,/x/b.jpg,/x/d.mp4,,,,\n")
    assert [(row["id"], row["seed"]) for row in rows] == [("a", 1), ("b", None)] and isinstance(rows[0]["seed"], int)
    with pytest.raises(ManifestError, match="column 'seed' expects an integer, got '1.5'"):
        rows_from_csv("id,reference_uri,driving_uri,seed\na,/x/a.jpg,/x/d.mp4,1.5\n")
    # Excel's "Unicode Text" (UTF-16 with its BOM) reads; a legacy code page is named, with the way out.
    text = "id\treference_uri\tdriving_uri\ncafe\t/x/caf\u00e9.jpg\t/x/d.mp4\n"
    (tmp_path / "unicode.csv").write_bytes(text.encode("utf-16"))
    assert rows_from_csv_file(str(tmp_path / "unicode.csv"), str(tmp_path / "m.parquet"))[0]["reference_uri"] \
        == "/x/caf\u00e9.jpg"
    (tmp_path / "cp1252.csv").write_bytes(text.replace("\t", ",").encode("cp1252"))
    with pytest.raises(ManifestError, match=r"is not UTF-8 text \(byte 0xe9 on line 2\): save it as 'CSV UTF-8'"):
        rows_from_csv_file(str(tmp_path / "cp1252.csv"), str(tmp_path / "m.parquet"))


def test_manifest_build_names_what_the_render_would_fail_and_refuses_a_misleading_name(tmp_path, caplog):
    csv = tmp_path / "rows.csv"
    csv.write_text("id,reference_uri,driving_uri\na,/x/a.jpg,/x/d.mp4\na,/x/b.jpg,/x/d.mp4\ncaf\u00e9,/x/c.jpg,/x/d.mp4\n")
    assert _build("--csv", str(csv), "-o", str(tmp_path / "m.parquet")) == 0
    assert "1 rows have invalid ids" in caplog.text and "caf\u00e9" in caplog.text
    assert "1 rows have ids used more than once" in caplog.text
    # Settings by the render's own rule: each row named with the setting, its value and the range.
    ranges = tmp_path / "ranges.csv"
    ranges.write_text("id,reference_uri,driving_uri,seed,fps,max_seconds\nt1,/x/a.jpg,/x/d.mp4,-1,,\n"
                      "t2,/x/a.jpg,/x/d.mp4,,0,\nt3,/x/a.jpg,/x/d.mp4,,,0.05\nok,/x/a.jpg,/x/d.mp4,3,12,1\n")
    caplog.clear()
    assert _build("--csv", str(ranges), "-o", str(tmp_path / "ranges.parquet")) == 0
    assert "3 rows have settings the render refuses: t1 (seed must be between 0 and" in caplog.text
    assert "t2 (fps must be in [1, 60], got 0), t3 (max_seconds must be at least 0.1, got 0.05)" in caplog.text
    assert _build("--csv", str(csv), "-o", str(tmp_path / "m.csv")) == 1  # Parquet under a CSV's name
    assert "the manifest is a Parquet file" in caplog.text and not (tmp_path / "m.csv").exists()
    image = tmp_path / "face.jpg"
    Image.new("RGB", (8, 8)).save(image)
    assert _build("--portraits", str(image), "--drivers", str(tmp_path), "-o", str(tmp_path / "n.parquet")) == 1
    assert "face.jpg is a file, not a folder" in caplog.text


def test_a_huge_seed_or_step_count_is_shown_as_written_not_as_hundreds_of_digits():
    base = {"id": "a", "reference_uri": "r.png", "driving_uri": "d.mp4"}
    with pytest.raises(RowError) as seed:
        parse_row(0, {**base, "seed": 1e300})
    assert str(seed.value).endswith("got 1e+300") and len(str(seed.value)) < 100
    with pytest.raises(RowError) as steps:
        parse_row(0, {**base, "steps": 10**40})
    assert str(steps.value).endswith("got 1e+40")
    with pytest.raises(RowError, match=r"got 18446744073709551616$"):  # 20 digits: still in full
        parse_row(0, {**base, "seed": 2**64})
