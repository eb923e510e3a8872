"""Reading clips with PyAV (real stream facts, frames at the generation rate) and encoding with the real
ffmpeg binary, on generated and real clips."""

import io
import subprocess
import sys
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from mediaio import clips, colour_tags, media
from tests.conftest import REPO, make_test_clip

LIMITS = media.MediaLimits()


def test_decode_at_generation_rate_and_the_audio_of_the_same_span(test_clip):
    clip = clips.decode_clip(str(test_clip), 8, LIMITS)
    assert clip.fps == 8 and clip.source_fps == pytest.approx(15)
    assert clip.frames.shape == (16, 240, 320, 3)
    assert abs(clip.duration - 2.0) < 0.01
    facts = clips.probe(str(test_clip), LIMITS)
    assert facts.has_audio and (facts.width, facts.height) == (320, 240) and facts.frame_count == 30
    assert media.extract_audio(str(test_clip), clip.duration, LIMITS)


def test_decode_at_source_rate(test_clip):
    clip = clips.decode_clip(str(test_clip), None, LIMITS)
    assert clip.fps == pytest.approx(15) and clip.frames.shape[0] == 30


@pytest.mark.parametrize("generated_fps", [8.0, 15.0])
def test_encode_matches_duration_rate_and_audio(tmp_path, test_clip, generated_fps):
    clip = clips.decode_clip(str(test_clip), generated_fps, LIMITS)
    audio = media.extract_audio(str(test_clip), clip.duration, LIMITS)
    video = media.encode_mp4(clip.frames, clip.fps, 15.0, clip.duration, audio, LIMITS)
    out = tmp_path / "out.mp4"
    out.write_bytes(video)
    info = clips.probe(str(out), LIMITS)
    assert info.has_audio and info.source_fps == pytest.approx(15) and info.codec == "h264"
    assert abs(clips.count_frames(str(out)) - 30) <= 1
    assert abs(info.duration - 2.0) <= 1 / 15 + 0.03


def test_interpolated_frames_lie_between_generated_ones(tmp_path):
    """Generated at 5 fps, output at 15: frames between keyframes take intermediate values."""
    frames = np.stack([np.full((64, 64, 3), v, np.uint8) for v in (0, 60, 120, 180, 240)])
    video = media.encode_mp4(frames, 5.0, 15.0, 1.0, None, LIMITS)
    path = tmp_path / "i.mp4"
    path.write_bytes(video)
    decoded = clips.decode_clip(str(path), None, LIMITS).frames.mean(axis=(1, 2, 3))
    assert len(decoded) == 15
    assert len(np.unique(np.round(decoded / 5))) > 8  # not just 5 repeated levels


@pytest.mark.parametrize("fps, duration", [(1e-6, 3.0), (8.0, 1e-9)])
def test_an_encode_that_would_hold_no_frame_fails_instead_of_giving_an_empty_mp4(fps, duration):
    # ffmpeg exits 0 on both, writing an MP4 with no video stream: a row must never be ok with that.
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(media.MediaError, match="no video frames"):
        media.encode_mp4(frames, fps, 15.0, duration, None, LIMITS)


def test_a_clip_trimmed_by_an_edit_list_lasts_what_it_shows(tmp_path, ffmpeg):
    # A stream-copied trim (as phones save them) keeps the frames before its start, marked discarded.
    whole = make_test_clip(tmp_path / "whole.mp4", ffmpeg, seconds=2.0, fps=15, extra=["-g", "30"])
    trimmed = tmp_path / "trimmed.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-ss", "0.5", "-i", str(whole), "-c", "copy", str(trimmed)],
                   check=True, capture_output=True)
    facts = clips.probe(str(trimmed), LIMITS)
    shown = clips.count_frames(str(trimmed))
    assert shown < 30 and facts.frame_count == shown
    assert facts.duration == pytest.approx(shown / 15, abs=0.01)


def test_a_recording_cut_mid_stream_starts_at_its_first_shown_frame(tmp_path, ffmpeg):
    # A TS capture joined partway through a group of pictures: its first frames need a keyframe it
    # does not hold, and never decode.  The clip and its audio offset start at the first that does.
    whole = make_test_clip(tmp_path / "whole.mp4", ffmpeg, seconds=4.0, fps=15, extra=["-g", "15", "-bf", "2"])
    stream = tmp_path / "whole.ts"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(whole), "-c", "copy", str(stream)], check=True, capture_output=True)
    data = stream.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[(len(data) // 3 // 188 + 5) * 188:])  # whole TS packets, not at a keyframe
    facts = clips.probe(str(cut), LIMITS)
    shown = clips.count_frames(str(cut))
    assert facts.frame_count == shown
    assert facts.duration == pytest.approx(shown / 15, abs=0.01)
    assert len(clips.decode_clip(str(cut), None, LIMITS).frames) == shown


@pytest.mark.parametrize("container", ["mkv", "flv"])
@pytest.mark.parametrize("rate, expected", [("30000/1001", 30000 / 1001), ("60", 60.0), ("15", 15.0)])
def test_millisecond_timestamps_give_the_clips_real_rate_and_every_frame(tmp_path, ffmpeg, container, rate, expected):
    # OBS recordings (Matroska), browser WebM and FLV keep milliseconds: 29.97 fps steps 33 and 34 ms,
    # and their median read 30.30 fps; 60 fps read 58.8, and a 15 fps clip lost its last frame.
    path = tmp_path / f"clip.{container}"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={rate}:duration=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    facts = clips.probe(str(path), LIMITS)
    assert facts.source_fps == pytest.approx(expected, rel=1e-9)
    frames = round(2 * expected)
    assert facts.frame_count == frames and facts.duration == pytest.approx(frames / expected, abs=0.002)
    clip = clips.decode_clip(str(path), None, LIMITS)
    assert len(clip.frames) == round(2 * clip.fps)


def test_a_one_frame_clip_says_so(tmp_path, ffmpeg):
    path = tmp_path / "one.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=15", "-frames:v", "1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    with pytest.raises(media.MediaError, match="a single frame: a driving clip needs at least two"):
        clips.decode_clip(str(path), None, LIMITS)


def test_a_clip_whose_sound_outlasts_its_picture_plays_to_the_end_of_the_sound(tmp_path, ffmpeg):
    # An export that freezes on its end card, or a picture that stops before the sound: players hold
    # the last picture while the sound plays.  Timed by its pictures alone, the clip's last seconds of
    # sound were cut off.  Without sound, a held last picture is only a still tail (a GIF's pause).
    run = lambda *args: subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True, capture_output=True)  # noqa: E731
    voiced = tmp_path / "voiced.mp4"
    run("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=15:duration=2", "-f", "lavfi", "-i", "sine=duration=5",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(voiced))
    facts = clips.probe(str(voiced), LIMITS)
    assert facts.frame_count == 30 and facts.duration == pytest.approx(5.0, abs=0.05)
    frames = clips.decode_clip(str(voiced), None, LIMITS).frames
    assert len(frames) == pytest.approx(75, abs=1)
    assert all(np.array_equal(frame, frames[29]) for frame in frames[29:])
    audio = media.extract_audio(str(voiced), facts.duration, LIMITS, facts.audio_delay, facts.audio_index)
    samples, _ = _decoded_audio(ffmpeg, audio, tmp_path)
    assert len(samples) / 8000 == pytest.approx(5.0, abs=0.05)  # all of the sound, not the picture's 2 s
    # Over the cap, the message says that the sound is what makes it long (a 2 s clip "lasting 5 s" puzzled).
    with pytest.raises(media.MediaError, match=r"clip lasts 5.0\d s; its picture ends at 2.00 s, and its sound goes "
                                               r"on to the end"):
        clips.clip_span(facts, media.MediaLimits(max_seconds=3.0), None)
    silent = tmp_path / "silent.gif"
    run("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2", "-final_delay", "1000", str(silent))
    assert clips.probe(str(silent), LIMITS).duration == pytest.approx(2.0, abs=0.11)


def test_a_damaged_packet_costs_its_own_frame_not_the_rest_of_the_clip(tmp_path, ffmpeg):
    # An interrupted download or a failing card: 3 KB of garbage half way in.  The reader
    # stopped at the first bad packet and held that picture for the rest of the clip (row ok, no
    # note); ffmpeg and players skip the damaged frame and play on.
    import random

    clip = make_test_clip(tmp_path / "clip.mp4", ffmpeg, seconds=3.0, fps=15, audio=False, extra=["-g", "15"])
    data = bytearray(clip.read_bytes())
    mdat = data.find(b"mdat")
    at = mdat + (len(data) - mdat) // 2
    generator = random.Random(1)
    data[at:at + 3000] = bytes(generator.randrange(256) for _ in range(3000))
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    facts = clips.probe(str(damaged), LIMITS)
    reader = clips.ClipReader(str(damaged), facts, LIMITS)
    frames = np.stack(list(reader.frames(clips.ClipPlan.for_span(facts.source_fps, facts.duration))))
    assert len(frames) == 45
    changes = [float(np.abs(frames[i + 1].astype(int) - frames[i]).mean()) for i in range(44)]
    assert all(change > 0.5 for change in changes[30:]), "the pictures after the damage move on"
    assert reader.damaged_packets >= 1 and "damaged packet" in reader.damage_note()
    clean = clips.ClipReader(str(clip), clips.probe(str(clip), LIMITS), LIMITS)
    list(clean.frames(clips.ClipPlan.for_span(15.0, 3.0)))
    assert clean.damage_note() == ""


def test_an_ogg_theora_clip_with_repeated_frames_plays_to_its_end(tmp_path, ffmpeg):
    # Theora writes an empty packet for each frame that repeats the one before.  Sent to the decoder
    # an empty packet reads as the end of the stream: every picture after the first repeat was held,
    # and a healthy clip was called damaged ("decoding stopped early").
    frames = np.zeros((30, 48, 64, 3), np.uint8)
    for index in range(30):
        frames[index] = 8 * (index if index < 10 or index > 14 else 10)  # frames 10-14 the same picture
    clip = tmp_path / "repeats.ogv"
    subprocess.run([ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48", "-r", "10",
                    "-i", "-", "-c:v", "libtheora", str(clip)], input=frames.tobytes(), check=True)
    facts = clips.probe(str(clip), LIMITS)
    reader = clips.ClipReader(str(clip), facts, LIMITS)
    read = np.stack(list(reader.frames(clips.ClipPlan.for_span(facts.source_fps, facts.duration))))
    assert len(read) == 30 and reader.damage_note() == ""
    levels = read.reshape(30, -1).mean(axis=1)
    assert all(levels[index + 1] > levels[index] + 4 for index in range(15, 29)), "the pictures after the repeat move"


@pytest.mark.parametrize("second_part_at", ["0", "100"])
def test_recordings_joined_byte_wise_play_one_after_another(tmp_path, ffmpeg, second_part_at):
    # Two TS recordings joined with cat: the second's timestamps restart (or leap 100 s ahead).  Read
    # by timestamp alone, the clip was its first part and the rest was dropped, or 100 s long.
    run = lambda *args: subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True, capture_output=True)  # noqa: E731
    first = make_test_clip(tmp_path / "first.mp4", ffmpeg, seconds=2.0, fps=15)
    second = make_test_clip(tmp_path / "second.mp4", ffmpeg, seconds=1.0, fps=15, size="320x240",
                            extra=["-vf", "negate"])
    for clip, offset in ((first, "0"), (second, second_part_at)):
        run("-i", str(clip), "-c", "copy", "-output_ts_offset", offset, str(clip.with_suffix(".ts")))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.with_suffix(".ts").read_bytes() + second.with_suffix(".ts").read_bytes())
    facts = clips.probe(str(joined), LIMITS)
    assert facts.frame_count == 45 and facts.duration == pytest.approx(3.0, abs=0.01)
    frames = clips.decode_clip(str(joined), None, LIMITS).frames
    parts = [clips.decode_clip(str(clip.with_suffix(".ts")), None, LIMITS).frames for clip in (first, second)]
    assert len(frames) == 45
    assert np.array_equal(frames[:30], parts[0]) and np.array_equal(frames[30:], parts[1])
    audio = tmp_path / "audio.aac"
    audio.write_bytes(media.extract_audio(str(joined), facts.duration, LIMITS, facts.audio_delay))
    samples = subprocess.run([ffmpeg, "-v", "error", "-i", str(audio), "-ac", "1", "-ar", "8000", "-f", "s16le", "-"],
                             check=True, capture_output=True).stdout
    assert len(samples) / 2 / 8000 == pytest.approx(3.0, abs=0.1)  # both parts' sound, in step with the picture


