"""The render job: planned on the driver, run as a Ray Data pipeline, finished with its results table.

Lives here: ``plan`` (the job's config and plan: engine checked, rows decided, settings and outputs
decided once), ``manifest`` and ``outputs`` (reading the manifest within caps; owning each row's
output), ``rows`` (the typed row columns and the per-row error boundary), ``row_guard`` and
``row_ledger`` (hard time limits and bounded worker deaths per row), ``render_pipeline`` (the
wiring and why each resource choice was made), ``finish_stage`` (encode, write, results row),
``render_job`` (the driver's loop) and ``ray_runtime`` (joining or starting Ray).

May import: ``actors``, ``engines``, ``faces``, ``mediaio``, ``reporting``, Ray.  Never ``jobs``.
"""
