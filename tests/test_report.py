"""The HTML report and its previews: safe against hostile rows, readable offline, right in a real browser."""

from __future__ import annotations

import io
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mediaio import storage
from reporting import previews
from jobs.manifest_builder import write_manifest
from reporting.report import JobFacts, render_report, write_report
from engines.registry import engine_spec
from pipelines.plan import JobConfig
from pipelines.render_job import run_render_job

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
HOSTILE_ID = '<img src=x onerror="alert(1)">'
SECRET = "SECRET123"


class PageElements(HTMLParser):
    """Every element of a page (tag, attributes), and the text of each card."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.cards: dict[str, dict] = {}
        self._card: dict | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        self.elements.append((tag, attributes))
        if tag == "article":
            self._card = {"class": attributes.get("class", "").split(), "text": "", "images": []}
            self.cards[attributes["id"]] = self._card
        elif self._card is not None and tag == "img":
            self._card["images"].append(attributes)

    def handle_endtag(self, tag):
        if tag == "article":
            self._card = None

    def handle_data(self, data):
        if self._card is not None:
            self._card["text"] += data


def parse(page: str) -> PageElements:
    parser = PageElements()
    parser.feed(page)
    return parser


def assert_no_injected_markup(page: PageElements) -> None:
    assert not [tag for tag, _ in page.elements if tag in ("script", "iframe", "object", "embed")]
    handlers = [(tag, name) for tag, attributes in page.elements for name in attributes if name.startswith("on")]
    assert not handlers, handlers
    assert not [attributes for tag, attributes in page.elements if tag == "img" and attributes.get("src") == "x"]


def rng_frames(count: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def row(index, meme_id, status, **extra):
    return {"row_index": index, "id": meme_id, "status": status, "output_uri": None, "error": None, "frames": 0,
            "engine": "warp", **extra}


def test_hostile_ids_errors_and_uris_stay_text():
    rows = [
        row(0, HOSTILE_ID, "failed", error=f"row 0 ({HOSTILE_ID}): manifest: id is invalid"),
        row(1, "a", "failed", error='decode: </p><script>alert(1)</script> "quoted"',
            output_uri='/out/"><script>alert(2)</script>.mp4'),
    ]
    facts = JobFacts(output_uri="/out", manifest_uri=f"s3://bucket/m.parquet?X-Amz-Signature={SECRET}",
                     inputs={1: (f"s3://bucket/r.jpg?token={SECRET}", "/in/<b>drive</b>.mp4")})
    text = render_report(rows, facts)
    page = parse(text)
    assert_no_injected_markup(page)
    assert HOSTILE_ID in page.cards["row-0"]["text"]
    assert "<script>alert(1)</script>" in page.cards["row-1"]["text"]
    assert "/in/<b>drive</b>.mp4" in page.cards["row-1"]["text"]
    assert SECRET not in text


def test_outputs_under_the_output_prefix_are_relative_links(tmp_path):
    out = tmp_path / "out"
    rows = [row(0, "a", "ok", output_uri=str(out / "a.mp4"), frames=12, seconds_decode=0.5, seconds_render=2.0),
            row(1, "b", "ok", output_uri=str(tmp_path / "elsewhere" / "b.mp4"))]
    page = parse(render_report(rows, JobFacts(output_uri=str(out))))
    links = [attributes["href"] for tag, attributes in page.elements if tag == "a" and "href" in attributes]
    assert "a.mp4" in links
    assert not [link for link in links if "elsewhere" in link]
    assert str(tmp_path / "elsewhere" / "b.mp4") in page.cards["row-1"]["text"]
    assert "render 2.0 s" in page.cards["row-0"]["text"]


def test_report_written_through_fsspec_shows_previews_an_earlier_run_left():
    output = "memory://report-test/out"
    storage.write_replace(f"{output}/_report/done.meme.webp", b"RIFF")
    storage.write_replace(f"{output}/_report/broken.meme.webp", b"RIFF")  # stale: broken fails in this run
    rows = [row(0, "done", "skipped", output_uri=f"{output}/done.mp4"), row(1, "broken", "failed", error="x")]
    uri = write_report(rows, output, JobFacts(output_uri=output))
    page = parse(storage.read_bytes(uri).decode("utf-8"))
    assert [image["src"] for image in page.cards["row-0"]["images"]] == ["_report/done.meme.webp"]
    assert page.cards["row-1"]["images"] == []
    assert "skipped" in page.cards["row-0"]["class"] and "failed" in page.cards["row-1"]["class"]


def webp_frames(data: bytes) -> tuple[int, int, tuple[int, int]]:
    """(frame count, total milliseconds, size) of an animated WebP."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    durations = []
    for index in range(image.n_frames):
        image.seek(index)
        image.load()  # the frame's duration is known once it is decoded
        durations.append(image.info["duration"])
    return image.n_frames, sum(durations), image.size