def test_timestamps_jump_only_in_containers_that_can_be_joined():
    joiner = clips.TimestampJoiner("mpegts", step=0.1)
    assert [t + joiner.offset(t) for t in (5.0, 5.1, 5.2, 1.0, 1.1, 40.0, 40.1)] == pytest.approx(
        [5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6])
    still = clips.TimestampJoiner("mov,mp4,m4a,3gp,3g2,mj2", step=0.1)
    assert [still.offset(t) for t in (5.0, 1.0, 40.0)] == [0.0, 0.0, 0.0]  # a long pause in an MP4 is a pause


@pytest.mark.parametrize("suffix, codecs", [
    (".mp4", ["-c:v", "libx264", "-c:a", "aac"]), (".mkv", ["-c:v", "libx264", "-c:a", "aac"]),
    (".webm", ["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libvorbis"]),
    (".flv", ["-c:v", "libx264", "-c:a", "aac"]), (".ts", ["-c:v", "libx264", "-c:a", "aac"])])
def test_late_sound_that_outlasts_the_picture_is_kept_whatever_the_container(tmp_path, ffmpeg, suffix, codecs):
    # Sound starting 1 s after a 2-s picture, a beep 1.5 s into it, the sound ending at 3 s.  Matroska,
    # WebM and FLV give no stream duration, and a TS clip's was not trusted (its timestamps may jump at
    # joins), so there the clip was timed by its picture (2.0 s) and the sound's last second cut, where
    # the MP4 was held to the sound's end (3.0 s).
    clip = tmp_path / f"late{suffix}"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=15:duration=2",
                    "-itsoffset", "1", "-f", "lavfi", "-i",
                    r"aevalsrc=if(between(t\,0.5\,0.6)\,sin(2*PI*1000*t)\,0):s=44100:d=2",
                    "-pix_fmt", "yuv420p", *codecs, str(clip)], check=True, capture_output=True)
    facts = clips.probe(str(clip), LIMITS)
    assert facts.audio_delay == pytest.approx(1.0, abs=0.05)
    assert facts.duration == pytest.approx(3.0, abs=0.05)  # the sound's end, held on the last picture
    audio = media.extract_audio(str(clip), facts.duration, LIMITS, facts.audio_delay, facts.audio_index)
    samples, _ = _decoded_audio(ffmpeg, audio, tmp_path)
    loud = np.abs(samples[:, 0].astype(float))
    assert np.argmax(loud > 0.3 * loud.max()) / 8000 == pytest.approx(1.5, abs=0.04)
    assert len(samples) / 8000 == pytest.approx(3.0, abs=0.05)


def test_one_sound_packet_with_a_damaged_timestamp_does_not_lengthen_the_clip(tmp_path, ffmpeg):
    # A Matroska clip whose 41st sound packet is stamped 1000 s on (a damaged timestamp): read by the
    # sound's packets, the 2-s clip "lasted" 1001 s and was refused as over the cap.
    clip = tmp_path / "stray.mkv"
    moved = "if(eq(N\\,40)\\,{0}+44100000\\,{0})"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2", "-f",
                    "lavfi", "-i", "sine=duration=2", "-c:v", "libx264", "-c:a", "aac", "-bsf:a",
                    f"setts=pts={moved.format('PTS')}:dts={moved.format('DTS')}", str(clip)],
                   check=True, capture_output=True)
    assert clips.probe(str(clip), LIMITS).duration == pytest.approx(2.0, abs=0.05)


def test_an_avi_header_claiming_more_sound_than_its_packets_hold_does_not_lengthen_the_clip(tmp_path, ffmpeg):
    # An AVI's audio header claimed 5.1 s of sound for 4.0 s of packets: the clip was timed 5.07 s,
    # its last second a held picture over silence.  The sound's packets say where it ends.
    clip = tmp_path / "claims.avi"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4",
                    "-itsoffset", "1", "-f", "lavfi", "-i", "sine=duration=4", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", "-c:a", "libmp3lame", str(clip)], check=True, capture_output=True)
    facts = clips.probe(str(clip), LIMITS)
    assert facts.frame_count == 100 and facts.duration == pytest.approx(4.0, abs=0.05)


@pytest.mark.parametrize("audio_delay", [0.5, -0.5])
def test_audio_that_starts_after_or_before_the_picture_stays_on_it(tmp_path, ffmpeg, audio_delay):
    # A beep 1.0 s into the clip, in an audio stream that starts 0.5 s after (or before) the first frame.
    silent = make_test_clip(tmp_path / "silent.mp4", ffmpeg, seconds=2.0, audio=False)
    beep = tmp_path / "beep.wav"
    beep_at_ms = round((1.0 - audio_delay) * 1000)  # in the audio stream's own time
    run = lambda *args: subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True, capture_output=True)  # noqa: E731
    run("-f", "lavfi", "-i", "sine=frequency=1000:duration=0.1", "-af",
        f"adelay={beep_at_ms}|{beep_at_ms},apad=whole_dur=3", str(beep))
    clip = tmp_path / "shifted.mp4"
    late, early = ("0.5", "0") if audio_delay > 0 else ("0", "0.5")  # the audio's offset, the picture's
    run("-itsoffset", early, "-i", str(silent), "-itsoffset", late, "-i", str(beep), "-map", "0:v", "-map", "1:a",
        "-c:v", "copy", "-c:a", "aac", str(clip))
    facts = clips.probe(str(clip), LIMITS)
    assert facts.audio_delay == pytest.approx(audio_delay, abs=0.05)
    extracted = tmp_path / "extracted.aac"
    extracted.write_bytes(media.extract_audio(str(clip), facts.duration, LIMITS, facts.audio_delay))
    samples = np.frombuffer(subprocess.run([ffmpeg, "-v", "error", "-i", str(extracted), "-ac", "1", "-ar", "8000",
                                            "-f", "s16le", "-"], check=True, capture_output=True).stdout, np.int16)
    loud = np.abs(samples.astype(float))
    assert np.argmax(loud > 0.3 * loud.max()) / 8000 == pytest.approx(1.0, abs=0.06)  # not 0.5 s off
    assert len(samples) / 8000 == pytest.approx(facts.duration, abs=0.1)


def test_the_outputs_sound_is_on_its_picture_to_the_millisecond(tmp_path, ffmpeg):
    # A click 1.000 s into the clip must be 1.000 s into the output.  The audio went through AAC in
    # ADTS, which cannot say to skip its encoder's 1024 priming samples: every output's sound was 23 ms
    # late, and a meme remixed from a meme 23 ms later again.
    clip = tmp_path / "click.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=15:duration=2",
                    "-f", "lavfi", "-i", "aevalsrc='if(between(t,1,1.001),0.9,0)':s=44100:d=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", "-shortest",
                    str(clip.with_suffix(".mov"))], check=True, capture_output=True)
    facts = clips.probe(str(clip.with_suffix(".mov")), LIMITS)
    audio = media.extract_audio(str(clip.with_suffix(".mov")), facts.duration, LIMITS, facts.audio_delay)
    frames = np.zeros((30, 64, 64, 3), np.uint8)
    clip.write_bytes(media.encode_mp4(frames, 15.0, 15.0, facts.duration, audio, LIMITS, interpolate=False))
    pcm = subprocess.run([ffmpeg, "-v", "error", "-i", str(clip), "-ac", "1", "-ar", "44100", "-f", "s16le", "-"],
                         check=True, capture_output=True).stdout
    loud = np.abs(np.frombuffer(pcm, np.int16).astype(float))
    assert np.argmax(loud) / 44100 == pytest.approx(1.0, abs=0.003)


def _decoded_audio(ffmpeg: str, audio: bytes, tmp_path, rate: int = 8000) -> tuple[np.ndarray, int]:
    """Extracted audio decoded to 16-bit samples at ``rate`` (one row per sample), and its channel count."""
    import av

    path = tmp_path / "decoded.aac"
    path.write_bytes(audio)
    with av.open(str(path)) as container:
        channels = container.streams.audio[0].channels
    pcm = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-ar", str(rate), "-f", "s16le", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(pcm, np.int16).reshape(-1, channels), channels


def _first_loud_second(samples: np.ndarray, rate: int = 8000) -> float:
    loud = np.abs(samples.astype(float)).max(axis=1)
    return float(np.argmax(loud > 0.3 * loud.max())) / rate


