"""A manifest mixing 40+ bad rows with good and awkward ones: bad rows fail alone, with reasons."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mediaio import clips, media
from jobs.cli import main as cli_main
from tests.bad_inputs import MARKUP_ID, MARKUP_PATH, Case, build_corpus, write_raw_manifest
from tests.report_page import CHROMIUM, assert_no_injected_markup, chromium, parse, webp_frames

pytestmark = pytest.mark.ray


@dataclass(frozen=True)
class CorpusRun:
    """The corpus's one job, run through the CLI: its cases, results table, exit code, what it printed."""

    cases: list[Case]
    results: list[dict]
    exit_code: int
    printed: str
    out: Path


@pytest.fixture(scope="module")
def corpus_run(ray_local, synthetic_media, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    cases = build_corpus(folder / "inputs", synthetic_media)
    manifest = folder / "manifest.parquet"
    write_raw_manifest([case.row for case in cases], manifest)
    out = folder / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli_main([
            "render", str(manifest), "--output", str(out), "--size", "256",
            "--allow-root", str(folder / "inputs"), "--allow-root", str(synthetic_media), "--allow-root", str(out),
        ])
    results = pq.read_table(out / "_results" / "results.parquet").to_pylist()
    return CorpusRun(cases, results, code, printed.getvalue(), out)


def test_corpus_is_large_enough(corpus_run):
    cases = corpus_run.cases
    assert sum(case.expect == "failed" for case in cases) >= 40


def test_job_ends_with_exit_2_and_one_result_per_row(corpus_run):
    cases, results, code = corpus_run.cases, corpus_run.results, corpus_run.exit_code
    assert code == 2
    assert [r["row_index"] for r in results] == list(range(len(cases)))


def test_summary_printed_counts_the_ok_and_failed_rows(corpus_run):
    cases, printed = corpus_run.cases, corpus_run.printed
    ok, failed = (sum(case.expect == kind for case in cases) for kind in ("ok", "failed"))
    assert f"{len(cases)} rows: {ok} ok, {failed} failed" in printed, printed


def test_each_bad_row_fails_naming_row_input_and_cause(corpus_run):
    cases, results = corpus_run.cases, corpus_run.results
    problems = []
    for index, (case, result) in enumerate(zip(cases, results)):
        if case.expect != "failed":
            continue
        error = (result["error"] or "").lower()
        if result["status"] != "failed":
            problems.append(f"row {index} {case.row['id']!r}: status {result['status']}")
            continue
        if f"row {index} " not in error:
            problems.append(f"row {index}: error does not name the row: {error}")
        missing = [word for word in case.words if word.lower() not in error]
        if missing:
            problems.append(f"row {index} {case.row['id']!r}: error lacks {missing}: {error}")
    assert not problems, "\n".join(problems)


def test_every_good_row_is_ok_with_no_frame_dropped(corpus_run):
    cases, results = corpus_run.cases, corpus_run.results
    for case, result in zip(cases, results):
        if case.expect != "ok":
            continue
        assert result["status"] == "ok", (case.row["id"], result["error"])
        clip_frames = clips.count_frames(case.row["driving_uri"])
        assert abs(clips.count_frames(result["output_uri"]) - clip_frames) <= 1, case.row["id"]
        limits = media.MediaLimits()
        assert clips.probe(result["output_uri"], limits).has_audio == clips.probe(case.row["driving_uri"], limits).has_audio


def test_no_secret_in_any_error_or_in_what_was_printed(corpus_run):
    results, printed = corpus_run.results, corpus_run.printed
    assert not any("canary-secret-123" in (r["error"] or "") + (r["output_uri"] or "") for r in results)
    assert "canary-secret-123" not in printed


def test_the_report_in_headless_chromium_shows_every_row_as_text_and_no_secret(corpus_run, tmp_path):
    cases, results, out = corpus_run.cases, corpus_run.results, corpus_run.out
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (Debian: apt-get install -y chromium)")
    dom = chromium("--dump-dom", (out / "index.html").as_uri(), profile=tmp_path / "profile").stdout
    page = parse(dom)
    assert_no_injected_markup(page)
    assert "canary-secret-123" not in dom
    assert sorted(page.cards) == sorted(f"row-{result['row_index']}" for result in results)
    for result in results:
        assert result["status"] in page.cards[f"row-{result['row_index']}"]["class"], result["id"]
    card = {case.row["id"]: page.cards[f"row-{index}"] for index, case in enumerate(cases)}
    assert MARKUP_ID in card[MARKUP_ID]["text"]
    assert MARKUP_PATH in card["markup-and-token-in-path"]["text"]
    assert "no face" in card["no-face-clip"]["text"]

    def shown(row_id):
        return {image["src"].split(".")[-2]: out / image["src"] for image in card[row_id]["images"]}

    assert sorted(shown("face-lost-for-a-while")) == ["driving", "meme", "reference"]
    assert sorted(shown("no-face-clip")) == ["driving", "reference"]  # it failed after decode: the inputs show
    assert webp_frames(shown("face-lost-for-a-while")["meme"].read_bytes())[0] > 1
    assert webp_frames(shown("no-face-clip")["driving"].read_bytes())[0] > 1
