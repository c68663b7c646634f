"""``labels.csv``: the names a person gave to faces, one ``face_id,name`` row per face.

Labels attach to faces (content-hash ids), never to cluster numbers, so they survive
re-clustering. The name ``ignore`` marks a face that is no one to learn (a stranger, a poster, a
false detection). Blank lines and lines starting with ``#`` are allowed (notes).

A malformed file is refused with an error naming the line, and nothing is written over it.
Every write re-reads the file under a lock, changes only the faces it was asked to change, keeps
the previous file as ``labels.csv.bak`` and replaces the file atomically.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from identity_pipeline.labeling.csv_file import read_text, table_rows
from identity_pipeline.storage import atomic_write_bytes, atomic_write_text

IGNORE = "ignore"
HEADER = ("face_id", "name")
MAX_NAME_LENGTH = 100
BACKUP_SUFFIX = ".bak"
_FACE_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")
# One writer at a time inside this process (the flock below covers other processes).
_PROCESS_LOCK = threading.Lock()


class LabelsFileError(ValueError):
    """The labels file cannot be used; ``line`` is 1-based (None: the file as a whole)."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path} line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class LabelError(ValueError):
    """A requested label is unusable (bad name or face id); nothing was written."""


def normalise_name(raw: str) -> str:
    """The name as stored: trimmed, NFC, ``ignore`` in any case becomes ``ignore``.

    Names end up in captions and file names, so control characters, line breaks and overlong
    names are refused.
    """
    name = unicodedata.normalize("NFC", raw.strip())
    if not name:
        raise LabelError("a name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise LabelError(f"a name must be at most {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in name):
        raise LabelError(f"name {name!r} contains control or invisible characters")
    if name.startswith("#"):
        raise LabelError(f"name {name!r} must not start with '#' (that marks a comment)")
    return IGNORE if name.casefold() == IGNORE else name


def check_face_id(face_id: str) -> str:
    face_id = face_id.strip()
    if not _FACE_ID.match(face_id):
        raise LabelError(f"face id {face_id!r} is not an id (letters, digits, '-' and '_')")
    return face_id


@dataclass(frozen=True)
class Labels:
    """face_id -> name (or ``IGNORE``), in file order."""

    names: Mapping[str, str]

    def __len__(self) -> int:
        return len(self.names)

    def get(self, face_id: str) -> str | None:
        return self.names.get(face_id)

    @property
    def ignored(self) -> frozenset[str]:
        return frozenset(f for f, n in self.names.items() if n == IGNORE)

    @property
    def people(self) -> list[str]:
        return sorted({n for n in self.names.values() if n != IGNORE}, key=str.casefold)

    def without(self, face_ids: Iterable[str]) -> Labels:
        drop = set(face_ids)
        return Labels({f: n for f, n in self.names.items() if f not in drop})


def parse_labels(text: str, path: Path | str = "labels.csv") -> Labels:
    """Parse the file's text; any problem raises ``LabelsFileError`` with its line number."""
    names: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, cells in table_rows(text, HEADER, path, LabelsFileError):
        if len(cells) != 2:
            raise LabelsFileError(path, line, f"expected 2 fields (face_id,name), got {len(cells)}")
        try:
            face_id, name = check_face_id(cells[0]), normalise_name(cells[1])
        except LabelError as error:
            raise LabelsFileError(path, line, str(error)) from error
        if face_id in names and names[face_id] != name:
            raise LabelsFileError(
                path,
                line,
                f"face {face_id} is named {name!r} here but {names[face_id]!r} on line "
                f"{first_line[face_id]}",
            )
        names.setdefault(face_id, name)
        first_line.setdefault(face_id, line)
    return Labels(names)


def read_labels(path: Path) -> Labels:
    """The labels in ``path``; a missing file is no labels yet."""
    text = read_text(path, LabelsFileError)
    return Labels({}) if text is None else parse_labels(text, path)


def format_labels(labels: Labels) -> str:
    """CSV text, sorted by name then face id so hand edits and diffs stay readable."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for face_id, name in sorted(labels.names.items(), key=lambda kv: (kv[1].casefold(), kv[0])):
        writer.writerow((face_id, name))
    return buffer.getvalue()


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive access to ``path`` for a read-modify-write, across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.with_name(f".{path.name}.lock")
    with _PROCESS_LOCK, open(lock_file, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_labels(path: Path, labels: Labels) -> Path:
    """Replace the file atomically, the previous version kept as ``<name>.bak`` first."""
    if path.exists():
        atomic_write_bytes(backup_path(path), path.read_bytes())
    return atomic_write_text(path, format_labels(labels))


def update_labels(
    path: Path,
    set_names: Mapping[str, str] | None = None,
    clear: Iterable[str] = (),
) -> Labels:
    """Give faces names (``set_names``: face_id -> name or ``ignore``) and/or remove the labels
    of ``clear``, leaving every other label as the file has it at this moment.

    The file is re-read under the lock, so labels written meanwhile (by hand, by another page)
    are kept. A malformed file raises ``LabelsFileError`` and is left untouched.
    """
    checked = {check_face_id(f): normalise_name(n) for f, n in (set_names or {}).items()}
    cleared = {check_face_id(f) for f in clear}
    with locked(path):
        current = read_labels(path)
        updated = dict(current.names)
        for face_id in cleared:
            updated.pop(face_id, None)
        updated.update(checked)
        result = Labels(updated)
        if result.names != current.names:
            write_labels(path, result)
        return result
