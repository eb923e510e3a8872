"""The manifest: one Parquet row per meme, checked before any work starts.

Job-level problems (a missing required column, a column of the wrong type, a manifest over the
size caps) raise :class:`ManifestError` naming the column or the cap: nothing can run.
Row-level problems (a missing, bad or duplicate id, an empty URI, a negative seed, a seed of 1.5,
a cell over its length cap) raise :class:`RowError` from :func:`parse_row`: that row fails, the
others go on.

An integer setting may come in a floating-point column: pandas writes every optional integer
column as float64 with NaN in its gaps, so that is how most such manifests are made.  The schema
check takes the column; :func:`parse_row` decides each value (a whole number is that integer, NaN
or null is the default, 1.5 or inf fails its row).

The manifest comes from whoever wrote it, so the driver bounds what reading it can cost before
it reads any row: the file's bytes, its row count and the decoded size of the columns it uses
(from the Parquet footer, :class:`ManifestLimits`), then each string cell's length
(:data:`CELL_LIMITS`, measured by Arrow compute on the columns, before any value becomes a
Python object).  An over-long cell is emptied and its row carries the error, so one 300 MB
``prompt`` fails one row instead of taking the driver's memory.  Columns the job does not know
are never read; one warning names them.  String columns written as ``large_string``,
``string_view`` or dictionary-encoded are accepted and read as plain strings.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mediaio import storage
from mediaio.media import MediaLimits
from mediaio.redaction import printable

logger = logging.getLogger(__name__)


class ManifestError(Exception):
    """The manifest as a whole cannot be used (job-level)."""


class RowError(Exception):
    """One manifest row cannot be used; the row fails, the job goes on."""


REQUIRED_COLUMNS: dict[str, str] = {"id": "string", "reference_uri": "string", "driving_uri": "string"}
OPTIONAL_COLUMNS: dict[str, str] = {
    "output_uri": "string",
    "engine": "string",
    "seed": "integer",
    "fps": "number",
    "max_seconds": "number",
    "steps": "integer",
    "guidance": "number",
    "prompt": "string",
    "lora": "string",
    "lora_scale": "number",
}

KNOWN_COLUMNS: dict[str, str] = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
# Columns whose relative paths are taken beside the manifest (see storage.relative_to_file); an
# output_uri is not one of them: a relative one is taken under the job's --output.
BESIDE_MANIFEST_COLUMNS = ("reference_uri", "driving_uri", "lora")
# What each kind accepts, as the schema error says it.
_KIND_NAMES = {"string": "string", "integer": "integer (or floating-point holding whole numbers)",
               "number": "number"}

# The longest value each string column may hold, in characters (bytes for a binary column): the
# one definition of these caps.  A cell over its cap fails its row.
CELL_LIMITS: dict[str, int] = {
    "id": 128,
    "reference_uri": 4096,
    "driving_uri": 4096,
    "output_uri": 4096,
    "engine": 64,
    "prompt": 4096,
    "lora": 4096,
}
# The column read_manifest adds to carry a row's error found while reading (an over-long cell).
ROW_ERROR_COLUMN = "_manifest_error"

ID_PATTERN = re.compile(rf"^[A-Za-z0-9._-]{{1,{CELL_LIMITS['id']}}}$")
MAX_SEED = 2**63 - 1
# A row's frame rate and length: below a frame a second, or under a tenth of a second, there is no
# video to make (the encode would hold no frame).  The rate's range is the output's, decided in MediaLimits.
FPS_RANGE = (MediaLimits.min_output_fps, MediaLimits.max_output_fps)
MIN_SECONDS = 0.1
_SHOWN_NAME_CHARS = 64  # column names come from the file: shown escaped and cut to this length


@dataclass(frozen=True)
class ManifestLimits:
    """What reading a manifest may cost the driver, checked from the file's size and footer before any row is read."""

    max_bytes: int = 256 * 1024**2  # the Parquet file itself
    max_rows: int = 1_000_000
    max_decoded_bytes: int = 1024**3  # the known columns, uncompressed, as the footer reports them
    # The footer (the file's index: its schema and every column chunk of every row group), read from its
    # last 8 bytes before it is parsed.  Parsed, it takes 12-27 times its size: a 37 MB file of 200,000
    # columns held 780 MB on the driver, so a 256 MB one of empty columns would hold about 7 GB.  A
    # manifest written one row per row group (100,000 rows, 3 columns) has a 45 MB footer.
    max_footer_bytes: int = 64 * 1024**2


