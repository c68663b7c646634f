"""Small contact sheets of clusters for asset metadata (``previews.inline_markdown_image``).

Per cluster: its representative faces first, then the others by closeness to the centroid,
suspected outliers last and captioned as such, so one glance shows what the cluster is and
what may not belong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd
from PIL import Image

from identity_pipeline.labeling.crops import placeholder
from identity_pipeline.previews import SheetItem, contact_sheet

SHEET_CELL_PX = 72


def cluster_sheet(
    table: pd.DataFrame,
    cluster_id: int,
    crop: Callable[[str], Image.Image | None],
    faces: int = 8,
    cell: int = SHEET_CELL_PX,
) -> Image.Image:
    """One row-ish sheet of up to ``faces`` crops of one cluster of a face_clusters table."""
    rows = table[table["cluster_id"] == cluster_id]
    ordered = rows.sort_values(
        ["is_outlier", "is_representative", "cosine_to_centroid"],
        ascending=[True, False, False],
    )
    kept, outliers = ordered[~ordered["is_outlier"]], ordered[ordered["is_outlier"]]
    # Keep one slot for an outlier when there is one: that is what a person should look at.
    slots_for_kept = faces - min(1, len(outliers))
    chosen = pd.concat([kept.head(slots_for_kept), outliers]).head(faces)
    items = [
        SheetItem(
            crop(str(row.face_id)) or placeholder(cell),
            "outlier" if row.is_outlier else f"{row.cosine_to_centroid:.2f}",
        )
        for row in chosen.itertuples(index=False)
    ]
    return contact_sheet(items, cell=cell, columns=faces)


def cluster_sheets(
    table: pd.DataFrame,
    crop: Callable[[str], Image.Image | None],
    clusters: int = 12,
    faces: int = 8,
    names: Mapping[int, str] | None = None,
) -> list[tuple[int, str, Image.Image]]:
    """(cluster_id, title, sheet) for the ``clusters`` biggest clusters of 2+ faces."""
    sizes = table.groupby("cluster_id").size()
    biggest = sizes[sizes >= 2].sort_values(ascending=False, kind="stable").head(clusters)
    sheets = []
    for cluster_id, size in biggest.items():
        name = (names or {}).get(int(cluster_id))
        title = f"cluster {cluster_id}: {size} faces" + (f", {name}" if name else "")
        sheets.append((int(cluster_id), title, cluster_sheet(table, int(cluster_id), crop, faces)))
    return sheets
