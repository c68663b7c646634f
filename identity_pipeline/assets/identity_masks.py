"""identity_masks: per tile and named person, the person's soft mask and a copy of the tile with
every other face blurred."""

import time

import dagster as dg
import pandas as pd

from identity_pipeline.asset_names import IDENTITY_MASKS, LABELED_IDENTITIES
from identity_pipeline.assets.metadata import table_metadata
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.masks import MaskConfig, masks_contact_sheet, segmenter_for
from identity_pipeline.masks.album_masks import mask_album, sample_file_names
from identity_pipeline.partitions import albums_partitions
from identity_pipeline.previews import encode_image, inline_markdown_image
from identity_pipeline.resources import SettingsResource, StorageResource
from identity_pipeline.storage import atomic_write_bytes, prune_files

SECTION = "masks"
MasksRunConfig = run_config_class(MaskConfig)

# Eager, but only on new names: a change of tiles or faces always reaches labeled_identities
# (faces -> face_clusters -> labeled_identities), so reacting to it here too would build the
# masks twice, once with the old names. No "newly missing" trigger for the same reason: a new
# album's masks wait for the names that include its faces.
MASKS_AUTOMATION = (
    dg.AutomationCondition.any_deps_updated()
    .allow(dg.AssetSelection.assets(LABELED_IDENTITIES))
    .since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("eager on labeled_identities")


@dg.asset(
    name=IDENTITY_MASKS,
    partitions_def=albums_partitions,
    group_name="training",
    kinds={"python", "parquet", "opencv"},
    automation_condition=MASKS_AUTOMATION,
    description="One sample per (tile, named person): the person's soft mask (8-bit PNG, other "
    "people and background excluded, feathered edges) and a training copy of the tile with every "
    "other face blurred. Segmentation, chosen per tile with the reason recorded: for two or more "
    "people MediaPipe's BlazePose per person first (hands given to their owner), then SAM when "
    "configured, MediaPipe's selfie model, face-seeded GrabCut. The overlays show each person's "
    "mask in its own colour on the group photo.",
    check_specs=[
        dg.AssetCheckSpec(
            "no_empty_kept_mask",
            asset=IDENTITY_MASKS,
            description="No kept sample has an empty mask.",
        ),
        dg.AssetCheckSpec(
            "other_faces_blurred",
            asset=IDENTITY_MASKS,
            description="In every training copy, every other face has lost its fine detail.",
        ),
    ],
)
def identity_masks(
    context: dg.AssetExecutionContext,
    config: MasksRunConfig,  # type: ignore[valid-type]
    storage: StorageResource,
    settings: SettingsResource,
    photo_tiles: pd.DataFrame,
    face_embeddings: pd.DataFrame,
    labeled_identities: pd.DataFrame,
):
    album = context.partition_key
    layout = storage.layout
    mask_config = stage_settings(settings, layout, SECTION, config, MaskConfig)
    names = {
        str(face_id): (str(name) if isinstance(name, str) else None)
        for face_id, name in zip(
            labeled_identities["face_id"], labeled_identities["identity"], strict=True
        )
    }
    files_dir = layout.files_dir(IDENTITY_MASKS, album)
    previous_path = layout.table_path(IDENTITY_MASKS, album)
    previous = pd.read_parquet(previous_path) if previous_path.exists() else None
    started = time.perf_counter()
    result = mask_album(
        album,
        photo_tiles,
        face_embeddings,
        names,
        layout.root,
        files_dir,
        previous,
        mask_config,
        segmenter_for(mask_config),
    )
    for tile_id, reason in result.failures.items():
        context.log.warning(f"tile {tile_id}: {reason}")
    samples = result.samples
    prune_files(files_dir, sample_file_names(samples) | sample_file_names(previous))

    flagged = samples[samples["flags"] != ""]
    metadata: dict[str, object] = {
        "album": album,
        "samples": len(samples),
        "kept_samples": int(samples["kept"].sum()),
        "excluded_samples": int((~samples["kept"]).sum()),
        "identities": int(samples["identity"].nunique()),
        "tiles_built": result.built_tiles,
        "tiles_reused_from_cache": result.reused_tiles,
        "tiles_failed": len(result.failures),
        "backends": dg.MetadataValue.json(samples["backend"].value_counts().to_dict()),
        "flagged_samples": table_metadata(
            flagged[["identity", "tile_id", "flags", "kept", "backend", "selector_reason"]]
        ),
        "seconds_per_built_tile": round(
            float(samples.drop_duplicates("tile_id")["segment_seconds"].mean())
            if len(samples)
            else 0.0,
            3,
        ),
        "seconds": round(time.perf_counter() - started, 3),
        **settings_metadata(mask_config),
    }
    if result.previews:
        sheet = masks_contact_sheet(result.previews, cell=160, columns=6)
        path = atomic_write_bytes(
            layout.asset_dir(IDENTITY_MASKS, album) / "overlays.jpg", encode_image(sheet)
        )
        metadata["overlays"] = dg.MetadataValue.md(inline_markdown_image(sheet, "mask overlays"))
        metadata["overlays_path"] = dg.MetadataValue.path(str(path))
    yield dg.Output(samples, metadata=metadata)

    kept = samples[samples["kept"]]
    empty = kept[
        kept["mask_area_fraction"] <= mask_config.empty_max_face_areas * kept["face_area_fraction"]
    ]
    yield dg.AssetCheckResult(
        check_name="no_empty_kept_mask", passed=empty.empty, metadata={"empty": len(empty)}
    )
    unblurred = int(samples["unblurred_other_faces"].sum())
    yield dg.AssetCheckResult(
        check_name="other_faces_blurred",
        passed=unblurred == 0,
        metadata={"unblurred_faces": unblurred},
    )
