"""face_embeddings: every face of every tile, with landmarks, quality and an embedding."""

import time

import dagster as dg
import numpy as np
import pandas as pd
from PIL import Image

from identity_pipeline.assets.metadata import sheet_metadata, table_metadata
from identity_pipeline.faces import FaceCache, FaceConfig, faces_for_tile, faces_frame, faces_table
from identity_pipeline.partitions import albums_partitions
from identity_pipeline.previews import SheetItem
from identity_pipeline.resources import FaceBackendResource, StorageResource

FACES_ASSET = "face_embeddings"
MAX_SHEET_FACES = 64


@dg.asset(
    name=FACES_ASSET,
    partitions_def=albums_partitions,
    group_name="faces",
    kinds={"python", "parquet", "onnx"},
    automation_condition=dg.AutomationCondition.eager(),
    description="One row per face: face_id (hash of tile_id + box), boxes in tile and photo "
    "pixels, 5 landmarks, detection score, size, quality, L2-normalised embedding, backend and "
    "model hash. Cached per tile content, so a new photo only costs its own faces.",
    check_specs=[
        dg.AssetCheckSpec(
            "one_embedding_space",
            asset=FACES_ASSET,
            description="All embeddings come from one backend/model and are unit length.",
        )
    ],
)
def face_embeddings(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    face_backend: FaceBackendResource,
    photo_tiles: pd.DataFrame,
):
    album = context.partition_key
    layout = storage.layout
    backend = face_backend.get()
    config = FaceConfig()
    cache = FaceCache(layout.cache_dir / "faces")
    started = time.perf_counter()
    records = []
    unreadable: dict[str, str] = {}
    for tile in photo_tiles.itertuples(index=False):
        tile_file = layout.root / tile.tile_path

        def load(tile_file=tile_file) -> np.ndarray:
            with Image.open(tile_file) as image:
                return np.asarray(image.convert("RGB"))

        try:
            records.extend(
                faces_for_tile(
                    load,
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
            unreadable[tile.tile_id] = f"{tile_file}: {error}"
            context.log.warning(f"tile {tile.tile_id} of {tile.source_path} unreadable: {error}")
    frame = faces_frame(records)
    seconds = time.perf_counter() - started

    per_tile = frame.groupby("tile_id").size().reindex(photo_tiles["tile_id"], fill_value=0)
    no_face = photo_tiles[photo_tiles["tile_id"].isin(per_tile[per_tile == 0].index)]
    metadata: dict[str, object] = {
        "album": album,
        "faces": len(frame),
        "tiles": len(photo_tiles),
        "tiles_without_faces": len(no_face),
        "faces_per_tile_histogram": dg.MetadataValue.json(
            {str(k): int(v) for k, v in per_tile.value_counts().sort_index().items()}
        ),
        "smallest_face_px": float(frame["face_size"].min()) if len(frame) else 0.0,
        "largest_face_px": float(frame["face_size"].max()) if len(frame) else 0.0,
        "backend": backend.name,
        "model_sha256": backend.model_sha256,
        "embedding_dim": backend.embedding_dim,
        "cache_hits": cache.stats.hits,
        "cache_misses": cache.stats.misses,
        "tiles_unreadable": len(unreadable),
        "tiles_without_faces_list": table_metadata(
            no_face[["source_path", "tile_id", "layout_kind"]]
        ),
        "seconds": round(seconds, 3),
    }
    metadata.update(
        sheet_metadata(
            layout.asset_dir(FACES_ASSET, album),
            "face_crops",
            _face_crops(frame, photo_tiles, layout.root),
            "faces",
            columns=8,
            cell=96,
        )
    )
    yield dg.Output(faces_table(frame), metadata=metadata)

    norms = [float(np.linalg.norm(v)) for v in frame["embedding"]]
    spaces = frame[["backend", "model_sha256", "embedding_dim"]].drop_duplicates()
    yield dg.AssetCheckResult(
        check_name="one_embedding_space",
        passed=len(spaces) <= 1 and all(abs(n - 1.0) < 1e-3 for n in norms),
        metadata={"spaces": len(spaces), "faces": len(frame)},
    )


def _face_crops(frame: pd.DataFrame, tiles: pd.DataFrame, root) -> list[SheetItem]:
    """The largest faces first, cropped with a margin, captioned with size and quality."""
    paths = dict(zip(tiles["tile_id"], tiles["tile_path"], strict=True))
    items: list[SheetItem] = []
    for face in frame.sort_values("face_size", ascending=False).head(MAX_SHEET_FACES).itertuples():
        with Image.open(root / paths[face.tile_id]) as tile:
            margin = 0.25 * face.face_size
            box = (
                max(0, int(face.tile_x0 - margin)),
                max(0, int(face.tile_y0 - margin)),
                min(tile.width, int(face.tile_x1 + margin)),
                min(tile.height, int(face.tile_y1 + margin)),
            )
            crop = tile.crop(box).convert("RGB")
        items.append(SheetItem(crop, f"{int(face.face_size)}px q{face.quality:.2f}"))
    return items
