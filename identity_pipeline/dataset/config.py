"""The ``dataset`` settings: captions, selection rules, holdout, balance, buckets.

A frozen dataclass with a default for every field (read from pipeline.yaml through
``identity_pipeline.settings``, which rejects unknown keys and wrong types). ``hash()`` belongs in
any cache key of the training set: changing a value changes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from identity_pipeline.settings import build_config, config_dict, stable_hash

# Bump when code changes alter the files or rows built from the same inputs and config
# (resampling, crop rule, encoding): it is part of the hash and of every output file name.
DATASET_VERSION = 1

# The masks stage's flag names (identity_pipeline.masks.config); spelled out here so this package
# does not import the masks package (and its image-model dependencies) for a few strings.
FLAG_EMPTY_MASK = "empty_mask"
FLAG_FACE_NOT_COVERED = "face_not_covered"

NAME_PLACEHOLDER = "{name}"

BalanceTarget = Literal["max", "median", "mean"]


@dataclass(frozen=True)
class DatasetConfig:
    # Captions: ``{name}`` is replaced by the identity. The solo template is used for tiles with
    # exactly one detected face (a "group photo ... and other people" caption would be false);
    # None uses the group template everywhere.
    group_caption_template: str = "A group photo of {name} and other people"
    solo_caption_template: str | None = "A photo of {name}"

    # Aspect buckets: sizes near ``target_pixels`` (1024 x 1024 ~ 1 MP), both sides multiples of
    # ``bucket_divisor``, width / height within [min_aspect, max_aspect].
    target_pixels: int = 1024 * 1024
    bucket_divisor: int = 64
    min_aspect: float = 0.5
    max_aspect: float = 2.0
    # A bucket whose area is further than this (relative) from target_pixels is not generated.
    bucket_area_tolerance: float = 0.1
    # The crop keeps the target face box grown by this fraction of the face size on every side
    # (clipped to the tile); when even the largest crop cannot, the bare face box must fit.
    face_margin: float = 0.25
    # "mask": centre the crop on the person's mask centroid (body, not just head), "face": on the
    # face box. Either way the crop is shifted as needed to contain the face and stay in the tile.
    crop_centre: Literal["mask", "face"] = "mask"

    # Selection rules, applied in this order (each reports how many samples it removed).
    include_identities: tuple[str, ...] = ()  # empty: every identity
    exclude_identities: tuple[str, ...] = ()
    min_face_size: float = 48.0  # longer side of the target face box, tile pixels
    min_face_quality: float = 0.3  # faces' heuristic quality score, 0..1
    # The masks stage's own default exclusions. Not "touches_other_face" nor
    # "other_face_overlaps_target": cheek-to-cheek group shots raise them, and the mask already
    # keeps the other person out of the loss.
    excluded_flags: tuple[str, ...] = (FLAG_EMPTY_MASK, FLAG_FACE_NOT_COVERED)
    # Crops enlarged more than this to reach their bucket teach blur; None: no limit.
    max_upscale: float | None = 4.0
    min_samples_per_identity: int = 4

    # Holdout: whole photos that are never trained on (fidelity evaluation). Each photo is held
    # out when its fixed draw from (holdout_seed, its hash) is below holdout_fraction, so new
    # photos never move old ones; identities with fewer than holdout_min_photos photos hold none
    # out, every identity keeps a train photo and holds out at least
    # holdout_photos_per_identity (topped up from photos no earlier build trained on).
    holdout_photos_per_identity: int = 1
    holdout_fraction: float = 0.1
    holdout_min_photos: int = 5
    holdout_seed: int = 0

    # Balance: train samples of rare identities are repeated towards the target identity size
    # (the largest, median or mean identity), never more than max_repeats times.
    balance_target: BalanceTarget = "max"
    max_repeats: int = 8

    # Written files.
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError("invalid DatasetConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DatasetConfig:
        """A config from plain values (YAML, JSON); lists become tuples."""
        return build_config(cls, raw, ("dataset",))

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    def hash(self) -> str:
        """A short, stable digest of every field and the dataset version."""
        return stable_hash({"dataset_version": DATASET_VERSION, **self.to_dict()})


def _problems(config: DatasetConfig) -> list[str]:
    problems = []
    for name in ("group_caption_template", "solo_caption_template"):
        template = getattr(config, name)
        if template is not None and NAME_PLACEHOLDER not in template:
            problems.append(f"{name} must contain {NAME_PLACEHOLDER}")
    if config.bucket_divisor < 1:
        problems.append("bucket_divisor must be >= 1")
    if config.target_pixels < config.bucket_divisor**2:
        problems.append("target_pixels must be at least bucket_divisor squared")
    if not 0 < config.min_aspect <= 1 <= config.max_aspect:
        problems.append("need 0 < min_aspect <= 1 <= max_aspect")
    if config.bucket_area_tolerance <= 0:
        problems.append("bucket_area_tolerance must be > 0")
    if config.face_margin < 0:
        problems.append("face_margin must be >= 0")
    if config.crop_centre not in ("mask", "face"):
        problems.append("crop_centre must be 'mask' or 'face'")
    if config.max_upscale is not None and config.max_upscale < 1:
        problems.append("max_upscale must be >= 1 (or None)")
    if config.min_samples_per_identity < 1:
        problems.append("min_samples_per_identity must be >= 1")
    if config.holdout_photos_per_identity < 0 or not 0 <= config.holdout_fraction < 1:
        problems.append("need holdout_photos_per_identity >= 0 and 0 <= holdout_fraction < 1")
    if config.holdout_min_photos < 2:
        problems.append("holdout_min_photos must be >= 2 (an identity keeps one train photo)")
    if config.balance_target not in ("max", "median", "mean"):
        problems.append("balance_target must be 'max', 'median' or 'mean'")
    if config.max_repeats < 1:
        problems.append("max_repeats must be >= 1")
    if not 1 <= config.jpeg_quality <= 100:
        problems.append("jpeg_quality must be in 1..100")
    overlap = set(config.include_identities) & set(config.exclude_identities)
    if overlap:
        problems.append(f"identities both included and excluded: {sorted(overlap)}")
    return problems


# The defaults, shared as argument defaults (a frozen dataclass, so sharing one is safe).
DEFAULT_DATASET_CONFIG = DatasetConfig()