@pytest.mark.parametrize("channels, codec, container, kept", [
    (8, "pcm_f32le", "mov", 2),  # 7.1: ADTS refused it ("channelConfiguration > 7"), the row came out silent
    (16, "pcm_s16le", "mkv", 2),
    (6, "aac", "mp4", 2),
    (1, "aac", "mp4", 1),
])
def test_audio_in_any_channel_layout_is_kept(tmp_path, ffmpeg, channels, codec, container, kept):
    base = make_test_clip(tmp_path / "base.mp4", ffmpeg)
    clip = tmp_path / f"surround.{container}"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(base), "-c:v", "copy", "-c:a", codec, "-ac", str(channels),
                    "-ar", "22050", str(clip)], check=True, capture_output=True)
    facts = clips.probe(str(clip), LIMITS)
    audio = media.extract_audio(str(clip), facts.duration, LIMITS, facts.audio_delay, facts.audio_index)
    samples, got = _decoded_audio(ffmpeg, audio, tmp_path)
    assert got == kept  # mono stays mono, anything wider is downmixed to stereo
    assert len(samples) / 8000 == pytest.approx(2.0, abs=0.1) and np.abs(samples).max() > 500  # the tone, not silence


def test_audio_that_cannot_be_extracted_leaves_a_note_on_the_row(test_clip):
    """A clip with audio whose audio fails still renders, silent, and its results say why (not only a worker log)."""
    from types import SimpleNamespace

    from actors.prepare_actor import AUDIO_DROPPED_NOTE, PrepareActor

    facts = clips.probe(str(test_clip), LIMITS)
    broken = replace(facts, audio_index=0)  # the video stream: ffmpeg cannot make audio of it
    with pytest.raises(media.MediaError, match="audio could not be extracted: .+"):
        media.extract_audio(str(test_clip), facts.duration, LIMITS, stream=0)
    actor = SimpleNamespace(limits=LIMITS)
    row = {"row_index": 3, "id": "meme"}
    audio, note = PrepareActor._audio(actor, row, str(test_clip), facts.duration, broken)
    assert audio is None and note.startswith(AUDIO_DROPPED_NOTE + ": audio could not be extracted: ")
    audio, note = PrepareActor._audio(actor, row, str(test_clip), facts.duration, facts)
    assert audio and note == ""


@pytest.mark.parametrize("default_track", [0, 1])
def test_the_audio_track_marked_default_is_used(tmp_path, ffmpeg, default_track):
    # Two audio tracks: silence, and a tone that starts 0.5 s after the picture; the tone's is marked default.
    silent = make_test_clip(tmp_path / "silent.mp4", ffmpeg, seconds=2.0, audio=False)
    tracks = [("anullsrc=r=48000:cl=stereo", "0"), ("sine=frequency=1000:sample_rate=48000", "0.5")]
    if default_track == 0:
        tracks.reverse()
    clip = tmp_path / "tracks.mkv"
    command = [ffmpeg, "-v", "error", "-y", "-i", str(silent)]
    for source, offset in tracks:
        command += ["-itsoffset", offset, "-f", "lavfi", "-t", "1.5", "-i", source]
    command += ["-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "copy", "-c:a", "aac", "-disposition:a", "0",
                f"-disposition:a:{default_track}", "default", str(clip)]
    subprocess.run(command, check=True, capture_output=True)
    facts = clips.probe(str(clip), LIMITS)
    assert facts.audio_index == 1 + default_track and facts.audio_delay == pytest.approx(0.5, abs=0.05)
    audio = media.extract_audio(str(clip), facts.duration, LIMITS, facts.audio_delay, facts.audio_index)
    samples, _ = _decoded_audio(ffmpeg, audio, tmp_path)
    assert np.abs(samples).max() > 1000  # the tone, not the silent track
    assert _first_loud_second(samples) == pytest.approx(0.5, abs=0.06)


def test_a_gap_in_the_audio_is_filled_with_silence(tmp_path, ffmpeg):
    # A beep at 2.5 s in an Opus track whose packets between 1 s and 2 s are gone (a hole in its timestamps).
    silent = make_test_clip(tmp_path / "silent.mp4", ffmpeg, seconds=3.0, audio=False)
    clip = tmp_path / "gap.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(silent), "-f", "lavfi", "-i",
                    "sine=frequency=1000:duration=0.1:sample_rate=48000", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                    "-af", r"adelay=2500:all=1,apad=whole_dur=3,aselect='not(between(t\,1\,2))'", "-c:a", "libopus",
                    str(clip)], check=True, capture_output=True)
    facts = clips.probe(str(clip), LIMITS)
    audio = media.extract_audio(str(clip), facts.duration, LIMITS, facts.audio_delay, facts.audio_index)
    samples, _ = _decoded_audio(ffmpeg, audio, tmp_path)
    assert len(samples) / 8000 == pytest.approx(3.0, abs=0.1)  # not 2 s: the hole is kept, as silence
    assert _first_loud_second(samples) == pytest.approx(2.5, abs=0.06)  # not 1.5 s: on its picture


def test_rotation_metadata_is_applied(tmp_path, ffmpeg):
    plain = make_test_clip(tmp_path / "plain.mp4", ffmpeg, size="320x240", audio=False)
    path = tmp_path / "r.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-display_rotation:v:0", "90", "-i", str(plain), "-c", "copy", str(path)],
                   check=True)
    facts = clips.probe(str(path), LIMITS)
    assert (facts.width, facts.height, facts.rotation) == (240, 320, 90)
    clip = clips.decode_clip(str(path), None, LIMITS)
    assert clip.frames.shape[1:3] == (320, 240)


def test_a_resolution_change_partway_gives_every_frame_the_probed_size(tmp_path, ffmpeg):
    # Joined streams (a screen recording, a re-started stream): 320x240 for a second, then 160x120.
    run = lambda *args: subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True, capture_output=True)  # noqa: E731
    big = make_test_clip(tmp_path / "big.mp4", ffmpeg, seconds=1.0, size="320x240", audio=False)
    small = make_test_clip(tmp_path / "small.mp4", ffmpeg, seconds=1.0, size="160x120", audio=False)
    for clip, offset in ((big, "0"), (small, "1")):  # the second part's timestamps carry on from the first's
        run("-i", str(clip), "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-output_ts_offset", offset,
            str(clip.with_suffix(".ts")))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(big.with_suffix(".ts").read_bytes() + small.with_suffix(".ts").read_bytes())
    facts = clips.probe(str(joined), LIMITS)
    assert (facts.width, facts.height) == (320, 240)
    clip = clips.decode_clip(str(joined), None, LIMITS)
    assert clip.frames.shape[1:] == (240, 320, 3) and len(clip.frames) >= 28
    # The second half is the small stream scaled up, not a blank or a corner of it.
    expected = np.asarray(Image.fromarray(clips.decode_clip(str(small), None, LIMITS).frames[-1]).resize((320, 240)))
    assert np.abs(clip.frames[-1].astype(int) - expected).mean() < 20


def test_non_square_pixels_are_stretched_square(tmp_path, ffmpeg):
    # An anamorphic clip: 320x240 squeezed into 160x240 pixels twice as wide as they are tall.
    plain = make_test_clip(tmp_path / "plain.mp4", ffmpeg, size="320x240", audio=False)
    squeezed = tmp_path / "squeezed.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(plain), "-vf", "scale=160:240,setsar=2", "-c:v", "libx264",
                    str(squeezed)], check=True, capture_output=True)
    facts = clips.probe(str(squeezed), LIMITS)
    assert (facts.width, facts.height) == (320, 240)
    shown, original = (clips.decode_clip(str(path), None, LIMITS).frames for path in (squeezed, plain))
    assert shown.shape == original.shape
    assert np.abs(shown.astype(int) - original).mean() < 12
    assert clips.decode_clip(str(squeezed), None, LIMITS, max_side=160).frames.shape[1:3] == (120, 160)


def test_a_cover_picture_is_not_taken_for_the_video(tmp_path, ffmpeg):
    clip = make_test_clip(tmp_path / "clip.mp4", ffmpeg, size="320x240")
    cover = tmp_path / "cover.jpg"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(cover)
    run = lambda *args: subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True, capture_output=True)  # noqa: E731
    # Matroska keeps a thumbnail as an ordinary (not default) stream, here the first one.
    thumbnail_first = tmp_path / "thumbnail_first.mkv"
    run("-i", str(cover), "-i", str(clip), "-map", "0", "-map", "1:v", "-map", "1:a", "-c", "copy",
        "-disposition:v:0", "0", str(thumbnail_first))
    facts = clips.probe(str(thumbnail_first), LIMITS)
    assert (facts.width, facts.height, facts.frame_count) == (320, 240, 30)
    # An audio file with album art has no video at all.
    song = tmp_path / "song.m4a"
    run("-i", str(clip), "-i", str(cover), "-map", "0:a", "-map", "1", "-c", "copy", "-disposition:v:0",
        "attached_pic", str(song))
    with pytest.raises(media.MediaError, match="only a cover picture"):
        clips.probe(str(song), LIMITS)


@pytest.mark.parametrize("codec, muxer", [("libx264", "h264"), ("libx265", "hevc")])
def test_a_raw_stream_without_timestamps_plays_at_its_own_rate(tmp_path, ffmpeg, codec, muxer):
    # A camera's .h264 file: no container, no timestamps, the rate only in the stream's timing information.
    clip = make_test_clip(tmp_path / "clip.mp4", ffmpeg, seconds=2.0, fps=12, audio=False)
    raw = tmp_path / f"clip.{muxer}"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(clip), "-c:v", codec, "-preset", "ultrafast", "-f", muxer,
                    str(raw)], check=True, capture_output=True)
    facts = clips.probe(str(raw), LIMITS)
    assert facts.source_fps == pytest.approx(12.0) and facts.frame_count == 24
    assert facts.duration == pytest.approx(2.0)
    assert clips.decode_clip(str(raw), 6.0, LIMITS).frames.shape == (12, 240, 320, 3)


