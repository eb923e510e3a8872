"""Long clips spread over the render actors through Ray: part rows, the parts pool, the stitch stage.

Each job runs in a child process against its own Ray instance with two logical GPUs.  A toy
splitting engine (given by import path, like the multi-node test's) paints frame ``f`` grey
level ``f * 9 % 250``, so the order the parts come back in shows in the written MP4s; it records
which pool and GPU ran each call.  The real HelloMeme split (bit for bit the same as one actor) is tested
on tiny models without Ray, in tests/hellomeme/test_spread.py.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from engines.base import Engine, EngineSpec, PartInput, RenderInput, VideoPart
from tests.isolated_ray import run_child_job

pytestmark = pytest.mark.ray

MODULE = Path(__file__).stem
FPS = 15.0  # the synthetic clips' own rate: one rendered frame per output frame


def grey(frame: int) -> int:
    return frame * 9 % 250


@dataclass(frozen=True)
class ToyOptions:
    frames_per_part: int = 6
    record_dir: str = ""

    def check(self, size: int) -> None:
        """Nothing to check."""


class SplittingToyEngine(Engine):
    """Splits clips longer than ``frames_per_part`` into parts of that many frames (sharing one frame)."""

    name = "toy-split"
    needs_gpu = True
    default_fps = FPS

    def __init__(self, spec: EngineSpec, storage_options=None) -> None:
        import ray

        super().__init__(spec, storage_options)
        self.gpus = [str(g) for g in ray.get_gpu_ids()]
        if not self.gpus:
            raise RuntimeError("built in an actor that holds no GPU")
        share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0)
        self._record(f"start {share}", [])

    @classmethod
    def splits(cls, spec: EngineSpec) -> bool:
        return True

    def _record(self, kind: str, ids: list[str]) -> None:
        with open(Path(self.spec.options.record_dir) / f"{os.getpid()}.jsonl", "a") as handle:
            handle.write(json.dumps({"kind": kind, "gpus": self.gpus, "pid": os.getpid(), "ids": ids}) + "\n")

    def _frames(self, start: int, stop: int) -> np.ndarray:
        size = self.spec.size
        return np.stack([np.full((size, size, 3), grey(f), np.uint8) for f in range(start, stop)])

    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        return [self._frames(0, len(item.driving_frames)) for item in inputs]

    def render_or_split(self, inputs: Sequence[RenderInput]) -> list:
        self._record("render", [item.meme_id for item in inputs])
        out = []
        step = self.spec.options.frames_per_part
        for item in inputs:
            frames = len(item.driving_frames)
            if frames <= step:
                out.append(self._frames(0, frames))
                continue
            starts = list(range(0, frames - 1, step))
            out.append([VideoPart(index=i, count=len(starts), start=s, stop=min(s + step + 1, frames),
                                  keep_from=s + (1 if i else 0), state=np.full((2, 3), s, np.float32))
                        for i, s in enumerate(starts)])
        return out

    def render_parts(self, parts: Sequence[PartInput]) -> list[np.ndarray]:
        self._record("parts", [item.video.meme_id for item in parts])
        out = []
        for item in parts:
            part = item.part
            if len(item.video.driving_frames) != part.stop - part.start:
                raise ValueError("a part row carries the wrong crops")
            if not np.all(part.state == part.start) or part.state.shape != (2, 3):
                raise ValueError("a part's state did not survive the trip")
            if item.video.meme_id.startswith("bad-group") and part.index == 1:
                raise ValueError("this group cannot be rendered")
            out.append(self._frames(part.keep_from, part.stop))
        return out


def run_toy_job(media: Path, workdir: Path) -> dict:
    import ray

    from jobs.manifest_builder import write_manifest
    from pipelines.plan import JobConfig
    from pipelines.render_job import run_render_job

    portrait = str(media / "reference_images" / "astronaut.png")
    clip = str(media / "drive_videos" / "grace_hopper.mp4")
    rows = [{"id": name, "reference_uri": portrait, "driving_uri": clip, "fps": FPS, "max_seconds": seconds}
            for name, seconds in (("long-a", 2.0), ("long-b", 1.6), ("short-a", 0.4), ("short-b", 0.2),
                                  ("bad-group", 2.0), ("long-c", 1.0))]
    write_manifest(rows, str(workdir / "manifest.parquet"))
    (workdir / "calls").mkdir()
    spec = EngineSpec(name="toy-split", engine_path=f"{MODULE}:SplittingToyEngine", size=64,
                      options=ToyOptions(record_dir=str(workdir / "calls")))
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = run_render_job(JobConfig(manifest_uri=str(workdir / "manifest.parquet"),
                                          output_uri=str(workdir / "out"), engine=spec, interpolate=False,
                                          report=False))
    finally:
        ray.shutdown()
    calls = [json.loads(line) for path in (workdir / "calls").glob("*.jsonl") for line in path.read_text().splitlines()]
    return {"results": report.results, "calls": calls}


def test_long_clips_come_back_whole_and_in_order_and_a_failed_group_fails_its_video(synthetic_media, tmp_path):
    from mediaio import clips
    from mediaio.media import MediaLimits

    outcome = run_child_job(__file__, ["toy", str(synthetic_media), str(tmp_path)], tmp_path / "r.json", "hm-spr-")
    results = {row["id"]: row for row in outcome["results"]}
    assert len(outcome["results"]) == 6  # one result row per manifest row, parts or not
    bad = results.pop("bad-group")
    assert bad["status"] == "failed"
    assert "this group cannot be rendered" in bad["error"] and "window group 2 of" in bad["error"], bad["error"]
    assert not Path(bad["output_uri"]).exists()
    for name, row in results.items():
        assert row["status"] == "ok", row["error"]
        expected = round(FPS * {"long-a": 2.0, "long-b": 1.6, "short-a": 0.4, "short-b": 0.2, "long-c": 1.0}[name])
        assert row["frames"] == expected
        frames = clips.decode_clip(row["output_uri"], None, MediaLimits()).frames
        levels = [int(round(float(np.mean(frame)))) for frame in frames[:expected]]
        assert all(abs(level - grey(i)) <= 4 for i, level in enumerate(levels)), (name, levels)
    # Parts ran in the parts pool; every GPU hosts one actor of each pool (claims 0.51 and 0.49).
    parts = [call for call in outcome["calls"] if call["kind"] == "parts"]
    assert parts and {i for call in parts for i in call["ids"]} >= {"long-a", "long-b", "bad-group"}
    started = sorted((c["gpus"][0], c["kind"]) for c in outcome["calls"] if c["kind"].startswith("start"))
    assert started == [("0", "start 0.49"), ("0", "start 0.51"), ("1", "start 0.49"), ("1", "start 0.51")], started


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kind, *args, report_arg = sys.argv[1:]
    module = __import__(MODULE)
    outcome = {"toy": module.run_toy_job}[kind](*map(Path, args))
    Path(report_arg).write_text(json.dumps(outcome, default=str))
