"""face_embeddings: every face of every tile, with landmarks, quality and an embedding."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from identity_pipeline.asset_names import FACE_EMBEDDINGS
from identity_pipeline.assets.metadata import sheet_metadata, table_metadata
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.faces import FaceCache, FaceConfig, faces_table
from identity_pipeline.faces.album import faces_of_tiles, largest_face_crops
from identity_pipeline.partitions import albums_partitions
from identity_pipeline.previews import SheetItem
from identity_pipeline.resources import FaceBackendResource, SettingsResource, StorageResource

MAX_SHEET_FACES = 64
SECTION = "faces"
FacesRunConfig = run_config_class(FaceConfig)


@dg.asset(
    name=FACE_EMBEDDINGS,
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
            asset=FACE_EMBEDDINGS,
            description="All embeddings come from one backend/model and are unit length.",
        )
    ],
)
def face_embeddings(
    context: dg.AssetExecutionContext,
    config: FacesRunConfig,  # type: ignore[valid-type]
    storage: StorageResource,
    settings: SettingsResource,
    face_backend: FaceBackendResource,
    photo_tiles: pd.DataFrame,
):
    album = context.partition_key
    layout = storage.layout
    face_config = stage_settings(settings, layout, SECTION, config, FaceConfig)
    backend = face_backend.get(face_config)
    cache = FaceCache(layout.cache_dir / "faces")
    started = time.perf_counter()
    found = faces_of_tiles(photo_tiles, layout.root, backend, cache, face_config)
    for tile_id, reason in found.unreadable.items():
        context.log.warning(f"tile {tile_id}: {reason}")
    frame = found.frame
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
        "tiles_unreadable": len(found.unreadable),
        "tiles_without_faces_list": table_metadata(
            no_face[["source_path", "tile_id", "layout_kind"]]
        ),
        "seconds": round(seconds, 3),
        **settings_metadata(face_config),
    }
    crops = largest_face_crops(frame, photo_tiles, layout.root, MAX_SHEET_FACES)
    metadata.update(
        sheet_metadata(
            layout.asset_dir(FACE_EMBEDDINGS, album),
            "face_crops",
            [SheetItem(crop, caption) for crop, caption in crops],
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