def test_refusals(tmp_path, ffmpeg, test_clip):
    audio_only = tmp_path / "a.m4a"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio_only)], check=True)
    with pytest.raises(media.MediaError, match="no video stream"):
        clips.decode_clip(str(audio_only), None, LIMITS)
    still = tmp_path / "s.jpg"
    Image.new("RGB", (64, 64)).save(still)
    with pytest.raises(media.MediaError, match=r"still image, not a video: .*\(are they swapped\?\)"):
        clips.decode_clip(str(still), None, LIMITS)
    truncated = tmp_path / "t.mp4"
    truncated.write_bytes(test_clip.read_bytes()[:2000])
    with pytest.raises(media.MediaError):
        clips.decode_clip(str(truncated), None, LIMITS)
    text = tmp_path / "x.mp4"
    text.write_text("hello")
    with pytest.raises(media.MediaError):
        clips.decode_clip(str(text), None, LIMITS)
    with pytest.raises(media.MediaError, match="over the cap"):
        clips.decode_clip(str(test_clip), None, media.MediaLimits(max_seconds=1.0))
    assert clips.decode_clip(str(test_clip), None, media.MediaLimits(max_seconds=1.0), max_seconds=1.0).frames.shape[0] == 15
    # A clip over the cap by less than CAP_GRACE_SECONDS (a "one-minute" clip of 60.03 s) is cut to the cap.
    facts = clips.probe(str(test_clip), LIMITS)
    assert clips.clip_span(facts, media.MediaLimits(max_seconds=facts.duration - 0.1), None) == facts.duration - 0.1
    with pytest.raises(media.MediaError, match=rf"clip lasts {facts.duration:.2f} s, over the cap of 1 s"):
        clips.clip_span(facts, media.MediaLimits(max_seconds=1.0), None)


CUT_SHORT_DECODES = 300  # before the fix, a decode stopped early hung within 50-400 of these


def test_decoding_stopped_early_never_hangs(test_clip):
    """Stopping a threaded decode closes the decoder while its frame threads are still busy; with
    libav's log callback on, a thread that logs then waits for the GIL the closing thread holds (PyAV
    issues 909 and 1861).  Every row whose clip is longer than its span stops early, so a prepare
    actor would hang.  Run in a child process, so a hang fails the test instead of the suite."""
    script = ("import sys; from mediaio import clips, media\n"
              f"for _ in range({CUT_SHORT_DECODES}):\n"
              "    clips.decode_clip(sys.argv[1], None, media.MediaLimits(), max_seconds=0.3)\n")
    try:
        subprocess.run([sys.executable, "-c", script, str(test_clip)], cwd=REPO, check=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"decoding a clip cut short hung (within {CUT_SHORT_DECODES} decodes)")


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P"])
def test_images_in_any_mode_become_rgb(mode):
    image = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mode == "CMYK" else "PNG")
    array = media.load_image(buffer.getvalue(), LIMITS)
    assert array.shape == (30, 40, 3) and array.dtype == np.uint8


@pytest.mark.parametrize("depth", ["16-bit PNG", "32-bit integer TIFF", "float TIFF"])
def test_grey_images_deeper_than_8_bits_keep_their_tones(depth):
    # Pillow's own conversion clips these at 255: a 16-bit scan came out white, a float one black.
    tones = np.tile(np.linspace(0, 255, 40), (30, 1)).round()
    values, image_format = {
        "16-bit PNG": ((tones * 257).astype(np.uint16), "PNG"),
        "32-bit integer TIFF": ((tones * 257).astype(np.int32), "TIFF"),
        "float TIFF": ((tones / 255).astype(np.float32), "TIFF"),
    }[depth]
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format=image_format)
    array = media.load_image(buffer.getvalue(), LIMITS)
    assert array.shape == (30, 40, 3)
    assert np.abs(array[..., 0].astype(int) - tones).max() <= 1


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert media.load_image(buffer.getvalue(), LIMITS).shape == (40, 30, 3)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF", "JPEG"])
def test_phone_photo_formats_open_upright(image_format):
    # HEIC is an iPhone's default photo format; a phone held upright saves its picture turned, with
    # an orientation that says how to show it.  Left half blue, turned to show that half on top.
    image = Image.new("RGB", (64, 32), (250, 0, 0))
    image.paste((0, 0, 250), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, exif=exif.tobytes(), quality=90)
    shown = media.load_image(buffer.getvalue(), LIMITS)
    assert shown.shape == (64, 32, 3)
    assert shown[4, 16, 2] > 200 and shown[-4, 16, 0] > 200  # blue on top, red below


def test_image_refusals(test_clip):
    # A clip as the portrait: the URI columns swapped, said so (it read "not an image (unrecognised format)").
    with pytest.raises(media.MediaError, match=r"is a video \(MP4/MOV\), not an image: .*\(are they swapped\?\)"):
        media.load_image(test_clip.read_bytes(), LIMITS)
    with pytest.raises(media.MediaError, match=r"is a video \(Matroska/WebM\)"):
        media.load_image(b"\x1a\x45\xdf\xa3" + bytes(60), LIMITS)
    with pytest.raises(media.MediaError, match=r"is not an image \(unrecognised format\)"):
        media.load_image(b"plain text, no picture", LIMITS)
    buffer = io.BytesIO()
    Image.new("L", (9000, 8000)).save(buffer, format="PNG")  # 72 MP: over what a PNG may be
    with pytest.raises(media.MediaError, match="over the cap of 67 megapixels for PNG"):
        media.load_image(buffer.getvalue(), LIMITS)
    # A damaged image of a known format says so, not "not an image"; a header cut short is a MediaError too.
    png = io.BytesIO()
    Image.new("RGB", (32, 32)).save(png, format="PNG")
    data = bytearray(png.getvalue())
    data[29:33] = b"\x00\x00\x00\x00"  # the IHDR chunk's CRC
    with pytest.raises(media.MediaError, match="is a PNG image that cannot be decoded"):
        media.load_image(bytes(data), LIMITS)
    with pytest.raises(media.MediaError, match="cannot be decoded"):
        media.load_image(b"\x89PNG\r\n\x1a\n" + b"x" * 100, LIMITS)


def test_a_damaged_avif_says_it_cannot_be_decoded_not_a_bare_exception_name():
    # Pillow's AVIF reader raises RuntimeError (its TIFF reader TypeError, "Missing dimensions"): the
    # row failed as "prepare: RuntimeError: Failed to decode image: ...", naming neither the portrait nor
    # that it was damaged.
    avif = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(avif, format="AVIF")
    data = bytearray(avif.getvalue())
    primary = data.index(b"pitm") + 8  # the primary item's id: point it at an item that is not there
    data[primary:primary + 2] = (77).to_bytes(2, "big")
    with pytest.raises(media.MediaError, match=r"image cannot be decoded \(damaged, or a variant the reader does not "
                                               r"support\): Failed to decode image: Missing or empty image item"):
        media.load_image(bytes(data), LIMITS)


@pytest.mark.parametrize("size, fmt", [((6000, 4000), "JPEG"), ((8160, 6120), "JPEG"), ((5000, 4000), "PNG")])
def test_a_large_photo_is_read_reduced_not_refused(size, fmt):
    # A 24 MP camera's or a 50 MP phone's photo was refused as over the 16.8 MP cap.
    image = Image.new("RGB", size, (200, 150, 120))
    image.paste((20, 40, 60), (0, 0, size[0] // 2, size[1]))  # left half dark: orientation and aspect show
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif.tobytes())
    array = media.load_image(buffer.getvalue(), LIMITS)
    height, width = array.shape[:2]
    assert height * width <= LIMITS.max_image_pixels and width * height > LIMITS.max_image_pixels / 5
    assert width / height == pytest.approx(size[1] / size[0], rel=0.01)  # turned upright: portrait
    assert array[: height // 4].mean() < 80 and array[-height // 4:].mean() > 120  # the dark half is on top


def test_real_clip_decodes(media_dir):
    path = media_dir / "drive_videos" / "jgz.mp4"
    clip = clips.decode_clip(str(path), 8, LIMITS)
    assert clip.frames.shape[1:] == (512, 512, 3) and clips.probe(str(path), LIMITS).has_audio


def test_one_thread_per_stage_decodes_the_same_frames_and_encodes_a_whole_video(test_clip, tmp_path):
    """Inside the pipeline each stage's libraries get one thread (pipelines/render_pipeline.py STAGE_THREADS):
    the frames decoded are those of each library's own thread count, and the encode makes the whole video."""
    import cv2

    from mediaio.threads import AUTO, use_threads

    facts = clips.probe(str(test_clip), LIMITS)
    plan = clips.ClipPlan.for_span(8.0, facts.duration)
    auto = np.stack(list(clips.ClipReader(str(test_clip), facts, LIMITS).frames(plan)))
    single = np.stack(list(clips.ClipReader(str(test_clip), facts, LIMITS, threads=1).frames(plan)))
    assert np.array_equal(auto, single)
    encoded = tmp_path / "one-thread.mp4"
    encoded.write_bytes(media.encode_mp4(single, 8.0, 15.0, facts.duration, None, LIMITS, threads=1))
    assert clips.count_frames(str(encoded)) == round(facts.duration * 15.0)
    before = cv2.getNumThreads()
    try:
        use_threads(1)
        assert cv2.getNumThreads() == 1
        use_threads(AUTO)
        assert cv2.getNumThreads() == 1  # AUTO leaves the count as it is
        with pytest.raises(ValueError):
            use_threads(-1)
    finally:
        cv2.setNumThreads(before)


def test_an_animated_png_drives_and_other_non_videos_say_what_they_are(tmp_path, ffmpeg):
    run = lambda *args: subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True, capture_output=True)  # noqa: E731
    source = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2"]
    run(*source, "-f", "apng", "-plays", "0", str(tmp_path / "a.apng"))
    clip = clips.decode_clip(str(tmp_path / "a.apng"), None, LIMITS)
    assert clip.fps == pytest.approx(10) and len(clip.frames) == 20
    run(*source, "-c:v", "libwebp_anim", "-loop", "0", str(tmp_path / "a.webp"))
    run("-f", "lavfi", "-i", "sine=duration=1", str(tmp_path / "a.wav"))
    for name, reason in (("a.webp", "is an animated WebP"), ("a.wav", "is an audio file (WAV)")):
        with pytest.raises(media.MediaError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            clips.probe(str(tmp_path / name), LIMITS)


def test_an_encodes_time_limit_grows_with_its_work():
    # A 60 s clip at 30 fps and 1024x1024, interpolated, takes ~8 minutes of one core: more than 300 s.
    assert LIMITS.encode_timeout_s(60 * 30, 1024, 1024) > 8 * 60 * 2  # twice what it takes, at least
    assert LIMITS.encode_timeout_s(16, 512, 512) == LIMITS.ffmpeg_timeout_s  # never less than any call's


@pytest.mark.parametrize("tag", [
    [], ["-display_hflip"], ["-display_vflip"], ["-display_hflip", "-display_vflip"],
    ["-display_rotation", "90"], ["-display_rotation", "90", "-display_hflip"],
    ["-display_rotation", "-90", "-display_hflip"], ["-display_rotation", "180", "-display_vflip"],
    ["-display_rotation", "270", "-display_vflip"],
])
def test_frames_are_shown_as_ffmpeg_shows_them_whatever_the_display_matrix(tmp_path, ffmpeg, tag):
    """A front camera tags its mirror selfie with a flip: read as a half turn the face was upside down (its
    mouth and nods lost), a turn with a flip read as the plain turn mirrored every head turn; rows were ok."""
    from PIL import Image

    plain = make_test_clip(tmp_path / "plain.mp4", ffmpeg, seconds=0.5, size="320x240", audio=False,
                           extra=["-crf", "10"])
    tagged = tmp_path / "tagged.mp4"
    subprocess.run([ffmpeg, "-v", "error", *tag, "-i", str(plain), "-c", "copy", str(tagged)], check=True)
    shown = tmp_path / "shown.png"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(tagged), "-frames:v", "1", str(shown)], check=True)
    expected = np.asarray(Image.open(shown).convert("RGB"), dtype=np.int16)
    facts = clips.probe(str(tagged), LIMITS)
    assert (facts.height, facts.width) == expected.shape[:2]
    frame = clips.decode_clip(str(tagged), None, LIMITS).frames[0].astype(np.int16)
    assert frame.shape == expected.shape
    assert np.abs(frame - expected).mean() < 4.0  # the same picture (colour conversion aside), not a flip of it


