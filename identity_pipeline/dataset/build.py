"""The training set: identity masks in, bucket-sized crops and a manifest out.

``build_training_set`` runs selection, the holdout split, balancing, then crops and resizes every
kept sample into its bucket. Files are content-addressed (named by a hash of the sample, its crop
and the bytes of its source image and mask) and written once, atomically: a re-run reuses what it
already wrote, and a changed source gets a new file instead of overwriting one a reader may hold.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from identity_pipeline.collage.boxes import Box as PixelBox
from identity_pipeline.dataset.balance import Balance, balance_repeats
from identity_pipeline.dataset.buckets import (
    Bucket,
    CropPlan,
    box_centre,
    make_buckets,
    mask_centroid,
    place_crop,
)
from identity_pipeline.dataset.captions import caption_for
from identity_pipeline.dataset.config import DATASET_VERSION, DEFAULT_DATASET_CONFIG, DatasetConfig
from identity_pipeline.dataset.selection import Selection, face_box, select_samples
from identity_pipeline.dataset.split import (
    SPLIT_HOLDOUT,
    SPLIT_TRAIN,
    HoldoutResult,
    assign_holdout,
)
from identity_pipeline.storage import atomic_write_table, content_id, sha256_bytes, write_file_once

IMAGES_DIR = "images"
MASKS_DIR = "masks"

# The trainer's contract: exactly these columns, in this order, with these dtypes.
MANIFEST_DTYPES: dict[str, str] = {
    "sample_id": "string",
    "image_path": "string",
    "mask_path": "string",
    "caption": "string",
    "identity": "string",
    "repeats": "int64",
    "bucket_width": "int64",
    "bucket_height": "int64",
    "split": "string",
    "album": "string",
    "photo_id": "string",
    "tile_id": "string",
    "face_id": "string",
    "sample_key": "string",
    "crop_x0": "int64",
    "crop_y0": "int64",
    "crop_x1": "int64",
    "crop_y1": "int64",
}

IDENTITY_TABLE_DTYPES: dict[str, str] = {
    "identity": "string",
    "input_samples": "int64",
    "selected_samples": "int64",
    "train_samples": "int64",
    "holdout_samples": "int64",
    "train_photos": "int64",
    "holdout_photos": "int64",
    "repeats": "int64",
    "effective_samples": "int64",
    "share_before": "float64",
    "share_after": "float64",
    "repeat_capped": "bool",
    "holdout_note": "string",
}

BUCKET_TABLE_DTYPES: dict[str, str] = {
    "bucket": "string",
    "bucket_width": "int64",
    "bucket_height": "int64",
    "aspect": "float64",
    "train_samples": "int64",
    "holdout_samples": "int64",
    "effective_samples": "int64",
}


@dataclass(frozen=True)
class TrainingSetResult:
    manifest: pd.DataFrame  # MANIFEST_DTYPES, sorted by sample_id
    removed_by_rule: dict[str, int]  # selection rules in order, zeros included
    removed: pd.DataFrame  # sample_key, album, photo_id, tile_id, identity, rule
    identities: pd.DataFrame  # IDENTITY_TABLE_DTYPES: per identity, before and after everything
    buckets: pd.DataFrame  # BUCKET_TABLE_DTYPES: every bucket of the set, used or not
    holdout: HoldoutResult
    balance: Balance
    bucket_set: tuple[Bucket, ...]
    config_hash: str
    files_written: int  # image + mask files written by this build (the rest were reused)

    def file_names(self) -> dict[str, set[str]]:
        """{sub-folder of out_dir: file names the manifest uses}, for pruning stale files."""
        return {
            IMAGES_DIR: {Path(path).name for path in self.manifest["image_path"]},
            MASKS_DIR: {Path(path).name for path in self.manifest["mask_path"]},
        }


@dataclass(frozen=True)
class _Rendered:
    sample_id: str
    crop: PixelBox
    image_path: Path
    mask_path: Path
    written: int


def build_training_set(
    samples: pd.DataFrame,
    data_root: Path,
    out_dir: Path,
    config: DatasetConfig = DEFAULT_DATASET_CONFIG,
    workers: int = 1,
    trained_before: frozenset[str] = frozenset(),
) -> TrainingSetResult:
    """Select, split, balance and render ``samples`` (the identity mask tables, concatenated).

    Input paths are relative to ``data_root``. Crops go to ``out_dir/images`` (RGB JPEG) and
    ``out_dir/masks`` (8-bit PNG); the manifest names them relative to ``data_root`` (absolute
    when ``out_dir`` lies outside it). The manifest is returned, not written: see
    ``write_manifest``. ``workers`` threads decode, resize and encode (Pillow releases the GIL);
    the result does not depend on it. ``trained_before``: photos an earlier build trained on,
    which stay in train (``split.assign_holdout``).
    """
    data_root = Path(data_root).resolve()
    out_dir = Path(out_dir).resolve()
    bucket_set = make_buckets(
        config.target_pixels,
        config.bucket_divisor,
        config.min_aspect,
        config.max_aspect,
        config.bucket_area_tolerance,
    )
    selection = select_samples(samples, config, bucket_set, data_root)
    kept = selection.kept
    holdout = assign_holdout(kept, config, trained_before)
    kept = kept.assign(split=holdout.split.to_numpy())
    train_counts = kept.loc[kept["split"] == SPLIT_TRAIN, "identity"].value_counts()
    balance = balance_repeats(
        {str(name): int(count) for name, count in train_counts.items()},
        config.balance_target,
        config.max_repeats,
    )

    rows = [row for _, row in kept.iterrows()]

    def render(row: pd.Series) -> _Rendered:
        return _render(row, selection.plans[str(row["sample_key"])], data_root, out_dir, config)

    if workers > 1 and len(rows) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            rendered = list(pool.map(render, rows))
    else:
        rendered = [render(row) for row in rows]

    manifest = _manifest(rows, rendered, selection, balance, data_root, config)
    return TrainingSetResult(
        manifest=manifest,
        removed_by_rule=selection.removed_by_rule,
        removed=selection.removed,
        identities=_identity_table(samples, selection, holdout, balance),
        buckets=_bucket_table(manifest, bucket_set),
        holdout=holdout,
        balance=balance,
        bucket_set=bucket_set,
        config_hash=config.hash(),
        files_written=sum(item.written for item in rendered),
    )


def _render(
    row: pd.Series, plan: CropPlan, data_root: Path, out_dir: Path, config: DatasetConfig
) -> _Rendered:
    image_bytes = (data_root / str(row["image_path"])).read_bytes()
    mask_bytes = (data_root / str(row["mask_path"])).read_bytes()
    with Image.open(io.BytesIO(mask_bytes)) as opened:
        mask = opened.convert("L")
    width, height = int(row["tile_width"]), int(row["tile_height"])
    centre = mask_centroid(np.asarray(mask)) if config.crop_centre == "mask" else None
    crop = place_crop(plan, width, height, centre or box_centre(face_box(row)))
    bucket = plan.bucket
    sample_id = content_id(row["sample_key"], *crop.as_list(), bucket.width, bucket.height)
    file_key = content_id(
        sample_id,
        sha256_bytes(image_bytes),
        sha256_bytes(mask_bytes),
        DATASET_VERSION,
        config.jpeg_quality,
    )
    image_path = out_dir / IMAGES_DIR / f"{file_key}.jpg"
    mask_path = out_dir / MASKS_DIR / f"{file_key}.png"
    size = (bucket.width, bucket.height)
    box = tuple(crop.as_list())

    def encode_image(handle: BinaryIO) -> None:
        with Image.open(io.BytesIO(image_bytes)) as opened:
            resized = opened.convert("RGB").resize(size, Image.Resampling.LANCZOS, box=box)
        # 4:4:4 chroma: subsampling would soften skin and hair edges the LoRA is meant to learn.
        resized.save(handle, "JPEG", quality=config.jpeg_quality, subsampling=0)

    def encode_mask(handle: BinaryIO) -> None:
        mask.resize(size, Image.Resampling.BILINEAR, box=box).save(handle, "PNG")

    written = int(not image_path.exists()) + int(not mask_path.exists())
    write_file_once(image_path, encode_image)
    write_file_once(mask_path, encode_mask)
    return _Rendered(sample_id, crop, image_path, mask_path, written)


def relative_to_root(path: Path, data_root: Path) -> str:
    """``path`` relative to the data root (POSIX), or absolute when it lies outside it."""
    try:
        return path.relative_to(data_root).as_posix()
    except ValueError:
        return path.as_posix()


def resolve_data_path(data_root: Path, path: object) -> Path:
    """A manifest path as a file: relative ones are under the data root (as the trainer reads)."""
    candidate = Path(str(path))
    return candidate if candidate.is_absolute() else Path(data_root) / candidate


def _manifest(
    rows: list[pd.Series],
    rendered: list[_Rendered],
    selection: Selection,
    balance: Balance,
    data_root: Path,
    config: DatasetConfig,
) -> pd.DataFrame:
    records = []
    for row, item in zip(rows, rendered, strict=True):
        plan = selection.plans[str(row["sample_key"])]
        identity = str(row["identity"])
        is_train = row["split"] == SPLIT_TRAIN
        records.append(
            {
                "sample_id": item.sample_id,
                "image_path": relative_to_root(item.image_path, data_root),
                "mask_path": relative_to_root(item.mask_path, data_root),
                "caption": caption_for(identity, int(row["faces_in_tile"]), config),
                "identity": identity,
                # Holdout samples are never trained on; 1 keeps the column valid (>= 1).
                "repeats": balance.repeats.get(identity, 1) if is_train else 1,
                "bucket_width": plan.bucket.width,
                "bucket_height": plan.bucket.height,
                "split": SPLIT_TRAIN if is_train else SPLIT_HOLDOUT,
                "album": row["album"],
                "photo_id": row["photo_id"],
                "tile_id": row["tile_id"],
                "face_id": row["face_id"],
                "sample_key": row["sample_key"],
                "crop_x0": item.crop.x0,
                "crop_y0": item.crop.y0,
                "crop_x1": item.crop.x1,
                "crop_y1": item.crop.y1,
            }
        )
    return manifest_frame(records)


def manifest_frame(records: Iterable[dict[str, object]]) -> pd.DataFrame:
    """Manifest rows as a frame with exactly the contract's columns and dtypes."""
    frame = pd.DataFrame(list(records), columns=list(MANIFEST_DTYPES))
    frame = frame.astype(MANIFEST_DTYPES)
    return frame.sort_values("sample_id", kind="stable").reset_index(drop=True)


