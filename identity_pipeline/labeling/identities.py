"""Clusters + labels -> identities: who every face is, and what is still unnamed.

Rules, per cluster:
- a face labelled with a name is that person; a face labelled ``ignore`` is no one;
- the unlabelled faces of a cluster whose labelled faces carry one name take that name;
- a cluster whose labelled faces carry several names is a conflict: it is reported and split by
  name, each unlabelled face going to the name whose labelled faces it is closest to (cosine to
  their centroid; without embeddings it stays unnamed);
- a cluster with no names where at least half the faces are labelled ``ignore`` is ignored whole
  (a stranger met often); otherwise its unlabelled faces stay unnamed;
- an identity is a name: clusters named alike are one identity.
Labels of faces that are no longer in the table are kept in the file and reported as stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from identity_pipeline.labeling.labels import IGNORE, Labels

# The ``status`` of a face.
LABELLED = "labelled"  # named by a person
INHERITED = "inherited"  # named through its cluster
IGNORED = "ignored"  # labelled ignore, or in a cluster mostly labelled ignore
UNNAMED = "unnamed"

FACE_IDENTITY_DTYPES: dict[str, object] = {
    "face_id": "string",
    "cluster_id": "int64",
    "label": "string",  # what labels.csv says for this face (null: nothing)
    "identity": "string",  # the resolved name (null: unnamed or ignored)
    "status": "string",
    "group": "string",  # cluster id, or "<cluster id>:<name>" for a cluster split by name
}


@dataclass(frozen=True)
class LabeledIdentities:
    """``faces``: one row per face (``FACE_IDENTITY_DTYPES``). ``identities``: one row per name
    (name, n_faces, n_photos, n_albums, n_labelled, n_inherited, cluster_ids, face_ids,
    photo_ids, albums), most faces first. ``unnamed_clusters``: cluster_id, n_faces, n_photos,
    face_ids, biggest first. ``conflicts``: cluster_id, names, labelled (name -> count),
    split (name -> faces after the split). ``stale_labels``: face ids labelled but absent."""

    faces: pd.DataFrame
    identities: pd.DataFrame
    unnamed_clusters: pd.DataFrame
    conflicts: pd.DataFrame
    stale_labels: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


def _label_map(labels: Labels | Mapping[str, str]) -> Mapping[str, str]:
    return labels.names if isinstance(labels, Labels) else labels


def _vectors(faces: pd.DataFrame, face_ids: list[str]) -> np.ndarray | None:
    if "embedding" not in faces.columns:
        return None
    column = faces.set_index("face_id")["embedding"].reindex(face_ids)
    if column.isna().any():
        return None
    return np.stack([np.asarray(v, dtype=np.float64) for v in column])


def _split_by_name(
    unlabelled: list[str], named: dict[str, list[str]], faces: pd.DataFrame
) -> dict[str, str]:
    """Unlabelled face -> the name whose labelled faces' centroid is nearest (cosine)."""
    vectors = _vectors(faces, unlabelled + [f for ids in named.values() for f in ids])
    if vectors is None or not unlabelled:
        return {}
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    names = sorted(named)
    offset = len(unlabelled)
    centroids = []
    for name in names:
        rows = vectors[offset : offset + len(named[name])]
        offset += len(named[name])
        mean = rows.mean(axis=0)
        centroids.append(mean / max(np.linalg.norm(mean), 1e-12))
    nearest = np.argmax(vectors[: len(unlabelled)] @ np.stack(centroids).T, axis=1)
    return {face: names[index] for face, index in zip(unlabelled, nearest, strict=True)}


