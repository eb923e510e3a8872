"""HelloMeme v5 (arXiv 2410.22901) on Stable Diffusion 1.5, written in diffusers style.

Modules, one idea each:

- ``layers``: small building blocks shared by the adapters (named as diffusers' so the weights load strictly)
- ``reference_adapter`` / ``knitting``: how frames see the reference portrait (spatial knitting attention)
- ``control``: head-pose image + expression code -> residuals at 8 points of the UNet
- ``motion_adapter``: temporal attention over a window, conditioned on its finished end frames
- ``expression``: the PD-FGC motion encoder (548-d expression codes) and its face alignment
- ``pose_control``: drawing the head-pose control image
- ``denoiser``: SD1.5's UNet walked block by block with those insertions; the reference net
- ``windows`` / ``passes``: the official script's windows and its end-frames-first passes (deviations as switches)
- ``groups``: the last pass's windows cut into groups, each denoised on its own, so one clip can use
  several GPUs (``--spread-windows``)
- ``noise``: the official script's random numbers from one generator per video, or per (seed, frame, step)
- ``components``: the loaded model parts of a pipeline, placed once on their device
- ``images``: uint8 RGB images to and from the [-1, 1] NCHW tensors the models take
- ``video_pipeline``: conditions once per frame, then windowed denoising of many videos at once
- ``weights`` / ``weight_files`` / ``single_file`` / ``hub``: checking weights from metadata, loading them,
  single-file SD1.5 checkpoints, the Hugging Face hub
- ``lora``: LoRAs as adapters of the denoiser, switched per render call

Tiny and full-size random test models live in ``tests/hellomeme``. Nothing here imports Ray or the
batch package.

Nothing is imported here, so that light modules (``pose_control``; ``windows``, which the engine's
options read without torch) stay light.
"""
