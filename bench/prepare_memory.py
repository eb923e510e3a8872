"""Peak memory of the prepare stage (decode + face mesh + crops) on one long, large clip.

    .venv/bin/python bench/prepare_memory.py [--seconds 20] [--side 1024] [--no-record]

Synthesises a driving clip of ``--seconds`` at ``--side`` x ``--side`` pixels (the demo's scripted
face, looped), then prepares one row with the pipeline's own prepare stage in a fresh child
process, sampling that process's resident memory every 10 ms while the row runs.
The stage streams the clip, so its peak should be bounded by the row's 512x512 face crops plus a
few source frames, whatever the source resolution: the target is 1.3x the crops + 300 MiB.  Also
prints the object-store bytes the row hands the render stage, per output frame.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import append_results  # noqa: E402

CHILD = r'''
import json, sys, threading, time
import psutil
from mediaio.media import MediaLimits
from mediaio.storage import StoragePolicy
from pipelines.render_pipeline import PrepareStage
from pipelines.rows import planned_row
from engines.base import RowSettings

reference, clip, warmup = sys.argv[1:4]
stage = PrepareStage(512, None, "faces.tracking:stable_crop_box", MediaLimits(max_seconds=600), {}, 2**31, None,
                     StoragePolicy())
stage(planned_row(0, "warmup", reference, warmup, "/dev/null/unused.mp4", RowSettings(), 600.0))
me, samples, done = psutil.Process(), [], threading.Event()
def sample():
    while not done.is_set():
        samples.append(me.memory_info().rss)
        time.sleep(0.01)
before = me.memory_info().rss
sampler = threading.Thread(target=sample); sampler.start()
row = stage(planned_row(1, "long", reference, clip, "/dev/null/unused.mp4", RowSettings(), 600.0))
done.set(); sampler.join()
peak = max(samples + [me.memory_info().rss])
crops = row["driving_crops"].nbytes + row["reference_crop"].nbytes
queued = sum(v.nbytes if hasattr(v, "nbytes") else len(v) if isinstance(v, bytes) else 8 for v in row.values())
print(json.dumps({"status": row["status"], "error": row["error"], "frames": int(row["frames"]), "before": before,
                  "peak": peak, "crops": crops, "queued": queued}))
'''


def make_clip(folder: str, seconds: float, side: int) -> tuple[str, str, str]:
    """(portrait, long clip, short warm-up clip) paths: the demo's scripted face, looped to ``seconds``."""
    from PIL import Image

    from jobs.demo import jingle_wav
    from jobs.demo_media import demo_portraits, synthesize_driving_clip
    from mediaio import media

    portrait = demo_portraits()["astronaut"]
    portrait_path = os.path.join(folder, "portrait.png")
    Image.fromarray(portrait).save(portrait_path)
    frames, fps = synthesize_driving_clip(portrait, seconds=4.0, crop_size=side)
    base = os.path.join(folder, "base.mp4")
    Path(base).write_bytes(media.encode_mp4(frames, fps, fps, len(frames) / fps, jingle_wav(len(frames) / fps),
                                            media.MediaLimits()))
    long_clip = os.path.join(folder, "long.mp4")
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", str(int(seconds // 4) + 1), "-i", base,
                    "-t", str(seconds), "-c", "copy", long_clip], check=True)
    warmup = os.path.join(folder, "warmup.mp4")
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-i", base, "-t", "0.5", "-c", "copy", warmup],
                   check=True)
    return portrait_path, long_clip, warmup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as folder:
        portrait, clip, warmup = make_clip(folder, args.seconds, args.side)
        repo = str(Path(__file__).resolve().parents[1])
        child = subprocess.run([sys.executable, "-c", CHILD, portrait, clip, warmup], cwd=repo, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": repo, "GLOG_minloglevel": "2"})
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return 1
        outcome = json.loads(child.stdout.strip().splitlines()[-1])
    if outcome["status"] != "pending":
        print(f"the row failed: {outcome['error']}", file=sys.stderr)
        return 1
    mib = 2**20
    growth = outcome["peak"] - outcome["before"]
    target = 1.3 * outcome["crops"] + 300 * mib
    lines = [
        f"clip: {args.seconds:.0f} s at {args.side}x{args.side}, 15 fps, {outcome['frames']} frames prepared "
        f"(the warp engine keeps the clip's rate: the most frames a row can have)",
        f"prepare process: {outcome['before'] / mib:.0f} MiB resident before the row (libraries, mediapipe, a "
        f"warm-up row), peak {outcome['peak'] / mib:.0f} MiB during it: the row added at most {growth / mib:.0f} MiB",
        f"the row's 512x512 crops: {outcome['crops'] / mib:.0f} MiB; target 1.3x crops + 300 MiB = "
        f"{target / mib:.0f} MiB; the row's peak growth / target = {growth / target:.2f} "
        f"(whole process, libraries included: {outcome['peak'] / target:.2f})",
        f"object store: the row hands the render stage {outcome['queued'] / mib:.0f} MiB, "
        f"{outcome['queued'] / outcome['frames'] / mib:.2f} MiB per output frame",
    ]
    print("\n".join(lines))
    if not args.no_record:
        append_results("Prepare stage memory", " ".join(["python bench/prepare_memory.py", *sys.argv[1:]]), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
