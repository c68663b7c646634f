"""Suggestions for naming (no dagster, no web): which unnamed faces look like a named person, and
which clusters look like one person. A person confirms or rejects; nothing here names anything.

    rank_faces_for_people(faces, names, calibration, *, rejected=(), per_person=None)
        -> DataFrame[name, face_id, cluster_id, similarity, runner_up, runner_up_similarity,
                     margin, confident, rank]
    same_person_questions(faces, names, calibration, *, rejected=(), per_cluster=5)
        -> DataFrame[cluster_a, cluster_b, similarity, size_a, size_b, name_a, name_b,
                     face_a, face_b]

``faces``: the face_clusters table (``face_id``, ``cluster_id``, ``tile_id``, ``embedding``).
``names``: face_id -> name for every face that has one, ``"ignore"`` for faces that are no one.
Pass the resolved names (``apply_labels(...).faces``: ``identity``, and ``ignore`` where the
status is ignored) so faces named through their cluster are not asked about again; the plain
labels.csv mapping works too. ``calibration``: ``identity_pipeline.clustering.calibration``
(``published_calibration(backend)`` or ``fit_calibration``), whose ``suggest_cosine``,
``assign_cosine`` and ``assign_margin`` are the bars used here.

Similarity is the cosine of a face to a person's centroid (the normalised mean of that person's
named faces): the score the calibration's centroid statistics describe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from identity_pipeline.clustering.calibration import Calibration

IGNORE = "ignore"  # the labels file's word for "no one" (labeling.labels.IGNORE)

FACE_SUGGESTION_DTYPES: dict[str, object] = {
    "name": "string",
    "face_id": "string",
    "cluster_id": "int64",
    "similarity": "float32",  # cosine to the person's centroid
    "runner_up": "string",  # the next most similar person (null: only one person is named)
    "runner_up_similarity": "float32",
    "margin": "float32",  # similarity - runner_up_similarity (similarity + 1 with no runner-up)
    "confident": "bool",  # above assign_cosine and assign_margin: what auto-assignment would do
    "rank": "int64",  # 1 = most similar unnamed face of this person
}

CLUSTER_QUESTION_DTYPES: dict[str, object] = {
    "cluster_a": "int64",  # the bigger cluster
    "cluster_b": "int64",
    "similarity": "float32",  # cosine of the two cluster centroids
    "size_a": "int64",
    "size_b": "int64",
    "name_a": "string",  # null: unnamed
    "name_b": "string",
    "face_a": "string",  # the face nearest each centroid: to show, and to key a rejection
    "face_b": "string",
}


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _vectors(faces: pd.DataFrame) -> np.ndarray:
    if faces.empty:
        return np.zeros((0, 0))
    return _unit(np.stack([np.asarray(v, dtype=np.float64) for v in faces["embedding"]]))


def _table(faces: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("face_id", "cluster_id", "tile_id", "embedding") if c not in faces]
    if missing:
        raise ValueError(f"the faces table lacks column(s) {missing}")
    table = faces.drop_duplicates("face_id").reset_index(drop=True)
    table["face_id"] = table["face_id"].astype(str)
    return table


def person_centroids(faces: pd.DataFrame, names: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
    """Named people (sorted) and the unit centroid of each one's named faces (rows)."""
    table = _table(faces)
    named = table["face_id"].map(lambda f: names.get(f))
    keep = named.notna() & (named != IGNORE)
    if not keep.any():
        return [], np.zeros((0, 0))
    vectors = _vectors(table[keep])
    people = sorted(set(named[keep]), key=str.casefold)
    who = named[keep].to_numpy(dtype=object)
    sums = np.stack([vectors[who == person].sum(axis=0) for person in people])
    return people, _unit(sums)


def rank_faces_for_people(
    faces: pd.DataFrame,
    names: Mapping[str, str],
    calibration: Calibration,
    *,
    rejected: Iterable[tuple[str, str]] = (),
    per_person: int | None = None,
) -> pd.DataFrame:
    """Per named person, the faces without a name that look most like them, best first.

    Each face is listed once, under its most similar person that it was not rejected for
    (``rejected``: (face_id, name) pairs a person answered "no" to), when that similarity is at
    least ``calibration.suggest_cosine``. A face whose tile already holds a face named that
    person is never suggested for them (one photo cannot show a person twice).
    ``per_person`` keeps the best N of each person (None: all).
    """
    table = _table(faces)
    people, centroids = person_centroids(table, names)
    empty = pd.DataFrame(columns=list(FACE_SUGGESTION_DTYPES)).astype(FACE_SUGGESTION_DTYPES)
    unnamed = table[~table["face_id"].isin(set(names))].reset_index(drop=True)
    if not people or unnamed.empty:
        return empty
    scores = _vectors(unnamed) @ centroids.T  # (unnamed faces, people)
    allowed = np.ones_like(scores, dtype=bool)
    column = {person: k for k, person in enumerate(people)}
    row = {face: i for i, face in enumerate(unnamed["face_id"])}
    for face_id, name in rejected:
        if str(face_id) in row and name in column:
            allowed[row[str(face_id)], column[name]] = False
    tiles_of_person: dict[str, set] = {}
    for face_id, tile in zip(table["face_id"], table["tile_id"], strict=True):
        name = names.get(face_id)
        if name is not None and name != IGNORE:
            tiles_of_person.setdefault(name, set()).add(tile)
    unnamed_tiles = unnamed["tile_id"].to_numpy(dtype=object)
    for person, tiles in tiles_of_person.items():
        allowed[np.isin(unnamed_tiles, list(tiles)), column[person]] = False

    masked = np.where(allowed, scores, -np.inf)
    best = np.argmax(masked, axis=1)
    rows = np.arange(len(unnamed))
    best_score = masked[rows, best]
    if len(people) > 1:
        # The runner-up is any other person, rejected or not: a rejection says "not them",
        # it does not make the best person more certain.
        others = scores.copy()
        others[rows, best] = -np.inf
        second = np.argmax(others, axis=1)
        second_score = others[rows, second]
        runner_up = pd.array([people[k] for k in second], dtype="string")
    else:
        second_score = np.full(len(unnamed), -1.0)
        runner_up = pd.array([None] * len(unnamed), dtype="string")
    margin = best_score - second_score
    keep = np.isfinite(best_score) & (best_score >= calibration.suggest_cosine)
    result = pd.DataFrame(
        {
            "name": [people[k] for k in best],
            "face_id": unnamed["face_id"],
            "cluster_id": unnamed["cluster_id"].astype("int64"),
            "similarity": best_score,
            "runner_up": runner_up,
            "runner_up_similarity": np.where(len(people) > 1, second_score, np.nan),
            "margin": margin,
            "confident": (best_score >= calibration.assign_cosine)
            & (margin >= calibration.assign_margin),
            "rank": 0,
        }
    )[keep]
    if result.empty:
        return empty
    result = result.sort_values(["name", "similarity", "face_id"], ascending=[True, False, True])
    result["rank"] = result.groupby("name").cumcount() + 1
    if per_person is not None:
        result = result[result["rank"] <= per_person]
    return result.reset_index(drop=True).astype(FACE_SUGGESTION_DTYPES)


