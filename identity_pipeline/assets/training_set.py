"""training_set: one sample per (tile, named person), selected, held out, balanced, bucketed."""

import time
from pathlib import Path

import dagster as dg
import pandas as pd

from identity_pipeline.asset_names import IDENTITY_MASKS, TRAINING_SET
from identity_pipeline.assets.metadata import image_metadata, table_metadata
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.dataset import (
    DatasetConfig,
    build_training_set,
    export_training_set,
    manifest_version,
    trained_photos,
    write_previews,
)
from identity_pipeline.resources import SettingsResource, StorageResource
from identity_pipeline.storage import prune_files

SECTION = "dataset"
DatasetRunConfig = run_config_class(DatasetConfig)


@dg.asset(
    name=TRAINING_SET,
    group_name="training",
    kinds={"python", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
    ins={IDENTITY_MASKS: dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
    description="The training samples of every album: face-blurred image + the person's mask at "
    "an aspect bucket, caption, repeats (rare people upsampled, capped), train/holdout split by "
    "photo (per photo by its hash; a photo once trained stays trained). Data version: a hash of "
    "the rows, so an unchanged set leaves the LoRA fresh. Exports: kohya/musubi folders and a diffusers imagefolder JSONL under export/.",
    check_specs=[
        dg.AssetCheckSpec(
            "holdout_never_trained",
            asset=TRAINING_SET,
            description="No photo has samples in both the train and the holdout split.",
        )
    ],
)
def training_set(
    context: dg.AssetExecutionContext,
    config: DatasetRunConfig,  # type: ignore[valid-type]
    storage: StorageResource,
    settings: SettingsResource,
    identity_masks: dict[str, pd.DataFrame],
):
    layout = storage.layout
    dataset_config = stage_settings(settings, layout, SECTION, config, DatasetConfig)
    samples = _concat(identity_masks)
    out_dir = layout.files_dir(TRAINING_SET)
    committed = _committed_manifest(layout.table_path(TRAINING_SET))
    started = time.perf_counter()
    result = build_training_set(
        samples,
        layout.root,
        out_dir,
        dataset_config,
        workers=2,
        # Photos the last training set trained on stay in train, however the album grew.
        trained_before=trained_photos(committed),
    )
    manifest = result.manifest
    committed_files = {Path(path).name for column in _FILE_COLUMNS for path in committed[column]}
    for folder, keep in result.file_names().items():
        # The committed manifest's files too: it stays the asset's value until this run's
        # manifest replaces it, and a run killed in between must not leave it pointing at nothing.
        prune_files(out_dir / folder, keep | committed_files)
    export = export_training_set(manifest, layout.root, layout.asset_dir(TRAINING_SET) / "export")
    for warning in export.warnings:
        context.log.warning(f"export: {warning}")
    previews = write_previews(result, layout.root, layout.asset_dir(TRAINING_SET) / "previews")

    train = manifest[manifest["split"] == "train"]
    # Equal rows mean equal files (their names hash their sources): an unchanged training set
    # keeps its version, so the LoRA trained on it is not marked stale.
    version = manifest_version(manifest)
    metadata: dict[str, object] = {
        "samples": len(manifest),
        "train_samples": len(train),
        "holdout_samples": int((manifest["split"] == "holdout").sum()),
        "identities": int(manifest["identity"].nunique()),
        "effective_train_samples": int(train["repeats"].sum()),
        "input_samples": len(samples),
        "removed_by_rule": dg.MetadataValue.json(result.removed_by_rule),
        "identities_table": table_metadata(result.identities),
        "buckets_table": table_metadata(_used(result.buckets)),
        "files_written": result.files_written,
        "export_dir": dg.MetadataValue.path(str(export.export_dir)),
        "kohya_folders": dg.MetadataValue.json(export.kohya_folders),
        "export_warnings": dg.MetadataValue.json(list(export.warnings)),
        "seconds": round(time.perf_counter() - started, 3),
        "data_version": version,
        **settings_metadata(dataset_config),
    }
    metadata.update(image_metadata("samples_per_identity", previews.balance_chart))
    metadata.update(image_metadata("bucket_histogram", previews.bucket_chart))
    for identity, path in list(previews.contact_sheets.items())[:12]:
        metadata.update(image_metadata(f"contact_sheet[{identity}]", path))
    yield dg.Output(manifest, metadata=metadata, data_version=dg.DataVersion(version))

    by_photo = manifest.groupby("photo_id")["split"].nunique()
    leaking = sorted(by_photo[by_photo > 1].index)
    yield dg.AssetCheckResult(
        check_name="holdout_never_trained",
        passed=not leaking,
        metadata={"photos_in_both_splits": len(leaking)},
    )


_FILE_COLUMNS = ("image_path", "mask_path")


def _committed_manifest(manifest_path: Path) -> pd.DataFrame:
    """The last materialization's manifest (its files, photos and splits); empty when none."""
    columns = [*_FILE_COLUMNS, "photo_id", "split"]
    if not manifest_path.exists():
        return pd.DataFrame(columns=columns)
    return pd.read_parquet(manifest_path, columns=columns)


def _used(buckets: pd.DataFrame) -> pd.DataFrame:
    return buckets[buckets["train_samples"] + buckets["holdout_samples"] > 0]


def _concat(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    frames = [frame.assign(album=album) for album, frame in sorted(tables.items()) if len(frame)]
    if not frames:
        return next(iter(tables.values())).iloc[0:0] if tables else pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
