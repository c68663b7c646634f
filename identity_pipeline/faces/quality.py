"""How usable a face is for recognition and training: sharpness, pose and size, each in [0, 1].

Cheap heuristics on the aligned crop and the five landmarks; they rank faces (pick the best
crops of a person, down-weight blurry profiles), they are not calibrated probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from identity_pipeline.faces.align import ARCFACE_TEMPLATE_112, align_face
from identity_pipeline.faces.backend import DetectedFace
from identity_pipeline.faces.config import FaceConfig


def _template_pitch_ratio() -> float:
    eyes_y = ARCFACE_TEMPLATE_112[:2, 1].mean()
    mouth_y = ARCFACE_TEMPLATE_112[3:, 1].mean()
    return float((ARCFACE_TEMPLATE_112[2, 1] - eyes_y) / (mouth_y - eyes_y))


# Where the nose sits between eyes and mouth on a frontal face (about 0.49).
FRONTAL_PITCH_RATIO = _template_pitch_ratio()


@dataclass(frozen=True)
class FaceQuality:
    blur: float  # 1 = sharp
    pose: float  # 1 = frontal
    size: float  # 1 = at least good_face_px
    overall: float  # weighted mean of the three


def clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def sharpness_score(aligned_rgb: np.ndarray, config: FaceConfig) -> float:
    """Variance of the Laplacian of the aligned crop (same 112 px for every face size)."""
    gray = cv2.cvtColor(aligned_rgb, cv2.COLOR_RGB2GRAY)
    variance = float(cv2.Laplacian(gray, cv2.CV_32F).var())
    return clip01(variance / config.blur_reference)


def pose_score(landmarks: np.ndarray, config: FaceConfig) -> float:
    """Frontalness from the landmarks after undoing roll (alignment undoes roll too).

    Yaw: the nose's sideways offset from the eyes' midpoint, over the eye distance. Pitch: where
    the nose lies between the eye line and the mouth line, against the frontal template.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_vector = points[1] - points[0]
    eye_distance = float(np.hypot(*eye_vector))
    if eye_distance < 1e-6:
        return 0.0
    angle = math.atan2(eye_vector[1], eye_vector[0])
    cos, sin = math.cos(-angle), math.sin(-angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    eye_mid = points[:2].mean(axis=0)
    upright = (points - eye_mid) @ rotation.T  # eyes now on y = 0
    nose, mouth_y = upright[2], upright[3:, 1].mean()
    if mouth_y <= 1e-6:
        return 0.0  # mouth above the eyes: landmarks are garbage
    yaw = abs(nose[0]) / eye_distance
    pitch = abs(nose[1] / mouth_y - FRONTAL_PITCH_RATIO)
    return min(clip01(1.0 - yaw / config.max_yaw), clip01(1.0 - pitch / config.max_pitch))


def size_score(face_size: float, config: FaceConfig) -> float:
    """Log scale from the discard size (0) to the recognizer's input size (1)."""
    low, high = config.discard_below_px, config.good_face_px
    if face_size <= low:
        return 0.0
    return clip01(math.log(face_size / low) / math.log(high / low))


def face_quality(
    image_rgb: np.ndarray, face: DetectedFace, config: FaceConfig, face_size: float | None = None
) -> FaceQuality:
    """``face_size``: the face's size in tile pixels when ``image_rgb`` is a reduced copy."""
    blur = sharpness_score(align_face(image_rgb, face.landmarks), config)
    pose = pose_score(face.landmarks, config)
    size = size_score(face.size if face_size is None else face_size, config)
    weights = (config.quality_weight_blur, config.quality_weight_pose, config.quality_weight_size)
    total = sum(weights)
    overall = (weights[0] * blur + weights[1] * pose + weights[2] * size) / total if total else 0.0
    return FaceQuality(blur=blur, pose=pose, size=size, overall=float(overall))