def test_a_multi_page_tiff_is_read_at_its_main_page_not_its_preview():
    """DNG and scanner TIFFs put a small preview first: the meme was animated from a 96 px thumbnail."""
    preview = Image.new("RGB", (96, 64), (0, 0, 250))
    main = Image.new("RGB", (400, 300), (250, 0, 0))
    buffer = io.BytesIO()
    preview.save(buffer, format="TIFF", save_all=True, append_images=[main])
    shown = media.load_image(buffer.getvalue(), LIMITS)
    assert shown.shape == (300, 400, 3) and shown[150, 200, 0] > 200


def _progressive_jpeg_with_extra_scans(extra: int) -> bytes:
    """A progressive JPEG with ``extra`` copies of one of its refinement scans appended before its end."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 90, 60)).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    return data[:-2] + data[last_scan:-2] * extra + b"\xff\xd9"


def test_a_jpeg_of_thousands_of_scans_is_refused_before_its_decode():
    """20,000 empty scans in 1.5 MB took 44 s to decode, holding the prepare actor: refused by count."""
    plain = _progressive_jpeg_with_extra_scans(0)
    assert media.jpeg_scans(plain, LIMITS.max_jpeg_scans) == 10  # libjpeg's own progressive script
    assert media.load_image(_progressive_jpeg_with_extra_scans(20), LIMITS).shape == (64, 64, 3)
    with pytest.raises(media.MediaError, match="over 100 progressive scans"):
        media.load_image(_progressive_jpeg_with_extra_scans(5000), LIMITS)
    # Bytes that look like scan markers inside a comment are not scans.
    commented = io.BytesIO()
    Image.new("RGB", (32, 32)).save(commented, format="JPEG", comment=b"\xff\xda" * 5000)
    assert media.jpeg_scans(commented.getvalue(), LIMITS.max_jpeg_scans) == 1
    assert media.load_image(commented.getvalue(), LIMITS).shape == (32, 32, 3)


@pytest.mark.parametrize("image_format", ["EPS", "PSD", "TGA", "ICO"])
def test_an_image_outside_the_portrait_formats_is_refused_naming_its_format(image_format):
    """Pillow opens dozens of formats, EPS by running Ghostscript on the file: only portrait formats are read."""
    buffer = io.BytesIO()
    image = Image.new("RGB", (48, 48), (200, 100, 50))
    if image_format == "PSD":  # Pillow reads PSD but cannot write it: a minimal one by hand
        buffer.write(b"8BPS" + (1).to_bytes(2, "big") + bytes(6) + (3).to_bytes(2, "big") + (48).to_bytes(4, "big") * 2
                     + (8).to_bytes(2, "big") + (3).to_bytes(2, "big") + bytes(12) + bytes(2) + bytes(48 * 48 * 3))
    else:
        image.save(buffer, format=image_format)
    with pytest.raises(media.MediaError, match=f"is an image in {image_format} format, which is not read as a portrait"):
        media.load_image(buffer.getvalue(), LIMITS)


def test_a_tiff_of_thousands_of_pages_is_read_from_its_first_pages():
    """Pillow's page count walks every page (80,000 took 98 s): only the first MAX_TIFF_PAGES are looked at."""
    pages = [Image.new("L", (4, 4))] * 3000
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (0, 0, 250)).save(buffer, format="TIFF", save_all=True,
                                                  append_images=[Image.new("RGB", (200, 150), (250, 0, 0)), *pages])
    shown = media.load_image(buffer.getvalue(), LIMITS)
    assert shown.shape == (150, 200, 3) and shown[75, 100, 0] > 200


def test_a_png_whose_image_data_stops_early_is_refused_not_rendered_half_black():
    """A well-formed PNG whose compressed data ends cleanly after 60% of its rows decoded without a word,
    the missing rows black: the portrait was animated with its lower part black, ok."""
    import zlib

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    whole = io.BytesIO()
    image.save(whole, format="PNG")
    assert media.png_rows_present(whole.getvalue()) == (40 * (1 + 30 * 3),) * 2
    rows = zlib.compress(bytes(24 * (1 + 30 * 3)))  # 24 of the 40 rows, a complete zlib stream
    idat = len(rows).to_bytes(4, "big") + b"IDAT" + rows + zlib.crc32(b"IDAT" + rows).to_bytes(4, "big")
    header_end = 8 + 25
    cut = whole.getvalue()[:header_end] + idat + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    with pytest.raises(media.MediaError, match="image data stops 60% of the way through"):
        media.load_image(cut, LIMITS)
    assert media.load_image(whole.getvalue(), LIMITS).shape == (40, 30, 3)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height`` (nothing that large is ever decoded)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_very_large_jpegs_meet_the_tools_cap_not_the_image_librarys():
    # 256 MP is under the 268 MP JPEG cap: Pillow's own guard (179 MP) called it a "decompression bomb DOS
    # attack".  Here it gets as far as decoding, reduced (the file holds a 16x16 picture).
    try:
        media.load_image(_jpeg_claiming(16000, 16000), LIMITS)  # 256 MP
    except media.MediaError as exc:
        assert "decompression" not in str(exc).lower() and "cap" not in str(exc)
    with pytest.raises(media.MediaError, match="over the cap of 268 megapixels"):
        media.load_image(_jpeg_claiming(20000, 15000), LIMITS)  # 300 MP
    with pytest.raises(media.MediaError, match="over the cap of 268 .JPEG."):
        media.load_image(_jpeg_claiming(65000, 65000), LIMITS)  # past twice the cap: Pillow refuses to open it


def test_a_slideshow_clip_cut_short_gives_a_video_as_long_as_its_sound(tmp_path, ffmpeg):
    """A 0.5 fps slideshow with max_seconds 3 came out 4 s long (two 2 s frames) over 3 s of sound."""
    slides = tmp_path / "slides.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=0.5:duration=4",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(slides)], check=True, capture_output=True)
    facts = clips.probe(str(slides), LIMITS)
    assert facts.source_fps == pytest.approx(0.5, rel=0.05)
    output_fps = clips.output_rate(facts, LIMITS)
    assert output_fps == LIMITS.min_output_fps
    video = media.encode_mp4(np.zeros((2, 64, 64, 3), np.uint8), fps=0.5, output_fps=output_fps, duration=3.0,
                             audio=None, limits=LIMITS)
    (tmp_path / "out.mp4").write_bytes(video)
    assert clips.probe(str(tmp_path / "out.mp4"), LIMITS).duration == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("rate", ["1/5", "1/100"])
def test_a_slideshow_slower_than_one_picture_a_second_still_gives_its_video(tmp_path, ffmpeg, rate):
    """One picture every 5 or 100 s, cut to 3 s: generated at its own rate, the encode held no frame ("encoding
    made no video frames" after the whole render); generated at the outputs' 1 fps floor, its picture repeats."""
    slides = tmp_path / "slides.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={rate}", "-frames:v", "3",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(slides)], check=True, capture_output=True)
    facts = clips.probe(str(slides), LIMITS)
    fps = clips.generation_rate(None, facts, LIMITS)
    assert fps == LIMITS.min_output_fps
    span = clips.clip_span(facts, LIMITS, 3.0)
    frames = np.stack(list(clips.ClipReader(str(slides), facts, LIMITS).frames(clips.ClipPlan.for_span(fps, span))))
    video = media.encode_mp4(frames, fps=fps, output_fps=clips.output_rate(facts, LIMITS), duration=span,
                             audio=None, limits=LIMITS)
    (tmp_path / "out.mp4").write_bytes(video)
    assert clips.probe(str(tmp_path / "out.mp4"), LIMITS).duration == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("span, fps, count", [(2.533, 1.0, 3), (2.0, 8.0, 16), (1.9997, 15.0, 30), (2.0005, 15.0, 30),
                                              (2.06, 15.0, 31), (6.0, 0.5, 3), (0.05, 8.0, 1)])
def test_a_plan_takes_every_frame_time_inside_the_span(span, fps, count):
    """Counted in whole intervals, a 2.53 s clip at 1 fps had frames at 0 and 1 s: its last 1.5 s never shown."""
    assert clips.ClipPlan.for_span(fps, span).count == count


@pytest.mark.parametrize("fps, duration", [(1.0, 2.533), (0.5, 6.0), (1.3, 2.533)])
def test_a_slow_generation_rate_still_fills_the_whole_duration(tmp_path, fps, duration):
    """At 1 fps the held last frame (2 s) ended before minterpolate's tail: a 2.53 s clip came out 2.07 s."""
    count = clips.ClipPlan.for_span(fps, duration).count
    frames = np.stack([np.full((64, 64, 3), 40 * i, np.uint8) for i in range(count)])
    for interpolate in (True, False):
        path = tmp_path / f"slow-{interpolate}.mp4"
        path.write_bytes(media.encode_mp4(frames, fps, 30.0, duration, None, LIMITS, interpolate=interpolate))
        assert abs(clips.count_frames(str(path)) - round(duration * 30.0)) <= 1
        last = clips.decode_clip(str(path), None, LIMITS).frames[-1].mean()  # the last generated frame is shown
        assert last == pytest.approx(40 * (count - 1), abs=3)


