"""What the asset checks verify on finished samples: kept masks are not empty, other faces are
blurred. Both work on the stored outputs alone (tile, mask, training copy, face boxes).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from identity_pipeline.masks.config import DEFAULT_MASK_CONFIG, MaskConfig
from identity_pipeline.masks.geometry import clip_box
from identity_pipeline.masks.records import FaceInTile, IdentityMask

# Correlation of a face's fine detail between the tile and the training copy: about 1 when
# untouched, near 0 once blurred (the blur's noise is uncorrelated with the face).
MAX_DETAIL_CORRELATION = 0.3
SFACE_NO_MATCH = 0.2  # cosine below which SFace no longer matches a face to itself


def empty_kept_masks(
    masks: Sequence[IdentityMask], config: MaskConfig = DEFAULT_MASK_CONFIG
) -> list[IdentityMask]:
    """Kept samples whose mask is (almost) empty: must be none."""
    empty = []
    for mask in masks:
        inside = int((mask.mask >= 128).sum())
        face_pixels = mask.face_area_fraction * mask.mask.size
        if mask.kept and inside <= config.empty_max_face_areas * face_pixels:
            empty.append(mask)
    return empty


def detail_correlation(
    tile_rgb: np.ndarray, training_rgb: np.ndarray, box: Sequence[float]
) -> float:
    """Correlation of the high-pass detail inside a face box, tile vs training copy."""
    height, width = tile_rgb.shape[:2]
    x0, y0, x1, y1 = clip_box(box, width, height)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return 0.0
    sigma = max(1.0, 0.05 * max(x1 - x0, y1 - y0))
    before = _high_pass(tile_rgb[y0:y1, x0:x1], sigma)
    after = _high_pass(training_rgb[y0:y1, x0:x1], sigma)
    norm = float(np.linalg.norm(before) * np.linalg.norm(after))
    return float((before * after).sum()) / norm if norm > 0 else 0.0


def unblurred_other_faces(
    tile_rgb: np.ndarray, identity_mask: IdentityMask, faces: Sequence[FaceInTile]
) -> list[str]:
    """Ids of other faces whose fine detail survived in the training copy: must be none."""
    return [
        face.face_id
        for face in faces
        if face.face_id != identity_mask.face_id
        and detail_correlation(tile_rgb, identity_mask.training_image, face.box)
        > MAX_DETAIL_CORRELATION
    ]


def recognised_other_faces(
    face_backend: object,
    tile_rgb: np.ndarray,
    identity_mask: IdentityMask,
    faces: Sequence[FaceInTile],
    threshold: float = SFACE_NO_MATCH,
) -> list[str]:
    """Ids of other faces the recognizer still matches to themselves after blurring.

    ``face_backend``: a faces backend (``embed(image, detected_faces)``); each face is embedded
    at its original landmarks in the tile and in the training copy, and compared.
    """
    from identity_pipeline.faces.backend import DetectedFace

    others = [f for f in faces if f.face_id != identity_mask.face_id]
    if not others:
        return []
    detected = [DetectedFace(f.box, np.asarray(f.landmarks, np.float32), 1.0) for f in others]
    before = face_backend.embed(tile_rgb, detected)  # type: ignore[attr-defined]
    after = face_backend.embed(identity_mask.training_image, detected)  # type: ignore[attr-defined]
    cosines = np.sum(before * after, axis=1)
    return [f.face_id for f, c in zip(others, cosines, strict=True) if c >= threshold]


def _high_pass(crop_rgb: np.ndarray, sigma: float) -> np.ndarray:
    grey = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    high = grey - cv2.GaussianBlur(grey, (0, 0), sigma)
    return high - high.mean()
