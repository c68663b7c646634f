"""Aspect buckets and the face-keeping crop.

A bucket is a training resolution: about ``target_pixels`` in area, both sides multiples of the
model's divisor. Each sample goes to the bucket whose aspect is closest to its tile's, so the crop
throws away as little of the tile as possible; the crop has the bucket's aspect, is as large as
the tile allows, contains the target face (with a margin) and is centred on the person as far as
those constraints let it be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from identity_pipeline.collage.boxes import Box as PixelBox

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True, order=True)
class Bucket:
    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class CropPlan:
    """Where a sample goes, decided from geometry alone (no pixels read)."""

    bucket: Bucket
    crop_width: int  # the largest crop of the bucket's aspect inside the tile
    crop_height: int
    keep_box: Box  # what the crop must contain: the face box, with margin when it fits
    with_margin: bool

    @property
    def upscale(self) -> float:
        """How much the crop is enlarged to fill its bucket (< 1: reduced)."""
        return self.bucket.width / self.crop_width


def make_buckets(
    target_pixels: int,
    divisor: int,
    min_aspect: float,
    max_aspect: float,
    area_tolerance: float = 0.1,
) -> tuple[Bucket, ...]:
    """Every (width, height) with both sides multiples of ``divisor``, area near the target.

    For each width the height is the multiple of ``divisor`` that brings the area closest to the
    target; portrait buckets are the landscape ones transposed, so both orientations get the same
    choice of shapes. Sorted by aspect (tallest first).
    """
    found: set[Bucket] = set()
    widest = math.ceil(math.sqrt(target_pixels * max_aspect) / divisor) + 1
    for steps in range(1, widest + 1):
        width = steps * divisor
        height = max(divisor, divisor * round(target_pixels / width / divisor))
        for candidate in (Bucket(width, height), Bucket(height, width)):
            area_error = abs(candidate.pixels / target_pixels - 1)
            if min_aspect <= candidate.aspect <= max_aspect and area_error <= area_tolerance:
                found.add(candidate)
    if not found:
        raise ValueError(
            f"no bucket of about {target_pixels} px with sides divisible by {divisor} and aspect "
            f"in [{min_aspect}, {max_aspect}]: widen the aspect range or area tolerance"
        )
    return tuple(sorted(found, key=lambda bucket: (bucket.aspect, bucket.width)))


def buckets_by_closeness(aspect: float, buckets: Sequence[Bucket]) -> list[Bucket]:
    """``buckets`` ordered by how little of an image of ``aspect`` their crop discards."""
    return sorted(
        buckets,
        key=lambda bucket: (abs(math.log(bucket.aspect / aspect)), bucket.pixels, bucket.width),
    )


def largest_crop_size(tile_width: int, tile_height: int, aspect: float) -> tuple[int, int]:
    """The largest whole-pixel (width, height) of about ``aspect`` that fits in the tile."""
    if tile_width <= tile_height * aspect:
        width = tile_width
        height = min(tile_height, max(1, round(tile_width / aspect)))
    else:
        height = tile_height
        width = min(tile_width, max(1, round(tile_height * aspect)))
    return width, height


def grown_box(box: Box, margin: float, tile_width: int, tile_height: int) -> Box:
    """``box`` clipped to the tile after growing each side by ``margin`` x its longer side."""
    grow = margin * max(box[2] - box[0], box[3] - box[1])
    return (
        max(0.0, box[0] - grow),
        max(0.0, box[1] - grow),
        min(float(tile_width), box[2] + grow),
        min(float(tile_height), box[3] + grow),
    )


def _fits(box: Box, width: int, height: int) -> bool:
    return (
        math.ceil(box[2]) - math.floor(box[0]) <= width
        and math.ceil(box[3]) - math.floor(box[1]) <= height
    )


def plan_crop(
    tile_width: int,
    tile_height: int,
    face_box: Box,
    buckets: Sequence[Bucket],
    margin: float,
) -> CropPlan | None:
    """The closest-aspect bucket whose largest crop keeps the face; None when no bucket can.

    Every bucket is tried with the margin first; only when none fits is the bare face box
    accepted. A face too large for any crop in the aspect range is the only way to get None.
    """
    if tile_width < 1 or tile_height < 1:
        return None
    face = grown_box(face_box, 0.0, tile_width, tile_height)
    if face[2] <= face[0] or face[3] <= face[1]:
        return None  # the face box lies outside the tile
    ordered = buckets_by_closeness(tile_width / tile_height, buckets)
    for with_margin in (True, False):
        keep = grown_box(face_box, margin, tile_width, tile_height) if with_margin else face
        for bucket in ordered:
            width, height = largest_crop_size(tile_width, tile_height, bucket.aspect)
            if _fits(keep, width, height):
                return CropPlan(bucket, width, height, keep, with_margin)
    return None


def place_crop(
    plan: CropPlan, tile_width: int, tile_height: int, centre: tuple[float, float]
) -> PixelBox:
    """The plan's crop positioned as close to ``centre`` as keeping the face and tile allows."""
    x0 = _place(centre[0], plan.crop_width, plan.keep_box[0], plan.keep_box[2], tile_width)
    y0 = _place(centre[1], plan.crop_height, plan.keep_box[1], plan.keep_box[3], tile_height)
    return PixelBox(x0, y0, x0 + plan.crop_width, y0 + plan.crop_height)


def _place(centre: float, length: int, keep_start: float, keep_end: float, limit: int) -> int:
    lowest = max(0, math.ceil(keep_end) - length)
    highest = min(limit - length, math.floor(keep_start))
    wanted = math.floor(centre - length / 2 + 0.5)
    return min(max(wanted, lowest), highest)


def mask_centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """The mask-weighted centre (x, y) in the mask's pixels; None for an empty mask.

    Computed on a strided view (about 256 samples along the shorter side): a centre within a few
    pixels is plenty for placing a crop, and it keeps this cheap on 24 MP tiles.
    """
    step = max(1, min(mask.shape) // 256)
    sampled = mask[::step, ::step].astype(np.float64)
    total = sampled.sum()
    if total <= 0:
        return None
    ys, xs = np.indices(sampled.shape, dtype=np.float64)
    # Sample (i, j) stands for pixel centre (j * step + 0.5, i * step + 0.5).
    x = float((xs * sampled).sum() / total) * step + 0.5
    y = float((ys * sampled).sum() / total) * step + 0.5
    return x, y


def box_centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
