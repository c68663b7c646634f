"""What the labeling page shows and does, without the web: groups of faces and label edits.

A group is what one card on the page shows: the faces of one cluster with one resolved name
(a cluster split by conflicting names gives one group per name), its ignored faces apart. Every
edit turns into labels on faces (``labels.update_labels``), never into cluster numbers, so what a
person did survives re-clustering.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from identity_pipeline.asset_names import FACE_CLUSTERS
from identity_pipeline.labeling.identities import IGNORED, LabeledIdentities, apply_labels
from identity_pipeline.labeling.labels import (
    IGNORE,
    LabelError,
    Labels,
    normalise_name,
    read_labels,
    update_labels,
)
from identity_pipeline.storage import DataLayout

IGNORED_SUFFIX = ":ignored"


class NeedsNameError(LabelError):
    """The target group has no name yet: the person has to give one first."""


def clusters_table_path(layout: DataLayout) -> Path:
    return layout.table_path(FACE_CLUSTERS)


@dataclass(frozen=True)
class Group:
    key: str
    cluster_id: int
    name: str | None
    ignored: bool
    face_ids: list[str]
    cluster_size: int

    @property
    def size(self) -> int:
        return len(self.face_ids)


@dataclass
class PageState:
    """One consistent snapshot: the clusters table, the labels, and the groups they give."""

    table: pd.DataFrame
    labels: Labels
    resolved: LabeledIdentities
    groups: dict[str, Group] = field(default_factory=dict)

    @classmethod
    def build(cls, table: pd.DataFrame, labels: Labels) -> PageState:
        resolved = apply_labels(table, table, labels)
        state = cls(table, labels, resolved)
        state.groups = _groups(resolved.faces, table)
        return state

    def group(self, key: str) -> Group:
        try:
            return self.groups[key]
        except KeyError:
            raise LabelError(f"no group {key!r} (the page may be out of date: reload)") from None

    def known_faces(self, face_ids: Iterable[str]) -> list[str]:
        ids = [str(f) for f in face_ids]
        present = set(self.table["face_id"].astype(str))
        unknown = [f for f in ids if f not in present]
        if unknown:
            raise LabelError(f"unknown face id(s) {unknown[:3]} (reload the page)")
        if not ids:
            raise LabelError("no faces given")
        return ids


def _groups(resolved: pd.DataFrame, table: pd.DataFrame) -> dict[str, Group]:
    # Vectorized (one factorize, one stable sort): a library has thousands of groups. Groups come
    # in the order their first face appears, faces in table order within a group.
    face_ids = resolved["face_id"].astype(str).to_numpy()
    ignored = (resolved["status"] == IGNORED).to_numpy(dtype=bool)
    group = resolved["group"].astype(str).to_numpy()
    keys = np.where(ignored, np.char.add(group, IGNORED_SUFFIX), group)
    codes, uniques = pd.factorize(keys)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(uniques)))
    ends = np.append(starts[1:], len(order))
    if "cluster_size" in table:
        sizes = table.set_index("face_id")["cluster_size"]
        cluster_sizes = sizes.reindex(face_ids).to_numpy()
    else:
        cluster_sizes = None
    cluster_ids = resolved["cluster_id"].to_numpy(dtype=np.int64)
    named = resolved["identity"].notna().to_numpy(dtype=bool) & ~ignored
    names_per_group = (
        pd.DataFrame({"code": codes[named], "name": resolved["identity"].to_numpy()[named]})
        .drop_duplicates()
        .groupby("code")["name"]
        .agg(list)
        .to_dict()
    )
    ordered_ids = face_ids[order].tolist()
    firsts = order[starts]
    first_cluster = cluster_ids[firsts].tolist()
    first_ignored = ignored[firsts].tolist()
    first_size = cluster_sizes[firsts].tolist() if cluster_sizes is not None else None
    groups: dict[str, Group] = {}
    for code, (key, start, end) in enumerate(zip(uniques.tolist(), starts, ends, strict=True)):
        names = names_per_group.get(code, [])
        groups[str(key)] = Group(
            key=str(key),
            cluster_id=int(first_cluster[code]),
            name=names[0] if len(names) == 1 else None,
            ignored=bool(first_ignored[code]),
            face_ids=ordered_ids[start:end],
            cluster_size=int(first_size[code]) if first_size is not None else int(end - start),
        )
    return groups


class LabelingBook:
    """The page's data and edits for one data root; re-reads files as they change on disk."""

    def __init__(self, clusters_path: Path, labels_path: Path) -> None:
        self.clusters_path = clusters_path
        self.labels_path = labels_path
        self._table: pd.DataFrame | None = None
        self._table_stamp: tuple[int, int] | None = None
        self._labels: Labels | None = None
        self._labels_stamp: tuple[int, int, int] | None = None

    def table(self) -> pd.DataFrame:
        """The face_clusters table, re-read when the asset was re-materialized."""
        stat = self.clusters_path.stat()  # FileNotFoundError: the page says what to run
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._table is None or stamp != self._table_stamp:
            self._table = pd.read_parquet(self.clusters_path)
            self._table_stamp = stamp
        return self._table

    def labels(self) -> Labels:
        """The labels file, parsed again only when it changed on disk."""
        try:
            stat = self.labels_path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if self._labels is None or stamp != self._labels_stamp:
            self._labels = read_labels(self.labels_path)
            self._labels_stamp = stamp
        return self._labels

    def state(self) -> PageState:
        return PageState.build(self.table(), self.labels())

    # Edits. Each re-reads the state so it acts on what the files say now.
    def name_group(self, key: str, name: str) -> Labels:
        state = self.state()
        group = state.group(key)
        return self._set(group.face_ids, name)

    def move_faces(
        self,
        face_ids: Iterable[str],
        target_key: str | None = None,
        target_name: str | None = None,
        name: str | None = None,
    ) -> Labels:
        """Faces go to a group (its name) or straight to a name. A target group with no name
        takes ``name`` for itself and the moved faces; without one this asks for it."""
        state = self.state()
        moved = state.known_faces(face_ids)
        if target_name is not None:
            return self._set(moved, target_name)
        if target_key is None:
            raise LabelError("move needs a target group or a name")
        target = state.group(target_key)
        if target.ignored:
            return self._set(moved, IGNORE)
        if target.name is not None:
            return self._set(moved, target.name)
        if name is None:
            raise NeedsNameError("the target cluster has no name yet: give it one")
        return self._set([*target.face_ids, *moved], name)

    def merge_groups(self, source_key: str, target_key: str, name: str | None = None) -> Labels:
        """All faces of both groups under one name: the one given, else the target's, else the
        source's; two unnamed groups need a name."""
        state = self.state()
        source, target = state.group(source_key), state.group(target_key)
        if source.key == target.key:
            raise LabelError("a group cannot be merged into itself")
        chosen = name or target.name or source.name
        if chosen is None:
            raise NeedsNameError("neither cluster has a name: give the merged cluster one")
        return self._set([*source.face_ids, *target.face_ids], chosen)

    def ignore_faces(self, face_ids: Iterable[str]) -> Labels:
        return self._set(self.state().known_faces(face_ids), IGNORE)

    def clear_faces(self, face_ids: Iterable[str]) -> Labels:
        ids = self.state().known_faces(face_ids)
        return update_labels(self.labels_path, clear=ids)

    def _set(self, face_ids: list[str], name: str) -> Labels:
        stored = normalise_name(name)
        return update_labels(self.labels_path, dict.fromkeys(face_ids, stored))


