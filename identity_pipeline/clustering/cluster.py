"""Faces of one person together: calibrated average linkage, names kept, cannot-link per tile.

1. **Named people stay put.** Faces a person named (labels.csv) form one group per name; a face
   a person placed is never moved by the algorithm.
2. **Incremental assignment.** Every other face is compared with each named person's centroid;
   it joins the best person when the cosine is at least the calibration's ``assign_cosine`` and
   beats the runner-up person by ``assign_margin`` (and that person has no face in its tile).
   Every face records the best person, the cosine and the margin, so the table says why.
3. **Clustering the rest.** Good faces (sharp, big enough) are clustered by average linkage:
   two groups merge, best pair first, while the mean cosine over all their cross pairs is at
   least the calibration's ``merge_cosine``, and never when they share a tile (cannot-link).
4. **Blurry and tiny faces** do not shape clusters (their vectors are noisy and look alike):
   they join the cluster whose centroid they are confidently close to (``merge_cosine``, the
   bar of average linkage, and ``assign_margin`` over the next cluster), or stay alone.

Every face ends in exactly one cluster; a face nobody claimed is a cluster of one (a singleton),
so cluster ids are never -1. Thresholds come from ``calibration`` (score statistics of the
backend), never from tuning on a data set; see ``calibration.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from identity_pipeline.clustering.calibration import Calibration, album_calibration
from identity_pipeline.clustering.config import ClusterConfig
from identity_pipeline.clustering.constraints import (
    attach_with_cannot_link,
    merge_by_average_linkage,
    resolve_tile_collisions,
    unit_rows,
)

IGNORE = "ignore"  # the labels file's word for "no one" (labeling.labels.IGNORE)

# How a face got its cluster (the ``round`` column).
ALONE = 0  # nobody claimed it: a singleton
MERGED = 1  # a good face in an average-linkage cluster of 2+ faces
ATTACHED = 2  # a blurry or tiny face that joined a cluster it is confidently close to
NAMED = 3  # a person named it (labels.csv): its name's group, never moved
ASSIGNED = 4  # joined a named person: above assign_cosine, by assign_margin over the runner-up

ASSIGNMENT_DTYPES: dict[str, object] = {
    "face_id": "string",
    "cluster_id": "int64",
    "round": "int8",
    "good_quality": "bool",
    "cosine_to_centroid": "float32",
    "is_outlier": "bool",
    "is_representative": "bool",
    # Against the named people's centroids (null when nobody is named, or for named faces):
    "person": "string",  # the most similar named person allowed for this face
    "person_similarity": "float32",  # cosine to that person's centroid
    "person_margin": "float32",  # minus the runner-up person's cosine (1 + cosine if none)
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
    "n_merged": "int64",  # good faces clustered by average linkage
    "n_attached": "int64",  # blurry or tiny faces attached
    "n_named": "int64",  # faces a person named
    "n_assigned": "int64",  # faces assigned to the named person
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
    calibration: Calibration
    summary: dict[str, Any] = field(default_factory=dict)


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
        raise ValueError("the faces table has no 'backend' column: pass a calibration")
    spaces = faces[[c for c in ("backend", "model_sha256") if c in faces.columns]].drop_duplicates()
    if len(spaces) > 1:
        listed = ", ".join(str(v) for v in spaces["backend"].tolist())
        raise ValueError(
            f"faces from several embedding spaces cannot be clustered together: {listed}"
        )
    return str(spaces["backend"].iloc[0])


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


def good_faces(faces: pd.DataFrame, config: ClusterConfig) -> np.ndarray:
    good = np.ones(len(faces), dtype=bool)
    if "quality" in faces.columns:
        good &= faces["quality"].fillna(0).to_numpy(dtype=np.float64) >= config.min_quality
    if "face_size" in faces.columns:
        good &= faces["face_size"].fillna(0).to_numpy(dtype=np.float64) >= config.min_face_px
    return good


@dataclass(frozen=True)
class PersonMatch:
    """Per face, its best allowed named person (-1: none), the cosine and the margin."""

    person: np.ndarray
    similarity: np.ndarray
    margin: np.ndarray


def match_people(
    vectors: np.ndarray, tiles: np.ndarray, groups: list[np.ndarray], faces: np.ndarray
) -> PersonMatch:
    """``faces`` (indices) against the centroids of ``groups`` (named people). A person is not
    allowed for a face of a tile that person is already in; the runner-up is any other person."""
    count = len(faces)
    if count == 0 or not groups:
        empty = np.full(count, np.nan)
        return PersonMatch(np.full(count, -1, dtype=np.int64), empty, empty.copy())
    centroids = unit_rows(np.stack([vectors[g].mean(axis=0) for g in groups]))
    scores = vectors[faces] @ centroids.T
    allowed = np.ones_like(scores, dtype=bool)
    for person, members in enumerate(groups):
        allowed[np.isin(tiles[faces], tiles[members]), person] = False
    masked = np.where(allowed, scores, -np.inf)
    best = np.argmax(masked, axis=1)
    rows = np.arange(count)
    best_score = masked[rows, best]
    others = scores.copy()
    others[rows, best] = -np.inf
    runner_up = others.max(axis=1) if len(groups) > 1 else np.full(count, -1.0)
    has_best = np.isfinite(best_score)
    return PersonMatch(
        np.where(has_best, best, -1),
        np.where(has_best, best_score, np.nan),
        np.where(has_best, best_score - runner_up, np.nan),
    )


def _attach(
    groups: list[np.ndarray],
    candidates: np.ndarray,
    vectors: np.ndarray,
    tiles: np.ndarray,
    calibration: Calibration,
) -> np.ndarray:
    """Attach ``candidates`` to ``groups`` (in place) when confidently closest to one centroid;
    returns the group number per candidate (-1: stays out)."""
    if len(candidates) == 0 or not groups:
        return np.full(len(candidates), -1, dtype=np.int64)
    centroids = unit_rows(np.stack([vectors[g].mean(axis=0) for g in groups]))
    choice = attach_with_cannot_link(
        vectors[candidates],
        centroids,
        tiles[candidates],
        [set(tiles[g].tolist()) for g in groups],
        np.full(len(candidates), calibration.merge_cosine),
        calibration.assign_margin,
    )
    for group in np.unique(choice[choice >= 0]):
        groups[group] = np.sort(np.concatenate([groups[group], candidates[choice == group]]))
    return choice


def _assign(
    vectors: np.ndarray,
    tiles: np.ndarray,
    good: np.ndarray,
    names: np.ndarray,
    calibration: Calibration,
) -> tuple[np.ndarray, np.ndarray, PersonMatch, list[str], dict[str, int]]:
    """Per face: a provisional cluster number and its round; the person match of every face."""
    count = len(vectors)
    rounds = np.full(count, ALONE, dtype=np.int8)
    people = sorted({n for n in names if n is not None and n != IGNORE}, key=str.casefold)
    named_groups = [np.flatnonzero(names == person) for person in people]
    for members in named_groups:
        rounds[members] = NAMED
    # Faces labelled "ignore" are no one: never assigned to a person, clustered like the rest.
    unnamed = np.flatnonzero(rounds != NAMED)
    match = match_people(vectors, tiles, named_groups, unnamed)
    confident = (
        (names[unnamed] != IGNORE)
        & (match.person >= 0)
        & (np.nan_to_num(match.similarity, nan=-2.0) >= calibration.assign_cosine)
        & (np.nan_to_num(match.margin, nan=-2.0) >= calibration.assign_margin)
    )
    # Two faces of one tile confident about one person: the closer one joins, the other not.
    choice = resolve_tile_collisions(
        np.where(confident, match.person, -1), match.similarity, tiles[unnamed]
    )
    assigned = unnamed[choice >= 0]
    for person in np.unique(choice[choice >= 0]):
        named_groups[person] = np.sort(
            np.concatenate([named_groups[person], unnamed[choice == person]])
        )
    rounds[assigned] = ASSIGNED

    rest = np.setdiff1d(unnamed, assigned)
    rest_good = rest[good[rest]]
    merged = merge_by_average_linkage(
        [np.array([face]) for face in rest_good], vectors, tiles, calibration.merge_cosine
    )
    clusters = [np.sort(rest_good[parts]) for parts in merged]
    for members in clusters:
        if len(members) >= 2:
            rounds[members] = MERGED
    rest_low = rest[~good[rest]]
    attached = rest_low[_attach(clusters, rest_low, vectors, tiles, calibration) >= 0]
    rounds[attached] = ATTACHED
    groups = named_groups + [c for c in clusters if len(c)]
    cluster_of = np.full(count, -1, dtype=np.int64)
    for number, members in enumerate(groups):
        cluster_of[members] = number
    alone = np.flatnonzero(cluster_of < 0)
    cluster_of[alone] = len(groups) + np.arange(len(alone))

    full = PersonMatch(
        np.full(count, -1, dtype=np.int64), np.full(count, np.nan), np.full(count, np.nan)
    )
    full.person[unnamed] = match.person
    full.similarity[unnamed] = match.similarity
    full.margin[unnamed] = match.margin
    stats = {
        "named_people": len(people),
        "named_faces": int((rounds == NAMED).sum()),
        "assigned_to_named": len(assigned),
        "clustered_good_faces": len(rest_good),
        "attached_low_quality": len(attached),
    }
    return cluster_of, rounds, full, people, stats


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
    config: ClusterConfig,
    calibration: Calibration,
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
            # A member that could not join its own cluster's centroid.
            outlier[members] = cosine[members] < calibration.merge_cosine
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
                "n_merged": int((rounds[members] == MERGED).sum()),
                "n_attached": int((rounds[members] == ATTACHED).sum()),
                "n_named": int((rounds[members] == NAMED).sum()),
                "n_assigned": int((rounds[members] == ASSIGNED).sum()),
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
    calibration: Calibration | None = None,
    names: Mapping[str, str] | None = None,
    backend: str | None = None,
) -> ClusteringResult:
    """Cluster a faces table (``face_id``, ``tile_id``, ``embedding``; ``quality``,
    ``face_size``, ``photo_id``, ``backend`` when present).

    ``names``: face_id -> name (or ``"ignore"``) as a person gave them (labels.csv); named faces
    keep their name's group, other faces may be assigned to a named person.
    ``calibration``: the thresholds; default: fitted on the named faces once
    ``config.calibrate_from_named_people`` people are named, else the shipped calibration of
    the table's backend (``backend``: for a table without that column, or with no rows).
    Deterministic: the same faces (in any row order) give the same clusters and ids.
    """
    _check_faces(faces)
    config = config or ClusterConfig()
    if "backend" in faces.columns and not faces.empty:
        backend = backend_of(faces)  # also refuses mixed embedding spaces
    elif calibration is None and backend is None:
        raise ValueError("the faces table has no 'backend' column: pass backend or calibration")
    ordered = unique_faces(faces)
    vectors = embeddings_of(ordered)
    tiles = pd.factorize(ordered["tile_id"].astype("string"))[0]
    good = good_faces(ordered, config)
    given = names or {}
    face_names = np.array([given.get(str(f)) for f in ordered["face_id"]], dtype=object)
    if calibration is None:
        people = [None if n == IGNORE else n for n in face_names]
        calibration = album_calibration(
            vectors, people, backend, min_people=config.calibrate_from_named_people
        )
    provisional, rounds, match, people, stats = _assign(
        vectors, tiles, good, face_names, calibration
    )
    cluster_ids = _renumber(provisional, ordered["face_id"].to_numpy(dtype=object))
    assignments, clusters = _stats(ordered, vectors, cluster_ids, rounds, config, calibration)
    assignments["good_quality"] = good
    assignments["person"] = pd.array(
        [people[k] if k >= 0 else None for k in match.person], dtype="string"
    )
    assignments["person_similarity"] = match.similarity
    assignments["person_margin"] = match.margin
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
        "backend": calibration.backend,
        "calibration": calibration.source,
        **calibration.thresholds(),
        **stats,
    }
    return ClusteringResult(assignments, clusters, config, calibration, summary)


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
