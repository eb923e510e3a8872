"""A process that syncs weights into a shared cache: light imports, so racing processes start fast."""

from __future__ import annotations

from engines.hellomeme_weights_cache import folder_selector, sync


def sync_after_barrier(uri, cache, storage_options, folders, barrier, results) -> None:
    barrier.wait()
    results.put(sync(uri, cache, storage_options, select=folder_selector(tuple(folders))).downloaded)
