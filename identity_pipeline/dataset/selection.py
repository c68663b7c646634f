"""Which samples of the identity masks become training samples, and why the others do not.

Rules run in a fixed order and each sample is counted against the first rule that removes it, so
the counts add up to the samples removed. The identity-size rule runs last: an identity is judged
by the samples that survived everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from identity_pipeline.dataset.buckets import Bucket, CropPlan, plan_crop
from identity_pipeline.dataset.config import DatasetConfig

INPUT_COLUMNS: dict[str, str] = {
    "sample_key": "string",
    "album": "string",
    "tile_id": "string",
    "photo_id": "string",
    "face_id": "string",
    "identity": "string",
    "image_path": "string",
    "mask_path": "string",
    "tile_width": "int64",
    "tile_height": "int64",
    "face_x0": "float64",
    "face_y0": "float64",
    "face_x1": "float64",
    "face_y1": "float64",
    "face_size": "float64",
    "face_quality": "float64",
    "faces_in_tile": "int64",
    "flags": "string",
}

RULE_UNNAMED = "unnamed_identity"
RULE_NOT_INCLUDED = "not_in_include_list"
RULE_EXCLUDED = "in_exclude_list"
RULE_FACE_SIZE = "face_too_small"
RULE_QUALITY = "face_quality_too_low"
RULE_FLAGS = "flagged_mask"
RULE_UNREADABLE = "unreadable_input"
RULE_NO_CROP = "face_does_not_fit_any_bucket"
RULE_UPSCALE = "upscale_too_large"
RULE_FEW_SAMPLES = "too_few_samples_for_identity"
RULES = (
    RULE_UNNAMED,
    RULE_NOT_INCLUDED,
    RULE_EXCLUDED,
    RULE_FACE_SIZE,
    RULE_QUALITY,
    RULE_FLAGS,
    RULE_UNREADABLE,
    RULE_NO_CROP,
    RULE_UPSCALE,
    RULE_FEW_SAMPLES,
)


@dataclass(frozen=True)
class Selection:
    kept: pd.DataFrame  # input rows that stay, input order, normalised dtypes
    removed: pd.DataFrame  # sample_key, album, photo_id, tile_id, identity, rule
    removed_by_rule: dict[str, int]  # every rule in order, zeros included
    plans: dict[str, CropPlan]  # by sample_key, for every kept row


def normalise_input(samples: pd.DataFrame) -> pd.DataFrame:
    """The input table with the contract's columns checked and their dtypes fixed."""
    missing = [column for column in INPUT_COLUMNS if column not in samples.columns]
    if missing:
        raise ValueError(f"identity mask table lacks column(s): {', '.join(missing)}")
    frame = samples.reset_index(drop=True).copy()
    frame["flags"] = frame["flags"].fillna("")
    frame = frame.astype(INPUT_COLUMNS)
    duplicated = frame["sample_key"][frame["sample_key"].duplicated()]
    if not duplicated.empty:
        raise ValueError(f"sample_key repeats: {sorted(set(duplicated))[:5]}")
    return frame


def parse_flags(flags: object) -> frozenset[str]:
    if not isinstance(flags, str):
        return frozenset()
    return frozenset(flag.strip() for flag in flags.split(",") if flag.strip())


def face_box(row: pd.Series) -> tuple[float, float, float, float]:
    return (
        float(row["face_x0"]),
        float(row["face_y0"]),
        float(row["face_x1"]),
        float(row["face_y1"]),
    )


def select_samples(
    samples: pd.DataFrame,
    config: DatasetConfig,
    buckets: tuple[Bucket, ...],
    data_root: Path | None = None,
) -> Selection:
    """Apply every rule in ``RULES`` order. ``data_root`` None skips the file check."""
    frame = normalise_input(samples)
    removed_parts: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    plans: dict[str, CropPlan] = {}

    def apply(rule: str, removes: Callable[[pd.DataFrame], pd.Series]) -> None:
        nonlocal frame
        if frame.empty:
            counts[rule] = 0
            return
        hit = removes(frame).fillna(False).astype(bool).to_numpy()
        counts[rule] = int(hit.sum())
        if hit.any():
            removed_parts.append(frame.loc[hit, list(_REMOVED_COLUMNS)].assign(rule=rule))
            frame = frame.loc[~hit].reset_index(drop=True)

    included = set(config.include_identities)
    excluded = set(config.exclude_identities)
    excluded_flags = set(config.excluded_flags)
    apply(RULE_UNNAMED, lambda f: f["identity"].isna() | (f["identity"].str.strip() == ""))
    apply(RULE_NOT_INCLUDED, lambda f: ~f["identity"].isin(included) if included else _none(f))
    apply(RULE_EXCLUDED, lambda f: f["identity"].isin(excluded))
    apply(RULE_FACE_SIZE, lambda f: ~(f["face_size"] >= config.min_face_size))
    apply(RULE_QUALITY, lambda f: ~(f["face_quality"] >= config.min_face_quality))
    apply(RULE_FLAGS, lambda f: f["flags"].map(lambda v: bool(parse_flags(v) & excluded_flags)))
    if data_root is not None:
        apply(RULE_UNREADABLE, lambda f: ~_rows(f, lambda row: _inputs_readable(row, data_root)))
    else:
        counts[RULE_UNREADABLE] = 0

    def plan_row(row: pd.Series) -> bool:
        plan = plan_crop(
            int(row["tile_width"]),
            int(row["tile_height"]),
            face_box(row),
            buckets,
            config.face_margin,
        )
        if plan is not None:
            plans[str(row["sample_key"])] = plan
        return plan is not None

    apply(RULE_NO_CROP, lambda f: ~_rows(f, plan_row))
    limit = config.max_upscale
    apply(
        RULE_UPSCALE,
        lambda f: f["sample_key"].map(lambda key: limit is not None and plans[key].upscale > limit),
    )
    apply(
        RULE_FEW_SAMPLES,
        lambda f: (
            f.groupby("identity")["sample_key"].transform("size") < config.min_samples_per_identity
        ),
    )

    kept_keys = set(frame["sample_key"])
    removed = (
        pd.concat(removed_parts, ignore_index=True)
        if removed_parts
        else pd.DataFrame(
            {column: pd.Series(dtype="string") for column in (*_REMOVED_COLUMNS, "rule")}
        )
    )
    return Selection(
        kept=frame,
        removed=removed.astype({"rule": "string"}),
        removed_by_rule={rule: counts.get(rule, 0) for rule in RULES},
        plans={key: plan for key, plan in plans.items() if key in kept_keys},
    )


_REMOVED_COLUMNS = ("sample_key", "album", "photo_id", "tile_id", "identity")


def _none(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(False, index=frame.index)


def _rows(frame: pd.DataFrame, test: Callable[[pd.Series], bool]) -> pd.Series:
    return pd.Series([bool(test(row)) for _, row in frame.iterrows()], index=frame.index)


def _inputs_readable(row: pd.Series, data_root: Path) -> bool:
    """Both files open as images of the tile's size (headers only: decoding comes later)."""
    expected = (int(row["tile_width"]), int(row["tile_height"]))
    for relative in (row["image_path"], row["mask_path"]):
        try:
            with Image.open(data_root / str(relative)) as image:
                if image.size != expected:
                    return False
        except (OSError, UnidentifiedImageError, ValueError):
            return False
    return True
