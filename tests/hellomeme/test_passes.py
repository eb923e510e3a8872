"""Windows and passes: the official v5 video script's structure for every clip length, and the deviation switches."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import numpy as np
import pytest

from hellomeme.passes import plan_passes
from hellomeme.windows import WindowRule, blend_weights, plan_windows

HELLOMEME = Path(__file__).resolve().parents[2] / "hellomeme"


def official_passes(num_frames: int, window: int = 12) -> list[tuple[tuple[int, ...], tuple[tuple[int, ...], ...], bool]]:
    """What the script's recursive ``gen_video`` runs, as (frames, windows as frame lists, conditioned), in order.

    A transcription of its control flow: windows start every ``window - 1`` frames and run to
    ``min(start + window, n)``; a last window of one frame is dropped; the windows' first and
    last frames are generated first by a recursive call; a window is conditioned when both its
    end frames are in ``pad_dict``, which a deeper call fills with every frame it generated.
    """
    order = []

    def gen_video(indexes, pad_dict, depth):
        if len(indexes) <= window:
            chunks = [copy.deepcopy(indexes)]
        else:
            stride = window - 1
            chunks = [indexes[i:min(i + window, len(indexes))] for i in range(0, len(indexes), stride)]
            if len(chunks[-1]) == 1:
                chunks = chunks[:-1]
            margin = sorted({c[0] for c in chunks} | {c[-1] for c in chunks})
            gen_video(margin, pad_dict, depth + 1)
        conditioned = [c[0] in pad_dict and c[-1] in pad_dict for c in chunks]
        assert len(set(conditioned)) == 1  # every window of a pass is conditioned alike
        order.append((tuple(indexes), tuple(tuple(c) for c in chunks), conditioned[0]))
        if depth > 0:
            for chunk in chunks:
                for index in chunk:
                    pad_dict[index] = True

    gen_video(list(range(num_frames)), {}, 0)
    return order


@pytest.mark.parametrize("num_frames", range(1, 301))
def test_pass_structure_follows_the_official_script(num_frames):
    ours = [(p.frames, p.window_frames(), p.conditioned_on_ends) for p in plan_passes(num_frames)]
    assert ours == official_passes(num_frames)


def test_official_structure_at_24_and_30_frames_spelled_out():
    # 24 frames: windows 0-11, 11-22, 22-23; the edge pass holds exactly their ends.
    first, last = plan_passes(24)
    assert last.window_frames() == (tuple(range(12)), tuple(range(11, 23)), (22, 23))
    assert first.frames == (0, 11, 22, 23) and not first.conditioned_on_ends and last.conditioned_on_ends
    # 23 frames: the one-frame last window (22) is not made.
    assert plan_passes(23)[-1].window_frames() == (tuple(range(12)), tuple(range(11, 23)))


def test_shared_frames_are_plainly_averaged_by_default():
    windows = plan_windows(30)
    assert all(np.all(w == 1.0) for w in blend_weights(windows))


def test_full_last_window_switch_ends_on_a_full_window():
    windows = plan_windows(30, WindowRule(full_last_window=True))
    assert windows == (range(0, 12), range(11, 23), range(18, 30))
    assert plan_windows(30)[-1] == range(22, 30)


def test_ramped_overlap_switch_weights_shared_frames_by_distance():
    rule = WindowRule(size=12, overlap=4, ramped=True)
    first, second = blend_weights(plan_windows(20, rule), ramped=True)[:2]
    np.testing.assert_allclose(first[-4:], [0.8, 0.6, 0.4, 0.2])
    np.testing.assert_allclose(second[:4], [0.2, 0.4, 0.6, 0.8])


def test_larger_overlaps_still_make_end_frames_first():
    passes = plan_passes(300, WindowRule(size=12, overlap=4))
    assert passes[-1].frames == tuple(range(300)) and passes[-1].conditioned_on_ends
    for earlier, later in zip(passes, passes[1:]):
        assert set(later.end_frames()) == set(earlier.frames)


def test_windows_overlapping_so_much_that_every_frame_is_an_end_stay_one_pass():
    (only,) = plan_passes(6, WindowRule(size=3, overlap=2))
    assert only.frames == tuple(range(6)) and not only.conditioned_on_ends


def test_hellomeme_imports_neither_ray_nor_the_batch_package():
    """hellomeme/ is the model: usable without Ray and without anything else of this project."""
    project = {"engines", "pipelines", "actors", "jobs", "mediaio", "faces", "reporting", "tests", "bench"}
    for path in sorted(HELLOMEME.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top != "ray" and top not in project, f"{path.name} imports {name}"
