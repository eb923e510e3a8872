"""PD-FGC expression codes: face alignment and the encoder's output layout."""

from __future__ import annotations

import numpy as np
import torch

from hellomeme.expression import (
    PDFGCMotionEncoder,
    align_face_for_expression,
    five_points_from_mediapipe,
    similarity_transform,
)

from .conftest import synthetic_landmarks


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = scale * source @ rotation.T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_faces_are_aligned_by_five_points():
    landmarks = synthetic_landmarks(256, 1, np.random.default_rng(0))[0]
    five = five_points_from_mediapipe(landmarks)
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    x, y = five[2].round().astype(int)
    image[y - 2 : y + 3, x - 2 : x + 3] = 255  # a bright nose tip
    aligned = align_face_for_expression(image, five, 224)
    ys, xs = np.nonzero(aligned[..., 0] > 64)
    assert abs(xs.mean() - 0.503 * 224) < 6 and abs(ys.mean() - 0.4185 * 224) < 6


def test_encoder_outputs_eyes_emotion_mouth():
    encoder = PDFGCMotionEncoder(feature_dim=32, stem_channels=4, hourglass_channels=8, num_landmarks=4,
                                 image_size=64).eval()
    codes = encoder(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert codes.shape == (3, 6 + 30 + 32)
    assert encoder.code_dim == 68
