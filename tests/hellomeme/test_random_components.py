"""The full-size random-weight model that GPU benchmarks run: built on the meta device, it has SD1.5's shapes."""

import torch

from tests.hellomeme.full_size_models import random_full_size_components

SD15_UNET_PARAMETERS = 859_520_964  # the published SD1.5 UNet


def _count(module: torch.nn.Module) -> int:
    return sum(t.numel() for t in module.state_dict().values())  # buffers too, as the published totals count them


def test_random_full_size_components_have_sd15_shapes():
    components = random_full_size_components(torch.device("meta"), torch.float32)
    denoiser = components.denoiser
    assert _count(denoiser.unet) == SD15_UNET_PARAMETERS
    assert _count(denoiser.motion_adapter) == 401_846_400  # the published hm5_motion's total
    assert _count(components.control_net) == 227_604_672  # hm5_control_base


def test_v5b_random_components_use_the_v5b_reference_adapter():
    components = random_full_size_components(torch.device("meta"), torch.float32, release="v5b")
    assert _count(components.denoiser.reference_adapter) == 276_943_360  # the published hm5b_reference
