"""The warp engine: the embedded default renderer (landmark-driven mesh warping, CPU, no weights)."""

from engines.warp.engine import WarpConfig, WarpEngine, WarpInputError

__all__ = ["WarpConfig", "WarpEngine", "WarpInputError"]