def manifest_schema() -> pa.Schema:
    types = {"string": pa.string(), "int64": pa.int64()}
    return pa.schema([(name, types[dtype]) for name, dtype in MANIFEST_DTYPES.items()])


def write_manifest(manifest: pd.DataFrame, destination: Path) -> Path:
    """The manifest as Parquet with the contract's schema, written atomically."""
    table = pa.Table.from_pandas(
        manifest[list(MANIFEST_DTYPES)], schema=manifest_schema(), preserve_index=False
    )
    return atomic_write_table(destination, table)


def _identity_table(
    samples: pd.DataFrame, selection: Selection, holdout: HoldoutResult, balance: Balance
) -> pd.DataFrame:
    input_counts = samples["identity"].fillna("").astype(str).value_counts()
    selected_counts = selection.kept["identity"].astype(str).value_counts()
    report = holdout.report.set_index("identity")
    balanced = balance.table.set_index("identity")
    rows = []
    for identity in sorted(set(input_counts.index) | set(selected_counts.index)):
        in_report = identity in report.index
        in_balance = identity in balanced.index
        rows.append(
            {
                "identity": identity,
                "input_samples": int(input_counts.get(identity, 0)),
                "selected_samples": int(selected_counts.get(identity, 0)),
                "train_samples": int(report.at[identity, "train_samples"]) if in_report else 0,
                "holdout_samples": int(report.at[identity, "holdout_samples"]) if in_report else 0,
                "train_photos": int(report.at[identity, "train_photos"]) if in_report else 0,
                "holdout_photos": int(report.at[identity, "holdout_photos"]) if in_report else 0,
                "repeats": int(balanced.at[identity, "repeats"]) if in_balance else 0,
                "effective_samples": (
                    int(balanced.at[identity, "effective_samples"]) if in_balance else 0
                ),
                "share_before": float(balanced.at[identity, "share_before"]) if in_balance else 0.0,
                "share_after": float(balanced.at[identity, "share_after"]) if in_balance else 0.0,
                "repeat_capped": bool(balanced.at[identity, "capped"]) if in_balance else False,
                "holdout_note": str(report.at[identity, "note"]) if in_report else "",
            }
        )
    return pd.DataFrame(rows, columns=list(IDENTITY_TABLE_DTYPES)).astype(IDENTITY_TABLE_DTYPES)


def _bucket_table(manifest: pd.DataFrame, bucket_set: tuple[Bucket, ...]) -> pd.DataFrame:
    rows = []
    for bucket in bucket_set:
        in_bucket = manifest[
            (manifest["bucket_width"] == bucket.width)
            & (manifest["bucket_height"] == bucket.height)
        ]
        train = in_bucket[in_bucket["split"] == SPLIT_TRAIN]
        rows.append(
            {
                "bucket": bucket.label,
                "bucket_width": bucket.width,
                "bucket_height": bucket.height,
                "aspect": round(bucket.aspect, 4),
                "train_samples": len(train),
                "holdout_samples": len(in_bucket) - len(train),
                "effective_samples": int(train["repeats"].sum()),
            }
        )
    return pd.DataFrame(rows, columns=list(BUCKET_TABLE_DTYPES)).astype(BUCKET_TABLE_DTYPES)