def test_the_output_says_its_colours_and_keeps_an_ntsc_rate_exact(tmp_path, ffmpeg):
    """Untagged BT.601 YUV is shown redder by players that take untagged video for BT.709 (browsers); an
    NTSC rate written with six decimals came out 979001/32666 fps."""
    import av

    colours = [(200, 100, 50), (30, 160, 220), (235, 200, 180), (20, 20, 20)]
    frames = np.stack([np.tile(np.array(colour, np.uint8), (64, 64, 1)) for colour in colours for _ in range(8)])
    ntsc = 30000 / 1001
    path = tmp_path / "ntsc.mp4"
    path.write_bytes(media.encode_mp4(frames, ntsc, ntsc, len(frames) / ntsc, None, LIMITS))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        assert stream.average_rate == Fraction(30000, 1001)
        assert (context.colorspace, context.color_primaries, context.color_trc, context.color_range) == (1, 1, 1, 1)
    # As a colour-managed player shows it: the ffmpeg binary turning it back into RGB by its tags.
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(-1, 64, 64, 3)
    for index, colour in enumerate(colours):
        np.testing.assert_allclose(shown[index * 8 + 4].reshape(-1, 3).mean(axis=0), colour, atol=3)


def _matrix_profile(description: str, colorants: tuple[tuple[float, float, float], ...], gamma: float) -> bytes:
    """A minimal ICC v2 RGB profile (D50 colorants and one gamma), as cameras and phones embed them."""
    import struct

    def s15(x: float) -> bytes:
        return struct.pack(">i", round(x * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    text = description.encode() + b"\0"
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8) + bytes(3) + bytes(67)),
            (b"cprt", b"text" + bytes(4) + b"none\0"), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            *((name, xyz(*colorant)) for name, colorant in zip((b"rXYZ", b"gXYZ", b"bXYZ"), colorants)),
            *((name, b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))) for name in (b"rTRC", b"gTRC", b"bTRC"))]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for name, body in tags:
        body += bytes(-len(body) % 4)
        table, data = table + name + struct.pack(">II", offset + len(data), len(body)), data + body
    body = struct.pack(">I", len(tags)) + table + data
    header = (struct.pack(">I", 128 + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"APPL" + bytes(24) + s15(0.9642) + s15(1.0)
              + s15(0.8249) + b"lcms" + bytes(44))
    return header + body


def test_a_portrait_with_a_colour_profile_is_read_as_viewers_show_it(portraits):
    """An iPhone photo's pixels are Display P3 numbers: read as sRGB, its colours came out duller."""
    from PIL import ImageCms

    p3 = _matrix_profile("Display P3 (test)", ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419),
                                               (0.1571, 0.0666, 0.7841)), 2.2)
    shown = Image.fromarray(portraits["astronaut"])
    numbers = ImageCms.profileToProfile(shown, ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(p3)),
                                        outputMode="RGB")
    expected = np.asarray(shown, dtype=float)
    assert np.abs(np.asarray(numbers, dtype=float) - expected).mean() > 4  # the profile matters
    for fmt in ("PNG", "JPEG"):
        data = io.BytesIO()
        numbers.save(data, fmt, icc_profile=p3, **({"quality": 95} if fmt == "JPEG" else {}))
        read = media.load_image(data.getvalue(), LIMITS).astype(float)
        assert np.abs(read - expected).mean() < 2.5, fmt
    # A palette image's colours are the profile's too (its numbers were read as sRGB).
    data = io.BytesIO()
    palette = numbers.quantize(256)
    palette.save(data, "PNG", icc_profile=p3)
    as_numbers = np.asarray(palette.convert("RGB"), dtype=float)
    read = media.load_image(data.getvalue(), LIMITS).astype(float)
    assert np.abs(read - expected).mean() < np.abs(as_numbers - expected).mean() - 2
    # A profile that cannot be read leaves the numbers as they are, however large (a 3 MB profile
    # passed Pillow's 1 MB guard on PNG text chunks only by failing the whole image).
    for junk in (b"not a profile", bytes(range(256)) * 12_000):
        data = io.BytesIO()
        numbers.save(data, "PNG", icc_profile=junk)
        assert np.array_equal(media.load_image(data.getvalue(), LIMITS), np.asarray(numbers))


def _png_with_chunk(image: Image.Image, kind: bytes, payload: bytes) -> bytes:
    """``image`` as PNG with one more chunk just before its image data."""
    import struct
    import zlib

    data = io.BytesIO()
    image.save(data, "PNG")
    png = data.getvalue()
    at = png.index(b"IDAT") - 4
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return png[:at] + chunk + png[at:]


@pytest.mark.parametrize("transfer, primaries, tagged", [
    ("smpte2084", "bt2020", "bt2020nc"),  # an HDR export (PQ): read as sRGB it was grey and flat
    ("arib-std-b67", "bt2020", "bt2020nc"),  # HLG, as phones and TVs make it
    ("iec61966-2-1", "smpte432", "bt709"),  # Display P3 told by code points, not an ICC profile
])
def test_an_avif_portrait_tagged_hdr_or_wide_gamut_is_read_as_viewers_show_it(portraits, ffmpeg, tmp_path,
                                                                              transfer, primaries, tagged):
    """AVIF (and HEIF) say what their numbers mean by code points in an ``nclx`` box: HDR exports
    carry BT.2020 primaries with the PQ or HLG transfer.  Pillow hands back the numbers: read as
    sRGB, a PQ portrait had a third of its colour and the row was ok."""
    source = tmp_path / "portrait.png"
    Image.fromarray(portraits["astronaut"]).save(source)
    matrix = "bt709" if tagged == "bt709" else "bt2020nc"
    path = tmp_path / f"{transfer}.avif"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(source), "-vf",
                    f"zscale=t={transfer}:p={primaries}:m={matrix}:tin=iec61966-2-1:pin=bt709:min=bt709:npl=203,"
                    "format=yuv444p10le", "-c:v", "libaom-av1", "-crf", "4", "-still-picture", "1",
                    "-color_primaries", primaries, "-color_trc", transfer, "-colorspace", tagged, str(path)],
                   check=True, capture_output=True)
    data = path.read_bytes()
    expected = portraits["astronaut"].astype(float)
    as_numbers = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)
    read = media.load_image(data, LIMITS).astype(float)
    # HLG within a little more: ffmpeg's zscale makes it without BT.2100's display gamma (1.2), which
    # a viewer applies, so its mid-tones read a shade darker than they started.
    assert np.abs(read - expected).mean() < (6.0 if transfer == "arib-std-b67" else 4.0)
    assert np.abs(read - expected).mean() < np.abs(as_numbers - expected).mean() - 1.0


def test_a_png_with_colour_code_points_is_converted_and_they_override_its_icc_profile(portraits):
    """A PNG's cICP chunk (PNG, third edition) says what its numbers mean, before any ICC profile."""
    from mediaio import colour_tags

    shown = portraits["astronaut"].astype(float) / 255.0
    linear = np.where(shown <= 0.04045, shown / 12.92, ((shown + 0.055) / 1.055) ** 2.4)
    # BT.709 -> BT.2020 linear light (ITU-R BT.2087), then the PQ signal of it at 203 nits for white.
    to_2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
    nits = (linear @ to_2020.T) * 203.0 / 10000.0
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    pq = ((c1 + c2 * nits ** m1) / (1 + c3 * nits ** m1)) ** m2
    numbers = Image.fromarray(np.round(pq * 255).astype(np.uint8))
    data = _png_with_chunk(numbers, b"cICP", bytes([9, 16, 0, 1]))
    assert colour_tags.read_tags(data) == colour_tags.ColourTags(9, 16, 0)
    read = media.load_image(data, LIMITS).astype(float)
    assert np.abs(read - portraits["astronaut"]).mean() < 2.5
    assert np.abs(np.asarray(numbers, dtype=float) - portraits["astronaut"]).mean() > 20  # the tags matter
    # An ICC profile beside them does not: cICP comes first.
    with_profile = io.BytesIO()
    p3 = _matrix_profile("Display P3 (test)", ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419),
                                               (0.1571, 0.0666, 0.7841)), 2.2)
    numbers.save(with_profile, "PNG", icc_profile=p3)
    data = _png_with_chunk(Image.open(io.BytesIO(with_profile.getvalue())), b"cICP", bytes([9, 16, 0, 1]))
    assert np.abs(media.load_image(data, LIMITS).astype(float) - portraits["astronaut"]).mean() < 2.5
    # Tags already sRGB, or unknown, leave the numbers as they are; so does a damaged chunk list.
    for payload in (bytes([1, 13, 0, 1]), bytes([22, 16, 0, 1]), bytes([9, 99, 0, 1])):
        assert np.array_equal(media.load_image(_png_with_chunk(numbers, b"cICP", payload), LIMITS), np.asarray(numbers))
    # A grey PNG's levels carry the tags too (it came out flat and grey), and PQ with its primaries
    # left unspecified (ffmpeg's AVIF muxer writes 2) is BT.2020.
    shown_grey = np.asarray(Image.fromarray(portraits["astronaut"]).convert("L"), dtype=float)
    grey_light = np.where(shown_grey / 255 <= 0.04045, shown_grey / 255 / 12.92, ((shown_grey / 255 + 0.055) / 1.055) ** 2.4)
    grey_pq = ((c1 + c2 * (grey_light * 0.0203) ** m1) / (1 + c3 * (grey_light * 0.0203) ** m1)) ** m2
    grey = Image.fromarray(np.round(grey_pq * 255).astype(np.uint8))
    read_grey = media.load_image(_png_with_chunk(grey, b"cICP", bytes([9, 16, 0, 1])), LIMITS).astype(float)
    assert np.abs(read_grey - shown_grey[..., None]).mean() < 2.5
    assert np.abs(np.asarray(grey, dtype=float) - shown_grey).mean() > 10  # as it was read before
    unspecified = media.load_image(_png_with_chunk(numbers, b"cICP", bytes([2, 16, 0, 1])), LIMITS).astype(float)
    assert np.abs(unspecified - portraits["astronaut"]).mean() < 2.5
    assert colour_tags.read_tags(b"\x89PNG\r\n\x1a\n" + b"\xff" * 20) is None
    assert colour_tags.read_tags(b"\0\0\0\x20ftypavif" + b"\xff" * 40) is None


