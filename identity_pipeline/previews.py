"""Small pictures for people: face crops, contact sheets, inline Markdown images for the Dagster UI.

Inline images live in the event log, so they are kept small (a few tens of KB); the full-size
sheet is written beside the asset's table and its path is shown too.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

INLINE_IMAGE_MAX_BYTES = 96 * 1024
CROP_PX = 128
CROP_MARGIN = 0.25  # of the box's longer side, on each side


@dataclass(frozen=True)
class SheetItem:
    image: Image.Image
    caption: str = ""


def contact_sheet(
    items: Sequence[SheetItem],
    cell: int = 128,
    columns: int = 8,
    caption_height: int = 14,
    background: tuple[int, int, int] = (32, 32, 32),
) -> Image.Image:
    """A grid of thumbnails with a one-line caption under each (captions are truncated)."""
    if not items:
        return _empty_sheet(cell, background)
    columns = max(1, min(columns, len(items)))
    rows = -(-len(items) // columns)
    label_space = caption_height if any(item.caption for item in items) else 0
    sheet = Image.new("RGB", (columns * cell, rows * (cell + label_space)), background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, item in enumerate(items):
        thumb = item.image.convert("RGB")
        thumb.thumbnail((cell - 4, cell - 4), Image.Resampling.LANCZOS)
        col, row = index % columns, index // columns
        x0, y0 = col * cell, row * (cell + label_space)
        sheet.paste(thumb, (x0 + (cell - thumb.width) // 2, y0 + (cell - thumb.height) // 2))
        if label_space and item.caption:
            draw.text(
                (x0 + 2, y0 + cell),
                _fit(item.caption, cell, font, draw),
                fill=(230, 230, 230),
                font=font,
            )
    return sheet


def _fit(text: str, width: int, font: ImageFont.ImageFont, draw: ImageDraw.ImageDraw) -> str:
    if draw.textlength(text, font=font) <= width - 4:
        return text
    while text and draw.textlength(text + "…", font=font) > width - 4:
        text = text[:-1]
    return text + "…"


def _empty_sheet(cell: int, background: tuple[int, int, int]) -> Image.Image:
    sheet = Image.new("RGB", (cell * 2, cell // 2), background)
    ImageDraw.Draw(sheet).text((6, 6), "(nothing to show)", fill=(200, 200, 200))
    return sheet


def encode_image(image: Image.Image, fmt: str = "JPEG", quality: int = 80) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True)
    else:
        image.save(buffer, fmt, optimize=True)
    return buffer.getvalue()


def inline_markdown_image(
    image: Image.Image, alt: str, max_bytes: int = INLINE_IMAGE_MAX_BYTES
) -> str:
    """A Markdown image with the picture embedded as a data URI, shrunk until under ``max_bytes``.

    JPEG for photos: at these sizes it is 5-10x smaller than PNG, and the UI renders both.
    """
    candidate = image.convert("RGB")
    quality = 80
    while True:
        data = encode_image(candidate, "JPEG", quality)
        if len(data) <= max_bytes or candidate.width <= 64:
            break
        if quality > 55:
            quality -= 10
        else:
            candidate = candidate.resize(
                (candidate.width * 3 // 4, max(1, candidate.height * 3 // 4))
            )
    encoded = base64.b64encode(data).decode("ascii")
    return f"![{alt}](data:image/jpeg;base64,{encoded})"


def crop_face(
    image: Image.Image,
    box: tuple[float, float, float, float],
    size: int = CROP_PX,
    margin: float = CROP_MARGIN,
) -> Image.Image:
    """A square crop centred on ``box`` (x0, y0, x1, y1), padded by ``margin``, ``size`` px."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    square = (
        int(round(cx - side / 2)),
        int(round(cy - side / 2)),
        int(round(cx + side / 2)),
        int(round(cy + side / 2)),
    )
    # PIL pads outside the image with black, which reads as "edge of the photo".
    return image.crop(square).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
