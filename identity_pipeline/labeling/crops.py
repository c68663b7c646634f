"""Face crops for people to look at: the labeling page's grids and the assets' contact sheets.

A crop is cut from the face's tile image (``tile_path`` of the photo_tiles table, relative to the
data root), or from its photo file (``source_path``, for faces tables made by the faces CLI,
where a tile is the whole photo), with some margin around the box, squared, shrunk.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

from identity_pipeline.asset_names import PHOTO_TILES
from identity_pipeline.photos.inspect import load_photo
from identity_pipeline.previews import CROP_PX, crop_face
from identity_pipeline.storage import DataLayout

CropProvider = Callable[[str], Image.Image | None]


def tile_paths_from_assets(layout: DataLayout) -> dict[str, Path]:
    """tile_id -> tile image, from every album's photo_tiles table (absent: empty)."""
    found: dict[str, Path] = {}
    base = layout.asset_dir(PHOTO_TILES)
    if not base.is_dir():
        return found
    for table_path in sorted(base.glob("*/table.parquet")):
        try:
            table = pd.read_parquet(table_path, columns=["tile_id", "tile_path"])
        except (OSError, ValueError, KeyError):
            continue  # a table being rewritten or of an older layout: crops fall back
        for tile_id, tile_path in zip(table["tile_id"], table["tile_path"], strict=True):
            if isinstance(tile_path, str) and tile_path:
                found[str(tile_id)] = layout.root / tile_path
    return found


class TableCropper:
    """Crops for the faces of a face_clusters table; images are read lazily and a few are kept."""

    def __init__(
        self, table: pd.DataFrame, data_root: Path, tile_paths: dict[str, Path] | None = None
    ) -> None:
        self._boxes: dict[str, tuple[tuple[float, float, float, float], Path | None]] = {}
        resolved_tiles = tile_paths if tile_paths is not None else {}
        for row in table.itertuples(index=False):
            path = self._image_path(row, data_root, resolved_tiles)
            box = (float(row.tile_x0), float(row.tile_y0), float(row.tile_x1), float(row.tile_y1))
            self._boxes[str(row.face_id)] = (box, path)
        self._lock = threading.Lock()

    @staticmethod
    def _image_path(row: object, data_root: Path, tile_paths: dict[str, Path]) -> Path | None:
        tile_path = getattr(row, "tile_path", None)
        if isinstance(tile_path, str) and tile_path:
            return data_root / tile_path
        tile_id = str(getattr(row, "tile_id", ""))
        if tile_id in tile_paths:
            return tile_paths[tile_id]
        source = getattr(row, "source_path", None)
        if isinstance(source, str) and source:
            return Path(source)
        return None

    @functools.lru_cache(maxsize=16)  # noqa: B019 - one cropper per table, kept while serving
    def _image(self, path: Path) -> Image.Image:
        return load_photo(path)

    def __call__(self, face_id: str) -> Image.Image | None:
        entry = self._boxes.get(face_id)
        if entry is None or entry[1] is None:
            return None
        box, path = entry
        try:
            with self._lock:
                image = self._image(path)
            return crop_face(image, box)
        except (OSError, ValueError):
            return None


def placeholder(size: int = CROP_PX) -> Image.Image:
    """What the page shows for a face whose image is gone (album edited, tile pruned)."""
    return Image.new("RGB", (size, size), (90, 90, 90))


def jpeg_bytes(image: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