def test_hdr_highlights_roll_off_towards_white_and_the_rest_keeps_its_brightness():
    """An HDR portrait's highlights (a window, a lamp: 4x SDR white and more) are compressed into the
    top of the range, keeping their gradation, where clipping would flatten them into one white; light
    up to three quarters of SDR white keeps its brightness."""
    nits = np.linspace(0.0, 1000.0, 256)
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    y = (nits / 10000.0) ** m1
    signal = ((c1 + c2 * y) / (1 + c3 * y)) ** m2
    ramp = Image.fromarray(np.repeat(np.round(signal * 255).astype(np.uint8)[None, :, None], 3, axis=2).repeat(64, 0))
    read = media.load_image(_png_with_chunk(ramp, b"cICP", bytes([9, 16, 0, 1])), LIMITS)[0, :, 1].astype(float)
    assert np.all(np.diff(read) >= 0) and read[-1] >= 250
    bright = nits >= 1.2 * 203.0
    assert len(np.unique(read[bright])) > 10  # graded, not clipped into one white
    dim = nits <= 0.6 * 203.0
    expected = 255.0 * np.where(nits / 203.0 <= 0.0031308, 12.92 * nits / 203.0, 1.055 * (nits / 203.0) ** (1 / 2.4) - 0.055)
    assert np.abs(read[dim] - expected[dim]).max() <= 6  # (8-bit PQ steps)


def test_a_gif_with_hundredth_of_a_second_delays_plays_as_browsers_show_it(tmp_path):
    """Browsers show a GIF frame of 10 ms or less for 100 ms; read as ffmpeg reads it, a GIF saved
    with 1/100-s delays rendered ten times too fast (3 s of motion in 0.3 s), ok.  Longer delays are
    kept, as are mixed ones, frame by frame."""
    frames = [Image.fromarray(np.full((64, 64, 3), 8 * i, np.uint8)) for i in range(30)]
    fast = tmp_path / "fast.gif"
    frames[0].save(fast, save_all=True, append_images=frames[1:], duration=10, loop=0)
    facts = clips.probe(str(fast), LIMITS)
    assert facts.source_fps == pytest.approx(10.0) and facts.duration == pytest.approx(3.0)
    decoded = clips.decode_clip(str(fast), None, LIMITS)
    assert len(decoded.frames) == 30
    np.testing.assert_allclose(decoded.frames[:, 0, 0, 0], [8 * i for i in range(30)], atol=2)  # each frame once
    kept = tmp_path / "kept.gif"
    frames[0].save(kept, save_all=True, append_images=frames[1:], duration=20, loop=0)
    assert clips.probe(str(kept), LIMITS).source_fps == pytest.approx(50.0)
    # Frame by frame as the same GIF saved with the delays a browser shows, mixed delays too: sums of
    # 0.1 s drifted (0.30000000000000004), and a pick falling between two frames took the later one.
    delays = [10, 100, 10, 50, 0, 200, 20, 10, 30, 10] * 3
    shown = [100 if delay <= 10 else delay for delay in delays]
    mixed_fast, as_shown = tmp_path / "mixed_fast.gif", tmp_path / "as_shown.gif"
    frames[0].save(mixed_fast, save_all=True, append_images=frames[1:], duration=delays, loop=0)
    frames[0].save(as_shown, save_all=True, append_images=frames[1:], duration=shown, loop=0)
    for fps in (None, 15.0, 30.0):
        np.testing.assert_array_equal(clips.decode_clip(str(mixed_fast), fps, LIMITS).frames,
                                      clips.decode_clip(str(as_shown), fps, LIMITS).frames)
    mixed = tmp_path / "mixed.gif"  # 200 ms, then 10 ms frames: 100 ms each as shown
    frames[0].save(mixed, save_all=True, append_images=frames[1:], duration=[200] + [10] * 29, loop=0)
    assert clips.probe(str(mixed), LIMITS).duration == pytest.approx(0.2 + 28 * 0.1 + 0.1, abs=0.02)


def test_a_damaged_clip_the_demuxer_gives_up_on_says_so_in_words(tmp_path, ffmpeg):
    # An AVI whose picture's codec tag is unknown (libav has no decoder context for it) failed the row as
    # "prepare: AttributeError: 'NoneType' object has no attribute 'name'"; an Ogg file whose sound lost
    # its setup header as "prepare: InvalidDataError: [Errno 1094995529] ... '/tmp/hm-prepare-.../input-...'".
    source = tmp_path / "clip.avi"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1",
                    "-c:v", "mjpeg", str(source)], check=True)
    unknown = tmp_path / "unknown.avi"
    unknown.write_bytes(source.read_bytes().replace(b"MJPG", b"ZZZZ"))
    with pytest.raises(media.MediaError, match="has a video stream in a codec this reader does not know"):
        clips.probe(str(unknown), LIMITS)
    source = tmp_path / "clip.ogv"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1", "-f", "lavfi",
                    "-i", "sine=d=1", "-c:v", "libtheora", "-c:a", "libvorbis", "-shortest", str(source)], check=True)
    damaged = tmp_path / "damaged.ogv"
    damaged.write_bytes(source.read_bytes().replace(b"\x05vorbis", b"\x05vorbiz"))  # the sound's setup header
    with pytest.raises(media.MediaError, match=r"^cannot be read as a video: Extradata missing\.$"):
        clips.probe(str(damaged), LIMITS)


@pytest.mark.parametrize("suffix, codec", [(".mkv", ["-c:v", "libx264"]),
                                           (".mp4", ["-c:v", "libx264", "-movflags", "use_metadata_tags"]),
                                           (".ogv", ["-c:v", "libtheora"]),
                                           (".flv", ["-c:v", "libx264"]), (".wmv", ["-c:v", "wmv2"])])
def test_a_clip_of_tens_of_thousands_of_tags_is_refused_before_it_is_opened(tmp_path, ffmpeg, suffix, codec):
    # ffmpeg's demuxers take time growing with the square of the tags as they open the file: a 2.9 MB
    # Matroska clip of 40,000 tags took 17 s, an Ogg one of 20,000 13 s, on each of a row's four opens.
    # Counted from the headers first (mediaio/metadata_tags.py).
    from mediaio import metadata_tags

    tags = tmp_path / "tags.txt"
    tags.write_text(";FFMETADATA1\n" + "".join(f"key{index}=value\n" for index in range(300)))
    plain, tagged = tmp_path / f"plain{suffix}", tmp_path / f"tagged{suffix}"
    for path, extra in ((plain, []), (tagged, ["-i", str(tags), "-map", "0", "-map_metadata", "1"])):
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1", *extra,
                        *codec, str(path)], check=True)
    assert 300 <= metadata_tags.tag_count(str(tagged), 10_000) <= 310
    assert metadata_tags.tag_count(str(plain), 10_000) < 10
    clips.probe(str(tagged), LIMITS)  # within the cap: read as ever
    with pytest.raises(media.MediaError, match="^holds over 100 metadata tags, more than a clip this tool reads has"):
        clips.probe(str(tagged), replace(LIMITS, max_metadata_tags=100))


