"""Warp a face onto the standard ArcFace 112x112 five-point template.

Every ArcFace-family recognizer (SFace, insightface's w600k/glint models) was trained on crops
made exactly this way, so embeddings are only meaningful for faces aligned like this.
"""

from __future__ import annotations

import cv2
import numpy as np

ALIGNED_SIZE = 112
# insightface's ``arcface_dst`` and OpenCV's FaceRecognizerSF template (same numbers).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, shift) from source to target.

    Umeyama's closed form, as skimage's SimilarityTransform and OpenCV's SFace alignment use.
    cv2.estimateAffinePartial2D is not used: its RANSAC may drop one of only five points.
    """
    src = np.asarray(source, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(covariance) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = float(np.trace(np.diag(singular) @ sign) / src_var) if src_var > 0 else 1.0
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def alignment_matrix(landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    return similarity_transform(landmarks, ARCFACE_TEMPLATE_112 * (size / ALIGNED_SIZE))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """A ``size`` x ``size`` crop of ``image`` (any channel order, kept) with the face on the template."""
    matrix = alignment_matrix(landmarks, size)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
