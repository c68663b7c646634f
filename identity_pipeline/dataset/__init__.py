"""training_set: identity masks -> selected, held-out, balanced, bucketed training samples and a
manifest the trainer reads, plus exports for other trainers (no dagster here; the asset shell
lives in ``assets``).

Order of work: selection rules (each counted) -> holdout photos (per photo, by its hash) ->
repeats per identity -> face-keeping crop into an aspect bucket -> content-addressed files +
manifest, and its data version (``version``).
"""

from identity_pipeline.dataset.balance import BALANCE_COLUMNS, Balance, balance_repeats, repeats_for
from identity_pipeline.dataset.buckets import (
    Bucket,
    CropPlan,
    make_buckets,
    mask_centroid,
    place_crop,
    plan_crop,
)
from identity_pipeline.dataset.build import (
    BUCKET_TABLE_DTYPES,
    IDENTITY_TABLE_DTYPES,
    IMAGES_DIR,
    MANIFEST_DTYPES,
    MASKS_DIR,
    TrainingSetResult,
    build_training_set,
    manifest_schema,
    resolve_data_path,
    write_manifest,
)
from identity_pipeline.dataset.captions import caption_for
from identity_pipeline.dataset.charts import (
    PreviewFiles,
    bar_chart,
    bucket_chart,
    identity_balance_chart,
    identity_contact_sheets,
    write_previews,
)
from identity_pipeline.dataset.config import DATASET_VERSION, DEFAULT_DATASET_CONFIG, DatasetConfig
from identity_pipeline.dataset.export import (
    BucketLimits,
    ExportResult,
    bucket_limits,
    export_stem,
    export_training_set,
    folder_safe_name,
    kohya_folder_names,
    unique_folder_names,
)
from identity_pipeline.dataset.selection import INPUT_COLUMNS, RULES, Selection, select_samples
from identity_pipeline.dataset.split import (
    HOLDOUT_REPORT_COLUMNS,
    SPLIT_HOLDOUT,
    SPLIT_TRAIN,
    HoldoutResult,
    assign_holdout,
    minimum_holdout_photos,
    photo_draw,
    trained_photos,
)
from identity_pipeline.dataset.version import (
    SNAPSHOT_COLUMNS,
    changed_files,
    manifest_version,
    snapshot_manifest,
)

__all__ = [
    "BALANCE_COLUMNS",
    "BUCKET_TABLE_DTYPES",
    "DATASET_VERSION",
    "DEFAULT_DATASET_CONFIG",
    "HOLDOUT_REPORT_COLUMNS",
    "IDENTITY_TABLE_DTYPES",
    "IMAGES_DIR",
    "INPUT_COLUMNS",
    "MANIFEST_DTYPES",
    "MASKS_DIR",
    "RULES",
    "SPLIT_HOLDOUT",
    "SNAPSHOT_COLUMNS",
    "SPLIT_TRAIN",
    "Balance",
    "Bucket",
    "BucketLimits",
    "CropPlan",
    "DatasetConfig",
    "ExportResult",
    "HoldoutResult",
    "PreviewFiles",
    "Selection",
    "TrainingSetResult",
    "assign_holdout",
    "changed_files",
    "balance_repeats",
    "bar_chart",
    "bucket_chart",
    "bucket_limits",
    "build_training_set",
    "caption_for",
    "export_stem",
    "export_training_set",
    "folder_safe_name",
    "identity_balance_chart",
    "identity_contact_sheets",
    "kohya_folder_names",
    "make_buckets",
    "manifest_version",
    "manifest_schema",
    "mask_centroid",
    "minimum_holdout_photos",
    "photo_draw",
    "place_crop",
    "plan_crop",
    "repeats_for",
    "resolve_data_path",
    "select_samples",
    "snapshot_manifest",
    "trained_photos",
    "write_manifest",
    "unique_folder_names",
    "write_previews",
]
