"""The expression code: PD-FGC's motion encoder (548-d: eyes 6 + emotion 30 + mouth 512).

HelloMeme v5 describes each driving frame's expression with the motion encoder of PD-FGC
(Wang et al., "Progressive Disentangled Representation Learning for Fine-Grained Controllable
Talking Head Synthesis"), run on a 224x224 face aligned by five landmarks. The network is a
face-alignment hourglass (FAN) whose 68 heatmaps are pooled into a 512-d feature, followed by
one head per factor. Layer names follow the published weights (hub: songkey/pd_fgc_motion).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

EXPRESSION_INPUT_SIZE = 224
# Where the five alignment points land in the 224x224 input (fractions of the side):
# eye on the image left, eye on the image right, nose tip, mouth corner left, mouth corner right.
_ALIGNED_FIVE_POINTS = np.array(
    [[0.3843, 0.27], [0.62, 0.2668], [0.503, 0.4185], [0.406, 0.5273], [0.5977, 0.525]], dtype=np.float64
)
# The same five points in mediapipe's face mesh (478 points with irises, 468 without).
_MEDIAPIPE_IRIS_CENTRES = (468, 473)
_MEDIAPIPE_EYE_CORNERS = ((33, 133), (362, 263))
_MEDIAPIPE_NOSE_TIP = 1
_MEDIAPIPE_MOUTH_CORNERS = (61, 291)


class ConvBlock(nn.Module):
    """FAN's pre-activation block: three 3x3 convs whose outputs (1/2, 1/4, 1/4 width) are concatenated."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, half, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, kernel_size=3, padding=1, bias=False)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_planes), nn.ReLU(True), nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass: an identity-resolution branch plus a pooled branch, upsampled and summed."""

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.depth = depth
        self.dropout = nn.Dropout(0.5)
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(channels, channels))
            self.add_module(f"b2_{level}", ConvBlock(channels, channels))
            self.add_module(f"b3_{level}", ConvBlock(channels, channels))
        self.add_module("b2_plus_1", ConvBlock(channels, channels))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self.dropout(self._modules[f"b1_{level}"](x))
        lower = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        lower = self._level(level - 1, lower) if level > 1 else self._modules["b2_plus_1"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(lower, size=upper.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class FaceAlignmentFeatures(nn.Module):
    """FAN trunk with one hourglass; its landmark heatmaps are squeezed into one feature vector."""

    def __init__(
        self, stem_channels: int, hourglass_channels: int, num_landmarks: int, image_size: int, feature_dim: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.conv2 = ConvBlock(stem_channels, 2 * stem_channels)
        self.conv3 = ConvBlock(2 * stem_channels, 2 * stem_channels)
        self.conv4 = ConvBlock(2 * stem_channels, hourglass_channels)
        self.m0 = HourGlass(4, hourglass_channels)
        self.top_m_0 = ConvBlock(hourglass_channels, hourglass_channels)
        self.conv_last0 = nn.Conv2d(hourglass_channels, hourglass_channels, kernel_size=1)
        self.l0 = nn.Conv2d(hourglass_channels, num_landmarks, kernel_size=1)
        self.bn_end0 = nn.BatchNorm2d(hourglass_channels)
        self.conv6 = nn.Conv2d(num_landmarks, 1, kernel_size=3, stride=2, padding=1)
        pooled_side = image_size // 8  # stride-2 stem, a 2x pool, stride-2 conv6
        self.fc = nn.Linear(pooled_side * pooled_side, feature_dim)
        self.bn5 = nn.BatchNorm2d(num_landmarks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2)
        x = self.conv4(self.conv3(x))
        x = self.top_m_0(self.m0(x))
        x = self.bn_end0(self.conv_last0(x))
        heatmaps = self.l0(F.relu(x))
        x = self.conv6(F.relu(self.bn5(heatmaps)))
        return self.fc(F.relu(x.flatten(1)))


def _factor_head(feature_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(feature_dim, feature_dim), nn.ReLU(), nn.BatchNorm1d(feature_dim), nn.Linear(feature_dim, feature_dim)
    )


class PDFGCMotionEncoder(ModelMixin, ConfigMixin):
    """Aligned face (N, 3, 224, 224) in [-1, 1] -> (N, eye_dim + 30 + feature_dim) expression code.

    ``pose_dim`` and ``eye_dim`` are the published config's names; ``mouth_embed`` exists in the
    published weights but the code uses the mouth feature before it, as HelloMeme does.
    """

    @register_to_config
    def __init__(
        self,
        pose_dim: int = 6,
        eye_dim: int = 6,
        emotion_dim: int = 30,
        feature_dim: int = 512,
        stem_channels: int = 64,
        hourglass_channels: int = 256,
        num_landmarks: int = 68,
        image_size: int = EXPRESSION_INPUT_SIZE,
    ) -> None:
        super().__init__()
        self.model = FaceAlignmentFeatures(stem_channels, hourglass_channels, num_landmarks, image_size, feature_dim)
        self.to_mouth = _factor_head(feature_dim)
        self.mouth_embed = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, feature_dim - pose_dim - eye_dim))
        self.to_eye = _factor_head(feature_dim)
        self.eye_embed = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, eye_dim))
        self.to_emo = _factor_head(feature_dim)
        self.emo_embed = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, emotion_dim))

    @property
    def code_dim(self) -> int:
        return self.config.eye_dim + self.config.emotion_dim + self.config.feature_dim

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        features = self.model(faces)
        eyes = self.eye_embed(self.to_eye(features))
        emotion = self.emo_embed(self.to_emo(features))
        mouth = self.to_mouth(features)
        return torch.cat([eyes, emotion, mouth], dim=1)


def five_points_from_mediapipe(landmarks: np.ndarray) -> np.ndarray:
    """(478 or 468, >=2) mediapipe face-mesh points -> (5, 2) eyes, nose tip, mouth corners (image left first)."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    if points.shape[0] > max(_MEDIAPIPE_IRIS_CENTRES):
        eyes = points[list(_MEDIAPIPE_IRIS_CENTRES)]
    elif points.shape[0] >= 468:
        eyes = np.stack([points[list(pair)].mean(axis=0) for pair in _MEDIAPIPE_EYE_CORNERS])
    else:
        raise ValueError(f"expected mediapipe face-mesh landmarks (468 or 478 points), got {points.shape[0]}")
    nose = points[_MEDIAPIPE_NOSE_TIP][None]
    mouth = points[list(_MEDIAPIPE_MOUTH_CORNERS)]
    five = np.concatenate([eyes, nose, mouth], axis=0)
    # Keep "image left first" for each pair whatever the landmark model calls left.
    for a, b in ((0, 1), (3, 4)):
        if five[a, 0] > five[b, 0]:
            five[[a, b]] = five[[b, a]]
    return five


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping ``source`` onto ``target`` (Umeyama 1991).

    Returns the 2x3 affine matrix.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    source_variance = source_centred.var(axis=0).sum()
    scale = (singular * sign).sum() / source_variance if source_variance > 0 else 1.0
    translation = target_mean - scale * rotation @ source_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def align_face_for_expression(
    image: np.ndarray, five_points: np.ndarray, size: int = EXPRESSION_INPUT_SIZE
) -> np.ndarray:
    """Warp an RGB uint8 image so its five points sit where PD-FGC expects them; returns (size, size, 3) uint8."""
    matrix = similarity_transform(five_points, _ALIGNED_FIVE_POINTS * size)
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_CUBIC)