def test_animated_preview_is_small_and_plays_in_real_time():
    frames, total_ms, size = webp_frames(previews.animated_webp(rng_frames(30, 256, 512), fps=15))
    assert 2 <= frames <= 15 and max(size) == previews.SIDE and size[0] == 2 * size[1]
    assert abs(total_ms - 2000) <= 1000 / 15 * 3  # 30 frames at 15 fps last 2 s

    long_frames, long_ms, _ = webp_frames(previews.animated_webp(rng_frames(900, 32, 32), fps=30))
    assert long_frames <= previews.MAX_FRAMES and abs(long_ms - 30_000) <= 1000


def test_previews_are_published_and_a_failing_one_leaves_the_row_alone():
    output = "memory://preview-test/out"
    image = rng_frames(1, 300, 200)[0]
    path = previews.try_publish("a", "reference", lambda: previews.still_webp(image), output)
    assert path == "_report/a.reference.webp"
    assert Image.open(io.BytesIO(storage.read_bytes(f"{output}/_report/a.reference.webp"))).size == (107, 160)

    broken = previews.try_publish("a", "meme", lambda: previews.animated_webp(np.zeros((3, 8), np.uint8), 15.0),
                                  output)
    assert broken is None


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


@pytest.mark.ray
def test_report_of_a_small_render_in_headless_chromium(ray_local, synthetic_media, tmp_path, test_clip):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (Debian: apt-get install -y chromium)")
    reference = str(synthetic_media / "reference_images" / "astronaut.png")
    rows = [
        {"id": "good", "reference_uri": reference,
         "driving_uri": str(synthetic_media / "drive_videos" / "grace_hopper.mp4"),
         "max_seconds": 1.0},
        {"id": "no-face", "reference_uri": reference, "driving_uri": str(test_clip), "max_seconds": 1.0},
        {"id": HOSTILE_ID, "reference_uri": reference, "driving_uri": str(test_clip)},
        {"id": "gone", "reference_uri": reference,
         "driving_uri": str(tmp_path / f"<script>alert(1)</script>.mp4?token={SECRET}")},
    ]
    manifest = tmp_path / "manifest.parquet"
    write_manifest(rows, str(manifest))
    output = tmp_path / "out"
    report = run_render_job(JobConfig(manifest_uri=str(manifest), output_uri=str(output),
                                         engine=engine_spec("warp", size=256)))
    assert [r["status"] for r in report.results] == ["ok", "failed", "failed", "failed"], report.results
    assert report.report_uri == str(output / "index.html")

    page_url = (output / "index.html").as_uri()
    dom = chromium("--dump-dom", page_url, profile=tmp_path / "profile").stdout
    page = parse(dom)
    assert_no_injected_markup(page)
    assert SECRET not in dom
    assert sorted(page.cards) == ["row-0", "row-1", "row-2", "row-3"]
    statuses = {card_id: card["class"][1] for card_id, card in page.cards.items()}
    assert statuses == {"row-0": "ok", "row-1": "failed", "row-2": "failed", "row-3": "failed"}
    assert HOSTILE_ID in page.cards["row-2"]["text"] and "<script>alert(1)</script>" in page.cards["row-3"]["text"]
    assert "no face" in page.cards["row-1"]["text"]

    def shown(card_id):
        return {image["src"].split(".")[-2]: output / image["src"] for image in page.cards[card_id]["images"]}

    assert sorted(shown("row-0")) == ["driving", "meme", "reference"]
    assert sorted(shown("row-1")) == ["driving", "reference"]  # it failed after decode: the inputs show
    assert webp_frames(shown("row-0")["meme"].read_bytes())[0] > 1
    assert webp_frames(shown("row-1")["driving"].read_bytes())[0] > 1

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    chromium(f"--screenshot={screenshot}", "--window-size=1280,1100", page_url, profile=tmp_path / "profile")
    assert Image.open(screenshot).size == (1280, 1100)
