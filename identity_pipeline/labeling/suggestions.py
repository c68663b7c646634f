"""Suggestions for naming (no web here): who an unnamed face may be, which clusters may be one.

Two kinds, both for a person to answer yes or no on the suggestions page:

- "Is this Anna?": per named person, the unnamed groups (a cluster's unnamed faces, or a face
  alone) whose faces are on average close to the person's centroid, best first. Each group is
  offered to its closest person only; after a "no" it goes to the next closest. A "yes" labels
  the faces (labels.csv); a "no" is recorded per face in rejections.csv and never asked again.
- "Same person?": pairs of unnamed clusters (2+ faces each) that may be one person, largest
  first (``clustering.suggest.same_person_questions``). "Yes" merges them under a name; "no" is
  recorded for the pair of faces that stands for them.

The bar is the calibration's ``suggest_cosine`` (``clustering.calibration``: the album's own,
fitted on the faces a person named once 10 people have names, else the backend's shipped one),
below its ``assign_cosine``: what is sure is assigned without asking, what is likely is asked,
and a "no" costs one key press.

Why groups and not single faces (``clustering.suggest.rank_faces_for_people`` ranks faces): a
label on one face names its whole cluster (unlabelled faces inherit their cluster's name,
``identities``), so a "yes" to one face of a cluster is a "yes" to all of them. The page asks
about what a "yes" does: every unnamed face of the group, judged on their mean cosine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from identity_pipeline.clustering import constraints
from identity_pipeline.clustering.calibration import (
    Calibration,
    CalibrationError,
    album_calibration,
)
from identity_pipeline.clustering.suggest import same_person_questions
from identity_pipeline.labeling.identities import UNNAMED
from identity_pipeline.labeling.rejections import Rejections
from identity_pipeline.labeling.state import PageState


@dataclass(frozen=True)
class SuggestionSettings:
    """How much the suggestions page shows at once."""

    # Suggestions a person looks at together: "yes to all shown" confirms exactly these.
    page_size: int = 24
    # Faces shown per suggested group (a cluster may hold hundreds; the count says how many).
    faces_shown: int = 8
    # "Same person?": each cluster's closest partners only, so a big library's list stays short.
    partners_per_cluster: int = 5


# --- the ranking, on arrays ------------------------------------------------------------------


@dataclass(frozen=True)
class GroupMatch:
    """Candidate group ``group`` looks like person ``person`` (indices into the caller's lists)."""

    group: int
    person: int
    similarity: float
    runner_up: int | None  # the next closest person, for the page to say "or Ben?"
    runner_up_similarity: float | None


def sum_rows_by(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Row sums of ``values`` per ``index`` (0..n-1), as float64 (n x columns): a sparse
    indicator product, much faster than ``np.add.at`` at library scale."""
    indicator = sparse.csr_matrix(
        (np.ones(len(index)), (index, np.arange(len(index)))), shape=(n, len(index))
    )
    return np.asarray(indicator @ np.asarray(values, dtype=np.float64))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Float32 unit rows: the page's vectors (half the memory and time of float64 at 20,000)."""
    return constraints.unit_rows(vectors, np.float32)


def rank_groups_for_people(
    vectors: np.ndarray,
    person_of: np.ndarray,
    group_of: np.ndarray,
    rejected: np.ndarray | None,
    min_similarity: float,
) -> tuple[list[GroupMatch], np.ndarray]:
    """Each candidate group's closest person, if close enough, best first.

    ``vectors``: unit rows, one per face. ``person_of``: the person index of a named face, -1
    otherwise. ``group_of``: the candidate group of an unnamed face, -1 otherwise.
    ``rejected``: bool (faces x people), True where a person said this face is not that person.
    A group's similarity to a person is the mean cosine of its faces (those not rejected for the
    person) to the person's centroid. Returns the matches and the (faces x people) cosines.
    """
    n_people = int(person_of.max()) + 1 if len(person_of) and person_of.max() >= 0 else 0
    n_groups = int(group_of.max()) + 1 if len(group_of) and group_of.max() >= 0 else 0
    if n_people == 0 or n_groups == 0:
        return [], np.zeros((len(vectors), n_people), dtype=np.float32)
    named = person_of >= 0
    centroids = unit_rows(sum_rows_by(person_of[named], vectors[named], n_people))
    candidates = np.flatnonzero(group_of >= 0)
    cosine = np.zeros((len(vectors), n_people), dtype=np.float32)
    cosine[candidates] = vectors[candidates] @ centroids.T
    usable = np.ones((len(candidates), n_people), dtype=bool)
    if rejected is not None:
        usable &= ~rejected[candidates]
    sums = sum_rows_by(group_of[candidates], np.where(usable, cosine[candidates], 0.0), n_groups)
    counts = sum_rows_by(group_of[candidates], usable, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    ranked = np.argsort(-mean, axis=1, kind="stable")
    best, second = ranked[:, 0], ranked[:, 1] if n_people > 1 else None
    rows = np.arange(n_groups)
    best_similarity = mean[rows, best]
    matches = []
    for group in np.flatnonzero(best_similarity >= min_similarity):
        runner, runner_similarity = None, None
        if second is not None and np.isfinite(mean[group, second[group]]):
            runner, runner_similarity = int(second[group]), float(mean[group, second[group]])
        matches.append(
            GroupMatch(
                int(group), int(best[group]), float(best_similarity[group]), runner,
                runner_similarity,
            )
        )  # fmt: skip
    matches.sort(key=lambda m: (-m.similarity, m.group))
    return matches, cosine


# --- suggestions for a page state ------------------------------------------------------------


@dataclass(frozen=True)
class PersonSuggestion:
    """ "Is this ``name``?" for the unnamed faces of one group, best match first."""

    name: str
    group: str
    cluster_id: int
    face_ids: list[str]  # the faces a "yes" labels and a "no" rejects
    similarity: float
    runner_up: str | None
    runner_up_similarity: float | None


@dataclass(frozen=True)
class SamePersonQuestion:
    """ "Same person?" for two unnamed clusters."""

    groups: tuple[str, str]
    cluster_ids: tuple[int, int]
    face_ids: tuple[list[str], list[str]]  # best first (closest to the other cluster)
    similarity: float  # cosine of the two cluster centroids
    pair: tuple[str, str]  # the face of each nearest its centroid: what a "no" records

    @property
    def size(self) -> int:
        return len(self.face_ids[0]) + len(self.face_ids[1])


@dataclass(frozen=True)
class Suggestions:
    for_people: dict[str, list[PersonSuggestion]] = field(default_factory=dict)
    same_person: list[SamePersonQuestion] = field(default_factory=list)
    # A few faces of each person with suggestions, closest to their centroid: who "Anna" is.
    examples: dict[str, list[str]] = field(default_factory=dict)
    calibration: Calibration | None = None
    note: str | None = None  # why there are none, when that is not obvious


def _backend(table: pd.DataFrame) -> str | None:
    if "backend" not in table or table["backend"].isna().all():
        return None
    return str(table["backend"].dropna().mode().iloc[0])


class VectorCache:
    """Unit embeddings of a clusters table, rebuilt only when the table object changes."""

    def __init__(self) -> None:
        self._table: object = None
        self._vectors: np.ndarray | None = None
        self._index: dict[str, int] = {}
        self._lock = threading.Lock()

    def vectors(self, table: pd.DataFrame) -> tuple[np.ndarray | None, Mapping[str, int]]:
        with self._lock:
            if self._table is not table:
                self._table = table
                column = table.get("embedding")
                if column is None or column.isna().any() or len(column) == 0:
                    self._vectors = None
                else:
                    self._vectors = unit_rows(np.stack(column.to_numpy()))
                self._index = {f: i for i, f in enumerate(table["face_id"].astype(str))}
            return self._vectors, self._index


def suggest(
    state: PageState,
    rejections: Rejections,
    settings: SuggestionSettings = SuggestionSettings(),
    cache: VectorCache | None = None,
) -> Suggestions:
    """Every suggestion for this state of the names, all of them (the page shows a page at a
    time). Needs the table's embeddings and a backend with thresholds; else none, with a note."""
    backend = _backend(state.table)
    vectors, index = (cache or VectorCache()).vectors(state.table)
    if vectors is None or backend is None:
        return Suggestions(note="the clusters table has no embeddings to compare")

    resolved = state.resolved.faces
    rows = np.fromiter((index[f] for f in resolved["face_id"].astype(str)), np.int64, len(resolved))
    face_ids = resolved["face_id"].astype(str).to_numpy()
    identity = resolved["identity"].to_numpy(dtype=object)
    status = resolved["status"].astype(str).to_numpy()
    group_key = resolved["group"].astype(str).to_numpy()
    face_vectors = vectors[rows]
    names = [n if isinstance(n, str) else None for n in identity]
    try:
        calibration = album_calibration(face_vectors, names, backend)
    except CalibrationError as error:
        return Suggestions(note=f"no suggestions: {error}")

    people = sorted({n for n in names if n is not None}, key=str.casefold)
    person_index = {name: i for i, name in enumerate(people)}
    person_of = np.array([person_index[n] if n else -1 for n in names], dtype=np.int64)
    unnamed = status == UNNAMED
    codes, uniques = pd.factorize(group_key[unnamed])
    group_of = np.full(len(face_ids), -1, dtype=np.int64)
    group_of[unnamed] = codes
    group_names = [str(key) for key in uniques]
    tiles = _tiles(state.table, rows)

    rejected = _rejected(face_ids, tiles, person_of, people, rejections)
    matches, cosine = rank_groups_for_people(
        face_vectors, person_of, group_of, rejected, calibration.suggest_cosine
    )
    members = _members(group_of)
    cluster_id = resolved["cluster_id"].to_numpy(dtype=np.int64)  # resolved order, like rows
    for_people: dict[str, list[PersonSuggestion]] = {}
    for match in matches:
        faces = members[match.group]
        faces = faces[~rejected[faces, match.person]]
        faces = faces[np.argsort(-cosine[faces, match.person], kind="stable")]
        name = people[match.person]
        for_people.setdefault(name, []).append(
            PersonSuggestion(
                name=name,
                group=group_names[match.group],
                cluster_id=int(cluster_id[faces[0]]),
                face_ids=face_ids[faces].tolist(),
                similarity=round(match.similarity, 3),
                runner_up=people[match.runner_up] if match.runner_up is not None else None,
                runner_up_similarity=(
                    round(match.runner_up_similarity, 3)
                    if match.runner_up_similarity is not None
                    else None
                ),
            )
        )

    examples = _examples(face_vectors, face_ids, person_of, people, set(for_people), settings)
    same_person = _same_person(
        face_vectors, face_ids, tiles, cluster_id, group_names, members, rejections,
        calibration, settings,
    )  # fmt: skip
    return Suggestions(for_people, same_person, examples, calibration)


def _tiles(table: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Each face's tile id (its own face id where the table has none: a tile of its own)."""
    faces = table["face_id"].astype(str).to_numpy()
    if "tile_id" not in table:
        return faces[rows]
    tiles = table["tile_id"].astype(object).to_numpy().copy()
    missing = pd.isna(tiles)
    tiles[missing] = faces[missing]
    return tiles[rows].astype(str)


def _rejected(
    face_ids: np.ndarray,
    tiles: np.ndarray,
    person_of: np.ndarray,
    people: list[str],
    rejections: Rejections,
) -> np.ndarray:
    """(faces x people): a person said "not them", or the face's tile already shows them (one
    photo cannot show a person twice)."""
    rejected = np.zeros((len(face_ids), len(people)), dtype=bool)
    if not people:
        return rejected
    person_index = {name: i for i, name in enumerate(people)}
    for position, face in enumerate(face_ids):
        for name in rejections.not_person.get(face, ()):
            if name in person_index:
                rejected[position, person_index[name]] = True
    named = person_of >= 0
    shown = pd.DataFrame({"tile": tiles[named], "person": person_of[named]}).drop_duplicates()
    faces = pd.DataFrame({"tile": tiles, "position": np.arange(len(tiles))})[~named]
    hits = faces.merge(shown, on="tile")
    rejected[hits["position"].to_numpy(), hits["person"].to_numpy()] = True
    return rejected


def _examples(
    vectors: np.ndarray,
    face_ids: np.ndarray,
    person_of: np.ndarray,
    people: list[str],
    wanted: set[str],
    settings: SuggestionSettings,
) -> dict[str, list[str]]:
    named = np.flatnonzero(person_of >= 0)
    if not len(named):
        return {}
    centroids = unit_rows(sum_rows_by(person_of[named], vectors[named], len(people)))
    closeness = (vectors[named] * centroids[person_of[named]]).sum(axis=1)
    order = named[np.lexsort((-closeness, person_of[named]))]
    examples: dict[str, list[str]] = {}
    for position in order:
        name = people[person_of[position]]
        if name in wanted and len(examples.setdefault(name, [])) < settings.faces_shown:
            examples[name].append(str(face_ids[position]))
    return examples


def _members(group_of: np.ndarray) -> list[np.ndarray]:
    if not (group_of >= 0).any():
        return []
    order = np.argsort(group_of, kind="stable")
    order = order[group_of[order] >= 0]
    bounds = np.searchsorted(group_of[order], np.arange(int(group_of.max()) + 2))
    return [order[bounds[g] : bounds[g + 1]] for g in range(len(bounds) - 1)]


def _same_person(
    vectors: np.ndarray,
    face_ids: np.ndarray,
    tiles: np.ndarray,
    cluster_id: np.ndarray,
    group_names: list[str],
    members: list[np.ndarray],
    rejections: Rejections,
    calibration: Calibration,
    settings: SuggestionSettings,
) -> list[SamePersonQuestion]:
    """Unnamed clusters of 2+ faces that may be one person: ``same_person_questions`` on them
    (a named cluster near an unnamed one is asked as "Is this <name>?" instead)."""
    big = [g for g, faces in enumerate(members) if len(faces) >= 2]
    if len(big) < 2:
        return []
    picked = np.concatenate([members[g] for g in big])
    frame = pd.DataFrame(
        {
            "face_id": face_ids[picked],
            "cluster_id": cluster_id[picked],
            "tile_id": tiles[picked],
            "embedding": list(vectors[picked]),
        }
    )
    asked = same_person_questions(
        frame,
        {},
        calibration,
        rejected=rejections.not_same,
        per_cluster=settings.partners_per_cluster,
    )
    group_of_cluster = {int(cluster_id[members[g][0]]): g for g in big}
    questions = []
    for row in asked.itertuples(index=False):
        a, b = group_of_cluster[int(row.cluster_a)], group_of_cluster[int(row.cluster_b)]
        faces_a, faces_b = members[a], members[b]
        # Each side's faces closest to the other side first: the evidence for "same".
        mean_a, mean_b = vectors[faces_a].mean(axis=0), vectors[faces_b].mean(axis=0)
        faces_a = faces_a[np.argsort(-(vectors[faces_a] @ mean_b), kind="stable")]
        faces_b = faces_b[np.argsort(-(vectors[faces_b] @ mean_a), kind="stable")]
        questions.append(
            SamePersonQuestion(
                groups=(group_names[a], group_names[b]),
                cluster_ids=(int(row.cluster_a), int(row.cluster_b)),
                face_ids=(face_ids[faces_a].tolist(), face_ids[faces_b].tolist()),
                similarity=round(float(row.similarity), 3),
                pair=(str(row.face_a), str(row.face_b)),
            )
        )
    return questions  # biggest pairs first, as asked


def suggestions_json(suggestions: Suggestions, settings: SuggestionSettings) -> dict[str, Any]:
    """The page's view: per person the first ``page_size`` suggestions and the total; the same
    for "same person?". Each item carries every face id its answer applies to."""
    shown = settings.faces_shown

    def person_item(item: PersonSuggestion) -> dict[str, Any]:
        return {
            "group": item.group,
            "cluster_id": item.cluster_id,
            "faces": item.face_ids,
            "shown": item.face_ids[:shown],
            "similarity": item.similarity,
            "runner_up": item.runner_up,
            "runner_up_similarity": item.runner_up_similarity,
        }

    def pair_item(item: SamePersonQuestion) -> dict[str, Any]:
        return {
            "groups": list(item.groups),
            "cluster_ids": list(item.cluster_ids),
            "sizes": [len(f) for f in item.face_ids],
            "shown": [f[:shown] for f in item.face_ids],
            "pair": list(item.pair),
            "similarity": item.similarity,
        }

    people = sorted(suggestions.for_people.items(), key=lambda kv: (-len(kv[1]), kv[0].casefold()))
    calibration = suggestions.calibration
    return {
        "people": [
            {
                "name": name,
                "total": len(items),
                "faces": sum(len(i.face_ids) for i in items),
                "examples": suggestions.examples.get(name, []),
                "items": [person_item(i) for i in items[: settings.page_size]],
            }
            for name, items in people
        ],
        "same_person": {
            "total": len(suggestions.same_person),
            "items": [pair_item(q) for q in suggestions.same_person[: settings.page_size]],
        },
        "calibration": None
        if calibration is None
        else {
            "backend": calibration.backend,
            "source": calibration.source,
            **calibration.thresholds(),
        },
        "note": suggestions.note,
    }