def _value_type(arrow_type: pa.DataType) -> pa.DataType:
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type


def _is_text(arrow_type: pa.DataType) -> bool:
    return any(check(arrow_type) for check in (pa.types.is_string, pa.types.is_large_string,
                                               pa.types.is_string_view))


def _is_bytes(arrow_type: pa.DataType) -> bool:
    return any(check(arrow_type) for check in (pa.types.is_binary, pa.types.is_large_binary,
                                               pa.types.is_binary_view))


def _type_matches(arrow_type: pa.DataType, kind: str) -> bool:
    arrow_type = _value_type(arrow_type)  # dictionary-encoded columns are judged by their values
    if pa.types.is_null(arrow_type):  # an all-null optional column is fine
        return True
    if kind == "string":  # binary is accepted so that a row with bytes that are not UTF-8 fails alone
        return _is_text(arrow_type) or _is_bytes(arrow_type)
    # An integer column may be floating-point too: pandas writes an optional integer column as
    # float64 with NaN for its gaps, and parse_row judges each value (a fraction fails its row).
    # Decimal too: DuckDB and Spark SQL write a literal such as 1.5 as decimal(2,1).
    if kind in ("integer", "number"):
        return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type)
    raise ValueError(kind)


def _type_fix(schema: pa.Schema, wrong: Mapping[str, str]) -> str:
    """How to write the mistyped ``wrong`` columns (pandas' way, as most manifests are written)."""
    as_text = [column for column, kind in wrong.items()
               if kind != "string" and _is_text(_value_type(schema.field(column).type))]
    as_numbers = [column for column, kind in wrong.items() if kind == "string"]
    fixes = []
    if as_text:  # "30", "2s": a CSV read without types, or units written into the cells
        fixes.append(f"{', '.join(as_text)} {'hold' if len(as_text) > 1 else 'holds'} text: write numbers without "
                     f"units (seconds, frames per second), e.g. df[{as_text[0]!r}] = pd.to_numeric(df[{as_text[0]!r}])")
    if as_numbers:  # ids 1, 2, 3
        fixes.append(f"write {', '.join(as_numbers)} as text, e.g. df[{as_numbers[0]!r}] = "
                     f"df[{as_numbers[0]!r}].astype(str)")
    return f" ({'; '.join(fixes)})" if fixes else ""


def _shown(name: str) -> str:
    text = printable(name)
    return text if len(text) <= _SHOWN_NAME_CHARS else text[:_SHOWN_NAME_CHARS] + "..."


# A setting's name this long or longer, written with one letter dropped, changed or swapped
# (max_second, max_secnods), is a misspelling; shorter names are too near ordinary words (speed/seed).
SLIP_MIN_LENGTH = 8
# How alike (difflib's ratio) an unknown column's name and an absent known one's must be for the
# warning to ask whether it was meant (speed/seed, prompts/prompt): a column of one's own may be so.
LOOKALIKE_RATIO = 0.8


def _folded(name: str) -> str:
    return "".join(char for char in name.lower() if char.isalnum())


_FOLDED_KNOWN = {column: _folded(column) for column in KNOWN_COLUMNS}


def _one_slip(written: str, meant: str) -> bool:
    """Whether ``written`` is ``meant`` with one letter dropped, changed, or two neighbours swapped."""
    if len(written) == len(meant) - 1:
        return any(meant[:cut] + meant[cut + 1:] == written for cut in range(len(meant)))
    if len(written) != len(meant):
        return False
    differ = [index for index, (a, b) in enumerate(zip(written, meant)) if a != b]
    return len(differ) == 1 or (len(differ) == 2 and differ[1] == differ[0] + 1
                                 and written[differ[0]] == meant[differ[1]] and written[differ[1]] == meant[differ[0]])


