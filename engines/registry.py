"""Engines by name: where each engine class and its options class live.

Classes are imported only when asked for: the diffusion engine pulls in torch and diffusers, while
its options class is light, so the CLI can build every engine's flags without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from engines.base import Engine, EngineSpec, import_object


class UnknownEngineError(ValueError):
    """An engine name that no engine answers to."""


@dataclass(frozen=True)
class EngineEntry:
    """Where an engine's class and its options class live (``module:Class``)."""

    engine: str
    options: str


DEFAULT_ENGINE = "warp"  # needs no GPU and no weights, so a fresh machine renders real memes
ENGINES: dict[str, EngineEntry] = {
    "warp": EngineEntry(engine="engines.warp:WarpEngine", options="engines.base:NoOptions"),
    "hellomeme": EngineEntry(engine="engines.hellomeme_engine:HelloMemeEngine",
                             options="engines.hellomeme_options:HelloMemeOptions"),
}


def entry(name: str) -> EngineEntry:
    try:
        return ENGINES[name]
    except KeyError:
        raise UnknownEngineError(f"unknown engine {name!r} (known: {', '.join(sorted(ENGINES))})") from None


def options_class(name: str) -> type:
    """The frozen dataclass holding ``name``'s options."""
    return import_object(entry(name).options)


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name``."""
    return import_object(entry(name).engine)


def engine_spec(name: str, size: int = EngineSpec.size, **options) -> EngineSpec:
    """A spec for a registered engine; ``options`` are its options class's fields."""
    return EngineSpec(name=name, engine_path=entry(name).engine, size=size, options=options_class(name)(**options))


def create_engine(spec: EngineSpec, storage_options: Mapping[str, Any] | None = None) -> Engine:
    """Build an engine (load its weights); called once per render actor."""
    return spec.engine_class()(spec, storage_options)
