"""The held-out split: whole photos that are never trained on, chosen per photo by its hash.

Holdout is by photo, not by sample: every tile and every person of a held-out photo is held out,
so no crop of the same picture (another tile of a collage, the same group shot captioned for a
second person) leaks into training. ``photo_id`` is the hash of the photo's bytes, so the same
file in two albums is one photo here.

The rule is per photo: a photo is a holdout candidate when ``draw(seed, photo) <
holdout_fraction``, a fixed number in [0, 1) from its content hash. Adding photos changes no other
photo's draw, so a trained photo never becomes a holdout candidate because the album grew. Three
guards act on top, per identity, and never against that promise:

* an identity with fewer than ``holdout_min_photos`` photos holds none out (it needs them all);
  a photo is held out only when every identity in it can afford it;
* every identity keeps at least one train photo (the candidate with the highest draw trains);
* an identity with too few candidates is topped up to ``holdout_photos_per_identity`` with its
  lowest-draw photos.

The guards depend on counts, which grow with the album, so they are given the photos an earlier
build trained on (``trained_before``, from the committed manifest): those are never held out,
whatever the counts say now. Without that memory the rule is still a pure function of the photos
and only the guards' choices can differ.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
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


def photo_draw(seed: int, photo_id: str) -> float:
    """The photo's fixed draw in [0, 1): a function of the seed and the photo's content only."""
    return int(content_id(seed, photo_id, length=15), 16) / 16**15


def minimum_holdout_photos(photos: int, config: DatasetConfig) -> int:
    """The fewest photos an identity holds out: 0 below the minimum size, never all."""
    if photos < config.holdout_min_photos:
        return 0
    return min(photos - 1, config.holdout_photos_per_identity)


def trained_photos(manifest: pd.DataFrame) -> frozenset[str]:
    """The photos a manifest trains on (its train split)."""
    if manifest.empty or "photo_id" not in manifest.columns:
        return frozenset()
    return frozenset(map(str, manifest.loc[manifest["split"] == SPLIT_TRAIN, "photo_id"]))


def assign_holdout(
    frame: pd.DataFrame, config: DatasetConfig, trained_before: Iterable[str] = ()
) -> HoldoutResult:
    """Split ``frame`` (columns identity, photo_id) into train and holdout photos; photos in
    ``trained_before`` stay in train."""
    trained = frozenset(map(str, trained_before))
    photos_of: dict[str, set[str]] = {}
    identities_of: dict[str, set[str]] = {}
    for identity, photo in zip(frame["identity"], frame["photo_id"], strict=True):
        photos_of.setdefault(str(identity), set()).add(str(photo))
        identities_of.setdefault(str(photo), set()).add(str(identity))
    draw = {photo: photo_draw(config.holdout_seed, photo) for photo in identities_of}
    eligible = {
        identity
        for identity, photos in photos_of.items()
        if len(photos) >= config.holdout_min_photos
    }

    def can_hold(photo: str) -> bool:
        return photo not in trained and identities_of[photo] <= eligible

    held = {
        photo
        for photo in identities_of
        if draw[photo] < config.holdout_fraction and can_hold(photo)
    }
    # Every identity keeps a train photo: its highest-draw photo trains if all were held out.
    for identity in sorted(photos_of):
        if photos_of[identity] <= held:
            held.discard(max(photos_of[identity], key=lambda photo: (draw[photo], photo)))
    # Top up identities below their minimum, lowest draw first, never emptying anyone's train.
    held_per_identity = Counter(person for photo in held for person in identities_of[photo])
    wanted = {
        identity: minimum_holdout_photos(len(photos), config)
        for identity, photos in photos_of.items()
    }
    for identity in sorted(photos_of, key=lambda name: (len(photos_of[name]), name)):
        ranked = sorted(photos_of[identity] - held, key=lambda photo: (draw[photo], photo))
        for photo in ranked:
            if held_per_identity[identity] >= wanted[identity]:
                break
            people = identities_of[photo]
            keeps_train = all(len(photos_of[person] - held - {photo}) >= 1 for person in people)
            if can_hold(photo) and keeps_train:
                held.add(photo)
                held_per_identity.update(people)

    split = (
        frame["photo_id"]
        .astype(str)
        .map(lambda photo: SPLIT_HOLDOUT if photo in held else SPLIT_TRAIN)
    )
    report = _report(frame, split, photos_of, wanted, held, trained, config)
    return HoldoutResult(split=split, holdout_photo_ids=frozenset(held), report=report)


def _report(
    frame: pd.DataFrame,
    split: pd.Series,
    photos_of: dict[str, set[str]],
    wanted: dict[str, int],
    held: set[str],
    trained: frozenset[str],
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
                "note": _note(photos, wanted[identity], holdout_photos, trained, config),
            }
        )
    if not rows:
        return pd.DataFrame(
            {name: pd.Series(dtype=dtype) for name, dtype in HOLDOUT_REPORT_COLUMNS.items()}
        )
    return pd.DataFrame(rows).astype(HOLDOUT_REPORT_COLUMNS)


def _note(
    photos: set[str], wanted: int, held: int, trained: frozenset[str], config: DatasetConfig
) -> str:
    if len(photos) < config.holdout_min_photos:
        return f"no holdout: {len(photos)} photo(s), fewer than {config.holdout_min_photos}"
    if held >= wanted:
        return ""
    if wanted and photos <= trained:
        return "no holdout: every photo was trained on by an earlier build"
    return (
        f"only {held} of {wanted} holdout photo(s): its other photos were trained on before "
        "or show people who cannot lose more training photos"
    )
