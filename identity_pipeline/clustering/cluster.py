"""Faces of one person together: HDBSCAN on good faces, then a second round that merges and
attaches, and never puts two faces of one tile in one cluster.

Round 1 clusters only good faces (sharp, big enough), with HDBSCAN's leaf selection: many small,
pure clusters, since a blurry or tiny face must never bridge two people. Clusters holding two
faces of one tile are split (cannot-link); members far from the other members are set aside.
Round 2 merges clusters whose average linkage agrees (one person split by pose, glasses, age),
attaches leftover faces only when they are confidently closest to one cluster centroid (a bar
and a margin over the runner-up), lets the good leftovers that are still alone pair up among
themselves, and finally attaches low-quality faces with their own bar, against clusters they
could not shape. Every face ends in exactly one cluster; a face nobody claimed is a cluster of
one (a singleton), so cluster ids are never -1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from identity_pipeline.clustering.config import ClusterConfig, load_cluster_config
from identity_pipeline.clustering.constraints import (
    attach_with_cannot_link,
    has_tile_conflict,
    merge_by_average_linkage,
    split_conflicting_group,
    unit_rows,
)

# How a face got its cluster (the ``round`` column).
ALONE = 0  # nobody claimed it: a singleton
ROUND_ONE = 1  # an HDBSCAN cluster member (after conflict splits and purification)
ATTACHED = 2  # joined in round 2: a leftover confidently close to one cluster, or a new pair

ASSIGNMENT_DTYPES: dict[str, object] = {
    "face_id": "string",
    "cluster_id": "int64",
    "round": "int8",
    "good_quality": "bool",
    "cosine_to_centroid": "float32",
    "is_outlier": "bool",
    "is_representative": "bool",
}

# List columns are object columns of lists/arrays in pandas (ArrowDtype lists do not survive a
# Parquet round trip through pandas metadata) and typed lists in Arrow: see ``arrow_table``.
LIST_COLUMN_TYPES: dict[str, pa.DataType] = {
    "representative_face_ids": pa.list_(pa.string()),
    "outlier_face_ids": pa.list_(pa.string()),
    "embedding": pa.list_(pa.float32()),
}

CLUSTER_DTYPES: dict[str, object] = {
    "cluster_id": "int64",
    "size": "int64",
    "n_photos": "int64",
    "n_tiles": "int64",
    "n_round_one": "int64",
    "n_attached": "int64",
    "n_merged": "int64",  # round-1 clusters merged into this one (0 for singletons)
    "mean_intra_cosine": "float32",  # mean over member pairs; NaN for singletons
    "min_cosine_to_centroid": "float32",
    "quality_mean": "float32",
    "quality_min": "float32",
    "quality_max": "float32",
    "quality_std": "float32",
    "n_outliers": "int64",
    "representative_face_ids": "object",
    "outlier_face_ids": "object",
}

REQUIRED_FACE_COLUMNS = ("face_id", "tile_id", "embedding")


@dataclass(frozen=True)
class ClusteringResult:
    """``assignments``: one row per face (``ASSIGNMENT_DTYPES``), ordered by cluster then
    closeness to the centroid. ``clusters``: one row per cluster (``CLUSTER_DTYPES``), biggest
    first; cluster ids are 0.. in that order."""

    assignments: pd.DataFrame
    clusters: pd.DataFrame
    config: ClusterConfig
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Groups:
    """Clusters under construction: lists of face indices, and how many round-1 parts each has."""

    members: list[np.ndarray]
    parts: list[int]


def embeddings_of(faces: pd.DataFrame) -> np.ndarray:
    """The ``embedding`` column as ``(N, D)`` float64 unit rows (re-normalised defensively).

    Accepts the faces table's convention (an object column of float32 arrays) and Arrow lists.
    """
    if faces.empty:
        return np.zeros((0, 0))
    rows = [None if v is None else np.asarray(v, dtype=np.float64) for v in faces["embedding"]]
    missing = sum(row is None or row.size == 0 for row in rows)
    if missing:
        raise ValueError(f"{missing} face(s) have no embedding")
    lengths = {row.size for row in rows}  # type: ignore[union-attr]
    if len(lengths) != 1:
        raise ValueError(f"embeddings have different lengths: {sorted(lengths)}")
    return unit_rows(np.stack(rows))  # type: ignore[arg-type]


def backend_of(faces: pd.DataFrame) -> str:
    """The one backend of a faces table; vectors of different backends are not comparable."""
    if "backend" not in faces.columns or faces.empty:
        raise ValueError("the faces table has no 'backend' column: pass a ClusterConfig")
    spaces = faces[[c for c in ("backend", "model_sha256") if c in faces.columns]].drop_duplicates()
    if len(spaces) > 1:
        listed = ", ".join(str(v) for v in spaces["backend"].tolist())
        raise ValueError(
            f"faces from several embedding spaces cannot be clustered together: {listed}"
        )
    return str(spaces["backend"].iloc[0])


def config_for_faces(faces: pd.DataFrame, **overrides: Any) -> ClusterConfig:
    """The thresholds of the table's embedding space (the shipped section of its backend) with
    ``overrides`` (the ``clustering`` settings); an empty table has no backend and needs none."""
    if faces.empty:
        return ClusterConfig(**overrides)
    return load_cluster_config(backend_of(faces), **overrides)


def _check_faces(faces: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_FACE_COLUMNS if c not in faces.columns]
    if missing:
        raise ValueError(f"the faces table lacks column(s) {missing}")


def unique_faces(faces: pd.DataFrame) -> pd.DataFrame:
    """One row per face_id, sorted by it. A face id is a hash of the tile's content and the box,
    so a photo copied into two albums gives the same face twice: it is one face (the row of the
    first album by name is kept), and counting it twice would make a person out of a copy."""
    keys = ["face_id", "album"] if "album" in faces.columns else ["face_id"]
    ordered = faces.sort_values(keys, kind="stable", na_position="last")
    return ordered.drop_duplicates("face_id").reset_index(drop=True)


def _good_faces(faces: pd.DataFrame, config: ClusterConfig) -> np.ndarray:
    good = np.ones(len(faces), dtype=bool)
    if "quality" in faces.columns:
        good &= faces["quality"].fillna(0).to_numpy(dtype=np.float64) >= config.min_quality
    if "face_size" in faces.columns:
        good &= faces["face_size"].fillna(0).to_numpy(dtype=np.float64) >= config.min_face_px
    return good


def _hdbscan_labels(vectors: np.ndarray, config: ClusterConfig) -> np.ndarray:
    """HDBSCAN leaf clusters; Euclidean distance on unit vectors orders pairs like cosine."""
    if len(vectors) < max(config.min_cluster_size, config.min_samples + 1):
        return np.full(len(vectors), -1, dtype=np.int64)
    import hdbscan  # slow import (numba-free but large); only when there is work

    clusterer = hdbscan.HDBSCAN(
        min_cluster_size=config.min_cluster_size,
        min_samples=config.min_samples,
        metric="euclidean",
        cluster_selection_method="leaf",
        approx_min_span_tree=False,  # exact: the same input gives the same clusters
        core_dist_n_jobs=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clusterer.fit_predict(vectors).astype(np.int64)


def leave_one_out_cosine(vectors: np.ndarray) -> np.ndarray:
    """Each row's cosine to the centroid of the other rows: an intruder cannot pull that centroid
    towards itself, so it stands out more than against the centroid of all members."""
    if len(vectors) < 2:
        return np.ones(len(vectors))
    others = vectors.sum(axis=0) - vectors
    norms = np.maximum(np.linalg.norm(others, axis=1), 1e-12)
    return np.einsum("ij,ij->i", vectors, others) / norms


def _purify(
    group: np.ndarray, vectors: np.ndarray, tiles: np.ndarray, config: ClusterConfig
) -> list[np.ndarray]:
    """Split a round-1 cluster on tile conflicts, then drop members far from the others."""
    parts = (
        [group[part] for part in split_conflicting_group(vectors[group], tiles[group])]
        if has_tile_conflict(tiles[group])
        else [group]
    )
    kept: list[np.ndarray] = []
    for part in parts:
        close = part[leave_one_out_cosine(vectors[part]) >= config.member_min_cosine]
        if len(close) >= config.min_cluster_size:
            kept.append(np.sort(close))
    return kept


def _round_one(
    vectors: np.ndarray, tiles: np.ndarray, good: np.ndarray, config: ClusterConfig
) -> tuple[_Groups, dict[str, int]]:
    good_index = np.flatnonzero(good)
    labels = _hdbscan_labels(vectors[good_index], config)
    raw = [good_index[labels == label] for label in np.unique(labels[labels >= 0])]
    conflicts = sum(has_tile_conflict(tiles[group]) for group in raw)
    members = [part for group in raw for part in _purify(group, vectors, tiles, config)]
    stats = {"round_one_clusters": len(raw), "round_one_tile_conflicts_split": int(conflicts)}
    return _Groups(members, [1] * len(members)), stats


def _merge(groups: _Groups, vectors: np.ndarray, tiles: np.ndarray, threshold: float) -> _Groups:
    merged = merge_by_average_linkage(groups.members, vectors, tiles, threshold)
    return _Groups(
        [np.sort(np.concatenate([groups.members[i] for i in parts])) for parts in merged],
        [sum(groups.parts[i] for i in parts) for parts in merged],
    )


def _attach(
    groups: _Groups,
    candidates: np.ndarray,
    vectors: np.ndarray,
    tiles: np.ndarray,
    min_cosine: np.ndarray,
    config: ClusterConfig,
) -> np.ndarray:
    """Attach ``candidates`` (face indices) to ``groups`` in place; returns those attached."""
    if len(candidates) == 0 or not groups.members:
        return np.zeros(0, dtype=np.int64)
    centroids = unit_rows(np.stack([vectors[m].mean(axis=0) for m in groups.members]))
    cluster_tiles = [set(tiles[m].tolist()) for m in groups.members]
    choice = attach_with_cannot_link(
        vectors[candidates],
        centroids,
        tiles[candidates],
        cluster_tiles,
        min_cosine[candidates],
        config.attach_margin,
    )
    for cluster in np.unique(choice[choice >= 0]):
        joined = candidates[choice == cluster]
        groups.members[cluster] = np.sort(np.concatenate([groups.members[cluster], joined]))
    return candidates[choice >= 0]


def _pair_up_leftovers(
    leftovers: np.ndarray, vectors: np.ndarray, tiles: np.ndarray, config: ClusterConfig
) -> list[np.ndarray]:
    """Good faces still alone may form new clusters among themselves (e.g. an album with a single
    person, where HDBSCAN's leaf selection finds no split). Single pairs are noisier than cluster
    means, hence their own, stricter bar."""
    if len(leftovers) < 2:
        return []
    merged = merge_by_average_linkage(
        [np.array([face]) for face in leftovers], vectors, tiles, config.leftover_pair_min_cosine
    )
    return [leftovers[parts] for parts in merged if len(parts) >= 2]


def _assign(
    vectors: np.ndarray, tiles: np.ndarray, good: np.ndarray, config: ClusterConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Per face: a provisional cluster number, its round, and per cluster its merged part count."""
    groups, stats = _round_one(vectors, tiles, good, config)
    stats["round_one_clusters_kept"] = len(groups.members)
    groups = _merge(groups, vectors, tiles, config.merge_min_mean_cosine)
    stats["clusters_after_merge"] = len(groups.members)
    round_one = np.zeros(len(vectors), dtype=bool)
    for members in groups.members:
        round_one[members] = True

    attach_bar = np.where(good, config.attach_min_cosine, config.low_quality_attach_min_cosine)
    good_left = np.flatnonzero(good & ~round_one)
    attached = [_attach(groups, good_left, vectors, tiles, attach_bar, config)]
    still_alone = np.setdiff1d(good_left, attached[0])
    new_groups = _pair_up_leftovers(still_alone, vectors, tiles, config)
    groups.members.extend(new_groups)
    groups.parts.extend([0] * len(new_groups))
    attached.extend(new_groups)
    low_left = np.flatnonzero(~good)
    attached.append(_attach(groups, low_left, vectors, tiles, attach_bar, config))

    cluster_of = np.full(len(vectors), -1, dtype=np.int64)
    for number, members in enumerate(groups.members):
        cluster_of[members] = number
    rounds = np.full(len(vectors), ALONE, dtype=np.int8)
    rounds[cluster_of >= 0] = ATTACHED
    rounds[round_one] = ROUND_ONE
    alone = np.flatnonzero(cluster_of < 0)
    cluster_of[alone] = len(groups.members) + np.arange(len(alone))
    parts = np.array(groups.parts + [0] * len(alone), dtype=np.int64)
    stats["attached"] = int(sum(len(a) for a in attached))
    return cluster_of, rounds, parts, stats


def _renumber(cluster_of: np.ndarray, face_ids: np.ndarray) -> np.ndarray:
    """Ids 0.. by size (biggest first), ties by smallest face_id: stable across input orders."""
    frame = pd.DataFrame({"c": cluster_of, "f": face_ids})
    keys = frame.groupby("c").agg(size=("f", "size"), first=("f", "min"))
    keys = keys.sort_values(["size", "first"], ascending=[False, True])
    mapping = pd.Series(np.arange(len(keys)), index=keys.index)
    return mapping.loc[cluster_of].to_numpy(dtype=np.int64)


def _stats(
    faces: pd.DataFrame,
    vectors: np.ndarray,
    cluster_ids: np.ndarray,
    rounds: np.ndarray,
    parts_by_cluster: dict[int, int],
    config: ClusterConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    count = len(faces)
    cosine = np.zeros(count, dtype=np.float64)
    outlier = np.zeros(count, dtype=bool)
    representative = np.zeros(count, dtype=bool)
    quality = (
        faces["quality"].fillna(0).to_numpy(dtype=np.float64)
        if "quality" in faces.columns
        else np.ones(count)
    )
    face_ids = faces["face_id"].to_numpy(dtype=object)
    photo_ids = faces["photo_id"].to_numpy(dtype=object) if "photo_id" in faces else face_ids
    tile_ids = faces["tile_id"].to_numpy(dtype=object)
    order = np.argsort(cluster_ids, kind="stable")
    boundaries = np.flatnonzero(np.diff(cluster_ids[order])) + 1
    rows = []
    for members in np.split(order, boundaries) if count else []:
        size = len(members)
        total = vectors[members].sum(axis=0)
        centroid = total / max(np.linalg.norm(total), 1e-12)
        cosine[members] = vectors[members] @ centroid
        if size >= 3:
            outlier[members] = cosine[members] < config.outlier_below_cosine
        ranking = sorted(
            (m for m in members if not outlier[m]),
            key=lambda m: (-quality[m] * cosine[m], face_ids[m]),
        )
        representative[ranking[: config.representatives]] = True
        mean_intra = (
            (float(total @ total) - size) / (size * (size - 1)) if size > 1 else float("nan")
        )
        cluster = int(cluster_ids[members[0]])
        rows.append(
            {
                "cluster_id": cluster,
                "size": size,
                "n_photos": len(set(photo_ids[members])),
                "n_tiles": len(set(tile_ids[members])),
                "n_round_one": int((rounds[members] == ROUND_ONE).sum()),
                "n_attached": int((rounds[members] == ATTACHED).sum()),
                "n_merged": parts_by_cluster.get(cluster, 0),
                "mean_intra_cosine": mean_intra,
                "min_cosine_to_centroid": float(cosine[members].min()),
                "quality_mean": float(quality[members].mean()),
                "quality_min": float(quality[members].min()),
                "quality_max": float(quality[members].max()),
                "quality_std": float(quality[members].std()),
                "n_outliers": int(outlier[members].sum()),
                "representative_face_ids": [
                    str(face_ids[m]) for m in ranking[: config.representatives]
                ],
                "outlier_face_ids": sorted(str(face_ids[m]) for m in members if outlier[m]),
            }
        )
    clusters = pd.DataFrame(rows, columns=list(CLUSTER_DTYPES)).astype(CLUSTER_DTYPES)
    assignments = pd.DataFrame(
        {
            "face_id": face_ids,
            "cluster_id": cluster_ids,
            "round": rounds,
            "good_quality": np.zeros(count, dtype=bool),  # filled by the caller
            "cosine_to_centroid": cosine,
            "is_outlier": outlier,
            "is_representative": representative,
        },
        columns=list(ASSIGNMENT_DTYPES),
    )
    return assignments, clusters


def cluster_faces(
    faces: pd.DataFrame,
    config: ClusterConfig | None = None,
) -> ClusteringResult:
    """Cluster a faces table (``face_id``, ``tile_id``, ``embedding``; ``quality``,
    ``face_size``, ``photo_id``, ``backend`` when present). Without ``config`` the thresholds of
    the table's backend are loaded from the shipped YAML.

    Deterministic: the same faces (in any row order) give the same clusters and ids.
    """
    _check_faces(faces)
    if config is None:
        config = config_for_faces(faces)
    elif "backend" in faces.columns and not faces.empty:
        backend_of(faces)  # still refuse mixed embedding spaces
    ordered = unique_faces(faces)
    vectors = embeddings_of(ordered)
    tiles = pd.factorize(ordered["tile_id"].astype("string"))[0]
    good = _good_faces(ordered, config)
    provisional, rounds, parts, stats = _assign(vectors, tiles, good, config)
    cluster_ids = _renumber(provisional, ordered["face_id"].to_numpy(dtype=object))
    parts_by_cluster = {
        int(final): int(parts[old])
        for old, final in pd.DataFrame({"old": provisional, "new": cluster_ids})
        .drop_duplicates("old")
        .itertuples(index=False)
    }
    assignments, clusters = _stats(ordered, vectors, cluster_ids, rounds, parts_by_cluster, config)
    assignments["good_quality"] = good
    assignments = (
        assignments.astype(ASSIGNMENT_DTYPES)
        .sort_values(["cluster_id", "cosine_to_centroid", "face_id"], ascending=[True, False, True])
        .reset_index(drop=True)
    )
    multi = clusters[clusters["size"] >= 2]
    summary = {
        "faces": len(ordered),
        "duplicate_face_rows_dropped": len(faces) - len(ordered),
        "good_faces": int(good.sum()),
        "clusters": int(len(multi)),
        "singletons": int((clusters["size"] == 1).sum()),
        "faces_in_clusters": int(multi["size"].sum()),
        "largest_cluster": int(clusters["size"].max()) if len(clusters) else 0,
        "suspected_outliers": int(clusters["n_outliers"].sum()),
        "backend": config.backend,
        **stats,
    }
    return ClusteringResult(assignments, clusters, config, summary)


# The face_clusters table (``<data root>/assets/face_clusters/table.parquet``): the assignments
# plus what the labeling page and labeled_identities need about each face, so they read one
# file. Columns in this order; optional ones are null when the faces table lacks them.
FACE_CLUSTERS_DTYPES: dict[str, object] = {
    **ASSIGNMENT_DTYPES,
    "cluster_size": "int64",
    "album": "string",
    "photo_id": "string",
    "tile_id": "string",
    "tile_path": "string",  # tile image, relative to the data root
    "source_path": "string",  # the photo file, when the faces came from plain files
    "tile_x0": "float32",
    "tile_y0": "float32",
    "tile_x1": "float32",
    "tile_y1": "float32",
    "quality": "float32",
    "face_size": "float32",
    "det_score": "float32",
    "backend": "string",
    "embedding": "object",  # float32 arrays
}


def face_clusters_table(faces: pd.DataFrame, result: ClusteringResult) -> pd.DataFrame:
    """One row per face: ``FACE_CLUSTERS_DTYPES``, ordered like ``result.assignments``."""
    sizes = result.clusters.set_index("cluster_id")["size"]
    table = result.assignments.copy()
    table["cluster_size"] = table["cluster_id"].map(sizes).to_numpy(dtype=np.int64)
    extra = [c for c in FACE_CLUSTERS_DTYPES if c not in table.columns and c in faces.columns]
    context = unique_faces(faces)[["face_id", *extra]]
    table = table.merge(context, on="face_id", how="left", validate="1:1")
    for column, dtype in FACE_CLUSTERS_DTYPES.items():
        if column not in table.columns:
            table[column] = np.nan if str(dtype).startswith("float") else None
    return table[list(FACE_CLUSTERS_DTYPES)].astype(FACE_CLUSTERS_DTYPES)


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A frame of this package as an Arrow table, list columns typed even when empty."""
    plain = [c for c in frame.columns if c not in LIST_COLUMN_TYPES]
    table = pa.Table.from_pandas(frame[plain], preserve_index=False)
    for position, name in enumerate(frame.columns):
        if name in LIST_COLUMN_TYPES:
            values = [None if v is None else list(v) for v in frame[name]]
            column = pa.array(values, type=LIST_COLUMN_TYPES[name])
            table = table.add_column(position, pa.field(name, LIST_COLUMN_TYPES[name]), column)
    return table
