"""The prepare pool: a row's inputs in, only what the render stage needs out (face crops, tracks, audio).

One actor per pool slot loads mediapipe's face mesh once and prepares many rows.  For each row it

1. fetches the portrait, finds its face (in parts of the photo if it is small) and cuts the reference crop;
2. fetches the driving clip to a local temp file and reads its real facts (PyAV, no decoding);
3. streams the clip once at the generation rate, scaled down, through the face mesh: only the
   landmarks are kept (a face too small to see in the scaled-down frames -- a wide shot, a distant
   face -- is then looked for in a few frames at full size and tracked in a region around it);
4. places one stable square crop for the whole clip (HelloMeme's convention) and, for an engine
   that reads the driving pixels (``Engine.needs_driving_frames``; the warp engine reads only the
   landmarks), streams the clip again at full resolution, cutting each frame's crop as it is decoded;
5. extracts the clip's audio (its default track) for the same span; if that fails the row goes on
   silent, with a note in its ``error`` saying why.

Full-resolution frames never leave this actor and at most one is held at a time, so a row's peak
memory here is its crops plus a frame or two, whatever the source resolution.  The report's
reference and driving previews are made here, from pixels already in hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from engines.base import RowSettings, import_object
from actors.face_columns import empty_track_columns, track_columns
from faces.tracking import (CropBox, FaceError, FaceTrack, FaceTracker, crop_frames, face_region, scaled_within,
                            upright_turns)
from mediaio import clips, media, storage
from mediaio.redaction import printable, redact
from mediaio.threads import AUTO, use_threads
from reporting import previews
from reporting.metrics import worker_metrics

logger = logging.getLogger(__name__)

PREVIEW_FRAMES = 48  # driving preview frames kept, small, while the clip streams past
SMALL_FACE_SAMPLES = 5  # frames searched at full size for a face the scaled-down frames missed
# How a face that ``np.rot90(frame, turns)`` stands upright lay, for the note of an ok row.
TURNED = {1: "on its side (turned a quarter clockwise)", 2: "upside down",
          3: "on its side (turned a quarter anticlockwise)"}
# A face turned upright (a portrait or a clip lying on its side) is kept turned only if it then reads
# within this of upright; otherwise it is used as it is (a face tilted 60 degrees on purpose).
UPRIGHT_DEGREES = 20.0
# A portrait's face region enlarged more than this to the render size is noted on its row (a 64 px
# thumbnail blown up 8x rendered a blurry video without a word).
BLURRY_ENLARGEMENT = 4.0
# The start of the note an ok row's ``error`` carries when its clip's audio could not be extracted.
AUDIO_DROPPED_NOTE = "ok without sound (the driving clip's audio could not be extracted)"


class InputError(Exception):
    """An input of a row cannot be used; the message names the input and the cause.

    ``partial_columns``: the previews published before the failure, kept on the failed row.
    """

    partial_columns: dict[str, Any] = {}


def output_columns(size: int) -> dict[str, Callable[[], Any]]:
    """Columns this stage adds, with the empty values a row that did not run it carries."""
    return {
        "reference_crop": lambda: np.zeros((0, size, 3), np.uint8),
        **empty_track_columns("reference"),
        "driving_crops": lambda: np.zeros((0, size, size, 3), np.uint8),
        **empty_track_columns("driving"),
        "audio": lambda: None,
        "generation_fps": lambda: 0.0,
        "output_fps": lambda: 0.0,
        "duration": lambda: 0.0,
        "frames": lambda: 0,
        "preview_reference": lambda: None,
        "preview_driving": lambda: None,
    }


class _Stopwatch:
    """Seconds spent fetching, probing and decoding (the rest of a row's time here is the face mesh)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    def time(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        while True:
            started = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                self.seconds += time.perf_counter() - started
                return
            self.seconds += time.perf_counter() - started
            yield frame


def _named(what: str, exc: Exception) -> str:
    """An input's error that names the input once ("driving video X is a directory ..." already does)."""
    message = str(exc)
    return message if message.startswith(what) else f"{what}: {message}"


@contextlib.contextmanager
def _input_errors(what: str, uri: str) -> Iterator[None]:
    """Storage errors of reading an input as InputErrors that name it; access denied included (an S3
    "Forbidden" failed its row as "prepare: PermissionError: Forbidden", the input unnamed)."""
    try:
        yield
    except FileNotFoundError:
        raise InputError(f"{what} {printable(uri)} not found") from None
    except IsADirectoryError:
        raise InputError(f"{what} {printable(uri)} is a directory") from None
    except PermissionError as exc:
        raise InputError(f"{what} {printable(uri)} cannot be read: access denied ({printable(exc)}): the storage "
                         "credentials or the file's permissions") from None
    except storage.StorageError as exc:
        raise InputError(_named(what, exc)) from None


class PrepareActor:
    """Turns a row's URIs into face crops, face tracks and audio (see the module docstring)."""

    def __init__(self, size: int, default_fps: float | None, crop_rule: str, limits: media.MediaLimits,
                 storage_options: Mapping[str, Any], max_input_bytes: int, previews_uri: str | None = None,
                 policy: storage.StoragePolicy | None = None, threads: int = AUTO,
                 driving_crops: bool = True) -> None:
        self.size = size
        self.driving_crops = driving_crops  # False: the engine reads only the driving track (no second decode)
        self.default_fps = default_fps
        self.crop_box: Callable[[FaceTrack], CropBox] = import_object(crop_rule)  # the engine's crop convention
        self.limits = limits
        self.storage_options = dict(storage_options)
        self.max_input_bytes = max_input_bytes
        self.previews_uri = previews_uri
        self.policy = policy  # checked again on the file actually opened (symlinks resolved)
        self.threads = threads  # the decoder's and OpenCV's (mediaio/threads.py)
        use_threads(threads)
        self.tracker = FaceTracker()

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        metrics = worker_metrics()
        metrics.row_started()
        started = time.perf_counter()
        decode = _Stopwatch()
        made: dict[str, Any] = {}  # previews published so far: a row that fails later still shows its inputs
        try:
            columns = self._reference(row, decode, made)
            reference_note = columns.pop("error", "")
            with tempfile.TemporaryDirectory(prefix="hm-prepare-") as scratch:
                with decode.timing():
                    path = self._fetch_to(scratch, row["driving_uri"])
                columns.update(self._driving(row, path, decode, made))
            notes = "; ".join(note for note in (reference_note, columns.pop("error", "")) if note)
            if notes:
                columns["error"] = notes
        except InputError as exc:
            exc.partial_columns = made  # kept on the failed row by the error boundary (pipelines/rows.py)
            raise
        metrics.frames_decoded(int(columns["frames"]))
        total = time.perf_counter() - started
        columns["seconds_decode"] = float(row["seconds_decode"]) + decode.seconds
        columns["seconds_pose"] = float(row["seconds_pose"]) + total - decode.seconds
        return columns

    # -- inputs -----------------------------------------------------------------------------------

    def _read(self, uri: str, what: str) -> bytes:
        """A whole input, bounded in bytes whatever size it reports; only regular files or objects."""
        with _input_errors(what, uri):
            data = storage.read_bytes(uri, self.storage_options, max_bytes=self.max_input_bytes, policy=self.policy,
                                      what=what)
        if not data:
            raise InputError(f"{what} {printable(uri)} is empty")
        return data

    def _fetch_to(self, folder: str, uri: str) -> str:
        """The driving clip as a local file: ffmpeg and PyAV only ever open local files, never URLs."""
        what = "driving video"
        with _input_errors(what, uri):
            path = storage.fetch_to_file(uri, folder, self.storage_options, max_bytes=self.max_input_bytes,
                                         policy=self.policy, what=what)
        if os.path.getsize(path) == 0:
            raise InputError(f"{what} {printable(uri)} is empty")
        return path

    # -- reference --------------------------------------------------------------------------------

    def _reference(self, row: Mapping[str, Any], decode: _Stopwatch, made: dict[str, Any]) -> dict[str, Any]:
        uri = row["reference_uri"]
        try:
            with decode.timing():
                image = media.load_image(self._read(uri, "reference"), self.limits)
        except media.MediaError as exc:
            raise InputError(f"reference {printable(uri)} {exc}") from None
        made["preview_reference"] = self._preview(row, "reference", lambda: previews.still_webp(image))
        try:
            track = self.tracker.find(image, self.limits.landmark_side)
        except FaceError as exc:
            raise InputError(f"reference {printable(uri)}: {exc}") from None
        note = ""
        turned = self._stood_up(image, track)
        if turned is not None:  # a photo whose EXIF orientation was lost: animated upright, as such a clip is
            turns, image, track = turned
            note = f"the portrait's face lay {TURNED[turns]} and was animated turned upright (has the photo " \
                "lost its orientation tag?)"
        box = self.crop_box(track)
        crop = crop_frames(image, box, self.size)
        visible = min(box.side, max(image.shape[:2]))  # what of the crop the photo has pixels for
        if self.size / visible > BLURRY_ENLARGEMENT:
            small = f"the portrait's face region is only {visible:.0f} px across, enlarged {self.size / visible:.0f}x " \
                f"to {self.size} px, so the video looks blurry (a larger photo of the face renders sharper)"
            note = "; ".join(part for part in (note, small) if part)
        return {**({"error": note} if note else {}), "reference_crop": crop,
                **track_columns("reference", track.cropped(box, self.size)), "preview_reference": made["preview_reference"]}

    def _stood_up(self, image: np.ndarray, track: FaceTrack) -> tuple[int, np.ndarray, FaceTrack] | None:
        """(quarter turns, the turned image, its face) that stand a portrait's face lying on its side upright, or None.

        Only a face read clearly on its side (:func:`~faces.tracking.upright_turns`: its roll within
        30 degrees of a quarter turn) is turned, and the turn is kept only if the face then reads
        upright (within :data:`UPRIGHT_DEGREES`): a face tilted 60 degrees on purpose stays as it is.
        A rougher reading (-125 or -159 degrees for a quarter turn) is not acted on: the mesh reads an
        upside-down face as upright too, so a turn chosen from it could stand the face on its head.
        """
        turns = upright_turns(track)
        if turns not in (1, 3):
            return None
        upright = np.ascontiguousarray(np.rot90(image, turns))
        try:
            found = self.tracker.find(upright, self.limits.landmark_side)
        except FaceError:
            return None  # only seen lying down: animated as it lies
        if abs(np.degrees(found.rotation[0, 2])) > UPRIGHT_DEGREES:
            return None
        return turns, upright, found

    # -- driving clip -----------------------------------------------------------------------------

    def _driving(self, row: Mapping[str, Any], path: str, decode: _Stopwatch, made: dict[str, Any]) -> dict[str, Any]:
        uri = row["driving_uri"]
        settings = RowSettings.from_columns(row)
        try:
            with decode.timing():
                facts = clips.probe(path, self.limits)
            fps = clips.generation_rate(settings.fps or self.default_fps, facts, self.limits)
            span = clips.clip_span(facts, self.limits, settings.max_seconds)
        except media.MediaError as exc:
            raise InputError(f"driving video {printable(uri)} {exc}") from None
        plan = clips.ClipPlan.for_span(fps, span)
        reader = clips.ClipReader(path, facts, self.limits, self.threads)
        preview_frames: list[np.ndarray] = []
        preview_step = max(1, -(-plan.count // PREVIEW_FRAMES))

        def landmark_frames() -> Iterator[np.ndarray]:
            for index, frame in enumerate(decode.time(reader.frames(plan, max_side=self.limits.landmark_side))):
                if index % preview_step == 0:
                    preview_frames.append(scaled_within(frame, previews.SIDE))
                yield frame

        def publish_preview() -> None:
            if preview_frames:
                made["preview_driving"] = self._preview(row, "driving", lambda: previews.animated_webp(
                    np.stack(preview_frames), fps / preview_step, preview_fps=fps / preview_step))

        try:
            track = self.tracker.track(landmark_frames(), image_size=(facts.height, facts.width))
            turns = upright_turns(track)
            if turns:  # filmed sideways, its rotation tag lost: tracked again turned upright
                seen = reader.frames(plan, max_side=self.limits.landmark_side)
                try:
                    turned = self.tracker.track((np.rot90(frame, turns) for frame in decode.time(seen)),
                                                image_size=_turned_size((facts.height, facts.width), turns))
                except FaceError:
                    turned = None
                rolls = np.degrees(turned.rotation[turned.detected, 2]) if turned is not None else np.array([])
                if rolls.size and abs(float(np.median(rolls))) <= UPRIGHT_DEGREES:
                    track = turned
                else:  # turned, it does not read upright either: followed as it is
                    turns = 0
        except media.MediaError as exc:
            raise InputError(f"driving video {printable(uri)} {exc}") from None
        except FaceError as exc:
            turns = 0
            try:
                track = self._track_small_face(reader, plan, (facts.height, facts.width), decode)
            except (FaceError, media.MediaError):
                track = None
            if track is None:
                publish_preview()  # the clip decoded: show it beside the error
                raise InputError(f"driving video {printable(uri)}: {exc}") from None
        publish_preview()
        box = self.crop_box(track)
        crops = np.empty((plan.count if self.driving_crops else 0, self.size, self.size, 3), np.uint8)
        try:
            for index, frame in enumerate(decode.time(reader.frames(plan)) if self.driving_crops else ()):
                crops[index] = crop_frames(np.ascontiguousarray(np.rot90(frame, turns)), box, self.size)
        except media.MediaError as exc:
            raise InputError(f"driving video {printable(uri)} {exc}") from None
        with decode.timing():
            audio, audio_note = self._audio(row, path, span, facts)
        tag_hint = "the clip's rotation tag turns it otherwise: is the tag wrong?" if facts.rotation or facts.mirrored \
            else "has the clip lost its rotation tag?"
        turned_note = f"the driving face lay {TURNED[turns]} in every frame and was followed turned upright " \
            f"({tag_hint})" if turns else ""
        notes = "; ".join(note for note in (reader.damage_note(), audio_note, turned_note) if note)
        return {
            **({"error": notes} if notes else {}),
            "driving_crops": crops,
            **track_columns("driving", track.cropped(box, self.size)),
            "audio": audio,
            "generation_fps": float(fps),
            "output_fps": float(clips.output_rate(facts, self.limits)),
            "duration": float(span),
            "frames": int(plan.count),
            "preview_driving": made.get("preview_driving"),
        }

    def _audio(self, row: Mapping[str, Any], path: str, span: float,
               facts: clips.ClipFacts) -> tuple[bytes | None, str]:
        """The clip's audio (its default track) for ``span``, and a note for the row's results if a clip
        with audio gives none: the row still renders, silent, and says why instead of only logging it."""
        if not facts.has_audio:
            return None, ""
        try:
            return media.extract_audio(path, span, self.limits, facts.audio_delay, facts.audio_index), ""
        except media.MediaError as exc:
            logger.warning("row %d (%s): the driving clip's audio is left out: %s", int(row["row_index"]),
                           printable(row["id"]), printable(str(exc)))
            return None, redact(f"{AUDIO_DROPPED_NOTE}: {exc}")

    def _track_small_face(self, reader: clips.ClipReader, plan: clips.ClipPlan, image_size: tuple[int, int],
                          decode: _Stopwatch) -> FaceTrack | None:
        """The face of a clip whose frames, scaled whole to the mesh's side, showed none (a wide shot, a
        distant face): found in a few frames at full size, then tracked in a region around it; None if
        those frames show no face either.  Paid only by clips that would otherwise fail."""
        step = max(1, plan.count // SMALL_FACE_SAMPLES)
        sampled = (frame for index, frame in enumerate(decode.time(reader.frames(plan))) if index % step == 0)
        region = face_region(self.tracker, sampled, self.limits.landmark_side)
        if region is None:
            return None
        side = min(self.limits.landmark_side, max(2, int(round(region.side))))
        crops = (crop_frames(frame, region, side) for frame in decode.time(reader.frames(plan)))
        return self.tracker.track(crops, image_size=image_size, region=region)

    def _preview(self, row: Mapping[str, Any], kind: str, make: Callable[[], bytes]) -> str | None:
        if self.previews_uri is None:
            return None
        return previews.try_publish(str(row["id"]), kind, make, self.previews_uri, self.storage_options,
                                    str(row.get("fingerprint") or ""))


def _turned_size(size: tuple[int, int], turns: int) -> tuple[int, int]:
    """(height, width) of an image of ``size`` after ``turns`` quarter turns."""
    return (size[1], size[0]) if turns % 2 else size