def state_json(state: PageState) -> dict[str, Any]:
    """The page's view: groups biggest first, unnamed singletons and ignored faces apart."""
    table = state.table
    ids = table["face_id"].astype(str).tolist()
    count = len(ids)

    def column(name: str, default: object) -> list[Any]:
        return table[name].tolist() if name in table.columns else [default] * count

    outlier = dict(zip(ids, (bool(v) for v in column("is_outlier", False)), strict=True))
    cosine_values = np.asarray(column("cosine_to_centroid", 1.0), dtype=np.float64)
    cosine = dict(zip(ids, cosine_values.tolist(), strict=True))
    quality = np.asarray(column("quality", np.nan), dtype=np.float64)
    resolved = state.resolved.faces
    status = dict(zip(resolved["face_id"].astype(str), resolved["status"].astype(str), strict=True))
    label = dict(zip(resolved["face_id"].astype(str), resolved["label"].tolist(), strict=True))
    # Every face's entry made once, rounding in bulk (a library has tens of thousands).
    entries = {
        face_id: {
            "id": face_id,
            "outlier": outlier[face_id],
            "cosine": rounded_cosine,
            "quality": None if missing else rounded_quality,
            "status": status[face_id],
            "label": None if label[face_id] is None or label[face_id] is pd.NA else label[face_id],
        }
        for face_id, rounded_cosine, rounded_quality, missing in zip(
            ids,
            np.round(cosine_values, 3).tolist(),
            np.round(np.nan_to_num(quality), 2).tolist(),
            np.isnan(quality).tolist(),
            strict=True,
        )
    }

    def face(face_id: str) -> dict[str, Any]:
        return entries[face_id]

    def group(item: Group) -> dict[str, Any]:
        faces = sorted(item.face_ids, key=lambda f: (outlier[f], -cosine[f], f))
        return {
            "key": item.key,
            "cluster_id": item.cluster_id,
            "name": item.name,
            "ignored": item.ignored,
            "size": item.size,
            "cluster_size": item.cluster_size,
            "outliers": sum(outlier[f] for f in item.face_ids),
            "faces": [face(f) for f in faces],
        }

    ordered = sorted(state.groups.values(), key=lambda g: (-g.size, g.cluster_id, g.key))
    cards = [g for g in ordered if not g.ignored and (g.size >= 2 or g.name is not None)]
    singles = [g for g in ordered if not g.ignored and g.size < 2 and g.name is None]
    ignored = [g for g in ordered if g.ignored]
    return {
        "summary": state.resolved.summary,
        "names": state.labels.people,
        "groups": [group(g) for g in cards],
        "singletons": [
            {**face(g.face_ids[0]), "key": g.key, "cluster_id": g.cluster_id} for g in singles
        ],
        "ignored": [
            {**face(f), "key": g.key, "cluster_id": g.cluster_id}
            for g in ignored
            for f in g.face_ids
        ],
        "conflicts": state.resolved.conflicts.to_dict(orient="records"),
    }