def _resolve_cluster(
    cluster_id: int, face_ids: list[str], labels: Mapping[str, str], faces: pd.DataFrame
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    named: dict[str, list[str]] = {}
    ignored: list[str] = []
    unlabelled: list[str] = []
    for face in face_ids:
        label = labels.get(face)
        if label is None:
            unlabelled.append(face)
        elif label == IGNORE:
            ignored.append(face)
        else:
            named.setdefault(label, []).append(face)
    inherited: dict[str, str] = {}
    conflict = None
    if len(named) == 1:
        only = next(iter(named))
        inherited = dict.fromkeys(unlabelled, only)
    elif len(named) > 1:
        inherited = _split_by_name(unlabelled, named, faces)
    ignore_whole = not named and len(ignored) * 2 >= len(face_ids)

    rows = []
    for face in face_ids:
        label = labels.get(face)
        if label == IGNORE or (label is None and ignore_whole):
            identity, status = None, IGNORED
        elif label is not None:
            identity, status = label, LABELLED
        elif face in inherited:
            identity, status = inherited[face], INHERITED
        else:
            identity, status = None, UNNAMED
        group = f"{cluster_id}:{identity}" if len(named) > 1 and identity else str(cluster_id)
        rows.append(
            {
                "face_id": face,
                "cluster_id": cluster_id,
                "label": label,
                "identity": identity,
                "status": status,
                "group": group,
            }
        )
    if len(named) > 1:
        split: dict[str, int] = {}
        for row in rows:
            if row["identity"]:
                split[row["identity"]] = split.get(row["identity"], 0) + 1
        conflict = {
            "cluster_id": cluster_id,
            "names": sorted(named, key=str.casefold),
            "labelled": {n: len(ids) for n, ids in sorted(named.items())},
            "split": dict(sorted(split.items())),
        }
    return rows, conflict


def _resolve(
    pairs: pd.DataFrame, labels: Mapping[str, str], faces: pd.DataFrame
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """``_resolve_cluster``'s rules for every cluster at once: one pass of array operations
    for the clusters with at most one name (a library has thousands), the per-cluster rules
    for the few whose labels conflict. Rows by cluster id, faces in table order within."""
    ordered = pairs.iloc[np.argsort(pairs["cluster_id"].to_numpy(), kind="stable")]
    face_ids = ordered["face_id"].to_numpy(dtype=object)
    clusters = ordered["cluster_id"].to_numpy(dtype=np.int64)
    label = np.array([labels.get(f) for f in face_ids], dtype=object)
    has_label = np.array([v is not None for v in label], dtype=bool)
    ignore = has_label & (label == IGNORE)
    named = has_label & ~ignore
    cluster_index, starts = np.unique(clusters, return_index=True)
    code = np.searchsorted(cluster_index, clusters)
    sizes = np.bincount(code, minlength=len(cluster_index))
    ignores = np.bincount(code[ignore], minlength=len(cluster_index))
    distinct = pd.DataFrame({"code": code[named], "name": label[named]}).drop_duplicates()
    names_in = np.bincount(distinct["code"].to_numpy(dtype=np.int64), minlength=len(cluster_index))
    only_name = np.full(len(cluster_index), None, dtype=object)
    single = distinct[names_in[distinct["code"].to_numpy(dtype=np.int64)] == 1]
    only_name[single["code"].to_numpy(dtype=np.int64)] = single["name"].to_numpy()

    inherits = ~has_label & (names_in[code] == 1)
    ignored = ignore | (~has_label & (names_in[code] == 0) & (ignores[code] * 2 >= sizes[code]))
    identity = np.where(named, label, np.where(inherits, only_name[code], None))
    identity[ignored] = None
    status = np.select(
        [ignored, named, inherits], [IGNORED, LABELLED, INHERITED], default=UNNAMED
    ).astype(object)
    group = clusters.astype(str).astype(object)

    conflicts: list[dict[str, Any]] = []
    for position in np.flatnonzero(names_in >= 2):
        start = starts[position]
        stop = start + sizes[position]
        rows, conflict = _resolve_cluster(
            int(cluster_index[position]), list(face_ids[start:stop]), labels, faces
        )
        for offset, row in enumerate(rows):
            identity[start + offset] = row["identity"]
            status[start + offset] = row["status"]
            group[start + offset] = row["group"]
        conflicts.append(conflict)  # type: ignore[arg-type]
    resolved = pd.DataFrame(
        {
            "face_id": face_ids,
            "cluster_id": clusters,
            "label": label,
            "identity": identity,
            "status": status,
            "group": group,
        },
        columns=list(FACE_IDENTITY_DTYPES),
    ).astype(FACE_IDENTITY_DTYPES)
    return resolved, conflicts


def _sorted_sets(keys: np.ndarray, values: pd.Series, names: list[str]) -> list[list[Any]]:
    """Per name (in ``names`` order), the sorted distinct non-null values it has."""
    frame = pd.DataFrame({"key": keys, "value": values.to_numpy(dtype=object)})
    frame = frame[frame["value"].notna()].drop_duplicates().sort_values(["key", "value"])
    found: dict[str, list[Any]] = {}
    if len(frame):
        key_values = frame["key"].to_numpy(dtype=object)
        value_list = frame["value"].tolist()
        _, starts = np.unique(key_values, return_index=True)
        bounds = [*sorted(starts), len(frame)]
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            found[key_values[start]] = value_list[start:stop]
    return [found.get(name, []) for name in names]


def _identity_table(resolved: pd.DataFrame) -> pd.DataFrame:
    columns = [
        "name", "n_faces", "n_photos", "n_albums", "n_labelled", "n_inherited",
        "cluster_ids", "face_ids", "photo_ids", "albums",
    ]  # fmt: skip
    named = resolved[resolved["identity"].notna()]
    if named.empty:
        return pd.DataFrame(columns=columns)
    # Vectorized (a sort per column): a library names hundreds of people.
    keys = named["identity"].astype(str).to_numpy(dtype=object)
    names = sorted(set(keys))
    status = named["status"].to_numpy(dtype=object)
    counts = pd.Series(keys).value_counts()
    labelled = pd.Series(keys[status == LABELLED]).value_counts()
    inherited = pd.Series(keys[status == INHERITED]).value_counts()
    photos = _sorted_sets(
        keys, named["photo_id"].astype(object).astype(str).where(named["photo_id"].notna()), names
    )
    albums = _sorted_sets(
        keys, named["album"].astype(object).astype(str).where(named["album"].notna()), names
    )
    table = pd.DataFrame(
        {
            "name": names,
            "n_faces": [int(counts.get(n, 0)) for n in names],
            "n_photos": [len(p) for p in photos],
            "n_albums": [len(a) for a in albums],
            "n_labelled": [int(labelled.get(n, 0)) for n in names],
            "n_inherited": [int(inherited.get(n, 0)) for n in names],
            "cluster_ids": [
                [int(c) for c in ids]
                for ids in _sorted_sets(keys, named["cluster_id"].astype("int64"), names)
            ],
            "face_ids": _sorted_sets(keys, named["face_id"].astype(str), names),
            "photo_ids": photos,
            "albums": albums,
        },
        columns=columns,
    )
    return table.sort_values(["n_faces", "name"], ascending=[False, True]).reset_index(drop=True)


def _unnamed_table(resolved: pd.DataFrame) -> pd.DataFrame:
    columns = ["cluster_id", "n_faces", "n_photos", "face_ids"]
    unnamed = resolved[resolved["status"] == UNNAMED]
    if unnamed.empty:
        return pd.DataFrame(columns=columns)
    # Vectorized (one sort, one split): a library has thousands of unnamed clusters.
    ordered = unnamed.sort_values(["cluster_id", "face_id"], kind="stable")
    cluster_ids, starts, counts = np.unique(
        ordered["cluster_id"].to_numpy(dtype=np.int64), return_index=True, return_counts=True
    )
    face_ids = ordered["face_id"].astype(str).tolist()
    photos = ordered.groupby("cluster_id", sort=True)["photo_id"].nunique()
    table = pd.DataFrame(
        {
            "cluster_id": cluster_ids,
            "n_faces": counts,
            "n_photos": photos.reindex(cluster_ids).to_numpy(dtype=np.int64),
            "face_ids": [face_ids[s : s + c] for s, c in zip(starts, counts, strict=True)],
        },
        columns=columns,
    )
    return table.sort_values(["n_faces", "cluster_id"], ascending=[False, True]).reset_index(
        drop=True
    )


def apply_labels(
    assignments: pd.DataFrame,
    faces: pd.DataFrame,
    labels: Labels | Mapping[str, str],
) -> LabeledIdentities:
    """Resolve who every face is. ``assignments``: face_id, cluster_id (e.g. the face_clusters
    table). ``faces``: face_id plus photo_id, album and embedding where known (the face_clusters
    table has them all, so it may be passed as both). ``labels``: from ``read_labels``."""
    label_map = _label_map(labels)
    pairs = assignments[["face_id", "cluster_id"]].astype({"face_id": str, "cluster_id": "int64"})
    resolved, conflicts = _resolve(pairs, label_map, faces)
    extra = [c for c in ("photo_id", "album") if c in faces.columns]
    context = faces[["face_id", *extra]].astype({"face_id": "string"}).drop_duplicates("face_id")
    enriched = resolved.merge(context, on="face_id", how="left")
    for column in ("photo_id", "album"):
        if column not in enriched.columns:
            enriched[column] = pd.NA
    present = set(pairs["face_id"])
    stale = sorted(f for f in label_map if f not in present)
    identities = _identity_table(enriched)
    unnamed = _unnamed_table(enriched)
    conflict_table = pd.DataFrame(conflicts, columns=["cluster_id", "names", "labelled", "split"])
    status_counts = resolved["status"].value_counts()
    summary = {
        "faces": len(resolved),
        "identities": len(identities),
        "named_faces": int(status_counts.get(LABELLED, 0) + status_counts.get(INHERITED, 0)),
        "labelled_faces": int(status_counts.get(LABELLED, 0)),
        "ignored_faces": int(status_counts.get(IGNORED, 0)),
        "unnamed_faces": int(status_counts.get(UNNAMED, 0)),
        "unnamed_clusters": int((unnamed["n_faces"] >= 2).sum()) if len(unnamed) else 0,
        "unnamed_singletons": int((unnamed["n_faces"] == 1).sum()) if len(unnamed) else 0,
        "conflicts": len(conflict_table),
        "stale_labels": len(stale),
    }
    return LabeledIdentities(
        faces=enriched,
        identities=identities,
        unnamed_clusters=unnamed,
        conflicts=conflict_table,
        stale_labels=stale,
        summary=summary,
    )
