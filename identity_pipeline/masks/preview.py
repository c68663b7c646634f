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
# One colour per person on a group photo (cycled past ten people).
PERSON_COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)  # fmt: skip
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


def people_overlay(
    tile_rgb: np.ndarray, masks: Sequence[IdentityMask], max_side: int = 384
) -> Image.Image:
    """Every person's mask on the group photo, each in its own colour and outline.

    The picture is assembled from the training copies, never from the tile: each person's own
    pixels come from their copy (their face sharp), everything else from the first copy, so a
    stranger's face is never shown unblurred. ``tile_rgb`` only fixes the expected size.
    """
    if not masks:
        raise ValueError("no masks to overlay")
    for mask in masks:
        if mask.mask.shape != tile_rgb.shape[:2] or mask.training_image.shape != tile_rgb.shape:
            raise ValueError(f"{mask.identity}: mask or training copy does not match the tile")
    scale = min(1.0, max_side / max(tile_rgb.shape[:2]))
    size = (max(1, round(tile_rgb.shape[1] * scale)), max(1, round(tile_rgb.shape[0] * scale)))
    shown = cv2.resize(masks[0].training_image, size, interpolation=cv2.INTER_AREA)
    shown = shown.astype(np.float32)
    alphas = []
    for mask in masks:
        alpha = cv2.resize(mask.mask, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha /= 255.0
        own = cv2.resize(mask.training_image, size, interpolation=cv2.INTER_AREA)
        inside = alpha >= 0.5
        shown[inside] = own[inside]
        alphas.append(alpha)
    anyone = np.clip(np.sum(alphas, axis=0), 0.0, 1.0)[..., None]
    shown *= 0.45 + 0.55 * anyone  # dim what no mask takes in
    for index, alpha in enumerate(alphas):
        colour = np.float32(PERSON_COLOURS[index % len(PERSON_COLOURS)])
        weight = 0.45 * alpha[..., None]
        shown = shown * (1 - weight) + colour * weight
    image = Image.fromarray(np.clip(shown + 0.5, 0, 255).astype(np.uint8))
    for index, alpha in enumerate(alphas):
        _draw_outline(image, alpha >= 0.5, PERSON_COLOURS[index % len(PERSON_COLOURS)])
    return image


def people_caption(masks: Sequence[IdentityMask]) -> str:
    backends = ",".join(sorted({mask.backend for mask in masks}))
    flagged = sum(1 for mask in masks if mask.flags)
    return f"{len(masks)} people [{backends}]" + (f" {flagged} flagged" if flagged else "")


def masks_contact_sheet(
    samples: Sequence[tuple[np.ndarray, IdentityMask]], cell: int = 192, columns: int = 6
) -> Image.Image:
    """A contact sheet of overlays: one cell per tile with several people (each person's mask in
    its own colour on the group photo), one cell per sample for a tile of one person."""
    by_tile: dict[int, tuple[np.ndarray, list[IdentityMask]]] = {}
    for tile, mask in samples:
        by_tile.setdefault(id(tile), (tile, []))[1].append(mask)
    items = []
    for tile, masks in by_tile.values():
        if len(masks) > 1:
            items.append(
                SheetItem(people_overlay(tile, masks, max_side=cell), people_caption(masks))
            )
        else:
            items.append(
                SheetItem(overlay_preview(tile, masks[0], max_side=cell), caption(masks[0]))
            )
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
