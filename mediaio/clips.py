"""Driving clips read with PyAV: real stream facts, and frames streamed at the generation rate.

Why PyAV and not the ffmpeg binary's text output: the facts a cap is checked on (size, frame rate,
duration) come from the stream's codec parameters, the packets' timestamps and the decoded frames
themselves, never from text that a file's metadata can fill.  The container is opened with an
allow-list of plain demuxers (no playlists, manifests, concat lists or image patterns, which
would open other files) and the ``file`` protocol only, and no external data references.

A clip is read in passes, each streaming one frame at a time, so a row never holds more than a
frame or two at full resolution:

- :func:`probe` demuxes packets only (no decoding) to measure the real frame rate and duration;
- :meth:`ClipReader.frames` decodes and yields the frames picked at the generation rate, by
  their timestamps, the same frames on every pass.

Lives in ``mediaio``: imports no Ray and nothing of this project.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from mediaio import colour_tags, metadata_tags, sample_tables, storage
from mediaio.media import TRANSPARENT_BACKGROUND, MediaError, MediaLimits, check_sides
from mediaio.threads import AUTO

logger = logging.getLogger(__name__)

# Demuxers a driving clip may use: plain containers that read one file and nothing else.
ALLOWED_DEMUXERS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "flv", "mpegts", "mpeg",
                    "ogg", "asf", "gif", "apng", "h264", "hevc")
# The file suffixes of clips these demuxers read: a folder of driving clips (`manifest build
# --drivers`) is scanned for these.  Every demuxer named here is in ALLOWED_DEMUXERS (a test checks).
VIDEO_SUFFIXES: dict[str, str] = {
    **dict.fromkeys((".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".mj2"), "mov"),
    ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".flv": "flv",
    **dict.fromkeys((".ts", ".mts", ".m2ts"), "mpegts"), **dict.fromkeys((".mpg", ".mpeg", ".vob"), "mpeg"),
    ".ogv": "ogg", **dict.fromkeys((".wmv", ".asf"), "asf"), ".gif": "gif",
}
_OPEN_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(ALLOWED_DEMUXERS),
    "enable_drefs": "0",  # mov: never follow data references to other files
    "use_absolute_path": "0",
}
# Real clips have steady rates far below this; a higher measured rate is a broken or hostile file.
MAX_SOURCE_FPS = 1000.0
# Containers whose timestamps may jump: MPEG transport and program streams (recordings joined
# byte-wise, a broadcast's clock reset).  In these a jump back in time, or forward by more than
# TIMESTAMP_JUMP seconds, is a join, not a pause: the frames after it follow one frame after the
# frame before it, as ffmpeg plays such files (and as it reads their audio).
JOINABLE_DEMUXERS = ("mpegts", "mpeg")
TIMESTAMP_JUMP = 10.0  # seconds: ffmpeg's own threshold for these formats
_WEBP_ANIMATED = 0x02  # the animation flag of a WebP file's VP8X header
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class ClipFacts:
    """What a clip really is, measured from its stream and packets."""

    container: str
    codec: str
    width: int  # as displayed (rotation applied)
    height: int
    rotation: int  # degrees the frames are turned (anticlockwise) for display
    source_fps: float  # from the packets' timestamps
    duration: float  # seconds from the first to the end of the last frame
    frame_count: int
    has_audio: bool
    # Seconds the audio stream used starts after the first frame (negative: before it).  A clip
    # whose audio starts late keeps its gap in the output, so the sound stays on the picture.
    audio_delay: float = 0.0
    # The frames are mirrored left-right before that turn (a display matrix that flips: a front
    # camera's mirror selfie); see :func:`display_transform`.
    mirrored: bool = False
    # The container's index of the audio stream used (:func:`_audio_stream`: the one marked default,
    # else the first), which the audio is extracted from; None without audio.
    audio_index: int | None = None
    # The stream's colour tags where it is HDR (PQ, HLG: an iPhone's default) or wide-gamut (BT.2020, P3):
    # its frames are converted to sRGB as a player shows them; None where they are read as they are.
    colour: colour_tags.ColourTags | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _open(path: str, max_streams: int | None = None):
    """The clip opened with the allow-list, its streams past ``max_streams`` (default MediaLimits') not set up."""
    import av
    import av.logging

    # libav's own error lines name the cause ("moov atom not found"); PyAV adds the last one to its
    # exceptions only when it records errors.  Capture keeps them out of the process's log.
    # Recording is on only while the file opens, which runs on this thread alone.  Left on, a
    # decoder's frame thread that logs an error needs the GIL, while closing the decoder holds the
    # GIL and waits for that thread: the process hangs (PyAV issues 909 and 1861).
    av.logging.set_level(av.logging.ERROR)
    logging.getLogger("libav").setLevel(logging.CRITICAL)  # its lines reach the user inside our errors instead
    most = MediaLimits().max_streams if max_streams is None else max_streams
    logs: list = []
    try:
        with av.logging.Capture(local=True) as logs:
            # One stream over the cap is set up, so a clip over it is told from one at it (probe).
            return av.open(path, options={**_OPEN_OPTIONS, "max_streams": str(most + 1)}, metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        # The MP4 and Ogg readers give up at the stream past the cap ("error reading header").
        if any("max_streams" in str(line[-1]) for line in logs):
            raise MediaError(too_many_streams(most)) from None
        raise MediaError(_not_a_video_reason(path, exc)) from None
    finally:
        av.logging.set_level(None)


def too_many_streams(most: int) -> str:
    """Why a clip of more than ``most`` streams is refused (MediaLimits.max_streams)."""
    return (f"holds over {most} streams (sound, subtitle or data tracks), more than a clip this tool reads has (a "
            "damaged or hostile file: each is set up as the clip opens, hundreds of MB for a few hundred)")


def _not_a_video_reason(path: str, exc: BaseException) -> str:
    """Why a file did not open: a still image, a container outside the allow-list, or ffmpeg's own words."""
    import av

    with open(path, "rb") as handle:
        head = handle.read(32)
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "is an audio file (WAV), not a video"
    if head.startswith(b"RIFF") and head[8:16] == b"WEBPVP8X" and head[20] & _WEBP_ANIMATED:
        return "is an animated WebP, which cannot be read as a video: convert it to MP4 or GIF"
    if head.startswith(_IMAGE_MAGIC) and not head.startswith(b"GIF8") and not head[8:12] == b"AVI ":
        return ("is a still image, not a video: the clip goes in driving_uri and the portrait in reference_uri "
                "(are they swapped?)")
    cause = _av_message(exc)
    if "whitelist" in cause or (isinstance(exc, av.error.InvalidDataError) and "last error log" not in str(exc)):
        return f"is not a video in a supported container ({', '.join(ALLOWED_DEMUXERS[:10])}, ...)"
    return f"cannot be opened as a video: {cause}"


def _av_message(exc: BaseException) -> str:
    """libav's cause for a PyAV error, without the temp file's path."""
    text = str(exc)
    if "last error log:" in text:
        return text.split("last error log:", 1)[1].split("]", 1)[-1].strip()
    return str(getattr(exc, "strerror", None) or text).split(":")[0]


def _video_stream(container):
    """The clip's picture: its first moving-picture stream marked default, else its first one.

    A cover picture (an MP4's or an M4A's embedded thumbnail) is not a moving picture; a Matroska
    file keeps its thumbnail as an ordinary stream, often first, but not marked default.
    """
    import av

    flags = av.stream.Disposition
    moving = [stream for stream in container.streams.video if not stream.disposition & flags.attached_pic]
    if not moving:
        kind = (" (only a cover picture)" if container.streams.video
                else " (audio only)" if container.streams.audio else "")
        raise MediaError(f"has no video stream{kind}")
    return _default_or_first(moving)


def _audio_stream(container):
    """The clip's sound: its audio stream marked default, else its first one (None without audio).

    The same rule as the picture's (:func:`_video_stream`): a clip with a commentary or a second
    language track plays the track its player would.
    """
    tracks = list(container.streams.audio)
    return _default_or_first(tracks) if tracks else None


def _default_or_first(streams: list):
    """The stream marked default among ``streams`` (not empty), else the first: what a player plays."""
    import av

    return next((stream for stream in streams if stream.disposition & av.stream.Disposition.default), streams[0])


def _display_size(stream, width: int, height: int) -> tuple[int, int]:
    """The frame size as shown: non-square pixels (an anamorphic clip, HDV's 1440x1080) are stretched to square.

    The side that grows is stretched, so no detail is lost; the face mesh and the crops then see
    the face in its true proportions.
    """
    aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if not aspect or aspect <= 0 or aspect == 1:
        return width, height
    if aspect > 1:
        return int(round(width * aspect)), height
    return width, int(round(height / aspect))


def probe(path: str, limits: MediaLimits) -> ClipFacts:
    """The clip's real facts, from its codec parameters and packet timestamps; nothing is decoded.

    Refuses clips over the pixel cap here, before any frame is decoded, and MP4s whose sample
    tables claim more than the index cap, before the file is opened (its index alone would be GBs).
    """
    import av

    if sample_tables.is_iso_media(path):
        claimed = sample_tables.index_entries(path, limits.max_index_entries)
        if claimed > limits.max_index_entries:
            raise MediaError(f"its tracks claim over {limits.max_index_entries:,} samples (each edit of an edit "
                             "list counting the samples it plays), more than a clip this tool reads has (a damaged "
                             "or hostile MP4, whose index alone would take GBs of memory)")
    if metadata_tags.tag_count(path, limits.max_metadata_tags) > limits.max_metadata_tags:
        raise MediaError(f"holds over {limits.max_metadata_tags:,} metadata tags, more than a clip this tool reads "
                         "has (a damaged or hostile file, which would take minutes to open)")
    with _open(path, limits.max_streams) as container:
        if container.format.name.split(",")[0] not in ALLOWED_DEMUXERS:
            raise MediaError(f"container {container.format.name!r} is not allowed")
        if len(container.streams) > limits.max_streams:
            raise MediaError(too_many_streams(limits.max_streams))
        stream = _video_stream(container)
        if stream.codec_context is None:  # a codec id libav does not know: a damaged header, or an exotic codec
            raise MediaError("has a video stream in a codec this reader does not know (a damaged file, or a codec "
                             "it cannot decode): convert it to H.264")
        codec = stream.codec_context.name
        colour = _colour_of(stream.codec_context)
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise MediaError("video stream has no frame size")
        if width * height > limits.max_video_pixels:
            raise MediaError(f"video is {width}x{height}, over the cap of {limits.max_video_pixels / 1e6:.1f} "
                             "megapixels")
        check_sides(width, height, limits, "video")
        shown = _display_size(stream, width, height)
        if shown != (width, height):
            if shown[0] * shown[1] > limits.max_video_pixels:
                raise MediaError(f"video is {shown[0]}x{shown[1]} as displayed (its pixels are not square), over the "
                                 f"cap of {limits.max_video_pixels / 1e6:.1f} megapixels")
            check_sides(*shown, limits, "video as displayed (its pixels are not square)")
            width, height = shown
        nominal = float(stream.guessed_rate) if stream.guessed_rate else 0.0
        audio = _audio_stream(container)
        audio_index = None if audio is None else int(audio.index)
        audio_start = None if audio is None else _start_seconds(audio)
        packets: list[tuple[float | None, float]] = []  # (decode time, display time) in decode order
        time_base = float(stream.time_base) if stream.time_base else 0.0
        cap = limits.max_seconds
        untimed = 0  # packets without a timestamp: a raw H.264/HEVC stream (a camera's .h264 file) has none
        audio_end: float | None = None  # where the audio's own packets end (see below)
        audio_packets, audio_measured = 0, True
        # A joined recording's sound jumps where its picture does: closed the same way, so its end is
        # where the joined sound ends (in a TS clip, as elsewhere, not where the picture stops).
        audio_joiner = TimestampJoiner(container.format.name, 0.0)
        try:
            for packet in container.demux(*((stream,) if audio is None else (stream, audio))):
                if audio is not None and packet.stream_index == audio.index:
                    # The sound's end from its packets, as a player plays it: Matroska, WebM and FLV say
                    # no stream duration (a clip whose sound outlasts its picture was cut at the picture
                    # there, and held to the sound's end in an MP4), and an AVI's header can claim more.
                    audio_packets += 1
                    if audio_packets > MAX_SOURCE_FPS * (cap + 2):
                        audio_measured = False  # not a real clip's sound: its header says, as before
                    elif audio_measured and packet.size and not packet.is_discard and packet.pts is not None \
                            and audio.time_base:
                        begin = float(packet.pts * audio.time_base)
                        begin += audio_joiner.offset(begin)
                        end = begin + float((packet.duration or 0) * audio.time_base)
                        if audio_end is None:
                            audio_end = end
                        elif begin <= audio_end + TIMESTAMP_JUMP:
                            # A packet further on than that is a damaged timestamp, not sound after a pause:
                            # it made a 2-s clip's sound "last" 1000 s (refused as over the cap).
                            audio_end = max(audio_end, end)
                    continue
                # Discarded packets lie before the start of the clip's edit list (a phone's trim): the
                # decoder never shows them, so they are not part of the clip's length.
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    untimed += 1
                else:
                    packets.append((None if packet.dts is None else packet.dts * time_base, packet.pts * time_base))
                if len(packets) + untimed > MAX_SOURCE_FPS * (cap + 2):
                    break
        except av.error.FFmpegError as exc:
            # A damaged stream the demuxer gives up on (an Ogg file whose sound lost its headers): the
            # row said "prepare: InvalidDataError: [Errno 1094995529] ...", with the worker's temp path.
            raise MediaError(f"cannot be read as a video: {_av_message(exc)}") from None
        times = _joined_times(container.format.name, packets) if packets else []
        audio_measured = audio_measured and audio_end is not None
        if audio is not None and not audio_measured:
            audio_end = _stream_end(audio)
        if not times and untimed:
            # One packet a frame, at the rate of the stream's own timing information (the decoder's
            # reading of it; the demuxer's guesses can be twice it, or its default of 25).
            rate = float(stream.codec_context.framerate or stream.guessed_rate or 0)
            if rate <= 0:
                raise MediaError("video has no timestamps and no frame rate")
            times = list(np.arange(untimed) / rate)
    if not times:
        raise MediaError("video has no frames")
    delays = GifDelays(container.format.name)
    times = np.array([delays.shown(float(time)) for time in np.sort(np.asarray(times, dtype=np.float64))])
    (rotation, mirrored), first_shown = _first_frame(path, limits.max_streams)
    if first_shown is not None and np.any(times >= first_shown):
        # A recording cut mid-stream (a TS capture) starts with frames that need a picture it does not
        # hold: the decoder never shows them, so the clip (and the audio's offset) starts at its first
        # shown frame.  Elsewhere that is the first packet's time.
        times = times[times >= first_shown]
    audio_delay = 0.0 if audio_start is None else audio_start - float(times[0])
    start = float(times[0])
    times -= start
    if rotation % 180 == 90:
        width, height = height, width
    fps = _measured_fps(times, nominal)
    sound_until = None
    if audio_end is not None and (audio_measured or container.format.name.split(",")[0] not in JOINABLE_DEMUXERS):
        sound_until = audio_end - start  # a joinable container's header end is not the joined sound's
    return ClipFacts(container=container.format.name, codec=codec, width=width, height=height, rotation=rotation,
                     mirrored=mirrored, colour=colour,
                     source_fps=fps, duration=_measured_duration(times, fps, sound_until), frame_count=len(times),
                     has_audio=audio_index is not None, audio_delay=audio_delay, audio_index=audio_index)


class TimestampJoiner:
    """Closes the jumps in a joinable container's timestamps as they stream past (JOINABLE_DEMUXERS).

    Fed a stream's times in an order where they only grow (packets' decode times, or decoded
    frames' times), :meth:`offset` says how far to move each to close the jumps seen so far;
    elsewhere it is always 0.
    """

    def __init__(self, container: str, step: float) -> None:
        self.enabled = container.split(",")[0] in JOINABLE_DEMUXERS
        self.step = step  # one frame: the gap left at a join
        self.shift = 0.0
        self.last: float | None = None
        self.joins = 0

    def offset(self, time: float) -> float:
        if not self.enabled:
            return 0.0
        moved = time + self.shift
        if self.last is not None and (moved < self.last or moved - self.last > TIMESTAMP_JUMP):
            self.shift += self.last + self.step - moved
            self.joins += 1
        self.last = time + self.shift
        return self.shift


# Browsers (Chrome, Firefox, Safari) show a GIF frame whose delay is 10 ms or less (1/100 s is the
# format's step) for 100 ms; ffmpeg plays 10 ms as given.  A GIF saved with 1/100-s delays, seen at
# 10 fps wherever it came from, rendered ten times too fast (3 s of motion in a 0.3-s video).
GIF_SHORTEST_SHOWN_DELAY = 0.011
GIF_DELAY_INSTEAD = 0.1


class GifDelays:
    """A GIF's frame times as browsers show them: each delay of 10 ms or less lasts 100 ms.

    Fed a stream's frame times in order, :meth:`shown` gives each one's time as shown; in other
    containers, the time unchanged (ffmpeg already takes a GIF's 0 delays as 100 ms).
    """

    def __init__(self, container: str) -> None:
        self.enabled = container.split(",")[0] == "gif"
        self.last: float | None = None
        self.last_shown = 0.0

    def shown(self, time: float) -> float:
        if not self.enabled:
            return time
        if self.last is None:
            shown = time
        else:
            step = time - self.last
            # Rounded to a microsecond: sums of 0.1 drift (0.30000000000000004), and a frame time
            # that should fall exactly between two picks then picked the later frame.
            shown = round(self.last_shown + (step if step >= GIF_SHORTEST_SHOWN_DELAY else GIF_DELAY_INSTEAD), 6)
        self.last, self.last_shown = time, shown
        return shown


def _joined_times(container: str, packets: list[tuple[float | None, float]]) -> list[float]:
    """Packets' display times (``(decode time or None, display time)`` in decode order) with the
    container's timestamp jumps closed (:class:`TimestampJoiner`)."""
    keys = np.array([shown if decoded is None else decoded for decoded, shown in packets])
    steps = np.diff(keys)
    steps = steps[steps > 0]
    joiner = TimestampJoiner(container, float(np.median(steps)) if len(steps) else 0.0)
    times = [shown + joiner.offset(float(key)) for key, (_, shown) in zip(keys, packets)]
    if joiner.joins:
        logger.info("the clip's timestamps jump %d time(s) (joined recordings): played one after another",
                    joiner.joins)
    return times


def _stream_end(stream) -> float | None:
    """When a stream ends by its own header, in seconds (None where the container does not say)."""
    if stream.duration and stream.time_base:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    return None


def _start_seconds(stream) -> float | None:
    """When a stream's first packet is shown, in seconds, or None where the container does not say."""
    if stream.start_time is None or not stream.time_base:
        return None
    return float(stream.start_time * stream.time_base)


# Sound that goes on this long after a clip's last picture ends is kept, the picture held (see
# _measured_duration); less is the audio codec's padding, not a tail.
AUDIO_TAIL_SECONDS = 0.5

# A clip whose decoder refuses more packets than this is not damaged here and there: it stops being read.
MAX_DAMAGED_PACKETS = 1000

# Matroska, WebM and FLV keep timestamps in milliseconds: each is off by up to half of one.
TIMESTAMP_ROUNDING = 0.001
# A stream's nominal rate is taken for its measured one when the two agree this closely: the
# timestamps decide, the exact fraction (30000/1001, not 29.9700...) only tidies them.
NOMINAL_RATE_TOLERANCE = 0.01


def _measured_fps(times: np.ndarray, nominal: float = 0.0) -> float:
    """The clip's frame rate from its timestamps: the mean spacing of its regular steps.

    The median step says what a regular step is, so a variable-rate clip's pauses, dropped frames
    and faster stretches do not count; the mean over the steps within rounding of it undoes
    rounded timestamps.  Matroska, WebM and FLV keep milliseconds: a 29.97 fps clip steps 33 and
    34 ms (the median alone said 30.30 fps) and a 60 fps one 16 and 17 ms (58.8).  ``nominal``
    (the stream's own rate, 0 if none) is used where it agrees within NOMINAL_RATE_TOLERANCE.
    """
    steps = np.diff(np.unique(times))
    steps = steps[steps > 0]
    if len(steps) == 0:
        return 0.0
    median = float(np.median(steps))
    # Steps that differ from the median by rounding only: not a variable-rate clip's half steps.
    regular = steps[np.abs(steps - median) <= max(2 * TIMESTAMP_ROUNDING, 0.1 * median)]
    fps = len(regular) / float(regular.sum())
    if not math.isfinite(fps):
        return 0.0
    if nominal > 0 and abs(nominal - fps) <= NOMINAL_RATE_TOLERANCE * fps:
        return nominal
    return fps


def _measured_duration(times: np.ndarray, fps: float, sound_until: float | None = None) -> float:
    """From the first frame to the end of the last, which lasts one frame at ``fps``; or, where the
    clip's sound goes on for more than AUDIO_TAIL_SECONDS after that (``sound_until``, from the
    first frame), to the end of the sound.

    A screen recording or an export that freezes on its end card stores the last picture once,
    and a clip's picture can stop before its sound; a player holds the last picture while the
    sound plays, and so does the render.  Without sound a held last picture is only a still tail
    (a GIF's pause before it loops), so it is not kept.
    """
    one_frame = float(times[-1]) + (1.0 / fps if fps > 0 else 0.0)
    if sound_until is not None and sound_until > one_frame + AUDIO_TAIL_SECONDS:
        return float(sound_until)
    return one_frame


def _first_frame(path: str, max_streams: int | None = None) -> tuple[tuple[int, bool], float | None]:
    """How the first shown frame is turned for display (:func:`display_transform`), and its time (None: none)."""
    import av

    with _open(path, max_streams) as container:
        stream = _video_stream(container)
        try:
            for frame in container.decode(stream):
                return display_transform(frame), frame.time
        except av.error.FFmpegError:
            pass  # nothing decodes: the frame reader says so, with the cause
    return (0, False), None


def _display_matrix(frame) -> np.ndarray | None:
    """The frame's display matrix (9 int32, 16.16 fixed point for the 2x2 part), or None."""
    try:
        side_data = frame.side_data.get("DISPLAYMATRIX")
        return None if side_data is None else np.frombuffer(bytes(side_data), dtype=np.int32)[:9]
    except Exception:  # noqa: BLE001 - another PyAV: its rotation angle alone
        return None


def display_transform(frame) -> tuple[int, bool]:
    """(degrees turned anticlockwise, mirrored left-right before the turn) that show a decoded frame as players do.

    A display matrix may flip as well as turn: a front camera tags its mirror selfie so.  PyAV's
    ``frame.rotation`` alone reads a left-right flip as a half turn (the face upside down) and a
    turn with a flip as the plain turn (the face mirrored: head turns go the wrong way).  This
    reads the matrix as ffmpeg's autorotate does (fftools: a transpose for quarter turns, hflip
    and vflip for half turns and flips); angles between quarter turns are left unturned.
    """
    matrix = _display_matrix(frame)
    if matrix is None or len(matrix) < 5:
        return int(round(getattr(frame, "rotation", 0) or 0)) % 360 // 90 * 90, False
    a, b, c, d = (float(matrix[index]) for index in (0, 1, 3, 4))
    if math.hypot(a, c) == 0.0 or math.hypot(b, d) == 0.0:
        return 0, False
    clockwise = round(math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))) % 360
    if abs(clockwise - 90) < 1:
        return (90, True) if c > 0 else (270, False)  # transpose "cclock_flip", else "clock"
    if abs(clockwise - 270) < 1:
        return (270, True) if c < 0 else (90, False)  # transpose "clock_flip", else "cclock"
    if abs(clockwise - 180) < 1:
        # hflip where a < 0, vflip where d < 0; a vflip is a half turn of a mirror image.
        return {(True, True): (180, False), (True, False): (0, True), (False, True): (180, True),
                (False, False): (0, False)}[(a < 0, d < 0)]
    if abs(clockwise) < 1 or abs(clockwise - 360) < 1:
        return (180, True) if d < 0 else (0, False)
    return 0, False


