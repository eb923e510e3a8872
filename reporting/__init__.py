"""Reporting what a job did: the results table, the HTML report and its previews, and Prometheus metrics.

Lives here: ``results`` (the Parquet results table), ``report`` and ``previews`` (index.html and its small
WebP previews), ``metrics`` (driver metrics served over HTTP, worker metrics through Ray's agent).
It may import ``mediaio`` (to publish files); Ray only inside ``metrics``' worker side.
"""
