"""A warp engine that misbehaves on request, for the tests of rows that hang or kill their worker.

Rows whose prompt is ``hang`` never return (as a decoder stuck in native code would); rows whose
prompt is ``crash`` end the worker process (as the kernel's memory killer or a native abort
would); a call holding a row whose prompt is ``refuse`` raises (as a bad LoRA file fails the whole
batch it is in); a row whose prompt is ``disk-full`` fails as a write to a full disk does (ENOSPC).  Every other row renders as the warp engine does.  Jobs name it by import path
(``EngineSpec(engine_path="tests.hostile_engine:HostileWarpEngine")``).
"""

from __future__ import annotations

import errno
import os
import time
from typing import Sequence

import numpy as np

from engines.base import RenderInput
from engines.warp import WarpEngine


class HostileWarpEngine(WarpEngine):
    def render(self, inputs: Sequence[RenderInput]) -> list[np.ndarray]:
        if any(item.settings.prompt == "refuse" for item in inputs):
            raise ValueError("this engine refuses a row in the batch")
        for item in inputs:
            if item.settings.prompt == "disk-full":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if item.settings.prompt == "hang":
                while True:
                    time.sleep(3600)
            if item.settings.prompt == "crash":
                os._exit(137)  # what the memory killer leaves: no exception, no cleanup
        return super().render(inputs)
