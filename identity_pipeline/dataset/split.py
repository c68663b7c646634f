"""The held-out split: whole photos per identity that are never trained on.

Holdout is by photo, not by sample: every tile and every person of a held-out photo is held out,
so no crop of the same picture (another tile of a collage, the same group shot captioned for a
second person) leaks into training. ``photo_id`` is the hash of the photo's bytes, so the same
file in two albums is one photo here.

Picking is deterministic: each identity's photos are ranked by a hash of (seed, identity, photo),
and identities with the fewest photos choose first (they have the least room). A photo is only
held out when every identity in it still wants holdout photos; identities too small for a holdout
therefore also protect the photos they appear in.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from identity_pipeline.dataset.config import DatasetConfig
from identity_pipeline.storage import content_id

SPLIT_TRAIN = "train"
SPLIT_HOLDOUT = "holdout"

HOLDOUT_REPORT_COLUMNS: dict[str, str] = {
    "identity": "string",
    "photos": "int64",
    "holdout_wanted": "int64",
    "holdout_photos": "int64",
    "train_photos": "int64",
    "holdout_samples": "int64",
    "train_samples": "int64",
    "note": "string",
}


@dataclass(frozen=True)
class HoldoutResult:
    split: pd.Series  # SPLIT_TRAIN / SPLIT_HOLDOUT, aligned with the input frame's index
    holdout_photo_ids: frozenset[str]
    report: pd.DataFrame  # one row per identity, HOLDOUT_REPORT_COLUMNS


def wanted_holdout_photos(photos: int, config: DatasetConfig) -> int:
    """How many of an identity's ``photos`` to hold out: 0 below the minimum, never all."""
    if photos < config.holdout_min_photos:
        return 0
    wanted = max(config.holdout_photos_per_identity, math.floor(config.holdout_fraction * photos))
    return min(photos - 1, wanted)


def assign_holdout(frame: pd.DataFrame, config: DatasetConfig) -> HoldoutResult:
    """Split ``frame`` (columns identity, photo_id) into train and holdout photos."""
    photos_of: dict[str, set[str]] = {}
    identities_of: dict[str, set[str]] = {}
    for identity, photo in zip(frame["identity"], frame["photo_id"], strict=True):
        photos_of.setdefault(str(identity), set()).add(str(photo))
        identities_of.setdefault(str(photo), set()).add(str(identity))
    wanted = {
        identity: wanted_holdout_photos(len(photos), config)
        for identity, photos in photos_of.items()
    }

    held: set[str] = set()
    held_per_identity: Counter[str] = Counter()
    for identity in sorted(photos_of, key=lambda name: (len(photos_of[name]), name)):
        candidates = sorted(
            photos_of[identity] - held,
            key=lambda photo, who=identity: content_id(config.holdout_seed, who, photo),
        )
        for photo in candidates:
            if held_per_identity[identity] >= wanted[identity]:
                break
            people = identities_of[photo]
            if all(held_per_identity[person] < wanted[person] for person in people):
                held.add(photo)
                held_per_identity.update(people)

    split = (
        frame["photo_id"]
        .astype(str)
        .map(lambda photo: SPLIT_HOLDOUT if photo in held else SPLIT_TRAIN)
    )
    report = _report(frame, split, photos_of, wanted, held, config)
    return HoldoutResult(split=split, holdout_photo_ids=frozenset(held), report=report)


def _report(
    frame: pd.DataFrame,
    split: pd.Series,
    photos_of: dict[str, set[str]],
    wanted: dict[str, int],
    held: set[str],
    config: DatasetConfig,
) -> pd.DataFrame:
    rows = []
    is_holdout = split == SPLIT_HOLDOUT
    for identity in sorted(photos_of):
        photos = photos_of[identity]
        holdout_photos = len(photos & held)
        of_identity = frame["identity"] == identity
        rows.append(
            {
                "identity": identity,
                "photos": len(photos),
                "holdout_wanted": wanted[identity],
                "holdout_photos": holdout_photos,
                "train_photos": len(photos) - holdout_photos,
                "holdout_samples": int((of_identity & is_holdout).sum()),
                "train_samples": int((of_identity & ~is_holdout).sum()),
                "note": _note(len(photos), wanted[identity], holdout_photos, config),
            }
        )
    if not rows:
        return pd.DataFrame(
            {name: pd.Series(dtype=dtype) for name, dtype in HOLDOUT_REPORT_COLUMNS.items()}
        )
    return pd.DataFrame(rows).astype(HOLDOUT_REPORT_COLUMNS)


def _note(photos: int, wanted: int, held: int, config: DatasetConfig) -> str:
    if photos < config.holdout_min_photos:
        return f"no holdout: {photos} photo(s), fewer than {config.holdout_min_photos}"
    if wanted == 0:
        return "no holdout: disabled by config"
    if held < wanted:
        return (
            f"only {held} of {wanted} holdout photo(s): its other photos show people "
            "who cannot lose more training photos"
        )
    return ""
