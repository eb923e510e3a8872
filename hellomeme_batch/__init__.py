"""Building blocks of HelloMeme Batch that need no Ray: manifest, storage, media, faces, windows, results.

The import direction is one way: ``jobs/`` -> ``pipelines/`` -> ``actors/`` -> ``engines/`` and
``hellomeme/`` -> ``hellomeme_batch``.  Nothing here imports Ray, so every piece is usable and
testable on its own.
"""

__version__ = "0.1.0"