def generation_rate(requested: float | None, facts: ClipFacts, limits: MediaLimits) -> float:
    """The rate frames are generated at: the request (None: the clip's own), never above the clip's or the cap,
    and never below the outputs' floor.

    The floor is ``limits.min_output_fps``, as for a row's own ``fps``: the encoder holds a frame for
    a few of its intervals at most, and a slideshow slower than that (one picture every 5 or 100 s,
    cut to 3 s) gave no video at all; its pictures are repeated instead.
    """
    if facts.frame_count == 1:
        raise MediaError("video has a single frame: a driving clip needs at least two")
    if facts.source_fps <= 0:
        raise MediaError("video has no measurable frame rate (fewer than two distinct timestamps)")
    if facts.source_fps > MAX_SOURCE_FPS:
        raise MediaError(f"video's timestamps give {facts.source_fps:.0f} frames per second, over the "
                         f"{MAX_SOURCE_FPS:.0f} a real clip can have")
    return max(min(requested or facts.source_fps, limits.max_fps, facts.source_fps), limits.min_output_fps)


def output_rate(facts: ClipFacts, limits: MediaLimits) -> float:
    """Outputs keep the driving clip's rate, from ``limits.min_output_fps`` up to ``limits.max_output_fps`` (a
    1000 fps clip gives 60, a 0.5 fps slideshow 1)."""
    return max(min(facts.source_fps, limits.max_output_fps), limits.min_output_fps)


