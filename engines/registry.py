"""Engines by name, imported only when asked for (the diffusion engine pulls in torch and diffusers)."""

from __future__ import annotations

import importlib

from engines.base import Engine, EngineOptions


class UnknownEngineError(ValueError):
    """An engine name that no engine answers to."""


ENGINE_CLASSES: dict[str, str] = {
    "warp": "engines.warp:WarpEngine",
    "hellomeme": "engines.hellomeme_engine:HelloMemeEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name``."""
    try:
        target = ENGINE_CLASSES[name]
    except KeyError:
        raise UnknownEngineError(f"unknown engine {name!r} (known: {', '.join(sorted(ENGINE_CLASSES))})") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_engine(name: str, options: EngineOptions) -> Engine:
    """Build an engine (load its weights); called once per render actor."""
    return engine_class(name)(options)
