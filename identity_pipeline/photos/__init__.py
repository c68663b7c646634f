"""raw_photos: what is in an album folder, and which files are usable photos (no dagster here)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pandas as pd

from identity_pipeline.photos.albums import (
    AlbumDiscovery,
    AlbumFile,
    AlbumFingerprint,
    AlbumListing,
    album_fingerprint,
    album_fingerprints,
    album_name_problem,
    discover_albums,
    list_album,
)
from identity_pipeline.photos.inspect import (
    STATUS_OK,
    InspectedPhoto,
    PhotoLimits,
    PhotoRecord,
    inspect_album,
    load_photo,
    to_rgb8,
)

RAW_PHOTO_DTYPES: dict[str, str] = {
    "photo_id": "string",
    "path": "string",
    "status": "string",
    "bytes": "Int64",
    "format": "string",
    "width": "Int64",
    "height": "Int64",
    "mode": "string",
    "exif_orientation": "Int64",
    "frames": "Int64",
}


def photos_frame(records: Sequence[PhotoRecord]) -> pd.DataFrame:
    """The ``raw_photos`` table: one row per file, fixed column order and nullable dtypes."""
    frame = pd.DataFrame([record.to_row() for record in records], columns=list(RAW_PHOTO_DTYPES))
    return frame.astype(RAW_PHOTO_DTYPES)


def status_counts(records: Sequence[PhotoRecord]) -> dict[str, int]:
    """Counts by status kind: ``ok`` and the reason family of each skip (text before '(')."""
    kinds = Counter(
        record.status if record.ok else record.status.split("(")[0].split(" of ")[0].strip()
        for record in records
    )
    return dict(sorted(kinds.items()))


__all__ = [
    "AlbumDiscovery",
    "AlbumFingerprint",
    "AlbumFile",
    "AlbumListing",
    "InspectedPhoto",
    "PhotoLimits",
    "PhotoRecord",
    "RAW_PHOTO_DTYPES",
    "STATUS_OK",
    "album_fingerprint",
    "album_fingerprints",
    "album_name_problem",
    "discover_albums",
    "inspect_album",
    "list_album",
    "load_photo",
    "photos_frame",
    "status_counts",
    "to_rgb8",
]
