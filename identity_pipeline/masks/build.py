"""One tile in, one training sample per named person out: soft mask + copy with others blurred."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import cv2
import numpy as np

from identity_pipeline.masks.blur import blur_faces
from identity_pipeline.masks.config import DEFAULT_MASK_CONFIG, FLAG_DUPLICATE_IDENTITY, MaskConfig
from identity_pipeline.masks.geometry import resize_to_max_side
from identity_pipeline.masks.quality import mask_flags
from identity_pipeline.masks.records import FaceInTile, IdentityMask, Segmenter
from identity_pipeline.masks.refine import soft_masks, split_people
from identity_pipeline.masks.selector import select_segmenter


@functools.lru_cache(maxsize=4)
def default_segmenter(config: MaskConfig) -> Segmenter:
    """The offline selector, built once per process and config (loading the model is not free).

    Not thread-safe (cv2.dnn nets are not): use one per worker thread.
    """
    return select_segmenter(config)


def build_identity_masks(
    tile_rgb: np.ndarray,
    faces: Sequence[FaceInTile],
    segmenter: Segmenter | None = None,
    config: MaskConfig = DEFAULT_MASK_CONFIG,
) -> list[IdentityMask]:
    """One ``IdentityMask`` per distinct named identity among ``faces``.

    Every face, named or not, is segmented (so it can be excluded from the others' masks) and is
    blurred in the other people's training copies. An identity seen twice in a tile (a mirror,
    a duplicated print) keeps its larger face, flagged ``duplicate_identity``; the smaller one
    is treated as another person and blurred.
    """
    _check_inputs(tile_rgb, faces)
    targets = _target_faces(faces)
    if not targets:
        return []
    height, width = tile_rgb.shape[:2]
    work, scale = resize_to_max_side(tile_rgb, config.work_max_side)
    work_faces = [face.scaled(scale) for face in faces]
    chosen = segmenter if segmenter is not None else default_segmenter(config)

    started = time.perf_counter()
    segmentation = chosen.segment(work, work_faces, config)
    people = split_people(segmentation, work_faces, config)
    softs = soft_masks(people, work_faces, config)
    seconds = time.perf_counter() - started

    tile_masks = upscale_exclusive(softs, (width, height), [index for index, _ in targets])
    results = []
    for index, duplicated in targets:
        face = faces[index]
        flags = mask_flags(softs[index], work_faces, index, config)
        if duplicated:
            flags = (*flags, FLAG_DUPLICATE_IDENTITY)
        mask = tile_masks[index]
        others = [other.box for i, other in enumerate(faces) if i != index]
        training = blur_faces(tile_rgb, others, config, protect=face.box)
        results.append(
            IdentityMask(
                identity=str(face.identity),
                face_id=face.face_id,
                mask=mask,
                training_image=training,
                flags=flags,
                backend=segmentation.backend_of(index),
                selector_reason=segmentation.reason,
                mask_area_fraction=float(mask.mean()) / 255.0,
                face_area_fraction=_clipped_area(face.box, width, height) / (width * height),
                other_faces_blurred=len(others),
                kept=not set(flags) & set(config.exclude_flags),
                segment_seconds=seconds,
            )
        )
    return results


def _check_inputs(tile_rgb: np.ndarray, faces: Sequence[FaceInTile]) -> None:
    if tile_rgb.ndim != 3 or tile_rgb.shape[2] != 3 or tile_rgb.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB tile, got shape {tile_rgb.shape} dtype "
            f"{tile_rgb.dtype}"
        )
    ids = [face.face_id for face in faces]
    if len(set(ids)) != len(ids):
        raise ValueError(f"face ids repeat within one tile: {ids}")


def _target_faces(faces: Sequence[FaceInTile]) -> list[tuple[int, bool]]:
    """(index, duplicated) of the largest face of each named identity, in first-seen order."""
    best: dict[str, int] = {}
    seen_twice: set[str] = set()
    for index, face in enumerate(faces):
        if face.identity is None:
            continue
        if face.identity in best:
            seen_twice.add(face.identity)
            if face.area > faces[best[face.identity]].area:
                best[face.identity] = index
        else:
            best[face.identity] = index
    return [(index, identity in seen_twice) for identity, index in best.items()]


def upscale_exclusive(
    softs: np.ndarray, size: tuple[int, int], wanted: Sequence[int]
) -> dict[int, np.ndarray]:
    """The ``wanted`` soft masks as uint8 at tile ``size``, still mutually exclusive.

    Interpolating two exclusive masks can make both exceed one half between their pixels, so the
    cap is applied again at tile resolution: where another person's mask is at least 128 and at
    least this one, this one is held at 127. Only the per-pixel best and second-best of the
    others are kept, not every person's full-size mask.
    """
    width, height = size
    best = np.zeros((height, width), np.uint8)
    best_index = np.full((height, width), -1, np.int32)
    second = np.zeros((height, width), np.uint8)
    upscaled: dict[int, np.ndarray] = {}
    for index, soft in enumerate(softs):
        mask = _to_tile_uint8(soft, size)
        if index in wanted:
            upscaled[index] = mask
        higher = mask > best
        second = np.where(higher, best, np.maximum(second, mask))
        best = np.where(higher, mask, best)
        best_index = np.where(higher, index, best_index)
    for index, mask in upscaled.items():
        others = np.where(best_index == index, second, best)
        capped = (others >= 128) & (others >= mask)
        mask[capped] = np.minimum(mask[capped], 127)
    return upscaled


def _to_tile_uint8(soft: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (soft.shape[1], soft.shape[0]) != size:
        soft = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR)
    return np.clip(soft * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _clipped_area(box: Sequence[float], width: int, height: int) -> float:
    w = max(0.0, min(box[2], width) - max(box[0], 0.0))
    h = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return w * h
