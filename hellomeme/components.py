"""The loaded model parts of a HelloMeme v5 pipeline, placed once on their device."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextModel, CLIPTokenizer

from hellomeme.control import HM5ControlNetBase, HM5SD15ControlProj
from hellomeme.denoiser import HelloMemeUNet, ReferenceNet
from hellomeme.expression import PDFGCMotionEncoder


@dataclass(frozen=True)
class HelloMemeComponents:
    """Every module the video pipeline runs, all on ``device`` in ``dtype`` and in eval mode.

    The reference branch (``reference_text_encoder``, ``reference_net``, ``encoder_vae``) is
    always base SD1.5, as in HelloMeme; the denoiser's UNet, text encoder and decoding VAE may
    come from a stylised SD1.5 checkpoint and carry a LoRA. Where they do not, the same module
    objects are shared between both roles.
    """

    tokenizer: CLIPTokenizer
    reference_text_encoder: CLIPTextModel
    denoiser_text_encoder: CLIPTextModel
    encoder_vae: AutoencoderKL
    decoder_vae: AutoencoderKL
    reference_net: ReferenceNet
    denoiser: HelloMemeUNet
    control_net: HM5ControlNetBase
    control_proj: HM5SD15ControlProj
    expression_encoder: PDFGCMotionEncoder
    device: torch.device
    dtype: torch.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.encoder_vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.denoiser.unet.config.in_channels)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "reference_text_encoder": self.reference_text_encoder,
            "denoiser_text_encoder": self.denoiser_text_encoder,
            "encoder_vae": self.encoder_vae,
            "decoder_vae": self.decoder_vae,
            "reference_net": self.reference_net,
            "denoiser": self.denoiser,
            "control_net": self.control_net,
            "control_proj": self.control_proj,
            "expression_encoder": self.expression_encoder,
        }


def prepare_module(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move once, freeze, eval: modules never move again for the pipeline's life."""
    # nn.Module.to directly: diffusers' ModelMixin.to warns on every dtype cast, even with nothing to keep in fp32.
    return torch.nn.Module.to(module, device=device, dtype=dtype).eval().requires_grad_(False)


def assemble_components(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    vae: AutoencoderKL,
    unet,
    reference_adapter: torch.nn.Module,
    motion_adapter: torch.nn.Module,
    control_net: HM5ControlNetBase,
    control_proj: HM5SD15ControlProj,
    expression_encoder: PDFGCMotionEncoder,
    device: torch.device,
    dtype: torch.dtype,
    denoiser_unet=None,
    denoiser_text_encoder: CLIPTextModel | None = None,
    decoder_vae: AutoencoderKL | None = None,
) -> HelloMemeComponents:
    """Put loaded modules on ``device`` once and wire the reference net and the denoiser."""
    def place(module):
        return None if module is None else prepare_module(module, device, dtype)

    text_encoder, vae, unet = place(text_encoder), place(vae), place(unet)
    return HelloMemeComponents(
        tokenizer=tokenizer,
        reference_text_encoder=text_encoder,
        denoiser_text_encoder=place(denoiser_text_encoder) or text_encoder,
        encoder_vae=vae,
        decoder_vae=place(decoder_vae) or vae,
        reference_net=ReferenceNet(unet),
        denoiser=HelloMemeUNet(place(denoiser_unet) or unet, place(reference_adapter), place(motion_adapter)),
        control_net=place(control_net),
        control_proj=place(control_proj),
        expression_encoder=place(expression_encoder),
        device=device,
        dtype=dtype,
    )


def with_own_denoiser(components: HelloMemeComponents) -> HelloMemeComponents:
    """The same components, but the denoiser's UNet and text encoder are not shared with the reference branch.

    LoRA adapters go into the denoiser only (HelloMeme keeps the reference net on base SD1.5);
    a module still shared is copied once, on its device.
    """
    denoiser = components.denoiser
    unet = denoiser.unet
    if unet is components.reference_net.unet:
        unet = copy.deepcopy(unet)
    text_encoder = components.denoiser_text_encoder
    if text_encoder is components.reference_text_encoder:
        text_encoder = copy.deepcopy(text_encoder)
    if unet is denoiser.unet and text_encoder is components.denoiser_text_encoder:
        return components
    return replace(components, denoiser=HelloMemeUNet(unet, denoiser.reference_adapter, denoiser.motion_adapter),
                   denoiser_text_encoder=text_encoder)
