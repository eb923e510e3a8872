"""Faces: per-frame landmarks and head pose of one face, and the stable square crop around it.

Lives here: ``tracking`` (mediapipe's face mesh, solvePnP head pose, crop boxes, expression signals).
It imports no Ray and nothing of this project, so the pose stage,
the engines, the demo and the tests share one definition of a face track.
"""
