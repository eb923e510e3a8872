"""HelloMeme v5 (arXiv 2410.22901) on Stable Diffusion 1.5, written in diffusers style.

Modules, one idea each:

- ``reference_adapter`` / ``knitting``: how frames see the reference portrait (spatial knitting attention)
- ``control``: head-pose image + expression code -> residuals at 8 points of the UNet
- ``motion_adapter``: temporal attention over a window, conditioned on its finished end frames
- ``expression``: the PD-FGC motion encoder (548-d expression codes) and its face alignment
- ``pose_control``: drawing the head-pose control image
- ``denoiser``: SD1.5's UNet walked block by block with those insertions; the reference net
- ``passes`` / ``noise``: boundary-frames-first denoising order; per-(seed, frame, step) noise
- ``video_pipeline``: conditions once per frame, then windowed denoising of many videos at once
- ``weights`` / ``lora`` / ``tiny``: loading and checking weights, fusing LoRAs, tiny test models

Nothing is imported here, so that light modules (``pose_control``) stay light.
"""
