"""raw_photos: every file of an album, usable or not, with the reason when not."""

import time

import dagster as dg

from identity_pipeline.asset_names import RAW_PHOTOS
from identity_pipeline.assets.metadata import sheet_metadata, table_metadata
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.partitions import albums_partitions
from identity_pipeline.photos import PhotoLimits, inspect_album, photos_frame, status_counts
from identity_pipeline.previews import SheetItem
from identity_pipeline.resources import SettingsResource, StorageResource

MAX_SHEET_PHOTOS = 48
SECTION = "photos"
PhotosRunConfig = run_config_class(PhotoLimits)


RAW_PHOTOS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("photo_id", "string", description="sha256 of the file's bytes"),
        dg.TableColumn("path", "string", description="path relative to the album folder"),
        dg.TableColumn("status", "string", description="'ok' or 'skipped: <reason>'"),
        dg.TableColumn("bytes", "int"),
        dg.TableColumn("format", "string"),
        dg.TableColumn("width", "int", description="after EXIF orientation"),
        dg.TableColumn("height", "int", description="after EXIF orientation"),
        dg.TableColumn("mode", "string", description="PIL mode as stored (RGB, CMYK, I;16, P...)"),
        dg.TableColumn("exif_orientation", "int"),
        dg.TableColumn("frames", "int", description="frames in animated files; the first is used"),
    ]
)


@dg.asset(
    name=RAW_PHOTOS,
    partitions_def=albums_partitions,
    group_name="photos",
    kinds={"python", "parquet"},
    description="One row per file in data/albums/<album>/: content-hash id, size, format, "
    "EXIF-corrected dimensions and status ('ok' or 'skipped: <reason>').",
    metadata={"dagster/column_schema": RAW_PHOTOS_SCHEMA},
    check_specs=[
        dg.AssetCheckSpec(
            "unique_photo_ids", asset=RAW_PHOTOS, description="Each usable photo appears once."
        )
    ],
)
def raw_photos(
    context: dg.AssetExecutionContext,
    config: PhotosRunConfig,  # type: ignore[valid-type]
    storage: StorageResource,
    settings: SettingsResource,
):
    album = context.partition_key
    layout = storage.layout
    limits = stage_settings(settings, layout, SECTION, config, PhotoLimits)
    album_dir = layout.album_dir(album)
    if not album_dir.is_dir():
        raise dg.Failure(
            description=f"Album folder {album_dir} does not exist (renamed or deleted?). Nothing "
            "was changed: its previous outputs are kept, and the album sensor removes the "
            "partition on its next tick (put the folder back to keep the album).",
        )
    started = time.perf_counter()
    inspected = inspect_album(album_dir, limits)
    records = [item.record for item in inspected]
    for record in records:
        if not record.ok:
            context.log.warning(f"{album}/{record.path}: {record.status}")
    frame = photos_frame(records)

    sheet_items = [
        SheetItem(item.thumbnail, item.record.path)
        for item in inspected
        if item.record.ok and item.thumbnail is not None
    ][:MAX_SHEET_PHOTOS]
    skipped = frame[frame["status"] != "ok"][["path", "status", "bytes"]]
    metadata: dict[str, object] = {
        "album": album,
        "files": len(frame),
        "photos_ok": int((frame["status"] == "ok").sum()),
        "skipped": len(skipped),
        "total_bytes": int(frame["bytes"].sum()),
        "counts_by_status": dg.MetadataValue.json(status_counts(records)),
        "skipped_files": table_metadata(skipped),
        "seconds": round(time.perf_counter() - started, 3),
        **settings_metadata(limits),
    }
    metadata.update(
        sheet_metadata(layout.asset_dir(RAW_PHOTOS, album), "contact_sheet", sheet_items, "photos")
    )
    yield dg.Output(frame, metadata=metadata)

    ok = frame[frame["status"] == "ok"]
    duplicated = int(ok["photo_id"].duplicated(keep=False).sum())
    yield dg.AssetCheckResult(
        check_name="unique_photo_ids",
        passed=duplicated == 0,
        metadata={"duplicated_rows": duplicated, "ok_rows": len(ok)},
    )
