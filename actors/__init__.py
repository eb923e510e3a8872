"""One class per actor pool: each adapts rows (typed columns) to the work it does, set up once per actor.

Lives here: ``prepare_actor`` (mediapipe face mesh loaded once: inputs in, face crops, tracks and
audio out), ``render_actor`` (an engine built once: crops in, rendered frames out),
``video_parts`` (a long video split into part rows, and a part row back to the engine's input),
``stitch_actor`` (a split video's part rows in, once all are back its one row out, frames in order)
and ``face_columns`` (how a face track travels as row columns).

May import: ``engines``, ``faces``, ``mediaio``, ``reporting``.  Never Ray, ``pipelines`` or ``jobs``:
the pipeline wraps these classes in its error boundary and row guard (``pipelines/render_pipeline.py``).
"""