def _absent_known(present: Iterable[str]) -> list[str]:
    # A set is taken as it is: copied on every call, a manifest of 20,000 columns took 17 s (and
    # 200,000 half an hour) to check, each column's name against a fresh set of all of them.
    present = present if isinstance(present, (set, frozenset)) else set(present)
    return [column for column in KNOWN_COLUMNS if column not in present]


def misspelling_of(name: str, present: Iterable[str]) -> str | None:
    """The absent known column that ``name`` can only be a misspelling of: the same name up to case and
    punctuation (``Max_Seconds``, ``Seed``, ``FPS``), or a long one with one slip (``max_second``)."""
    if name in KNOWN_COLUMNS:
        return None
    folded = _folded(name)
    for column in _absent_known(present):
        if _FOLDED_KNOWN[column] == folded:
            return column
        if len(column) >= SLIP_MIN_LENGTH and _one_slip(name.lower(), column):
            return column
    return None


def lookalike_of(name: str, present: Iterable[str]) -> str | None:
    """An absent known column that ``name`` looks like (for a warning), or None."""
    if name in KNOWN_COLUMNS:
        return None
    close = difflib.get_close_matches(name.lower(), _absent_known(present), n=1, cutoff=LOOKALIKE_RATIO)
    return close[0] if close else None


def check_schema(schema: pa.Schema) -> None:
    """Raise ManifestError naming the first missing required column, misspelled setting column, or
    repeated or mistyped known column.

    A misspelled setting (``max_second``, ``Seed``) is an error, not an unknown column to ignore: its
    rows would render with the default instead (a whole clip for a 3-s cap: the night's compute 20
    times).  A column that only looks like a setting (``speed``, ``prompts``) is the user's own: the
    warning about unknown columns asks about it (:func:`unknown_columns_note`).
    """
    names = set(schema.names)
    for column, kind in REQUIRED_COLUMNS.items():
        if column not in names:
            shown = sorted(_shown(name) for name in names)[:20]
            meant = [name for name in schema.names if misspelling_of(name, names) == column
                     or lookalike_of(name, names) == column]
            hint = f": did you mean {_shown(meant[0])!r}? Rename it" if meant else ""
            raise ManifestError(f"manifest has no required column {column!r}{hint} (columns: {shown})")
    for name in schema.names:
        meant = misspelling_of(name, names)
        if meant is not None:
            raise ManifestError(
                f"manifest column {_shown(name)!r} is not one this tool reads: did you mean {meant!r}? Its values "
                "would be ignored and every row would take the default; rename it (a column of your own must "
                "not be named this close to a setting)")
    for column in KNOWN_COLUMNS:
        if schema.names.count(column) > 1:
            raise ManifestError(f"manifest column {column!r} appears {schema.names.count(column)} times")
    wrong = {column: kind for column, kind in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items()
             if column in names and not _type_matches(schema.field(column).type, kind)}
    if wrong:  # every one at once: fixed one by one, a job would stop once for each
        described = "; ".join(f"{column!r} has type {schema.field(column).type}, expected {_KIND_NAMES[kind]}"
                              for column, kind in wrong.items())
        lead = "manifest column " if len(wrong) == 1 else "manifest columns of the wrong type: "
        raise ManifestError(f"{lead}{described}{_type_fix(schema, wrong)}")


# The column pandas' to_parquet adds for a DataFrame's index (a filtered or re-indexed frame's row numbers):
# not the user's, so not named among the unknown columns.
PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")


def unknown_columns(schema: pa.Schema) -> list[str]:
    """The manifest's columns this job does not know (they are not read), pandas' index left out."""
    return [name for name in schema.names if name not in KNOWN_COLUMNS and not PANDAS_INDEX.match(name)]


def unknown_columns_note(schema: pa.Schema) -> str:
    """The unknown columns for the warning, each that looks like an absent setting with its question."""
    unknown = unknown_columns(schema)
    names = set(schema.names)
    shown = []
    for name in unknown[:20]:
        meant = lookalike_of(name, names)
        shown.append(_shown(name) + (f" (not {meant!r}: if it was meant to be, rename it)" if meant else ""))
    return ", ".join(shown) + (" ..." if len(unknown) > 20 else "")