def _cluster_summary(table: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    """Per cluster: size, centroid, the face nearest it, its tiles and its name (the most
    common name of its faces; null when none has one)."""
    vectors = _vectors(table)
    rows = []
    for cluster, index in table.groupby("cluster_id").indices.items():
        total = vectors[index].sum(axis=0)
        centroid = total / max(np.linalg.norm(total), 1e-12)
        nearest = index[int(np.argmax(vectors[index] @ centroid))]
        given = [names.get(f) for f in table["face_id"].iloc[index]]
        given = [n for n in given if n is not None]
        name = pd.Series(given).mode().iat[0] if given else None
        rows.append(
            {
                "cluster_id": int(cluster),
                "size": len(index),
                "centroid": centroid,
                "face": table["face_id"].iat[nearest],
                "face_ids": set(table["face_id"].iloc[index]),
                "tiles": set(table["tile_id"].iloc[index]),
                "name": name,
            }
        )
    return pd.DataFrame(rows)


def same_person_questions(
    faces: pd.DataFrame,
    names: Mapping[str, str],
    calibration: Calibration,
    *,
    rejected: Iterable[tuple[str, str]] = (),
    per_cluster: int = 5,
) -> pd.DataFrame:
    """Pairs of clusters that may be one person, biggest pairs first: centroid cosine at least
    ``calibration.suggest_cosine``, never two clusters sharing a tile, never two that already
    have names (the same name: nothing to ask; different names: a person decided), never a
    cluster of faces marked ignore.

    ``rejected``: (face_id, face_id) pairs a person answered "not the same person" to (e.g. the
    ``face_a``, ``face_b`` of an earlier question); a pair of clusters holding such a pair, in
    either order, is not asked again, whatever the cluster ids are after re-clustering.
    ``per_cluster``: each cluster's N most similar partners at most (keeps the list short on a
    big library).
    """
    empty = pd.DataFrame(columns=list(CLUSTER_QUESTION_DTYPES)).astype(CLUSTER_QUESTION_DTYPES)
    table = _table(faces)
    if table.empty:
        return empty
    clusters = _cluster_summary(table, names)
    clusters = clusters[clusters["name"] != IGNORE].reset_index(drop=True)
    if len(clusters) < 2:
        return empty
    centroids = np.stack(clusters["centroid"].to_list())
    similarity = centroids @ centroids.T
    np.fill_diagonal(similarity, -np.inf)
    cluster_of_face = {f: k for k, ids in enumerate(clusters["face_ids"]) for f in ids}
    refused = set()
    for face_x, face_y in rejected:
        a, b = cluster_of_face.get(str(face_x)), cluster_of_face.get(str(face_y))
        if a is not None and b is not None and a != b:
            refused.add((min(a, b), max(a, b)))
    partners = np.argsort(-similarity, axis=1, kind="stable")[:, :per_cluster]
    asked: set[tuple[int, int]] = set()
    rows = []
    for a in range(len(clusters)):
        for b in partners[a]:
            key = (min(a, int(b)), max(a, int(b)))
            if key in asked or key in refused or similarity[a, b] < calibration.suggest_cosine:
                continue
            asked.add(key)
            first, second = clusters.iloc[key[0]], clusters.iloc[key[1]]
            if first["name"] is not None and second["name"] is not None:
                continue
            if first["tiles"] & second["tiles"]:
                continue
            if (second["size"], -second["cluster_id"]) > (first["size"], -first["cluster_id"]):
                first, second = second, first
            rows.append(
                {
                    "cluster_a": first["cluster_id"],
                    "cluster_b": second["cluster_id"],
                    "similarity": similarity[key[0], key[1]],
                    "size_a": first["size"],
                    "size_b": second["size"],
                    "name_a": first["name"],
                    "name_b": second["name"],
                    "face_a": first["face"],
                    "face_b": second["face"],
                }
            )
    if not rows:
        return empty
    result = pd.DataFrame(rows)
    result["total"] = result["size_a"] + result["size_b"]
    result = result.sort_values(
        ["total", "similarity", "cluster_a", "cluster_b"], ascending=[False, False, True, True]
    )
    return result.drop(columns="total").reset_index(drop=True).astype(CLUSTER_QUESTION_DTYPES)
