"""Face-seeded GrabCut: the offline backend that needs no model at all.

Each person gets their own GrabCut on a crop around them (their reach box), seeded from the face:
sure foreground on the inner face and a strip under the chin, probable foreground over head and
torso, sure background beyond the reach box and on every other person's face and neck, so a
neighbour's face is never taken in. Working per crop keeps a 20-person group photo affordable.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from identity_pipeline.masks.config import BACKEND_GRABCUT, MaskConfig
from identity_pipeline.masks.geometry import clip_box, head_box, reach_box, resize_to_max_side
from identity_pipeline.masks.records import FaceInTile, Segmentation

# Sure-background margin kept around a crop: GrabCut learns the background colours from it.
CROP_MARGIN = 0.3  # face widths
# The inner face box (shrunk by this on each side) is sure foreground: it is the face itself.
INNER_FACE_SHRINK = 0.15


class GrabCutSegmenter:
    name = BACKEND_GRABCUT

    def __init__(self, seed: int = 0) -> None:
        # GrabCut's GMM initialisation uses OpenCV's global RNG: seeding makes runs repeatable.
        self.seed = seed

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        height, width = image_rgb.shape[:2]
        probabilities = np.zeros((len(faces), height, width), dtype=np.float32)
        bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
        for index in range(len(faces)):
            self._segment_one(bgr, faces, index, config, probabilities[index])
        return Segmentation(probabilities, self.name, "face-seeded GrabCut")

    def _segment_one(
        self,
        bgr: np.ndarray,
        faces: Sequence[FaceInTile],
        index: int,
        config: MaskConfig,
        out: np.ndarray,
    ) -> None:
        height, width = bgr.shape[:2]
        face = faces[index]
        reach = reach_box(face, config, height)
        margin = CROP_MARGIN * face.width
        x0, y0, x1, y1 = clip_box(
            (reach[0] - margin, reach[1] - margin, reach[2] + margin, reach[3] + margin),
            width,
            height,
        )
        if x1 - x0 < 8 or y1 - y0 < 8:
            return
        crop, scale = resize_to_max_side(bgr[y0:y1, x0:x1], config.grabcut_max_side)
        local = [f.scaled(scale) for f in _shifted(faces, x0, y0)]
        seeds = grabcut_seeds(crop.shape[:2], local, index, config)
        if not (seeds == cv2.GC_PR_BGD).any() and not (seeds == cv2.GC_BGD).any():
            return  # nothing to learn a background from: GrabCut would fail
        cv2.setRNGSeed(self.seed)
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(
                crop,
                seeds,
                None,
                background_model,
                foreground_model,
                config.grabcut_iterations,
                cv2.GC_INIT_WITH_MASK,
            )
        except cv2.error:
            # Raised when a seed class is missing or degenerate (a flat-colour crop): no mask.
            return
        person = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.float32)
        out[y0:y1, x0:x1] = cv2.resize(person, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)


def _shifted(faces: Sequence[FaceInTile], dx: float, dy: float) -> list[FaceInTile]:
    shifted = []
    for face in faces:
        x0, y0, x1, y1 = face.box
        landmarks = np.asarray(face.landmarks, dtype=np.float32) - np.float32([dx, dy])
        shifted.append(
            FaceInTile(face.face_id, (x0 - dx, y0 - dy, x1 - dx, y1 - dy), landmarks, face.identity)
        )
    return shifted


def grabcut_seeds(
    shape: tuple[int, int], faces: Sequence[FaceInTile], index: int, config: MaskConfig
) -> np.ndarray:
    """GrabCut's initial label image (uint8 GC_* values) for person ``index`` among ``faces``."""
    height, width = shape
    seeds = np.full(shape, cv2.GC_PR_BGD, dtype=np.uint8)
    face = faces[index]
    cx, _ = face.centre

    def paint(box: Sequence[float], label: int) -> None:
        x0, y0, x1, y1 = clip_box(box, width, height)
        seeds[y0:y1, x0:x1] = label

    # Probable foreground: head with hair, and the torso hanging below the chin.
    paint(head_box(face, config), cv2.GC_PR_FGD)
    half = config.shoulder_half_width * face.width
    paint((cx - half, face.box[3], cx + half, height), cv2.GC_PR_FGD)
    # Sure background: outside the reach box.
    reach = reach_box(face, config, height)
    x0, y0, x1, _ = clip_box(reach, width, height)
    seeds[:, :x0] = cv2.GC_BGD
    seeds[:, x1:] = cv2.GC_BGD
    seeds[:y0, :] = cv2.GC_BGD
    # Beside the head, above the shoulders, is background (or someone else): sure background
    # there gives GrabCut background colours right next to the person even in a tight crop.
    beside = config.grabcut_beside_head * face.width
    band_bottom = face.centre[1]
    seeds_band = np.zeros_like(seeds, dtype=bool)
    bx0, _, bx1, by1 = clip_box((cx - beside, 0, cx + beside, band_bottom), width, height)
    seeds_band[:by1, :bx0] = True
    seeds_band[:by1, bx1:] = True
    seeds[seeds_band] = cv2.GC_BGD
    # Other people's faces and necks are sure background for this person...
    for other_index, other in enumerate(faces):
        if other_index != index:
            for box in _sure_person_boxes(other, config):
                paint(box, cv2.GC_BGD)
    # ...and this person's own face and neck are sure foreground, whatever overlaps them.
    for box in _sure_person_boxes(face, config):
        paint(box, cv2.GC_FGD)
    return seeds


def _sure_person_boxes(face: FaceInTile, config: MaskConfig) -> list[tuple[float, ...]]:
    x0, y0, x1, y1 = face.box
    dx, dy = INNER_FACE_SHRINK * face.width, INNER_FACE_SHRINK * face.height
    cx, _ = face.centre
    half_strip = config.neck_strip_width * face.width / 2
    return [
        (x0 + dx, y0 + dy, x1 - dx, y1 - dy),
        (cx - half_strip, y1 - dy, cx + half_strip, y1 + config.neck_strip_length * face.height),
    ]