def read_manifest(uri: str, storage_options: Mapping[str, Any] | None = None,
                  limits: ManifestLimits = ManifestLimits()) -> pa.Table:
    """Read and check a Parquet manifest from a local path or fsspec URI, within ``limits``.

    The manifest is one Parquet file, or a folder of them (Spark's, Dask's, DuckDB's or Ray Data's
    output for one table; see :func:`mediaio.storage.parts_of_folder`), read in the order of their
    paths as one table, ``limits`` applying to the whole.
    Job-level (ManifestError): not found, not a regular file, over ``max_bytes``, ``max_rows`` or
    ``max_decoded_bytes``, not Parquet, a schema :func:`check_schema` refuses.  Then only the
    known columns are read, as plain strings whatever their Arrow encoding, and cells over
    :data:`CELL_LIMITS` are emptied with their row's error in :data:`ROW_ERROR_COLUMN`
    (:func:`parse_row` raises it).  Unknown columns get one warning naming them.
    """
    shown = printable(uri)
    try:
        parts = storage.parts_of_folder(uri, ".parquet", storage_options)
    except storage.StorageError as exc:
        raise ManifestError(f"manifest {exc}") from None
    except OSError:  # not listable (a file, a bucket that refuses listing): read as one file
        parts = None
    if parts is None:
        return cap_cells(as_plain_types(_read_part(uri, shown, storage_options, limits, _Budget())))
    if storage.holds_folder(uri, DELTA_LOG, storage_options):
        raise ManifestError(f"manifest {shown} is a Delta table: its folder can hold .parquet files the table no "
                            f"longer has (replaced, deleted), which only its {DELTA_LOG}/ tells apart; export the "
                            "table to one Parquet file (deltalake: DeltaTable(uri).to_pyarrow_table(), then "
                            "pyarrow.parquet.write_table) and give that")
    if not parts:
        stray = storage.parts_of_folder(uri, ".parquet", storage_options, any_folder=True)
        if stray:
            raise ManifestError(f"manifest {shown} has its .parquet files only in sub-folders that are not "
                                f"key=value partitions (such as {printable(storage.parent_of(stray[0]))}/), which "
                                "are not read as the table's (a backup/ would double every row): give the folder "
                                "that holds the table's files")
        raise ManifestError(f"manifest {shown} is a folder without .parquet files")
    budget = _Budget()
    tables = [as_plain_types(_read_part(part, f"{shown} (part {printable(part)})", storage_options, limits, budget,
                                        partition_values(part, uri)))
              for part in parts]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ManifestError(f"manifest {shown}: its parts do not make one table: {printable(exc)}") from None
    return cap_cells(table)


@dataclass
class _Budget:
    """What the parts of a manifest read so far have cost, against its limits."""

    bytes: int = 0
    rows: int = 0
    decoded: int = 0
    warned: bool = False  # the unknown columns are named once, not once per part