def test_an_avi_of_tens_of_thousands_of_info_tags_is_refused_before_it_is_opened(tmp_path, ffmpeg):
    # An AVI's LIST INFO chunks are tags ffmpeg's reader stores one by one (20,000 took 3.0 s to open, a
    # WMV's 8.4 s, an FLV's 2.0 s); ffmpeg writes only the few INFO tags it knows, so the list is made here.
    import struct

    from mediaio import metadata_tags

    plain = tmp_path / "plain.avi"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1",
                    "-c:v", "libx264", str(plain)], check=True)
    data = plain.read_bytes()
    header_list = 12 + 8 + struct.unpack("<I", data[16:20])[0]  # the hdrl LIST, first in the RIFF
    info = b"".join(bytes([65 + index % 26, 65 + index // 26 % 26, 65 + index // 676, 65]) + struct.pack("<I", 2)
                    + b"v\0" for index in range(300))
    chunk = b"LIST" + struct.pack("<I", 4 + len(info)) + b"INFO" + info
    body = data[8:header_list] + chunk + data[header_list:]
    tagged = tmp_path / "tagged.avi"
    tagged.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert metadata_tags.tag_count(str(tagged), 10_000) == 300 + metadata_tags.tag_count(str(plain), 10_000)
    assert clips.probe(str(tagged), LIMITS).frame_count == 10  # within the cap: read as ever
    with pytest.raises(media.MediaError, match="^holds over 100 metadata tags, more than a clip this tool reads has"):
        clips.probe(str(tagged), replace(LIMITS, max_metadata_tags=100))


def _claiming_samples(clip: bytes, samples: int) -> bytes:
    """The clip with its first track's sample-size table rewritten to claim ``samples`` of one byte each.

    Same box size, so nothing else moves: what a damaged or hostile file's header says, and what
    ffmpeg's MP4 reader builds an index entry for, each, as it opens the file.
    """
    table = clip.index(b"stsz")
    return clip[:table + 8] + (1).to_bytes(4, "big") + samples.to_bytes(4, "big") + clip[table + 16:]


def test_an_mp4_whose_tables_claim_millions_of_samples_is_refused_before_it_is_opened(tmp_path, ffmpeg):
    """A 121 KB clip claiming 80 million samples took 2.9 GB and 23 s on every open: counted from its boxes first."""
    from mediaio import sample_tables

    clip = make_test_clip(tmp_path / "clip.mp4", ffmpeg, extra=["-movflags", "+faststart"])
    assert sample_tables.index_entries(str(clip), LIMITS.max_index_entries) < 200  # 30 frames and the AAC frames
    hostile = tmp_path / "hostile.mp4"
    hostile.write_bytes(_claiming_samples(clip.read_bytes(), LIMITS.max_index_entries + 1_000_000))
    assert sample_tables.index_entries(str(hostile), LIMITS.max_index_entries) > LIMITS.max_index_entries
    with pytest.raises(media.MediaError, match="claim over 5,000,000 samples"):
        clips.probe(str(hostile), LIMITS)
    clips.probe(str(clip), LIMITS)  # the clip as it was opens


def _with_edits(clip: bytes, edits: int, length: int | None = None) -> bytes:
    """The clip (its ``moov`` after its ``mdat``, as ffmpeg writes it) with its first track's edit list
    replaced by ``edits`` edits that each play the whole track (or last ``length`` movie ticks): a 12 MB
    list plays a 2-s clip a million times, and ffmpeg's MP4 reader builds an index entry for every
    sample of every edit."""
    def boxes(data: bytes, start: int, end: int):
        while start + 8 <= end:
            size = int.from_bytes(data[start:start + 4], "big")
            yield data[start + 4:start + 8], start, size
            start += size

    def box(kind: bytes, body: bytes) -> bytes:
        return (8 + len(body)).to_bytes(4, "big") + kind + body

    (_, moov, moov_size), = [found for found in boxes(clip, 0, len(clip)) if found[0] == b"moov"]
    _, trak, trak_size = next(found for found in boxes(clip, moov + 8, moov + moov_size) if found[0] == b"trak")
    parts = {kind: clip[at:at + size] for kind, at, size in boxes(clip, trak + 8, trak + trak_size)}
    whole = parts[b"tkhd"][28:32]  # the track's length, in the movie's timescale (a version 0 tkhd)
    played = whole if length is None else length.to_bytes(4, "big")
    edit = played + (0).to_bytes(4, "big") + (1 << 16).to_bytes(4, "big")
    parts[b"edts"] = box(b"edts", box(b"elst", bytes(4) + edits.to_bytes(4, "big") + edit * edits))
    new_trak = box(b"trak", b"".join(parts[kind] for kind in (b"tkhd", b"edts", b"mdia") if kind in parts)
                   + b"".join(body for kind, body in parts.items() if kind not in (b"tkhd", b"edts", b"mdia")))
    new_moov = box(b"moov", clip[moov + 8:trak] + new_trak + clip[trak + trak_size:moov + moov_size])
    return clip[:moov] + new_moov + clip[moov + moov_size:]


def test_an_mp4_whose_edit_list_repeats_its_track_a_million_times_is_refused_before_it_is_opened(tmp_path, ffmpeg):
    """12 MB of edits playing a 30-frame clip a million times: 1.2 GB and 9 s on every open of it."""
    from mediaio import sample_tables

    clip = make_test_clip(tmp_path / "clip.mp4", ffmpeg, audio=False)
    edited = tmp_path / "edited.mp4"
    edited.write_bytes(_with_edits(clip.read_bytes(), 1))
    assert 30 <= sample_tables.index_entries(str(edited), LIMITS.max_index_entries) <= 32  # one edit: the clip
    assert clips.probe(str(edited), LIMITS).frame_count >= 28  # it opens (the edit starts at 0, not at the delay)
    for length in (None, 0):  # each edit the whole track's length, or 0, which ffmpeg reads as the rest of it
        edited.write_bytes(_with_edits(clip.read_bytes(), 1_000_000, length))
        assert sample_tables.index_entries(str(edited), LIMITS.max_index_entries) > LIMITS.max_index_entries
        with pytest.raises(media.MediaError, match="claim over 5,000,000 samples .each edit of an edit list"):
            clips.probe(str(edited), LIMITS)


@pytest.mark.parametrize("extra, most", [
    (["-c:a", "pcm_s16le"], 400),  # a MOV's PCM sound: one sample per sound frame, indexed by chunk
    (["-movflags", "frag_keyframe+empty_moov"], 300),  # a fragmented MP4: samples claimed by its fragments' runs
])
def test_the_samples_a_real_clip_claims_are_counted_as_the_reader_indexes_them(tmp_path, ffmpeg, extra, most):
    from mediaio import sample_tables

    suffix = ".mov" if "pcm_s16le" in extra else ".mp4"
    clip = make_test_clip(tmp_path / f"clip{suffix}", ffmpeg, seconds=4.0, extra=extra)
    counted = sample_tables.index_entries(str(clip), LIMITS.max_index_entries)
    assert 60 <= counted <= most  # 60 video frames and the sound's entries (not 176,400 for the PCM samples)
    assert clips.probe(str(clip), LIMITS).frame_count == 60


@pytest.mark.parametrize("name, codec", [
    ("prores.mov", ["-c:v", "prores_ks", "-profile:v", "4444", "-pix_fmt", "yuva444p10le"]),
    ("png.mov", ["-c:v", "png", "-pix_fmt", "rgba"]),
    ("rle.mov", ["-c:v", "qtrle", "-pix_fmt", "argb"]),
    ("anim.apng", ["-c:v", "apng", "-pix_fmt", "rgba", "-f", "apng"]),
    ("vp9.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-pix_fmt", "yuva420p"]),
    ("vp8.webm", ["-c:v", "libvpx", "-auto-alt-ref", "0", "-deadline", "realtime", "-pix_fmt", "yuva420p"])])
def test_a_driving_clip_with_an_alpha_channel_is_seen_over_white_as_a_browser_shows_it(tmp_path, ffmpeg, name, codec):
    # Its left half transparent (hiding pure green), its right half opaque red.  Read without its alpha
    # (every decoder, and ffmpeg's own VP8/VP9 decoders drop a WebM's), the hidden green showed.
    clip = tmp_path / name
    source = ("color=c=0x00ff00:s=64x64:r=10:d=1,format=rgba,geq=r='if(lt(X,32),0,200)':g='if(lt(X,32),255,30)'"
              ":b='if(lt(X,32),0,30)':a='if(lt(X,32),0,255)'")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", source, *codec, str(clip)], check=True,
                   capture_output=True)
    facts = clips.probe(str(clip), LIMITS)
    for max_side in (None, 32):
        frame = next(iter(clips.ClipReader(str(clip), facts, LIMITS).frames(clips.ClipPlan(10.0, 1), max_side)))
        side = frame.shape[1]
        assert np.abs(frame[:, : side // 2 - 2].astype(int) - 255).max() <= 3  # white, as the portrait's ground
        assert np.abs(frame[:, side // 2 + 2:].astype(int) - (200, 30, 30)).max() <= 6


def test_a_gifs_transparent_pixels_are_seen_over_white(tmp_path):
    # Its left half transparent (palette entry 0, pure green), its right half red and blue in turn.
    frames = []
    for index in range(4):
        frame = Image.new("P", (64, 64), 0)
        frame.putpalette([0, 255, 0, 200, 30, 30, 30, 30, 200] + [0] * 759)
        frame.paste(1 + index % 2, (32, 0, 64, 64))
        frames.append(frame)
    clip = tmp_path / "transparent.gif"
    frames[0].save(clip, save_all=True, append_images=frames[1:], duration=100, loop=0, transparency=0, disposal=2)
    decoded = clips.decode_clip(str(clip), None, LIMITS).frames
    assert len(decoded) == 4 and (decoded[:, :, :30] == 255).all()
    assert (decoded[0, :, 34:] == (200, 30, 30)).all() and (decoded[1, :, 34:] == (30, 30, 200)).all()


def test_an_hdr_driving_clip_is_seen_in_srgb_as_a_player_shows_it(tmp_path, ffmpeg):
    # A PQ (HDR10) clip of two sRGB colours, a skin tone and a blue, made as an HDR export makes them:
    # BT.2020 primaries, SDR white at 203 nits.  Read as they are, its numbers came out grey and flat.
    srgb = np.array([[180, 120, 90], [60, 90, 160]], dtype=float)
    linear = np.where(srgb / 255 <= 0.04045, srgb / 255 / 12.92, ((srgb / 255 + 0.055) / 1.055) ** 2.4)
    to_bt2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
    light = (linear @ to_bt2020.T) * 203 / 10000
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    pq = ((c1 + c2 * light ** m1) / (1 + c3 * light ** m1)) ** m2
    picture = np.repeat(np.round(pq * 65535).astype("<u2"), 32, axis=0).reshape(2, 32, 1, 3)
    picture = np.ascontiguousarray(np.broadcast_to(picture, (2, 32, 64, 3)).reshape(64, 64, 3))
    clip = tmp_path / "hdr10.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", "64x64", "-r", "10",
                    "-i", "-", "-vf", "scale=out_color_matrix=bt2020:out_range=tv,format=yuv420p10le,setparams="
                    "color_primaries=bt2020:color_trc=smpte2084:colorspace=bt2020nc", "-c:v", "libx264", "-qp", "0",
                    str(clip)], input=picture.tobytes() * 10, check=True, capture_output=True)
    facts = clips.probe(str(clip), LIMITS)
    assert facts.colour == colour_tags.ColourTags(9, 16)
    frame = next(iter(clips.ClipReader(str(clip), facts, LIMITS).frames(clips.ClipPlan(10.0, 1))))
    for row, colour in ((16, srgb[0]), (48, srgb[1])):
        assert np.abs(frame[row, 8:56].reshape(-1, 3).mean(0) - colour).max() <= 8
    sdr = replace(facts, colour=None)  # as it was read: grey and flat
    flat = next(iter(clips.ClipReader(str(clip), sdr, LIMITS).frames(clips.ClipPlan(10.0, 1))))
    assert np.abs(flat[16, 8:56].reshape(-1, 3).mean(0) - srgb[0]).max() > 30


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_clip_of_hundreds_of_streams_is_refused_without_setting_them_all_up(tmp_path, ffmpeg, suffix):
    # Each stream gets a decoder as the clip opens: 998 AAC tracks in 1.6 MB took 720 MB on every open.
    # The MP4 (and Ogg) reader gives up at the stream past the cap: it said "error reading header".
    clip = tmp_path / f"streams{suffix}"
    tracks = [arg for _ in range(12) for arg in ("-map", "1:a")]
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1", "-f",
                    "lavfi", "-i", "sine=duration=1:sample_rate=8000", "-map", "0:v", *tracks, "-c:v", "libx264",
                    "-c:a", "aac", "-b:a", "8k", str(clip)], check=True, capture_output=True)
    facts = clips.probe(str(clip), LIMITS)  # 13 streams: within the cap, read as ever
    assert facts.has_audio and facts.frame_count == 10
    assert len(clips.decode_clip(str(clip), None, replace(LIMITS, max_streams=13)).frames) == 10
    with pytest.raises(media.MediaError, match=r"^holds over 10 streams \(sound, subtitle or data tracks\), more "
                                               r"than a clip this tool reads has"):
        clips.probe(str(clip), replace(LIMITS, max_streams=10))


def test_an_alpha_channel_that_is_zero_all_over_is_padding_not_transparency(tmp_path, ffmpeg):
    # A capture tool's 32-bit RGB, or a QuickTime Animation clip whose alpha its players ignore: its
    # pictures are opaque to every player, and composited over white they were blank.
    clip = tmp_path / "unused-alpha.mov"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0xC81E1E:s=64x64:r=10:d=1,format=rgba,"
                    "geq=r=200:g=30:b=30:a=0", "-c:v", "png", "-pix_fmt", "rgba", str(clip)], check=True,
                   capture_output=True)
    frames = clips.decode_clip(str(clip), None, LIMITS).frames
    assert np.abs(frames.astype(int) - (200, 30, 30)).max() <= 2