# A clip over the length cap by no more than this is rendered up to the cap, not refused: a phone's
# or an app's "one-minute" clip is often 60.03 s (1801 frames at 30 fps), and its last frame does
# not make it a longer clip than the user meant.
CAP_GRACE_SECONDS = 0.5


def clip_span(facts: ClipFacts, limits: MediaLimits, max_seconds: float | None) -> float:
    """Seconds of the clip to render; MediaError if the clip is over the cap (beyond CAP_GRACE_SECONDS)
    and the row did not ask for its start."""
    if facts.duration > limits.max_seconds + CAP_GRACE_SECONDS and max_seconds is None:
        picture = facts.frame_count / facts.source_fps if facts.source_fps > 0 else facts.duration
        sound = f"; its picture ends at {picture:.2f} s, and its sound goes on to the end, over the held last " \
            "picture, as a player plays it" if facts.duration > picture + AUDIO_TAIL_SECONDS else ""
        raise MediaError(f"clip lasts {facts.duration:.2f} s{sound}, over the cap of {limits.max_seconds:g} s "
                         "(set the row's max_seconds to render its start, or raise --max-seconds)")
    return min(x for x in (facts.duration, max_seconds, limits.max_seconds) if x)


@dataclass(frozen=True)
class ClipPlan:
    """Which frames a row uses: ``count`` frames at ``fps`` from time 0 (picked by timestamp)."""

    fps: float
    count: int

    @classmethod
    def for_span(cls, fps: float, span: float) -> "ClipPlan":
        """Every frame time k / fps that falls inside the span, so the last one is within 1 / fps of its end.

        Counted down (whole intervals only), a 2.53 s clip at 1 fps had frames at 0 and 1 s, and the
        video held the picture of 1 s to its end: the last 1.5 s of the clip's motion never shown.
        A span measured from rounded timestamps is short by up to TIMESTAMP_ROUNDING (a 2 s Matroska
        clip at 15 fps ends at 1.933 s + 1/15 = 1.9997 s), and a span just past a whole interval
        by as much: both are still 30 frames.
        """
        return cls(fps=fps, count=max(1, int(math.ceil((span - TIMESTAMP_ROUNDING) * fps - 1e-6))))


