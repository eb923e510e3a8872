"""The job's HTML report: ``{output}/index.html`` -- totals, then one card per manifest row.

A card shows the row's meme, reference and driving previews, its status, its error and its
stage timings.  The page is one static file that reads offline: previews are small files under
``_report/`` linked relatively and loaded lazily (a report of thousands of rows stays a page of
text, and the browser lays out and fetches only the cards on screen), and a status filter works
without scripts.  Everything that came from the manifest or an error is redacted and
HTML-escaped, and the page's Content Security Policy allows no scripts, so a hostile id or
error cannot inject markup.  It is written through fsspec, so ``s3://`` outputs get one too.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from mediaio import storage
from reporting.previews import KINDS, PREVIEW_DIR, SIDE, preview_path

logger = logging.getLogger(__name__)

REPORT_FILE = "index.html"
# Where the report goes when {output}/index.html is a page this tool did not write (the output is a
# web folder with its own front page): that page is never replaced.
OTHER_REPORT_FILE = "hellomeme-report.html"
_TITLE = "<title>HelloMeme Batch report</title>"  # in every report's head, so a rerun knows its own
_HEAD_BYTES = 4096
STATUSES = ("ok", "failed", "skipped", "not_run")
MAX_FAILED_LINKS = 50  # the totals link the first failed rows; the filter shows them all


@dataclass(frozen=True)
class JobFacts:
    """What the totals say about the job besides the rows."""

    manifest_uri: str = ""
    output_uri: str = ""
    engine: str = ""
    seconds: float | None = None
    # row_index -> (reference_uri, driving_uri), for rows whose manifest entry was readable
    inputs: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    # the results tables of other jobs' manifests rendered into the same folder, relative to it
    kept_tables: tuple[str, ...] = ()


def _text(value: Any) -> str:
    """Text from the manifest, an error or storage: credentials removed, then HTML-escaped."""
    return html.escape(storage.redact(str(value)), quote=True)


def _href(path: str) -> str:
    return html.escape(quote(path, safe="/._-~"), quote=True)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def _stage_seconds(row: Mapping[str, Any]) -> dict[str, float]:
    return {key.removeprefix("seconds_"): float(value) for key, value in row.items()
            if key.startswith("seconds_") and value}


def relative_output(output_uri: str | None, job_output_uri: str) -> str | None:
    """The MP4's path relative to the report when it lies under the job's output prefix, else None."""
    if not output_uri or not job_output_uri:
        return None
    prefix = storage.normalize(job_output_uri).rstrip("/") + "/"
    return output_uri[len(prefix):] if output_uri.startswith(prefix) else None


def _preview(row: Mapping[str, Any], kind: str, existing: set[str]) -> str | None:
    path = row.get(f"preview_{kind}")
    if row.get("status") == "skipped":
        # Rendered by an earlier run, whose previews may still be there: under the video's own name
        # (the plan gives it), else under the id alone, as versions before that named them.
        for candidate in (path, preview_path(str(row["id"]), kind)):
            if isinstance(candidate, str) and candidate and candidate.rsplit("/", 1)[-1] in existing:
                return candidate
        return None
    return path if isinstance(path, str) and path else None


_STYLE = """
:root { color-scheme: light; --ok: #1a7f37; --failed: #cf222e; --skipped: #6e7781; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 24px 24px; background: #f6f8fa; color: #1f2328; }
header.job { padding: 16px 0 8px; }
h1 { font-size: 20px; margin: 0 0 8px; }
.totals { display: flex; flex-wrap: wrap; gap: 8px 24px; margin: 0; }
.totals div { display: flex; gap: 6px; } .totals dt { color: #59636e; } .totals dd { margin: 0; font-weight: 600; }
.stages { margin: 8px 0; color: #59636e; }
.failed-rows { margin: 4px 0 0; } .failed-rows a { color: var(--failed); margin-right: 8px; }
input[name=show] { position: absolute; opacity: 0; pointer-events: none; }
nav.filter { margin: 8px 0 16px; display: flex; gap: 8px; }
nav.filter label { border: 1px solid #d1d9e0; border-radius: 16px; padding: 2px 12px; background: #fff;
                   cursor: pointer; }
#show-all:checked ~ nav label[for=show-all], #show-ok:checked ~ nav label[for=show-ok],
#show-failed:checked ~ nav label[for=show-failed], #show-skipped:checked ~ nav label[for=show-skipped],
#show-not_run:checked ~ nav label[for=show-not_run]
  { background: #1f2328; color: #fff; }
#show-ok:checked ~ main .card:not(.ok), #show-failed:checked ~ main .card:not(.failed),
#show-skipped:checked ~ main .card:not(.skipped), #show-not_run:checked ~ main .card:not(.not_run) { display: none; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid #d1d9e0; border-left: 6px solid var(--skipped); border-radius: 6px;
        padding: 12px; min-width: 0; content-visibility: auto; contain-intrinsic-size: auto 360px; }
.card.ok { border-left-color: var(--ok); } .card.failed { border-left-color: var(--failed); }
.card header { display: flex; align-items: baseline; gap: 8px; margin-bottom: 8px; }
.card h2 { font-size: 15px; margin: 0; overflow-wrap: anywhere; }
.card .index { color: #59636e; margin-left: auto; white-space: nowrap; }
.badge { color: #fff; background: var(--skipped); border-radius: 10px; padding: 0 8px; font-size: 12px; }
.badge.ok { background: var(--ok); } .badge.failed { background: var(--failed); }
.previews { display: flex; gap: 8px; margin: 0 0 8px; }
figure { margin: 0; text-align: center; color: #59636e; font-size: 12px; }
.frame { width: SIDEpx; height: SIDEpx; display: flex; align-items: center; justify-content: center;
         background: #eaeef2; border-radius: 4px; overflow: hidden; }
.frame img { max-width: 100%; max-height: 100%; }
.frame.none { color: #8c959f; }
.error { color: var(--failed); background: #ffebe9; border-radius: 4px; padding: 6px 8px; margin: 0 0 8px;
         font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; white-space: pre-wrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 6px; }
dl.facts dt { color: #59636e; } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.timings { color: #59636e; font-size: 12px; margin: 0; }
""".replace("SIDE", str(SIDE))

_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _figure(row: Mapping[str, Any], kind: str, existing: set[str]) -> str:
    path = _preview(row, kind, existing)
    if path is None:
        inner = '<div class="frame none">none</div>'
    else:
        inner = (f'<div class="frame"><img src="{_href(path)}" alt="{_text(kind)} of {_text(row["id"])}" '
                 f'loading="lazy" decoding="async"></div>')
    return f"<figure>{inner}<figcaption>{kind}</figcaption></figure>"


def _card(row: Mapping[str, Any], facts: JobFacts, existing: set[str]) -> str:
    status = str(row.get("status"))
    css_status = status if status in STATUSES else "unknown"
    index = int(row["row_index"])
    parts = [
        f'<article class="card {css_status}" id="row-{index}">',
        f'<header><span class="badge {css_status}">{_text(status)}</span><h2>{_text(row["id"])}</h2>'
        f'<span class="index">row {index}</span></header>',
        '<div class="previews">' + "".join(_figure(row, kind, existing) for kind in KINDS) + "</div>",
    ]
    if row.get("error"):
        parts.append(f'<p class="error">{_text(row["error"])}</p>')
    facts_rows = []
    output = row.get("output_uri")
    if output:
        relative = relative_output(output, facts.output_uri)
        made = status in ("ok", "skipped")  # a failed or not_run row's video does not exist: no link to nothing
        shown = f'<a href="{_href(relative)}">{_text(relative)}</a>' if relative and made else _text(output)
        facts_rows.append(("output" if made else "planned output", shown))
    if index in facts.inputs:
        reference, driving = facts.inputs[index]
        facts_rows += [("reference", _text(reference)), ("driving", _text(driving))]
    if row.get("frames"):
        facts_rows.append(("frames", str(int(row["frames"]))))
    parts.append('<dl class="facts">' + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts_rows)
                 + "</dl>")
    stages = _stage_seconds(row)
    if stages:
        timings = " · ".join(f"{_text(stage)} {_seconds(seconds)}" for stage, seconds in stages.items())
        parts.append(f'<p class="timings">{timings} · total {_seconds(sum(stages.values()))}</p>')
    parts.append("</article>")
    return "".join(parts)


def _totals(rows: list[Mapping[str, Any]], facts: JobFacts) -> tuple[str, dict[str, int]]:
    counts = {status: sum(1 for row in rows if row.get("status") == status) for status in STATUSES}
    # This job's work: a skipped row's frames (carried from the run that made its video) were rendered then.
    frames = sum(int(row.get("frames") or 0) for row in rows if row.get("status") == "ok")
    items = [("rows", str(len(rows))), *((status, str(count)) for status, count in counts.items()),
             ("frames rendered", str(frames))]
    if facts.seconds is not None:
        items.append(("job time", _seconds(facts.seconds)))
    if facts.engine:
        items.append(("engine", _text(facts.engine)))
    if facts.manifest_uri:
        items.append(("manifest", _text(facts.manifest_uri)))
    if facts.output_uri:
        items.append(("output", _text(facts.output_uri)))
    items.append(("written", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
    if facts.kept_tables:  # this page shows this job's rows; the folder's other videos are in those tables
        items.append(("other jobs' results here", " ".join(
            f'<a href="{_href(path)}">{_text(path.rsplit("/", 1)[-1])}</a>' for path in facts.kept_tables)))
    parts = ['<dl class="totals">' + "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in items)
             + "</dl>"]
    stage_totals: dict[str, list[float]] = {}
    for row in rows:
        if row.get("status") == "skipped":
            continue  # timed by the run that made its video, not this job
        for stage, seconds in _stage_seconds(row).items():
            stage_totals.setdefault(stage, []).append(seconds)
    if stage_totals:
        parts.append('<p class="stages">mean per row: ' + " · ".join(
            f"{_text(stage)} {_seconds(sum(values) / len(values))}" for stage, values in stage_totals.items()) + "</p>")
    failed = [row for row in rows if row.get("status") == "failed"]
    if failed:
        links = "".join(f'<a href="#row-{int(row["row_index"])}">{_text(row["id"])}</a>'
                        for row in failed[:MAX_FAILED_LINKS])
        more = f" and {len(failed) - MAX_FAILED_LINKS} more" if len(failed) > MAX_FAILED_LINKS else ""
        parts.append(f'<p class="failed-rows">failed: {links}{more}</p>')
    return "".join(parts), counts


def render_report(rows: Iterable[Mapping[str, Any]], facts: JobFacts = JobFacts(),
                  existing_previews: set[str] | None = None) -> str:
    """The report page for results rows (in manifest order).

    ``existing_previews`` names the files under ``_report/``: a skipped row shows the previews
    an earlier run left there.
    """
    ordered = sorted(rows, key=lambda row: int(row["row_index"]))
    existing = existing_previews or set()
    totals, counts = _totals(ordered, facts)
    filters = "".join(
        f'<input type="radio" name="show" id="show-{name}"{" checked" if name == "all" else ""}>'
        for name in ("all", *STATUSES))
    labels = "".join(f'<label for="show-{name}">{name} ({count})</label>'
                     for name, count in (("all", len(ordered)), *counts.items()))
    cards = "\n".join(_card(row, facts, existing) for row in ordered)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{_TITLE}"
        f"<style>{_STYLE}</style></head><body>\n"
        f'<header class="job"><h1>HelloMeme Batch report</h1>{totals}</header>\n'
        f'{filters}<nav class="filter">{labels}</nav>\n<main>\n{cards}\n</main>\n</body></html>\n'
    )


def report_uri(output_uri: str) -> str:
    return storage.join(output_uri, REPORT_FILE)


def _ours_or_absent(uri: str, storage_options: Mapping[str, Any] | None) -> bool:
    """Whether ``uri`` may be (re)written with the report: nothing is there, or an earlier report is."""
    try:
        with storage.open_input(uri, storage_options, what="report") as reader:
            head = reader.read(_HEAD_BYTES)
    except storage.NotFoundError:
        return True
    return _TITLE.encode("utf-8") in head


def earlier_report(output_uri: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The URI of a report an earlier job left in ``output_uri`` (None if there is none, or it cannot be read)."""
    for uri in (report_uri(output_uri), storage.join(output_uri, OTHER_REPORT_FILE)):
        try:
            with storage.open_input(uri, storage_options, what="report") as reader:
                if _TITLE.encode("utf-8") in reader.read(_HEAD_BYTES):
                    return uri
        except (storage.StorageError, OSError):
            continue
    return None


def write_report(rows: Iterable[Mapping[str, Any]], output_uri: str, facts: JobFacts = JobFacts(),
                 storage_options: Mapping[str, Any] | None = None) -> str:
    """Write ``{output}/index.html`` in one step (replacing an earlier one); returns its URI."""
    rows = list(rows)
    existing: set[str] = set()
    if any(row.get("status") == "skipped" for row in rows):  # one listing, not one lookup per row
        existing = storage.list_names(storage.join(output_uri, PREVIEW_DIR), storage_options)
    uri = report_uri(output_uri)
    if not _ours_or_absent(uri, storage_options):
        other = storage.join(output_uri, OTHER_REPORT_FILE)
        logger.warning("%s is not a report of this tool's; the report goes to %s instead", storage.redact(uri),
                       storage.redact(other))
        uri = other
        if not _ours_or_absent(uri, storage_options):
            raise FileExistsError(f"{storage.redact(uri)} is not a report of this tool's either; not replaced")
    storage.write_replace(uri, render_report(rows, facts, existing).encode("utf-8"), storage_options)
    logger.info("report written to %s", storage.redact(uri))
    return uri
