"""What a person looks at: overlays for the contact sheet, a flags table, the PNG encoding."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from identity_pipeline.masks.records import IdentityMask
from identity_pipeline.previews import SheetItem, contact_sheet

TINT_RGB = np.array([40, 220, 90], dtype=np.float32)
OUTLINE_RGB = (255, 230, 40)
FLAGGED_OUTLINE_RGB = (255, 60, 60)

MASK_FLAG_DTYPES: dict[str, str] = {
    "tile_id": "string",
    "identity": "string",
    "face_id": "string",
    "backend": "string",
    "kept": "bool",
    "flags": "string",  # comma-separated, "" when none
    "mask_area_fraction": "float32",
    "face_area_fraction": "float32",
    "area_ratio": "float32",
    "other_faces_blurred": "Int64",
    "segment_seconds": "float32",
    "selector_reason": "string",
}


def overlay_preview(
    tile_rgb: np.ndarray, identity_mask: IdentityMask, max_side: int = 384
) -> Image.Image:
    """The training copy (other faces blurred) with the mask tinted green and outlined.

    Outside the mask the picture is dimmed, so what the loss sees stands out. The outline is
    red when the sample has flags. ``tile_rgb`` only fixes the expected size: everything shown
    comes from the training copy, so no unblurred other face ever reaches a preview.
    """
    mask = identity_mask.mask
    base = identity_mask.training_image
    if base.shape[:2] != tile_rgb.shape[:2] or mask.shape != tile_rgb.shape[:2]:
        raise ValueError(
            f"mask {mask.shape} / training copy {base.shape} do not match tile {tile_rgb.shape}"
        )
    scale = min(1.0, max_side / max(mask.shape))
    size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
    base_small = cv2.resize(base, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask, size, interpolation=cv2.INTER_AREA).astype(np.float32)[..., None]
    alpha /= 255.0
    shown = base_small * (0.35 + 0.65 * alpha)  # dim what the loss never sees
    shown = shown * (1 - 0.35 * alpha) + TINT_RGB * (0.35 * alpha)
    image = Image.fromarray(np.clip(shown + 0.5, 0, 255).astype(np.uint8))
    colour = FLAGGED_OUTLINE_RGB if identity_mask.flags else OUTLINE_RGB
    _draw_outline(image, alpha[..., 0] >= 0.5, colour)
    return image


def _draw_outline(image: Image.Image, inside: np.ndarray, colour: tuple[int, int, int]) -> None:
    contours, _ = cv2.findContours(
        inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    draw = ImageDraw.Draw(image)
    for contour in contours:
        points = [tuple(int(v) for v in point[0]) for point in contour]
        if len(points) >= 2:
            draw.line([*points, points[0]], fill=colour, width=2)


def caption(identity_mask: IdentityMask) -> str:
    flags = ",".join(identity_mask.flags) if identity_mask.flags else "ok"
    return f"{identity_mask.identity} [{identity_mask.backend}] {flags}"


def masks_contact_sheet(
    samples: Sequence[tuple[np.ndarray, IdentityMask]], cell: int = 192, columns: int = 6
) -> Image.Image:
    """A contact sheet of overlays, one cell per (tile, mask) pair, captioned with the flags."""
    items = [
        SheetItem(overlay_preview(tile, mask, max_side=cell), caption(mask))
        for tile, mask in samples
    ]
    return contact_sheet(items, cell=cell, columns=columns)


def mask_flags_frame(masks_by_tile: Mapping[str, Sequence[IdentityMask]]) -> pd.DataFrame:
    """One row per sample: what metadata lists and what the asset checks read."""
    rows = [
        {
            "tile_id": tile_id,
            "identity": mask.identity,
            "face_id": mask.face_id,
            "backend": mask.backend,
            "kept": mask.kept,
            "flags": ",".join(mask.flags),
            "mask_area_fraction": mask.mask_area_fraction,
            "face_area_fraction": mask.face_area_fraction,
            "area_ratio": mask.area_ratio,
            "other_faces_blurred": mask.other_faces_blurred,
            "segment_seconds": mask.segment_seconds,
            "selector_reason": mask.selector_reason,
        }
        for tile_id, masks in masks_by_tile.items()
        for mask in masks
    ]
    frame = pd.DataFrame(rows, columns=list(MASK_FLAG_DTYPES))
    return frame.astype(MASK_FLAG_DTYPES)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """The mask as an 8-bit greyscale PNG (mode L), at its own resolution."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 mask, got {mask.shape} {mask.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
