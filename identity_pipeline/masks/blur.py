"""Blurring faces until a face recognizer no longer matches them.

A plain Gaussian blur keeps enough low-frequency structure for ArcFace-style models to match a
face again, so each face is pixelated to a few blocks first (identity lives in the layout of
eyes, nose and mouth, which a 5-block grid erases), then blurred to hide the block edges, then
noised so no clean gradient is left to latch on to. The region is an ellipse grown around the
box (forehead, cheeks, chin), blended in with a soft edge so the result does not look like a
pasted patch. ``identity_pipeline_tests/test_masks.py`` checks the effect with SFace.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from identity_pipeline.masks.config import DEFAULT_MASK_CONFIG, MaskConfig
from identity_pipeline.masks.geometry import clip_box, ellipse_mask


def blur_region(
    box: Sequence[float], config: MaskConfig = DEFAULT_MASK_CONFIG
) -> tuple[float, float, float, float]:
    """The box of the ellipse that ``blur_faces`` replaces for a face box."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half_w = (box[2] - box[0]) / 2 * config.blur_grow_width
    half_h = (box[3] - box[1]) / 2 * config.blur_grow_height
    # Shifted up a little: the detector's box cuts the forehead more than the chin.
    cy -= 0.05 * (box[3] - box[1])
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def blur_faces(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    config: MaskConfig = DEFAULT_MASK_CONFIG,
    protect: Sequence[float] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3 uint8) with every box's face made unrecognisable.

    ``protect``: a box left exactly as it is even where a blurred ellipse reaches into it (the
    target person's own face when another face is right beside it).
    """
    result = image.copy()
    height, width = image.shape[:2]
    rng = np.random.default_rng(config.blur_seed)
    for box in boxes:
        _blur_one(result, box, config, rng)
    if protect is not None:
        x0, y0, x1, y1 = clip_box(protect, width, height)
        result[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return result


def _blur_one(
    image: np.ndarray, box: Sequence[float], config: MaskConfig, rng: np.random.Generator
) -> None:
    height, width = image.shape[:2]
    region = blur_region(box, config)
    face_size = max(box[2] - box[0], box[3] - box[1], 1.0)
    sigma = max(1.0, config.blur_sigma * face_size)
    pad = int(np.ceil(3 * sigma))
    x0, y0, x1, y1 = clip_box(
        (region[0] - pad, region[1] - pad, region[2] + pad, region[3] + pad), width, height
    )
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    crop = image[y0:y1, x0:x1].astype(np.float32)
    blurred = _pixelate(crop, (region[2] - region[0]) / config.blur_blocks_across)
    blurred = cv2.GaussianBlur(blurred, (0, 0), sigma)
    blurred += rng.normal(0.0, config.blur_noise_std, blurred.shape).astype(np.float32)
    local = (region[0] - x0, region[1] - y0, region[2] - x0, region[3] - y0)
    alpha = ellipse_mask(crop.shape[:2], local).astype(np.float32)
    # Soft rim: blend over a few pixels outside the ellipse, fully replaced inside it.
    rim = max(1.0, 0.25 * sigma)
    alpha = np.maximum(alpha, cv2.GaussianBlur(alpha, (0, 0), rim))
    alpha = alpha[:, :, np.newaxis]
    mixed = crop * (1.0 - alpha) + blurred * alpha
    image[y0:y1, x0:x1] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def _pixelate(crop: np.ndarray, block: float) -> np.ndarray:
    height, width = crop.shape[:2]
    block = max(1.0, block)
    small = (max(1, round(width / block)), max(1, round(height / block)))
    reduced = cv2.resize(crop, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(reduced, (width, height), interpolation=cv2.INTER_NEAREST)
