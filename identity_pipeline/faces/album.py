"""face_embeddings for one album: the faces of every tile, and the ones a person looks at first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from identity_pipeline.faces.backend import FaceBackend
from identity_pipeline.faces.cache import FaceCache
from identity_pipeline.faces.config import FaceConfig
from identity_pipeline.faces.pipeline import faces_for_tile
from identity_pipeline.faces.pixels import FilePixels, reduction_for
from identity_pipeline.faces.records import faces_frame
from identity_pipeline.photos.inspect import load_photo
from identity_pipeline.previews import CROP_PX, crop_face


@dataclass
class AlbumFaces:
    frame: pd.DataFrame  # the faces table (FACE_DTYPES)
    unreadable: dict[str, str] = field(default_factory=dict)  # tile_id -> reason


def faces_of_tiles(
    tiles: pd.DataFrame,
    data_root: Path,
    backend: FaceBackend,
    cache: FaceCache | None,
    config: FaceConfig,
) -> AlbumFaces:
    """The faces of every tile of a photo_tiles table (``tile_path`` relative to ``data_root``).

    A tile is decoded only on a cache miss: its id is a hash of its content, so it keys the cache.
    An unreadable tile is reported, and the others go on.
    """
    records = []
    unreadable: dict[str, str] = {}
    for tile in tiles.itertuples(index=False):
        try:
            records.extend(
                faces_for_tile(
                    FilePixels(data_root / tile.tile_path),
                    tile.tile_id,
                    tile.photo_id,
                    (int(tile.x0), int(tile.y0)),
                    backend,
                    cache,
                    config,
                    content_hash=tile.tile_id,
                )
            )
        except OSError as error:
            unreadable[tile.tile_id] = f"tile of {tile.source_path} unreadable: {error}"
    return AlbumFaces(faces_frame(records), unreadable)


def largest_face_crops(
    faces: pd.DataFrame, tiles: pd.DataFrame, data_root: Path, limit: int
) -> list[tuple[Image.Image, str]]:
    """Crops of the ``limit`` largest faces, each captioned with its size and quality."""
    paths = dict(zip(tiles["tile_id"], tiles["tile_path"], strict=True))
    crops = []
    for face in faces.sort_values("face_size", ascending=False).head(limit).itertuples():
        # A crop is CROP_PX wide: a big face of a 48 MP tile needs no full-size decode for it.
        reduction = reduction_for(min(1.0, 2 * CROP_PX / max(float(face.face_size), 1.0)))
        tile = load_photo(data_root / paths[face.tile_id], reduce=reduction)
        box = tuple(v / reduction for v in (face.tile_x0, face.tile_y0, face.tile_x1, face.tile_y1))
        crops.append((crop_face(tile, box), f"{int(face.face_size)}px q{face.quality:.2f}"))
    return crops
