"""photo_tiles: collages cut into single photos (a plain photo is one tile)."""

import time

import dagster as dg
import pandas as pd

from identity_pipeline.asset_names import PHOTO_TILES
from identity_pipeline.assets.metadata import sheet_metadata, table_metadata
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.collage.album_tiles import (
    TilingConfig,
    face_evidence,
    least_sure_previews,
    tile_album,
    tiles_file_names,
    tiles_problems,
)
from identity_pipeline.collage.hints import find_hints_file, parse_hints
from identity_pipeline.faces import FaceConfig
from identity_pipeline.partitions import albums_partitions
from identity_pipeline.previews import SheetItem
from identity_pipeline.resources import FaceBackendResource, SettingsResource, StorageResource
from identity_pipeline.storage import prune_files

SECTION = "collage"
TilingRunConfig = run_config_class(TilingConfig)


@dg.asset(
    name=PHOTO_TILES,
    partitions_def=albums_partitions,
    group_name="photos",
    kinds={"python", "parquet", "opencv"},
    automation_condition=dg.AutomationCondition.eager(),
    description="One row per single photo cut out of a collage (or the whole photo): tile_id "
    "(hash of photo_id + box), box in the photo, layout kind, auto/manual, confidence; the tiles "
    "are written as JPEG files. Manual overrides: data/albums/<album>/split_hints.csv.",
    check_specs=[
        dg.AssetCheckSpec(
            "tiles_inside_photo_and_disjoint",
            asset=PHOTO_TILES,
            description="Every tile lies inside its photo; tiles of one photo do not overlap.",
        )
    ],
)
def photo_tiles(
    context: dg.AssetExecutionContext,
    config: TilingRunConfig,  # type: ignore[valid-type]
    storage: StorageResource,
    settings: SettingsResource,
    face_backend: FaceBackendResource,
    raw_photos: pd.DataFrame,
):
    album = context.partition_key
    layout = storage.layout
    tiling_config = stage_settings(settings, layout, SECTION, config, TilingConfig)
    backend = None
    if tiling_config.use_face_evidence:  # the faces settings name the model
        backend = face_backend.get(stage_settings(settings, layout, "faces", None, FaceConfig))
    find_faces, evidence = face_evidence(tiling_config, backend)
    album_dir = layout.album_dir(album)
    hints_path = find_hints_file(album_dir)
    try:
        hints = parse_hints(hints_path) if hints_path else {}
    except ValueError as error:
        raise dg.Failure(description=f"{hints_path}: {error}") from error

    previous_path = layout.table_path(PHOTO_TILES, album)
    previous = pd.read_parquet(previous_path) if previous_path.exists() else None
    started = time.perf_counter()
    tiling = tile_album(
        album_dir,
        raw_photos,
        layout.files_dir(PHOTO_TILES, album),
        layout.root,
        hints,
        previous,
        tiling_config.split,
        max_previews=tiling_config.max_previews,
        find_faces=find_faces,
        face_evidence=evidence,
    )
    referenced = set(tiles_file_names(tiling.tiles)) | set(tiles_file_names(previous))
    pruned = prune_files(layout.files_dir(PHOTO_TILES, album), keep=referenced)
    for path, reason in tiling.failures.items():
        context.log.warning(f"{album}/{path}: {reason}")
    tiles = tiling.tiles
    photos_ok = int((raw_photos["status"] == "ok").sum())
    per_photo = tiles.groupby("photo_id")["layout_kind"].first()
    metadata: dict[str, object] = {
        "album": album,
        "photos": photos_ok,
        "tiles": len(tiles),
        "collages": int((per_photo != "single").sum()),
        "counts_by_layout": dg.MetadataValue.json(
            {str(k): int(v) for k, v in per_photo.value_counts().sort_index().items()}
        ),
        "manual_hints": len(hints),
        # Photos whose cuts the splitter is unsure of (confidence under its review bar).
        "photos_to_review": int(tiles.groupby("photo_id")["review"].first().fillna(False).sum()),
        "photos_split": tiling.split_photos,
        "photos_reused_from_cache": tiling.reused_photos,
        "failed_photos": table_metadata(
            pd.DataFrame(sorted(tiling.failures.items()), columns=["path", "reason"])
        ),
        "ms_per_split": round(1000 * tiling.seconds_splitting / max(1, tiling.split_photos), 1),
        "stale_files_pruned": len(pruned),
        "seconds": round(time.perf_counter() - started, 3),
        **settings_metadata(tiling_config),
    }
    items = [SheetItem(image, caption) for caption, image in tiling.previews]
    metadata.update(
        sheet_metadata(
            layout.asset_dir(PHOTO_TILES, album),
            "collages_with_cuts",
            items,
            "collages",
            columns=6,
            cell=192,
        )
    )
    least_sure = [
        SheetItem(image, caption) for caption, image in least_sure_previews(tiles, album_dir)
    ]
    if least_sure:
        metadata.update(
            sheet_metadata(
                layout.asset_dir(PHOTO_TILES, album),
                "least_sure_photos",
                least_sure,
                "least sure photos",
                columns=6,
                cell=192,
            )
        )
    yield dg.Output(tiles, metadata=metadata)

    problems = tiles_problems(tiles, raw_photos)
    yield dg.AssetCheckResult(
        check_name="tiles_inside_photo_and_disjoint",
        passed=not problems,
        metadata={"problems": dg.MetadataValue.json(problems[:50]), "tiles": len(tiles)},
    )
