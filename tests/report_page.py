"""Reading a rendered report page in tests: its elements and cards, its animated previews, headless Chromium."""

from __future__ import annotations

import io
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")


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


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)
