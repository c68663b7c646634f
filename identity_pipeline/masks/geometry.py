"""Where a person's head and body are expected, given only their face box.

The body prior is deliberately simple: a head region around the face (grown up for hair) and a
torso hanging below the chin, about 1.6 face widths to each side. It seeds GrabCut, prompts SAM,
crops the selfie model's input and, through ``person_costs``, decides which person a pixel
belongs to when several segmentations claim it (people pressed together).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from identity_pipeline.masks.config import MaskConfig
from identity_pipeline.masks.records import FaceInTile

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 integer pixels, x1/y1 exclusive


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """A float box rounded outwards and clipped to the image; may be empty (x1 <= x0)."""
    x0 = int(np.clip(np.floor(box[0]), 0, width))
    y0 = int(np.clip(np.floor(box[1]), 0, height))
    x1 = int(np.clip(np.ceil(box[2]), 0, width))
    y1 = int(np.clip(np.ceil(box[3]), 0, height))
    return x0, y0, max(x0, x1), max(y0, y1)


def head_box(face: FaceInTile, config: MaskConfig) -> tuple[float, float, float, float]:
    """The face box grown sideways and upwards to take in the hair."""
    x0, y0, x1, y1 = face.box
    return (
        x0 - config.hair_side * face.width,
        y0 - config.hair_up * face.height,
        x1 + config.hair_side * face.width,
        y1,
    )


def reach_box(face: FaceInTile, config: MaskConfig, height: int) -> tuple[float, ...]:
    """Beyond this box nothing belongs to the person (GrabCut's sure background, crops)."""
    cx, _ = face.centre
    half = config.reach_half_width * face.width
    return (
        cx - half,
        face.box[1] - config.reach_above * face.height,
        cx + half,
        min(float(height), face.box[3] + config.reach_below * face.height),
    )


def ellipse_mask(
    shape: tuple[int, int], box: Sequence[float], grow_x: float = 1.0, grow_y: float = 1.0
) -> np.ndarray:
    """A bool (H, W) filled ellipse inscribed in ``box`` scaled about its centre."""
    height, width = shape
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    rx = max(0.5, (box[2] - box[0]) / 2 * grow_x)
    ry = max(0.5, (box[3] - box[1]) / 2 * grow_y)
    mask = np.zeros(shape, bool)
    # Only the ellipse's bounding window is computed (the rest is False).
    x0, x1 = max(0, int(np.floor(cx - rx - 1))), min(width, int(np.ceil(cx + rx + 1)))
    y0, y1 = max(0, int(np.floor(cy - ry - 1))), min(height, int(np.ceil(cy + ry + 1)))
    if x1 > x0 and y1 > y0:
        ys, xs = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] = ((xs + 0.5 - cx) / rx) ** 2 + ((ys + 0.5 - cy) / ry) ** 2 <= 1.0
    return mask


def face_core(shape: tuple[int, int], face: FaceInTile) -> np.ndarray:
    """The face itself: the ellipse inscribed in the detector's box."""
    return ellipse_mask(shape, face.box)


def person_cost(shape: tuple[int, int], face: FaceInTile, config: MaskConfig) -> np.ndarray:
    """How far each pixel is from this person, in units of their own size (float32 (H, W)).

    The minimum of an ellipse distance around the head and an anisotropic distance from the
    chin, stretched downwards along the torso. Dividing by the person's face size makes the
    split between two people a size-weighted Voronoi boundary: a bigger (nearer) person's
    territory reaches further. 1.0 is about the edge of the head or of the shoulders.
    """
    height, width = shape
    cx, cy = face.centre
    ys, xs = np.ogrid[:height, :width]
    xs = xs.astype(np.float32) + 0.5
    ys = ys.astype(np.float32) + 0.5
    head_rx = face.width * (0.5 + config.hair_side)
    head_ry = face.height * (0.5 + config.hair_up / 2)
    head = np.hypot((xs - cx) / head_rx, (ys - cy) / head_ry)
    chin = face.box[3]
    torso = np.hypot(
        (xs - cx) / (config.shoulder_half_width * face.width),
        np.maximum(ys - chin, 0.0) / (config.torso_length * face.height),
    )
    # The torso distance only counts from the chin down; above it the head ellipse decides.
    torso = np.where(ys >= chin - 0.1 * face.height, torso, np.inf)
    return np.minimum(head, torso).astype(np.float32)


def person_costs(
    shape: tuple[int, int], faces: Sequence[FaceInTile], config: MaskConfig
) -> np.ndarray:
    """``person_cost`` for every face, stacked (N, H, W)."""
    if not faces:
        return np.zeros((0, *shape), dtype=np.float32)
    return np.stack([person_cost(shape, face, config) for face in faces])


def resize_to_max_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk (never enlarged) so its longer side is at most ``max_side``."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def gradient_magnitude(image_rgb: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the lightly smoothed grey image (float32 (H, W))."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0)
    return cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
