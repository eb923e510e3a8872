"""Renderers that turn (reference, driving faces) into frames; see :mod:`engines.base`."""
