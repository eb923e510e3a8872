"""Full-size modules built on the meta device must have exactly the published tensors (names and shapes)."""

from __future__ import annotations

import collections

import pytest
import torch

from hellomeme.control import HM5ControlNetBase, HM5SD15ControlProj
from hellomeme.expression import PDFGCMotionEncoder
from hellomeme.motion_adapter import HM5MotionAdapter
from hellomeme.reference_adapter import HM5bReferenceAdapter, HM5ReferenceAdapter

from .conftest import STATE_DICT_TSV


def _published() -> dict[str, dict[str, tuple[int, ...]]]:
    if not STATE_DICT_TSV.is_file():
        pytest.skip(f"published tensor list not found at {STATE_DICT_TSV} (../shared beside the checkout)")
    modules: dict[str, dict[str, tuple[int, ...]]] = collections.defaultdict(dict)
    totals: dict[str, int] = {}
    for line in STATE_DICT_TSV.read_text().splitlines():
        if line.startswith("#"):
            name, rest = line[2:].split(" (", 1)
            totals[name] = int(rest.split("tensors, ")[1].split(" params")[0])
            continue
        if not line.strip():
            continue
        module, tensor, shape = line.split("\t")
        modules[module][tensor] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    return {"tensors": dict(modules), "totals": totals}


@pytest.mark.parametrize(
    "cls", [HM5ReferenceAdapter, HM5ControlNetBase, HM5SD15ControlProj, HM5MotionAdapter, HM5bReferenceAdapter]
)
def test_default_config_matches_published_tensors(cls):
    published = _published()
    expected = published["tensors"][cls.__name__]
    with torch.device("meta"):
        model = cls()
    state = model.state_dict()
    ours = {name: tuple(tensor.shape) for name, tensor in state.items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    assert sum(t.numel() for t in state.values()) == published["totals"][cls.__name__]


def test_pd_fgc_encoder_has_the_published_layout():
    """Not in the tensor list: checked against the architecture HelloMeme's pdf.py describes."""
    with torch.device("meta"):
        model = PDFGCMotionEncoder()
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes["model.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["model.conv2.downsample.2.weight"] == (128, 64, 1, 1)
    assert shapes["model.conv4.conv3.weight"] == (64, 64, 3, 3)
    assert shapes["model.m0.b2_plus_1.conv1.weight"] == (128, 256, 3, 3)
    assert {f"model.m0.b{b}_{level}.bn1.weight" for b in (1, 2, 3) for level in (1, 2, 3, 4)} <= set(shapes)
    assert shapes["model.l0.weight"] == (68, 256, 1, 1)
    assert shapes["model.conv6.weight"] == (1, 68, 3, 3)
    assert shapes["model.fc.weight"] == (512, 28 * 28)
    assert shapes["to_mouth.2.running_var"] == (512,)
    assert shapes["mouth_embed.1.weight"] == (500, 512)
    assert shapes["eye_embed.1.weight"] == (6, 512)
    assert shapes["emo_embed.1.weight"] == (30, 512)
    assert model.code_dim == 548