class ClipReader:
    """Streams a clip's frames, picked at a plan's rate, as RGB arrays in display orientation."""

    def __init__(self, path: str, facts: ClipFacts, limits: MediaLimits, threads: int = AUTO) -> None:
        self.path = path
        self.facts = facts
        self.limits = limits
        self.threads = threads  # decoder threads (mediaio/threads.py)
        self.damaged_packets = 0  # of the last read (:meth:`damage_note`)
        self.stopped_early = False
        # Whether the clip's alpha channel is used, decided on its first frame: a channel that is 0
        # all over (a capture tool's 32-bit RGB, a QuickTime Animation clip whose alpha players
        # ignore) is padding, and composited it made every picture white.
        self._alpha_used: bool | None = None

    def frames(self, plan: ClipPlan, max_side: int | None = None) -> Iterator[np.ndarray]:
        """Yield exactly ``plan.count`` frames (the last one held if the clip runs short).

        Frame k is the decoded frame whose timestamp is nearest to k / fps.  ``max_side``
        scales frames down on decode (for landmarks); None keeps full resolution (for crops).
        """
        yielded = 0
        previous: tuple[float, object] | None = None
        decoded = self._decoded()
        try:
            for time, frame in decoded:
                while yielded < plan.count:
                    target = yielded / plan.fps
                    if time < target:
                        break
                    # ``frame`` is the first at or past the target; the one before may be nearer.
                    pick = frame if previous is None or (time - target) <= (target - previous[0]) else previous[1]
                    yield self._to_rgb(pick, max_side)
                    yielded += 1
                if yielded >= plan.count:
                    return
                previous = (time, frame)
        finally:
            decoded.close()  # the container closes now, not whenever the generator is collected
        if previous is None:
            raise MediaError("video has no decodable frames")
        self.stopped_early = self.stopped_early and yielded < plan.count  # only if it cost frames
        last = self._to_rgb(previous[1], max_side)
        while yielded < plan.count:
            yield last
            yielded += 1

    def _decoded(self) -> Iterator[tuple[float, object]]:
        import av

        with _open(self.path, self.limits.max_streams) as container:
            stream = _video_stream(container)
            decoder = _decoder(stream)
            decoder.thread_type = "AUTO"
            if self.threads != AUTO:
                decoder.thread_count = self.threads
            start = None
            joiner = TimestampJoiner(self.facts.container, 1.0 / self.facts.source_fps)
            delays = GifDelays(self.facts.container)
            index = 0
            self.damaged_packets, self.stopped_early = 0, False
            try:
                # Packet by packet, so a damaged packet (an interrupted download, a failing card) costs
                # its own frame, as in ffmpeg and players, not every frame after it.
                for packet in container.demux(stream):
                    if packet.size == 0 and (packet.pts is not None or packet.dts is not None):
                        # An empty packet with a time is "show the previous picture again" (Theora in
                        # Ogg writes one for each repeated frame): sent to the decoder it reads as the
                        # end of the stream, and every frame after it was lost.  Only the demuxer's
                        # last packet, which has no time, flushes the decoder.
                        continue
                    try:
                        decoded = decoder.decode(packet)
                    except av.error.InvalidDataError as exc:
                        self.damaged_packets += 1
                        if self.damaged_packets > MAX_DAMAGED_PACKETS:
                            raise  # not a damaged stretch but a stream this decoder cannot read
                        logger.debug("skipping a damaged packet: %s", _av_message(exc))
                        continue
                    for frame in decoded:
                        if frame.width * frame.height > self.limits.max_video_pixels:
                            raise MediaError(f"a decoded frame is {frame.width}x{frame.height}, over the cap of "
                                             f"{self.limits.max_video_pixels / 1e6:.1f} megapixels")
                        time = frame.time if frame.time is not None else index / self.facts.source_fps
                        time = delays.shown(time)
                        index += 1
                        time += joiner.offset(time)
                        start = time if start is None else start
                        yield time - start, frame
            except av.error.FFmpegError as exc:
                if start is None:
                    raise MediaError(f"cannot decode video: {_av_message(exc)}") from None
                self.stopped_early = True
                logger.info("decoding stopped early (%s); the last frame is held", _av_message(exc))
            if start is None:
                raise MediaError("cannot decode video: no packet of it decodes")

    def damage_note(self) -> str:
        """What the last read lost to damage, for an ok row's results ('' when nothing): the row
        still renders, and says why some pictures are held."""
        lost = []
        if self.damaged_packets:
            lost.append(f"{self.damaged_packets} damaged packet(s) skipped, the nearest pictures used instead")
        if self.stopped_early:
            lost.append("decoding stopped early, the last picture is held to the end")
        return f"the driving clip is damaged: {'; '.join(lost)}" if lost else ""

    def _to_rgb(self, frame, max_side: int | None) -> np.ndarray:
        """The frame in the clip's display size (``facts``), scaled down to ``max_side``, turned upright.

        Every frame comes out the same size: a stream whose resolution changes partway (a screen
        recording, joined streams) is scaled to the size the probe measured, as ffmpeg does, and
        non-square pixels are made square.
        """
        rotation = self.facts.rotation
        display_w, display_h = self.facts.width, self.facts.height
        scale = 1.0 if max_side is None else min(1.0, max_side / max(display_w, display_h))
        if scale < 1.0:
            display_w, display_h = _even(display_w * scale), _even(display_h * scale)
        width, height = (display_h, display_w) if rotation % 180 == 90 else (display_w, display_h)
        alpha = _has_alpha(frame.format)
        pixels = "rgba" if alpha else "rgb24"
        if (width, height) != (frame.width, frame.height):
            image = frame.to_ndarray(format=pixels, width=width, height=height, interpolation="AREA")
        else:
            image = frame.to_ndarray(format=pixels)
        if self.facts.colour is not None:
            converted = colour_tags.video_frame_to_srgb(image, self.facts.colour)
            image = np.concatenate([converted, image[..., 3:]], axis=-1) if alpha else converted
        if alpha:
            if self._alpha_used is None:
                self._alpha_used = bool(image[..., 3].max() > 0)
            image = _over_background(image) if self._alpha_used else np.ascontiguousarray(image[..., :3])
        if self.facts.mirrored:
            image = image[:, ::-1]
        if rotation or self.facts.mirrored:
            image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))  # counter-clockwise, as ffmpeg displays it
        return image