def _read_part(uri: str, shown: str, storage_options: Mapping[str, Any] | None, limits: ManifestLimits,
               budget: _Budget, partitions: Mapping[str, str | None] | None = None) -> pa.Table:
    """One Parquet file of a manifest, checked, its known columns read; ``partitions`` are the
    ``key=value`` folders it lies in, columns of every row (:func:`partition_values`)."""
    partitions = dict(partitions or {})
    try:
        with storage.open_seekable(uri, storage_options, what="manifest") as (handle, size):
            budget.bytes += size
            if budget.bytes > limits.max_bytes:
                raise ManifestError(f"manifest {shown} is {budget.bytes} bytes, over the limit of "
                                    f"{limits.max_bytes} bytes")
            _check_footer_size(handle, size, shown, limits)
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            both = [name for name in partitions if name in schema.names]
            if both:
                raise ManifestError(f"manifest column {_shown(both[0])!r} is both a column of the file and the "
                                    f"name of the folder it lies in ({_shown(both[0])}={printable(str(partitions[both[0]]))})")
            folder_columns = {name: _partition_column(name, value, shown) for name, value in partitions.items()}
            try:
                check_schema(pa.schema(list(schema) + [pa.field(name, column.type)
                                                       for name, column in folder_columns.items()]))
            except ManifestError as exc:
                raise ManifestError(f"{exc} (in {shown})" if shown != printable(uri) or partitions else str(exc)) \
                    from None
            unknown = unknown_columns(schema) + [name for name in partitions if name not in KNOWN_COLUMNS]
            if unknown and not budget.warned:
                budget.warned = True
                logger.warning("manifest %s: ignoring %d unknown column(s): %s (known: %s)", shown, len(unknown),
                               unknown_columns_note(pa.schema(list(schema) + [pa.field(name, pa.string())
                                                                               for name in partitions])),
                               ", ".join(KNOWN_COLUMNS))
            _check_footer(parquet.metadata, shown, limits, budget)
            table = parquet.read(columns=[name for name in schema.names if name in KNOWN_COLUMNS])
            for name, column in folder_columns.items():
                if name in KNOWN_COLUMNS:
                    table = table.append_column(name, pa.repeat(column[0], table.num_rows).cast(column.type)
                                                if table.num_rows else pa.array([], column.type))
            return table
    except storage.NotFoundError as exc:
        raise ManifestError(f"manifest not found: {shown}") from exc
    except storage.StorageError as exc:
        raise ManifestError(str(exc)) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"manifest {shown} is not readable Parquet: {printable(exc)}"
                            f"{_other_kind_hint(uri, storage_options)}") from exc


DELTA_LOG = "_delta_log"


def partition_values(part: str, folder: str) -> dict[str, str | None]:
    """The ``key=value`` folders between a manifest folder and one of its parts, as the writers put them.

    pandas' and pyarrow's ``partition_cols``, Spark's ``partitionBy`` and DuckDB's ``PARTITION_BY``
    keep a partition column's value only in the folder's name: read without it, every row of
    ``max_seconds=0.5/`` rendered its whole clip.  pyarrow's Hive partitioning reads the values
    (percent-decoded; ``__HIVE_DEFAULT_PARTITION__`` is None).
    """
    import pyarrow.dataset as ds

    root = storage.normalize(folder).rstrip("/") + "/"  # as storage.join made the part's URI
    if not part.startswith(root):
        raise ManifestError(f"manifest part {printable(part)} is not under its folder {printable(folder)}")
    folders = part[len(root):].split("/")[:-1]
    keys = [name.partition("=")[0] for name in folders]
    for name, key in zip(folders, keys):
        if not key:
            raise ManifestError(f"manifest {printable(folder)}: its folder {printable(name)} names no column")
        if keys.count(key) > 1:
            named = " and ".join(printable(other) for other in folders if other.partition("=")[0] == key)
            raise ManifestError(f"manifest {printable(folder)}: {_shown(key)} is named by two folders of one path "
                                f"({named})")
    if not folders:
        return {}
    partitioning = ds.HivePartitioning(pa.schema([(key, pa.string()) for key in keys]), segment_encoding="uri")
    return ds.get_partition_keys(partitioning.parse("/" + "/".join(folders) + "/"))


def _partition_column(name: str, value: str | None, shown: str) -> pa.Array:
    """A partition value as a one-row column of its setting's type (a string for a column this tool does not read)."""
    kind = KNOWN_COLUMNS.get(name, "string")
    if value is None:
        return pa.array([None], pa.string() if kind == "string" else pa.float64())
    if kind == "string":
        return pa.array([value], pa.string())
    if kind == "integer" and re.fullmatch(r"[+-]?\d+", value.strip()):
        number = int(value)  # exactly: a seed of 9007199254740993 is not a float's 9007199254740992
        if -2**63 <= number < 2**63:
            return pa.array([number], pa.int64())
    try:
        return pa.array([float(value)], pa.float64())
    except ValueError:
        raise ManifestError(f"manifest {shown}: its folder {_shown(name)}={printable(value)} gives {name!r} a value "
                            f"that is not a number") from None


_BUILD_HINT = "hellomeme-batch manifest build --csv FILE -o manifest.parquet"


