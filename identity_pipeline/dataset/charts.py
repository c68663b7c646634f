"""What a person looks at: samples per identity before/after balancing, buckets, contact sheets.

Drawn with Pillow (no plotting dependency), small enough to inline in the Dagster UI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from identity_pipeline.dataset.build import TrainingSetResult, resolve_data_path
from identity_pipeline.dataset.export import folder_safe_name
from identity_pipeline.dataset.split import SPLIT_HOLDOUT
from identity_pipeline.previews import SheetItem, contact_sheet, encode_image
from identity_pipeline.storage import atomic_write_bytes, content_id

SERIES_COLOURS = ((150, 170, 200), (30, 90, 170), (220, 140, 40), (90, 160, 90))
_ROW_HEIGHT = 14
_LABEL_WIDTH = 120
_TEXT = (40, 40, 40)


def bar_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    title: str,
    width: int = 560,
) -> Image.Image:
    """Horizontal grouped bars: one group per label, one bar per series, values at bar ends."""
    font = ImageFont.load_default()
    names = list(series)
    group_height = _ROW_HEIGHT * max(1, len(names)) + 6
    top = 22 + _ROW_HEIGHT  # title, then the legend
    height = top + max(1, len(labels)) * group_height + 8
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=(0, 0, 0), font=font)
    legend_x = 6
    for index, name in enumerate(names):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        draw.rectangle((legend_x, 24, legend_x + 10, 32), fill=colour)
        draw.text((legend_x + 14, 22), name, fill=_TEXT, font=font)
        legend_x += 24 + int(draw.textlength(name, font=font))
    if not labels:
        draw.text((6, top + 4), "(nothing to show)", fill=(120, 0, 0), font=font)
        return image
    largest = max((float(value) for values in series.values() for value in values), default=0.0)
    bar_space = width - _LABEL_WIDTH - 60
    for row, label in enumerate(labels):
        y = top + row * group_height
        draw.text((6, y + 2), _fit(label, _LABEL_WIDTH - 10, font, draw), fill=_TEXT, font=font)
        for index, name in enumerate(names):
            value = float(series[name][row])
            length = int(bar_space * value / largest) if largest > 0 else 0
            bar_y = y + index * _ROW_HEIGHT
            colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
            if length > 0:
                draw.rectangle(
                    (_LABEL_WIDTH, bar_y + 2, _LABEL_WIDTH + length, bar_y + 11), fill=colour
                )
            draw.text((_LABEL_WIDTH + length + 4, bar_y), _number(value), fill=_TEXT, font=font)
    return image


def identity_balance_chart(identities: pd.DataFrame) -> Image.Image:
    """Train samples per identity, and what an epoch shows after repeats."""
    shown = identities[identities["train_samples"] > 0]
    return bar_chart(
        list(shown["identity"].astype(str)),
        {
            "train samples": list(shown["train_samples"]),
            "with repeats": list(shown["effective_samples"]),
        },
        "Samples per identity, before and after balancing",
    )


def bucket_chart(buckets: pd.DataFrame) -> Image.Image:
    used = buckets[(buckets["train_samples"] + buckets["holdout_samples"]) > 0]
    return bar_chart(
        list(used["bucket"].astype(str)),
        {"train": list(used["train_samples"]), "holdout": list(used["holdout_samples"])},
        "Samples per bucket",
    )


def sample_preview(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The training image dimmed where the mask is off: what the loss sees stands out."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    alpha = np.asarray(mask.convert("L").resize(image.size), dtype=np.float32)[..., None] / 255.0
    shown = pixels * (0.3 + 0.7 * alpha)
    return Image.fromarray(np.clip(shown + 0.5, 0, 255).astype(np.uint8))


def identity_contact_sheets(
    manifest: pd.DataFrame, data_root: Path, per_identity: int = 24, cell: int = 128
) -> dict[str, Image.Image]:
    """One sheet per identity: its holdout samples first, then train samples, by sample_id."""
    sheets: dict[str, Image.Image] = {}
    for identity, rows in manifest.groupby("identity", sort=True):
        rows = rows.assign(_holdout=rows["split"] != SPLIT_HOLDOUT)
        rows = rows.sort_values(["_holdout", "sample_id"]).head(per_identity)
        items = []
        for row in rows.itertuples(index=False):
            with (
                Image.open(resolve_data_path(data_root, row.image_path)) as image,
                Image.open(resolve_data_path(data_root, row.mask_path)) as mask,
            ):
                image.thumbnail((cell * 2, cell * 2))
                preview = sample_preview(image, mask)
            label = "holdout" if row.split == SPLIT_HOLDOUT else f"train {row.repeats}×"
            items.append(SheetItem(preview, f"{label} {row.bucket_width}x{row.bucket_height}"))
        sheets[str(identity)] = contact_sheet(items, cell=cell, columns=6)
    return sheets


@dataclass(frozen=True)
class PreviewFiles:
    balance_chart: Path
    bucket_chart: Path
    contact_sheets: dict[str, Path]  # identity -> JPEG


def write_previews(result: TrainingSetResult, data_root: Path, folder: Path) -> PreviewFiles:
    """Charts as PNG and one contact sheet per identity as JPEG under ``folder``, atomically."""
    balance_path = atomic_write_bytes(
        folder / "balance.png", encode_image(identity_balance_chart(result.identities), "PNG")
    )
    bucket_path = atomic_write_bytes(
        folder / "buckets.png", encode_image(bucket_chart(result.buckets), "PNG")
    )
    sheets = {}
    for identity, sheet in identity_contact_sheets(result.manifest, data_root).items():
        # The hash keeps two names that clean up alike ("A/B", "A_B") from sharing a file.
        name = f"sheet_{folder_safe_name(identity)}_{content_id(identity, length=6)}.jpg"
        sheets[identity] = atomic_write_bytes(folder / name, encode_image(sheet, "JPEG", 85))
    return PreviewFiles(balance_path, bucket_path, sheets)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _fit(text: str, width: int, font: ImageFont.ImageFont, draw: ImageDraw.ImageDraw) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
