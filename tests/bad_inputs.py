"""A corpus of bad and awkward inputs, generated with the real ffmpeg from any media folder laid out like
``../shared/media`` (the tests use the media they synthesise, so the corpus needs nothing outside the repo).

``build_corpus(folder, media_dir)`` writes the files and returns manifest rows, each tagged with
what the test expects: ``expect="failed"`` with words its error must contain, or ``expect="ok"``
for inputs that are awkward but valid (odd pixel formats, rotation metadata, image modes...).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mediaio.media import ffmpeg_exe


# Markup where a report shows text: as an id, and in a path (with a token the report must not show).
MARKUP_ID = '<img src=x onerror="alert(1)">'
MARKUP_PATH = "<script>alert(1)</script>.mp4"


@dataclass(frozen=True)
class Case:
    row: dict
    expect: str  # "ok" or "failed"
    words: tuple[str, ...] = field(default_factory=tuple)  # the error must contain each (case-insensitive)


def write_raw_manifest(rows: list[dict], path: Path) -> None:
    """Rows written as Parquet as they are: the manifest builder refuses over-long cells, a hostile user does not."""
    from jobs.manifest_builder import _ARROW_TYPES
    from pipelines.manifest import KNOWN_COLUMNS

    columns = list(dict.fromkeys(name for row in rows for name in row))
    schema = pa.schema([(name, _ARROW_TYPES[KNOWN_COLUMNS.get(name, "string")]) for name in columns])
    pq.write_table(pa.Table.from_pylist([{name: row.get(name) for name in columns} for row in rows], schema=schema),
                   str(path))


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)


def _h264(*extra: str) -> list[str]:
    return ["-c:v", "libx264", "-preset", "ultrafast", *extra]


def build_corpus(folder: Path, media_dir: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    clip = sorted((media_dir / "drive_videos").glob("*.mp4"))[0]
    f = lambda name: str(folder / name)  # noqa: E731
    portrait = Path(f("portrait.jpg"))
    Image.open(sorted((media_dir / "reference_images").iterdir())[0]).convert("RGB").save(portrait, quality=92)

    # A short base clip keeps every render cheap.
    _ffmpeg("-i", str(clip), "-t", "1.2", *_h264(), "-c:a", "aac", f("base.mp4"))
    base = f("base.mp4")

    # ---- files that are not what they claim to be
    Path(f("empty.mp4")).write_bytes(b"")
    Path(f("empty.jpg")).write_bytes(b"")
    Path(f("notes.txt")).write_text("not media at all\n")
    Path(f("random.mp4")).write_bytes(np.random.default_rng(0).bytes(50_000))
    data = Path(base).read_bytes()
    Path(f("truncated.mp4")).write_bytes(data[: len(data) // 3])  # moov atom at the end: lost
    Path(f("truncated.jpg")).write_bytes(portrait.read_bytes()[:3000])
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", f("audio_only.m4a"))
    _ffmpeg("-i", base, "-map", "0:v", "-frames:v", "0", *_h264(), f("zero_frames.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15:duration=1", *_h264(), f("no_face.mp4"))
    Image.new("RGB", (400, 400), (120, 160, 200)).save(f("no_face.jpg"))
    Image.new("L", (9000, 8000), 90).save(f("8k.png"))  # 72 MP: over what a PNG may be (a JPEG is read reduced)
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=8192x4320:rate=1:duration=1", *_h264(), f("8k.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=32x32:rate=1:duration=3600", *_h264(), f("one_hour.mp4"))
    (folder / "a_directory").mkdir(exist_ok=True)
    os.symlink("/etc/hostname", f("link_outside.mp4"))  # inside the allowed folder, pointing out of it

    # ---- awkward but valid
    _ffmpeg("-i", base, "-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(t,0.4,0.7)'",
             *_h264(), "-c:a", "copy", f("face_lost.mp4"))
    _ffmpeg("-i", base, "-filter_complex", "[0:v]split[a][b];[b]scale=iw/4:ih/4[s];[a][s]overlay=8:8",
             *_h264(), "-c:a", "copy", f("two_faces.mp4"))
    _ffmpeg("-i", base, "-pix_fmt", "yuv420p10le", *_h264(), "-c:a", "copy", f("ten_bit.mp4"))
    _ffmpeg("-i", base, "-pix_fmt", "yuvj420p", *_h264(), "-c:a", "copy", f("yuvj.mp4"))
    _ffmpeg("-i", base, "-pix_fmt", "yuv444p", *_h264(), "-c:a", "copy", f("yuv444.mp4"))
    _ffmpeg("-i", base, "-vf", "scale=383:383", "-c:v", "mpeg4", "-q:v", "3", "-c:a", "copy", f("odd_size.mkv"))
    _ffmpeg("-i", base, "-vf", "transpose=clock", *_h264(), "-c:a", "copy", f("sideways.mp4"))
    _ffmpeg("-display_rotation:v:0", "90", "-i", f("sideways.mp4"), "-c", "copy", f("rotated.mp4"))
    _ffmpeg("-i", base, "-an", *_h264(), f("silent.mp4"))  # many meme clips have no audio track
    _ffmpeg("-i", base, "-vf", "setpts='if(lt(N,8),PTS,PTS*2)'", "-fps_mode", "vfr", *_h264(), "-an",
             f("variable_rate.mp4"))
    _ffmpeg("-i", base, "-i", base, "-map", "0:v", "-map", "1:v", "-map", "0:a", "-c", "copy",
             f("two_video_streams.mp4"))
    image = Image.open(portrait).convert("RGB")
    image.save(f("animated.gif"), save_all=True, append_images=[image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    image.convert("L").save(f("gray.png"))
    image.convert("CMYK").save(f("cmyk.jpg"))
    rgba = image.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(f("rgba.png"))
    image.convert("P", palette=Image.Palette.ADAPTIVE).save(f("palette.png"))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; viewers (and we) rotate it upright
    image.transpose(Image.Transpose.ROTATE_270).save(f("exif_rotated.jpg"), exif=exif)

    ref, drv = str(portrait), base
    rows: list[Case] = []

    def bad(row_id, words, **row):
        rows.append(Case({"id": row_id, "reference_uri": ref, "driving_uri": drv, **row}, "failed", words))

    def good(row_id, **row):
        rows.append(Case({"id": row_id, "reference_uri": ref, "driving_uri": drv, **row}, "ok"))

    good("plain")
    bad("missing-driving", ("missing.mp4", "not found"), driving_uri=f("missing.mp4"))
    bad("missing-reference", ("missing.jpg", "not found"), reference_uri=f("missing.jpg"))
    bad("empty-driving", ("empty.mp4", "empty"), driving_uri=f("empty.mp4"))
    bad("empty-reference", ("empty.jpg", "empty"), reference_uri=f("empty.jpg"))
    bad("truncated-mp4", ("truncated.mp4", "moov"), driving_uri=f("truncated.mp4"))
    bad("truncated-jpeg", ("truncated.jpg",), reference_uri=f("truncated.jpg"))
    bad("random-bytes", ("random.mp4",), driving_uri=f("random.mp4"))
    bad("zero-frames", ("zero_frames.mp4",), driving_uri=f("zero_frames.mp4"))
    bad("audio-only", ("audio_only.m4a", "no video stream"), driving_uri=f("audio_only.m4a"))
    bad("image-as-driving", ("portrait.jpg", "still image"), driving_uri=ref)
    bad("video-as-reference", ("reference", "not an image"), reference_uri=drv)
    bad("text-as-reference", ("notes.txt", "not an image"), reference_uri=f("notes.txt"))
    bad("text-as-driving", ("notes.txt",), driving_uri=f("notes.txt"))
    bad("no-face-clip", ("no_face.mp4", "no face"), driving_uri=f("no_face.mp4"))
    bad("no-face-reference", ("no_face.jpg", "no face"), reference_uri=f("no_face.jpg"))
    bad("8k-image", ("8k.png", "over the cap"), reference_uri=f("8k.png"))
    bad("8k-video", ("8k.mp4", "over the cap"), driving_uri=f("8k.mp4"))
    bad("one-hour-clip", ("one_hour.mp4", "over the cap"), driving_uri=f("one_hour.mp4"))
    bad("directory-as-driving", ("a_directory",), driving_uri=f("a_directory"))
    bad("symlink-outside-roots", ("outside the allowed roots",), driving_uri=f("link_outside.mp4"))
    bad("..", ("invalid",))
    bad("/etc/passwd", ("invalid",))
    bad("a/b", ("invalid",))
    bad("x" * 129, ("id is 129 characters long", "over the limit"))
    bad("", ("id is missing",))
    bad("plain", ("duplicate id",))
    bad("http-reference", ("http", "scheme"), reference_uri="http://127.0.0.1:9/a.jpg")
    bad("https-driving", ("https", "scheme"), driving_uri="https://127.0.0.1:9/a.mp4")
    bad("ftp-driving", ("ftp", "scheme"), driving_uri="ftp://127.0.0.1/a.mp4")
    bad("file-uri-outside-roots", ("outside the allowed roots",), reference_uri="file:///etc/hostname")
    bad("path-outside-roots", ("outside the allowed roots",), driving_uri="/etc/hostname")
    bad("traversal-outside-roots", ("outside the allowed roots",), driving_uri=f("../../etc/hostname"))
    bad("credentials-in-uri", ("credentials",), driving_uri="s3://AKIAEXAMPLE:canary-secret-123@bucket/a.mp4")
    bad(MARKUP_ID, ("invalid",))
    bad("markup-and-token-in-path", ("not found",), driving_uri=f(f"{MARKUP_PATH}?token=canary-secret-123"))
    bad("output-outside-roots", ("output_uri", "outside the allowed roots"), output_uri="/tmp/elsewhere/x.mp4")
    bad("unknown-engine", ("unknown engine",), engine="dreamer")
    bad("negative-seed", ("seed",), seed=-1)
    bad("negative-steps", ("steps",), steps=-5)
    bad("nan-guidance", ("guidance",), guidance=float("nan"))
    bad("infinite-guidance", ("guidance",), guidance=float("inf"))
    bad("zero-fps", ("fps",), fps=0.0)
    bad("negative-max-seconds", ("max_seconds",), max_seconds=-1.0)
    bad("frame-rate-under-one", ("fps",), fps=0.001)
    bad("shorter-than-a-frame", ("max_seconds",), max_seconds=1e-9)
    bad("empty-reference-uri", ("reference_uri is empty",), reference_uri="")
    bad("null-driving-uri", ("driving_uri is empty",), driving_uri=None)

    good("face-lost-for-a-while", driving_uri=f("face_lost.mp4"))
    good("two-faces", driving_uri=f("two_faces.mp4"))
    good("ten-bit", driving_uri=f("ten_bit.mp4"))
    good("yuvj", driving_uri=f("yuvj.mp4"))
    good("yuv444", driving_uri=f("yuv444.mp4"))
    good("odd-size-mkv", driving_uri=f("odd_size.mkv"))
    good("rotation-metadata", driving_uri=f("rotated.mp4"))
    good("gray-reference", reference_uri=f("gray.png"))
    good("cmyk-reference", reference_uri=f("cmyk.jpg"))
    good("rgba-reference", reference_uri=f("rgba.png"))
    good("palette-reference", reference_uri=f("palette.png"))
    good("exif-rotated-reference", reference_uri=f("exif_rotated.jpg"))
    good("no-audio", driving_uri=f("silent.mp4"))
    good("variable-frame-rate", driving_uri=f("variable_rate.mp4"))
    good("two-video-streams", driving_uri=f("two_video_streams.mp4"))
    good("animated-gif-reference", reference_uri=f("animated.gif"))
    return rows