def _colour_of(codec_context) -> colour_tags.ColourTags | None:
    """The stream's colour tags if its frames need converting to sRGB (:func:`colour_tags.is_wide_or_hdr`).

    Read as they are, an HDR clip's numbers came out grey and flat (PQ: a third of its saturation),
    in the face mesh's frames, the engine's crops and the report's thumbnail alike."""
    tags = colour_tags.ColourTags(int(codec_context.color_primaries or colour_tags.UNSPECIFIED),
                                  int(codec_context.color_trc or colour_tags.UNSPECIFIED))
    return tags if colour_tags.is_wide_or_hdr(tags) else None


def _decoder(stream):
    """The decoder of a clip's picture: the stream's own, but libvpx's for a VP8 or VP9 WebM with an alpha
    channel (``alpha_mode`` 1), which only libvpx decodes: ffmpeg's own VP8/VP9 decoders drop it, and
    the clip's hidden colours (often black, or whatever the editor left) showed where it is transparent.
    """
    import av

    libvpx = {"vp8": "libvpx", "vp9": "libvpx-vp9"}.get(stream.codec_context.name)
    alpha_mode = {key.lower(): value for key, value in (stream.metadata or {}).items()}.get("alpha_mode")
    if libvpx and alpha_mode == "1" and libvpx in av.codecs_available:
        return av.CodecContext.create(libvpx, "r")
    return stream.codec_context


