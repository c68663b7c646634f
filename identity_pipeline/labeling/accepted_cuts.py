"""``accepted_cuts.csv``: photos whose cuts a person looked at and accepted, by content hash.

One row per photo, ``photo_id,album,path,tiles``: the photo's id (sha256 of its bytes), where it
was (for people reading the file), and the tiles it had when accepted (``x0 y0 x1 y1; ...``, the
hints file's box syntax). The review page does not ask about an accepted photo again while its
tiles stay the ones accepted; a renamed or copied photo keeps its id, so it stays accepted.

Like ``labels.csv``: a malformed file is refused with its line number and never overwritten; every
write re-reads the file under a lock, keeps the previous version as ``.bak`` and is atomic.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from identity_pipeline.collage.boxes import Box, sort_boxes
from identity_pipeline.labeling.csv_file import read_text, table_rows
from identity_pipeline.labeling.labels import backup_path, locked
from identity_pipeline.storage import DataLayout, atomic_write_bytes, atomic_write_text

ACCEPTED_CUTS_FILE = "accepted_cuts.csv"
HEADER = ("photo_id", "album", "path", "tiles")
_PHOTO_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")


class AcceptedCutsError(ValueError):
    """The accepted-cuts file cannot be used; ``line`` is 1-based (None: the whole file)."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path, self.line = str(path), line
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class AcceptedCut:
    photo_id: str
    album: str
    path: str
    boxes: tuple[Box, ...]


def accepted_cuts_path(layout: DataLayout) -> Path:
    """Beside ``labels.csv``: one file for every album (photo ids are content hashes)."""
    return layout.root / ACCEPTED_CUTS_FILE


def format_tiles(boxes: Iterable[Box]) -> str:
    return "; ".join(" ".join(str(v) for v in box.as_list()) for box in sort_boxes(boxes))


def parse_tiles(text: str) -> tuple[Box, ...]:
    boxes = []
    for chunk in text.split(";"):
        parts = chunk.split()
        if len(parts) != 4 or not all(part.isdigit() for part in parts):
            raise ValueError(f"a tile is four whole numbers x0 y0 x1 y1, got {chunk.strip()!r}")
        boxes.append(Box(*(int(part) for part in parts)))
    return sort_boxes(boxes)


def parse_accepted_cuts(text: str, path: Path | str = ACCEPTED_CUTS_FILE) -> dict[str, AcceptedCut]:
    """Photo id -> what was accepted; any problem raises ``AcceptedCutsError`` with its line."""
    accepted: dict[str, AcceptedCut] = {}
    for line, cells in table_rows(text, HEADER, path, AcceptedCutsError):
        if len(cells) != len(HEADER):
            raise AcceptedCutsError(
                path, line, f"expected {len(HEADER)} fields ({','.join(HEADER)})"
            )
        photo_id, album, photo_path, tiles = cells
        if not _PHOTO_ID.match(photo_id):
            raise AcceptedCutsError(path, line, f"{photo_id!r} is not a photo id")
        try:
            boxes = parse_tiles(tiles)
        except ValueError as error:
            raise AcceptedCutsError(path, line, str(error)) from None
        previous = accepted.get(photo_id)
        if previous is not None and previous.boxes != boxes:
            raise AcceptedCutsError(path, line, f"photo {photo_id} is accepted twice, differently")
        accepted[photo_id] = AcceptedCut(photo_id, album, photo_path, boxes)
    return accepted


def read_accepted_cuts(path: Path) -> dict[str, AcceptedCut]:
    """What ``path`` holds; a missing file is nothing accepted yet."""
    text = read_text(path, AcceptedCutsError)
    return {} if text is None else parse_accepted_cuts(text, path)


def format_accepted_cuts(accepted: Mapping[str, AcceptedCut]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for cut in sorted(accepted.values(), key=lambda c: (c.album, c.path, c.photo_id)):
        writer.writerow((cut.photo_id, cut.album, cut.path, format_tiles(cut.boxes)))
    return buffer.getvalue()


def accept_cuts(path: Path, cuts: Iterable[AcceptedCut]) -> dict[str, AcceptedCut]:
    """Record these photos as accepted (a photo accepted before gets its new tiles), keeping
    every other row as the file has it now."""
    with locked(path):
        accepted = read_accepted_cuts(path)
        updated = {**accepted, **{cut.photo_id: cut for cut in cuts}}
        if updated != accepted:
            if path.exists():
                atomic_write_bytes(backup_path(path), path.read_bytes())
            atomic_write_text(path, format_accepted_cuts(updated))
        return updated
