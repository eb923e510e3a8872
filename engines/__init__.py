"""Renderers that turn (reference crop, driving face crops and tracks) into frames; see :mod:`engines.base`.

Lives here: ``base`` (the engine interface, the engine spec, a row's settings), ``registry``
(engines by name), ``warp/`` (the embedded CPU engine), ``hellomeme_engine`` with its options,
crop rule and weights handling (the HelloMeme v5 engine around the model in ``hellomeme/``).

May import: ``hellomeme``, ``faces``, ``mediaio``.  Never Ray, ``pipelines``, ``actors`` or ``jobs``.
"""