# Files a manifest is often mistaken for, by their first bytes: (magic, what it is).
_OTHER_KINDS = ((b"PAR1", "a Parquet file"),
                (b"PK\x03\x04", "a spreadsheet (.xlsx, .ods) or a zip"),
                (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 spreadsheet (.xls)"))
def json_hint(uri: str) -> str:
    """The way from a JSON file (an API's or a notebook's export) to a manifest."""
    return (f"write it as Parquet, e.g. `python -c \"import pandas as pd; pd.read_json('{printable(uri)}')"
            ".to_parquet('manifest.parquet')\"` (lines=True for JSON lines), or as a CSV for `manifest build --csv`")


def file_kind(head: bytes) -> str:
    """What a file's first bytes say it is ("a Parquet file", "JSON", "a CSV", a spreadsheet), or "".

    Decided once for ``render`` (a manifest that is not Parquet) and ``manifest build --csv`` (a CSV
    that is not one), so each names the kind the user has and the way to a manifest.
    """
    for magic, kind in _OTHER_KINDS:
        if head.startswith(magic):
            return kind
    text = head.decode("utf-8-sig", errors="ignore").lstrip()
    if text.startswith(("{", "[")):
        return "JSON"
    first_line = text.splitlines()[0] if text.splitlines() else ""
    if "reference_uri" in first_line or "driving_uri" in first_line:
        return "a CSV"
    return ""


def _other_kind_hint(uri: str, storage_options: Mapping[str, Any] | None) -> str:
    """What a manifest that is not Parquet looks like instead, with the way to a manifest ("" if unknown).

    The manifest's own CSV, JSON, or a spreadsheet, given to ``render`` read as Parquet's "magic bytes" error.
    """
    try:
        with storage.open_input(uri, storage_options, what="manifest") as reader:
            head = reader.read(4096)
    except Exception:  # noqa: BLE001 - the error already says what is wrong
        return ""
    kind = file_kind(head)
    if "spreadsheet" in kind:
        return f" (it looks like {kind}: save the sheet as CSV and run `{_BUILD_HINT}`)"
    if kind == "JSON":
        return f" (it looks like JSON: {json_hint(uri)})"
    if kind == "a CSV":
        return f" (it looks like a CSV: make the Parquet manifest with `{_BUILD_HINT}`)"
    return ""


def _check_footer_size(handle: BinaryIO, size: int, shown: str, limits: ManifestLimits) -> None:
    """Refuse a Parquet file whose footer is over ``limits.max_footer_bytes``, before it is parsed.

    The footer's length is the 4 bytes before the closing ``PAR1``; a file without them is left
    to the Parquet reader, which says what is wrong."""
    if size < 12:
        return
    handle.seek(size - 8)
    tail = handle.read(8)
    handle.seek(0)
    if len(tail) != 8 or tail[4:] != b"PAR1":
        return
    footer = int.from_bytes(tail[:4], "little")
    if footer > limits.max_footer_bytes:
        raise ManifestError(f"manifest {shown} has a footer (its index of columns and row groups) of {footer} bytes, "
                            f"over the limit of {limits.max_footer_bytes} bytes: write it again with fewer columns "
                            "or larger row groups (pyarrow: one write_table of the whole table, not one per row)")


def _check_footer(metadata: pq.FileMetaData, shown: str, limits: ManifestLimits, budget: _Budget) -> None:
    """Refuse a manifest whose footers say it has too many rows or would decode too large."""
    budget.rows += metadata.num_rows
    if budget.rows > limits.max_rows:
        raise ManifestError(f"manifest {shown} has {budget.rows} rows, over the limit of {limits.max_rows}")
    decoded = budget.decoded
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if chunk.path_in_schema.split(".", 1)[0] in KNOWN_COLUMNS:
                decoded += chunk.total_uncompressed_size
    budget.decoded = decoded
    if decoded > limits.max_decoded_bytes:
        raise ManifestError(f"manifest {shown} would decode to {decoded} bytes, over the limit of "
                            f"{limits.max_decoded_bytes} bytes")


def as_plain_types(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns decoded; ``large_string``/``string_view`` as ``string``, binary likewise;
    decimal numbers as float64 (a whole decimal is still an integer setting)."""
    for index, field in enumerate(table.schema):
        column = table.column(index)
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        if _is_text(column.type) and not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        elif _is_bytes(column.type) and not pa.types.is_binary(column.type):
            column = pc.cast(column, pa.binary())
        elif pa.types.is_decimal(column.type):
            column = pc.cast(column, pa.float64(), safe=False)
        if column.type != field.type:
            table = table.set_column(index, pa.field(field.name, column.type), column)
    return table


def cap_cells(table: pa.Table) -> pa.Table:
    """Cells over :data:`CELL_LIMITS` emptied (null), each such row's error in :data:`ROW_ERROR_COLUMN`.

    Lengths are measured by Arrow compute on whole columns (characters for strings, bytes for
    binary), so no over-long value is ever turned into a Python object.
    """
    errors: list[str | None] | None = None
    for column_name, limit in CELL_LIMITS.items():
        if column_name not in table.column_names:
            continue
        index = table.column_names.index(column_name)
        column = table.column(index)
        if pa.types.is_null(column.type):
            continue
        unit = "characters" if _is_text(column.type) else "bytes"
        lengths = pc.utf8_length(column) if _is_text(column.type) else pc.binary_length(column)
        over = pc.fill_null(pc.greater(lengths, limit), False)
        if not pc.any(over).as_py():
            continue
        if errors is None:
            errors = [None] * table.num_rows
        for row in pc.indices_nonzero(over).to_pylist():
            length = lengths[row].as_py()
            errors[row] = errors[row] or f"{column_name} is {length} {unit} long, over the limit of {limit}"
        emptied = pa.scalar(None, column.type)
        if column_name == "id" and _is_text(column.type):
            # The id is cut rather than emptied, so the row's line still names it; the ellipsis is no id
            # character, so a cut id can never equal a real one.
            emptied = pc.binary_join_element_wise(pc.utf8_slice_codeunits(column, 0, MAX_DESCRIBED_CHARS), "\u2026", "")
        table = table.set_column(index, table.field(index), pc.if_else(over, emptied, column))
    if errors is not None:
        table = table.append_column(pa.field(ROW_ERROR_COLUMN, pa.string()), pa.array(errors, pa.string()))
    return table


@dataclass(frozen=True)
class MemeSpec:
    """One validated manifest row: what to render and how."""

    row_index: int
    id: str
    reference_uri: str
    driving_uri: str
    output_uri: str | None = None
    engine: str | None = None
    seed: int | None = None
    fps: float | None = None
    max_seconds: float | None = None
    steps: int | None = None
    guidance: float | None = None
    prompt: str | None = None
    lora: str | None = None
    lora_scale: float | None = None


def _optional_number(row: Mapping[str, Any], column: str) -> float | None:
    value = row.get(column)
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise RowError(f"{column} must be a finite number, got {value}")
    return value


def _optional_integer(row: Mapping[str, Any], column: str) -> int | None:
    """An integer setting, from an integer column or a floating-point one holding whole numbers.

    pandas writes an optional integer column as float64 with NaN for its gaps, so NaN (like null)
    means the default; a fraction or an infinity is a bad value and fails the row.
    """
    value = row.get(column)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RowError(f"{column} must be an integer, got {describe_id(value)!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    if math.isnan(value):
        return None
    if not value.is_integer():  # also inf and -inf
        raise RowError(f"{column} must be a whole number, got {value!r}")
    return int(value)


def _shown_whole(value: int) -> str:
    """A whole number for an error: in full up to 20 digits, past that as a float would write it (a seed
    of 1e300 read as a 301-digit integer)."""
    return str(value) if abs(value) < 10**20 else f"{float(value):.6g}"


MAX_DESCRIBED_CHARS = 200


def describe_id(raw_id: Any) -> str:
    """A printable form of a (possibly invalid) id for error messages and results.

    A missing id (None) is empty: it must not read as, or collide with, the id ``None``.  Bytes
    that are not UTF-8 become ``\\x..``, control characters are escaped (an id cannot forge a log
    line or move the cursor) and a very long id is cut, ending in ``...``.
    """
    if raw_id is None:
        return ""
    if isinstance(raw_id, bytes):
        text = raw_id[: MAX_DESCRIBED_CHARS * 4].decode("utf-8", errors="backslashreplace")
    else:
        text = str(raw_id)[: MAX_DESCRIBED_CHARS * 4].encode("utf-8", errors="backslashreplace").decode("utf-8")
    text = printable(text)
    return text if len(text) <= MAX_DESCRIBED_CHARS else text[:MAX_DESCRIBED_CHARS] + "..."


def _as_text(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RowError(f"{column} '{describe_id(value)}' is not valid UTF-8") from None
    return value


def parse_row(row_index: int, row: Mapping[str, Any]) -> MemeSpec:
    """Validate one manifest row's values; RowError names the column and the cause."""
    if row.get(ROW_ERROR_COLUMN):
        raise RowError(row[ROW_ERROR_COLUMN])
    for column, limit in CELL_LIMITS.items():  # rows that did not come through read_manifest
        value = row.get(column)
        if isinstance(value, (str, bytes)) and len(value) > limit:
            unit = "characters" if isinstance(value, str) else "bytes"
            raise RowError(f"{column} is {len(value)} {unit} long, over the limit of {limit}")
    row = {**row, **{column: _as_text(row, column) for column, kind in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items()
                     if kind == "string"}}
    raw_id = row.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raise RowError("id is missing (null or empty)")
    if not isinstance(raw_id, str) or not ID_PATTERN.fullmatch(raw_id) or raw_id in (".", ".."):
        raise RowError(
            f"id '{describe_id(raw_id)}' is invalid: use 1 to {CELL_LIMITS['id']} ASCII letters (a-z, A-Z), digits, '.', '_' or '-'"
        )
    for column in ("reference_uri", "driving_uri"):
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            raise RowError(f"{column} is empty")
    seed = _optional_integer(row, "seed")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise RowError(f"seed must be between 0 and {MAX_SEED}, got {_shown_whole(seed)}")
    steps = _optional_integer(row, "steps")
    if steps is not None and not 1 <= steps <= 1000:
        raise RowError(f"steps must be between 1 and 1000, got {_shown_whole(steps)}")
    fps = _optional_number(row, "fps")
    if fps is not None and not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise RowError(f"fps must be in [{FPS_RANGE[0]:g}, {FPS_RANGE[1]:g}], got {fps:g}")
    max_seconds = _optional_number(row, "max_seconds")
    if max_seconds is not None and max_seconds < MIN_SECONDS:
        raise RowError(f"max_seconds must be at least {MIN_SECONDS:g}, got {max_seconds:g}")
    lora_scale = _optional_number(row, "lora_scale")
    if lora_scale is not None and not -10 <= lora_scale <= 10:
        raise RowError(f"lora_scale must be in [-10, 10], got {lora_scale}")
    guidance = _optional_number(row, "guidance")
    if guidance is not None and not 0 <= guidance <= 50:
        raise RowError(f"guidance must be in [0, 50], got {guidance}")
    # A spreadsheet's padded cell is an empty one: the default output, the job's engine.
    output_uri = (row.get("output_uri") or "").strip() or None
    if output_uri is not None and any(ord(char) < 32 or ord(char) == 127 for char in output_uri):
        raise RowError(f"output_uri '{describe_id(output_uri)}' holds a control character (a line break, a tab): "
                       "a file named so breaks the scripts that list the outputs")
    engine = (row.get("engine") or "").strip().lower() or None  # "Warp ", "WARP": the warp engine
    return MemeSpec(
        row_index=row_index,
        id=raw_id,
        reference_uri=row["reference_uri"].strip(),
        driving_uri=row["driving_uri"].strip(),
        output_uri=output_uri,
        engine=engine,
        seed=seed,
        fps=fps,
        max_seconds=max_seconds,
        steps=steps,
        guidance=guidance,
        prompt=row.get("prompt"),
        lora=(row.get("lora") or "").strip() or None,
        lora_scale=lora_scale,
    )


def first_rows_by_id(ids: Iterable[Any]) -> dict[str, int]:
    """Map each id to the index of its first row, so later rows with the same id can fail."""
    first: dict[str, int] = {}
    for index, raw_id in enumerate(ids):
        key = describe_id(raw_id)
        first.setdefault(key, index)
    return first
