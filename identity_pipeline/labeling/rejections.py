"""``rejections.csv``: the suggestions a person answered "no" to, so they are never asked again.

It lies beside ``labels.csv`` and is as plain: one row per face and what it is not,

    face_id,not_person,not_same_as
    3f2a...,Anna,
    9b1c...,,77d0...

``not_person``: this face is not that person (a "no" to "Is this Anna?"). ``not_same_as``: this
face and that one are different people (a "no" to "Same person?" for their two clusters). Like
labels, rejections belong to faces, so they survive re-clustering. Writes re-read the file under a
lock, keep the previous file as ``rejections.csv.bak`` and replace it atomically; a malformed file
is refused with its line number and never overwritten.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from identity_pipeline.labeling.csv_file import read_text, table_rows
from identity_pipeline.labeling.labels import (
    LabelError,
    LabelsFileError,
    backup_path,
    check_face_id,
    locked,
    normalise_name,
)
from identity_pipeline.storage import atomic_write_bytes, atomic_write_text

REJECTIONS_FILE = "rejections.csv"
HEADER = ("face_id", "not_person", "not_same_as")


def rejections_path(labels_path: Path) -> Path:
    """Where the rejections of this labels file live: beside it."""
    return labels_path.with_name(REJECTIONS_FILE)


@dataclass(frozen=True)
class Rejections:
    """``not_person``: face -> names it is not. ``not_same``: unordered face pairs."""

    not_person: dict[str, frozenset[str]] = field(default_factory=dict)
    not_same: frozenset[tuple[str, str]] = frozenset()

    def __len__(self) -> int:
        return sum(len(names) for names in self.not_person.values()) + len(self.not_same)

    def is_not(self, face_id: str, name: str) -> bool:
        return name in self.not_person.get(face_id, ())

    def rows(self) -> list[tuple[str, str, str]]:
        person = [(f, n, "") for f, names in self.not_person.items() for n in names]
        pairs = [(a, "", b) for a, b in self.not_same]
        return sorted(person + pairs, key=lambda row: (row[0], row[1].casefold(), row[2]))


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def parse_rejections(text: str, path: Path | str = REJECTIONS_FILE) -> Rejections:
    """Parse the file's text; a problem raises ``LabelsFileError`` naming the line."""
    not_person: dict[str, set[str]] = {}
    not_same: set[tuple[str, str]] = set()
    for line, cells in table_rows(text, HEADER, path, LabelsFileError):
        if len(cells) != 3 or bool(cells[1]) == bool(cells[2]):
            raise LabelsFileError(
                path, line, "expected face_id, then a person's name or another face id"
            )
        try:
            face = check_face_id(cells[0])
            if cells[1]:
                not_person.setdefault(face, set()).add(normalise_name(cells[1]))
            else:
                not_same.add(_pair(face, check_face_id(cells[2])))
        except LabelError as error:
            raise LabelsFileError(path, line, str(error)) from error
    return Rejections({f: frozenset(n) for f, n in not_person.items()}, frozenset(not_same))


def read_rejections(path: Path) -> Rejections:
    """The rejections in ``path``; a missing file is none yet."""
    text = read_text(path, LabelsFileError)
    return Rejections() if text is None else parse_rejections(text, path)


def format_rejections(rejections: Rejections) -> str:
    buffer = io.StringIO(newline="")
    buffer.write("# Suggestions answered 'no' on the labeling page; they are not asked again.\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rejections.rows())
    return buffer.getvalue()


def add_rejections(
    path: Path,
    not_person: Iterable[tuple[str, str]] = (),
    not_same: Iterable[tuple[str, str]] = (),
) -> Rejections:
    """Record (face, name) and (face, face) "no" answers, keeping what the file has now."""
    person = [(check_face_id(f), normalise_name(n)) for f, n in not_person]
    pairs = [_pair(check_face_id(a), check_face_id(b)) for a, b in not_same]
    if any(a == b for a, b in pairs):
        raise LabelError("a face cannot be a different person from itself")
    with locked(path):
        current = read_rejections(path)
        names = {f: set(n) for f, n in current.not_person.items()}
        for face, name in person:
            names.setdefault(face, set()).add(name)
        updated = Rejections(
            {f: frozenset(n) for f, n in names.items()}, current.not_same | frozenset(pairs)
        )
        if updated != current:
            if path.exists():
                atomic_write_bytes(backup_path(path), path.read_bytes())
            atomic_write_text(path, format_rejections(updated))
        return updated