def _has_alpha(pixel_format) -> bool:
    """Whether frames in ``pixel_format`` carry transparency (an alpha plane, or a palette's, as a GIF's)."""
    return bool(pixel_format.has_palette or any(component.is_alpha for component in pixel_format.components))


def _over_background(rgba: np.ndarray) -> np.ndarray:
    """An RGBA frame composited over :data:`TRANSPARENT_BACKGROUND`, as a browser shows it (and as a
    transparent portrait is read): ProRes 4444, PNG or QuickTime RLE in a MOV, an APNG, a WebM with
    alpha.  Read without its alpha, the transparent parts showed their hidden colours."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    background = np.asarray(TRANSPARENT_BACKGROUND, dtype=np.uint16)
    return ((rgba[..., :3] * alpha + background * (255 - alpha) + 127) // 255).astype(np.uint8)


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


@dataclass(frozen=True)
class DecodedClip:
    """A whole clip in memory at the generation rate (tests, the demo, the benches; the pipeline streams)."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    fps: float
    source_fps: float
    duration: float


def decode_clip(path: str, fps: float | None, limits: MediaLimits, max_seconds: float | None = None,
                max_side: int | None = None) -> DecodedClip:
    """Every frame of a clip at ``fps`` (None: its own rate, capped) in memory."""
    facts = probe(path, limits)
    rate = generation_rate(fps, facts, limits)
    span = clip_span(facts, limits, max_seconds)
    plan = ClipPlan.for_span(rate, span)
    frames = np.stack(list(ClipReader(path, facts, limits).frames(plan, max_side)))
    return DecodedClip(frames=frames, fps=rate, source_fps=facts.source_fps, duration=span)


def count_frames(path: str, limits: MediaLimits = MediaLimits()) -> int:
    """Decode the first video stream fully and count its frames (MediaError on undecodable data)."""
    import av

    count = 0
    with _open(path) as container:
        stream = _video_stream(container)
        try:
            for _ in container.decode(stream):
                count += 1
        except av.error.FFmpegError as exc:
            raise MediaError(f"cannot decode: {_av_message(exc)}") from None
    return count


def frames_in_video(uri: str) -> int:
    """The frames a finished local video holds, as its container says; 0 where it cannot say or it is
    not on this machine's disk (the record of a video whose result never reached its job's driver)."""
    if not storage.is_local_uri(uri):
        return 0
    try:
        return int(probe(storage.normalize(uri), MediaLimits()).frame_count or 0)
    except Exception:
        return 0

