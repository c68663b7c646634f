"""A tiny synthetic training set in the ``training_set`` manifest format, and tiny models.

Images are flat-coloured backgrounds with a coloured "face" disc per identity; masks cover the
disc (255) with a soft edge. Everything is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

IDENTITY_COLOURS = {"Alice": (220, 170, 140), "Bob": (120, 80, 60), "Carol": (250, 210, 180)}


def write_training_set(
    root: Path,
    count: int = 6,
    size: int = 64,
    identities: tuple[str, ...] = ("Alice", "Bob"),
    holdout: int = 1,
    relative: bool = True,
    extra_bucket: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Images and masks under ``root/files``; returns the manifest rows (not yet written)."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count + holdout):
        identity = identities[index % len(identities)]
        width, height = (size, size)
        if extra_bucket and index % 3 == 2:
            width, height = extra_bucket
        image, mask = _synthetic_pair(identity, width, height, rng)
        image_name, mask_name = f"img_{index:03d}.png", f"mask_{index:03d}.png"
        image.save(files / image_name)
        mask.save(files / mask_name)
        prefix = "files" if relative else str(files)
        rows.append(
            {
                "sample_id": f"s{index:03d}",
                "image_path": f"{prefix}/{image_name}",
                "mask_path": f"{prefix}/{mask_name}",
                "caption": f"A group photo of {identity} and other people",
                "identity": identity,
                "repeats": 1 + index % 2,
                "bucket_width": width,
                "bucket_height": height,
                "split": "holdout" if index >= count else "train",
                "album": "demo",
                "photo_id": f"p{index}",
                "tile_id": f"t{index}",
                "face_id": f"f{index}",
            }
        )
    return pd.DataFrame(rows)


def _synthetic_pair(identity: str, width: int, height: int, rng: np.random.Generator):
    background = tuple(int(v) for v in rng.integers(30, 200, size=3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    radius = int(min(width, height) * rng.uniform(0.15, 0.3))
    cx = int(rng.integers(radius, width - radius))
    cy = int(rng.integers(radius, height - radius))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    draw.ellipse(box, fill=IDENTITY_COLOURS.get(identity, (200, 200, 200)))
    eye = max(1, radius // 5)
    for dx in (-radius // 3, radius // 3):
        draw.ellipse((cx + dx - eye, cy - eye * 2, cx + dx + eye, cy), fill=(20, 20, 20))
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return image, mask.filter(ImageFilter.GaussianBlur(1.5))


def write_manifest(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path
